"""The carbon ledger's parts without a stack: its settings, the shadow deadline, the listener on a task
instance as the Task SDK hands it over (measured, ignored, never failing the task), and the book's
pricing and shadow plan on a replayed real trace. The whole path on Celery: tests/stack/test_ledger.py."""
from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime, timedelta, timezone

import pendulum
import pytest

from tests.conftest import CARBON_DIR

NESO = CARBON_DIR / "neso_carbon_intensity_api" / "neso_2023_national_intensity.csv"
REPLAY_START = "2023-03-01T06:00:00Z"
TRACE_SPEC = [{"name": "trace", "path": str(NESO), "replay_start": REPLAY_START}]


@pytest.fixture
def ledger_settings(monkeypatch):
    """Deployment settings as Airflow reads them from the environment; the cached copy dropped."""
    from carbon_aware.ledger import settings

    def apply(**options: str):
        for key, value in options.items():
            monkeypatch.setenv(f"AIRFLOW__CARBON_AWARE__{key.upper()}", value)
        settings.settings.cache_clear()
        return settings.settings()
    yield apply
    settings.settings.cache_clear()


def test_settings_name_the_option_that_is_wrong(ledger_settings):
    from carbon_aware.ledger.settings import LedgerSettingsError

    chosen = ledger_settings(ledger_dag_ids="etl, train", ledger_deadlines="train=12",
                             ledger_providers=json.dumps(TRACE_SPEC))
    assert chosen.measures("etl", []) and chosen.measures("other", ["carbon-ledger"])
    assert not chosen.measures("other", ["nightly"]) and chosen.deadlines == {"train": 12.0}
    for option, value, named in (("ledger_deadlines", "train:12", "ledger_deadlines"),
                                 ("ledger_deadlines", "train=99", "ledger_deadlines"),
                                 ("ledger_reading_seconds", "often", "ledger_reading_seconds"),
                                 ("ledger_providers", '[{"name": "nope"}]', "ledger_providers"),
                                 ("ledger_providers", "{", "ledger_providers")):
        with pytest.raises((LedgerSettingsError, ValueError), match=named):
            ledger_settings(**{option: value})
        ledger_settings(**{option: ""})


@pytest.mark.parametrize("schedule, expected", [
    ("@daily", datetime(2026, 12, 4, tzinfo=timezone.utc)),
    ("0 */6 * * *", datetime(2026, 12, 3, 18, tzinfo=timezone.utc)),
    (timedelta(hours=3), datetime(2026, 12, 3, 19, 50, tzinfo=timezone.utc)),
    (None, datetime(2026, 12, 4, 16, 50, tzinfo=timezone.utc)),  # no schedule: a day
    ("0 0 1 * *", datetime(2026, 12, 5, 16, 50, tzinfo=timezone.utc)),  # a month away: the 48 h horizon
])
def test_the_shadow_deadline_is_the_next_scheduled_run(schedule, expected):
    from airflow.sdk import DAG

    from carbon_aware.ledger.schedule import shadow_deadline

    dag = DAG("d", schedule=schedule, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
    started = datetime(2026, 12, 3, 16, 50, tzinfo=timezone.utc)
    assert shadow_deadline(dag, started) == expected
    assert shadow_deadline(dag, started, hours=2) == started + timedelta(hours=2)


class _Task:
    def __init__(self, dag):
        self.dag = dag


def runtime_ti(dag_id: str, tags: list[str], task_id: str = "work", try_number: int = 1):
    """A task instance as the Task SDK hands it to a listener on the worker (its class name is what the
    listener checks; its task and DAG what it reads)."""
    from airflow.sdk import DAG

    dag = DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=tags)
    ti_class = type("RuntimeTaskInstance", (), {})
    ti = ti_class()
    ti.dag_id, ti.run_id, ti.task_id = dag_id, "manual__1", task_id
    ti.map_index, ti.try_number = -1, try_number
    ti.task = _Task(dag)
    return ti


def ledger_rows(records_db: str):
    from sqlalchemy import select

    from carbon_aware.records import engine_for, tables

    with engine_for(records_db).connect() as connection:
        return connection.execute(select(tables.ledger_tasks)).all()


def recorded(records_db: str, count: int, timeout: float = 60):
    """The ledger's rows once ``count`` tries' meters have written their end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = ledger_rows(records_db)
        if len([r for r in rows if r.ended_at is not None]) >= count:
            return rows
        time.sleep(0.2)
    raise TimeoutError(f"{count} ended tries: {ledger_rows(records_db)}")


def test_a_tagged_task_is_measured_and_priced_and_an_untagged_one_is_not(ledger_settings, records_db,
                                                                          tmp_path, monkeypatch):
    from carbon_aware.ledger import book, listener

    monkeypatch.setenv("CARBON_DATA_DIR", str(CARBON_DIR.parent))
    ledger_settings(ledger_reading_seconds="0.5", ledger_providers=json.dumps(TRACE_SPEC))
    tagged, plain = runtime_ti("nightly", ["carbon-ledger"]), runtime_ti("plain", [])
    started = time.time()
    for ti in (tagged, plain):
        listener.on_task_instance_running(previous_state=None, task_instance=ti)
    end = time.monotonic() + 8
    while time.monotonic() < end:  # the task's own work, while the meter reads
        sum(i * i for i in range(10_000))
    for ti in (tagged, plain):
        listener.on_task_instance_success(previous_state=None, task_instance=ti)
    assert time.time() - started < 8.5  # the hooks return at once

    rows = recorded(records_db, 1)
    assert [(r.dag_id, r.task_id, r.state) for r in rows] == [("nightly", "work", "success")]
    assert rows[0].started_at == pytest.approx(started, abs=0.5) and rows[0].energy_error is None
    entry = book.ledger().entries[0]
    assert entry.energy_kwh > 0 and entry.measured_seconds > 1
    late = entry.intervals[0].start.timestamp() - rows[0].started_at  # the meter's start-up, said as such
    if late > 1:
        shown = re.search(r"measured from ([0-9.]+) s after it started", entry.energy_note).group(1)
        assert float(shown) == pytest.approx(late, abs=0.06)
    else:
        assert entry.energy_note is None
    grams = sum(i.kwh * i.g_per_kwh for i in entry.intervals)
    assert math.isclose(grams, entry.emissions_g, rel_tol=1e-12)
    assert all(i.source.startswith(("actual:replay:", "forecast:trace:")) for i in entry.intervals)
    assert entry.shadow is not None and entry.shadow.start >= entry.intervals[0].start
    assert entry.shadow.end <= entry.shadow.deadline
    assert entry.shadow.saved_g == pytest.approx(entry.emissions_g - entry.shadow.emissions_g, rel=1e-12)
    assert book.ledger(may_read=lambda dag_id: dag_id != "nightly").entries == []


def test_a_meter_that_cannot_start_records_unknown_energy(ledger_settings, records_db, monkeypatch):
    import io

    from carbon_aware.accounting import energy
    from carbon_aware.ledger import book
    from carbon_aware.ledger.meter import MeterOrder, TaskMeter, TryKey

    ledger_settings(ledger_providers=json.dumps(TRACE_SPEC))

    def broken(self):
        raise RuntimeError("no RAPL, no NVML")
    monkeypatch.setattr(energy.EnergyMeter, "start", broken)
    now = time.time()
    order = MeterOrder(key=TryKey("nightly", "manual__1", "work", -1, 2), url=records_db, region="GB",
                       specs=TRACE_SPEC, deadline=now + 3600, reading_seconds=0.5, started_at=now,
                       worker="machine-a")
    ended = io.StringIO(json.dumps({"state": "failed", "ended_at": now + 1}) + "\n")
    TaskMeter(order, orders=ended).run()  # the meter process's own loop, here
    entry = book.ledger().entries[0]
    assert entry.energy_kwh is None and "no RAPL, no NVML" in entry.energy_note
    assert entry.state == "failed" and entry.emissions_g is None and entry.try_number == 2
    assert entry.ended_at.timestamp() == pytest.approx(now + 1)
    assert book.ledger().tasks[0].unmeasured_tries == 1


def test_a_try_whose_process_dies_is_recorded_as_killed_with_its_readings(ledger_settings, records_db):
    import io

    from carbon_aware.ledger import book
    from carbon_aware.ledger.meter import MeterOrder, TaskMeter, TryKey

    ledger_settings(ledger_providers=json.dumps(TRACE_SPEC))
    now = time.time()
    order = MeterOrder(key=TryKey("nightly", "manual__1", "work", -1, 1), url=records_db, region="GB",
                       specs=TRACE_SPEC, deadline=now + 3600, reading_seconds=0.5, started_at=now,
                       worker="machine-a")

    class DiesLater(io.StringIO):  # the task's pipe: open for 4 s, then closed without a word
        def __iter__(self):
            time.sleep(4)
            return iter(())
    TaskMeter(order, orders=DiesLater()).run()
    entry = book.ledger().entries[0]
    assert entry.state == "killed" and entry.energy_kwh > 0 and entry.ended_at is not None


def test_the_listener_never_raises_into_the_task(ledger_settings, monkeypatch, caplog):
    from carbon_aware.ledger import listener

    monkeypatch.setenv("AIRFLOW__CARBON_AWARE__LEDGER_DEADLINES", "broken")
    from carbon_aware.ledger import settings
    settings.settings.cache_clear()
    ti = runtime_ti("nightly", ["carbon-ledger"])
    listener.on_task_instance_running(previous_state=None, task_instance=ti)  # logs, does not raise
    listener.on_task_instance_success(previous_state=None, task_instance=ti)
    assert "carbon ledger" in caplog.text and "ledger_deadlines" in caplog.text
    settings.settings.cache_clear()


def test_a_run_as_one_unit_is_moved_whole_to_the_best_window_of_its_length(ledger_settings, records_db):
    """Two tries 20 s apart, the run as the unit: one shift for both, the window of the run's length
    with the lowest mean on the forecast kept when it began (checked by scanning every minute), and the
    shifted energy priced at that forecast's slots."""
    from carbon_aware.ledger.forecasts import forecast_at, keep_forecast
    from carbon_aware.ledger.models import LedgerTask, PricedInterval
    from carbon_aware.ledger.runs import run_ledgers, try_timeline

    ledger_settings(ledger_run_units="nightly", ledger_providers=json.dumps(TRACE_SPEC))
    began = datetime.now(timezone.utc).replace(microsecond=0)
    keep_forecast(records_db, "GB", TRACE_SPEC, began)
    forecast = forecast_at(records_db, "GB", began)

    def task(task_id: str, offset_s: int) -> LedgerTask:
        start = began + timedelta(seconds=offset_s)
        value = next(p.value for p in forecast.points if p.start <= start < p.end)
        intervals = [PricedInterval(start=start + timedelta(seconds=5 * k),
                                    end=start + timedelta(seconds=5 * k + 5),
                                    kwh=1e-5, g_per_kwh=value, source="forecast:trace") for k in range(2)]
        return LedgerTask(dag_id="nightly", run_id="r1", task_id=task_id, try_number=1, worker="w",
                          region="GB", started_at=start, ended_at=start + timedelta(seconds=10),
                          deadline=began + timedelta(hours=12), state="success", energy_kwh=2e-5,
                          emissions_g=2e-5 * value, intervals=intervals)
    tries = [task("extract", 0), task("load", 20)]
    (run,) = run_ledgers(tries + [task("other", 0).model_copy(update={"dag_id": "not_a_unit"})],
                         records_db, began)
    assert run.tries == 2 and run.energy_kwh == pytest.approx(4e-5)
    assert (run.ended_at - run.started_at).total_seconds() == 30
    shadow = run.shadow
    assert shadow is not None, run.shadow_note
    assert (shadow.end - shadow.start).total_seconds() == pytest.approx(30)

    def value_at(moment):
        return next(p.value for p in forecast.points if p.start <= moment < p.end)

    def mean_at(start):
        return sum(value_at(start + timedelta(seconds=s)) for s in range(0, 30, 3)) / 10
    minutes = int((began + timedelta(hours=12) - began).total_seconds()) // 60 - 1
    best = min(mean_at(began + timedelta(minutes=m)) for m in range(minutes))
    assert mean_at(shadow.start) <= best + 1e-9
    shift = shadow.start - run.started_at
    moved = sum(i.kwh * value_at(i.start + shift) for t in tries for i in t.intervals)
    assert shadow.emissions_g == pytest.approx(moved, rel=1e-9) and shadow.priced_on == "forecast"
    assert shadow.saved_g == pytest.approx(run.emissions_g - moved, rel=1e-9)
    assert try_timeline(tries[0])[-1][1] == pytest.approx(2e-5)
