"""The grid store: dedup, sources, issue times, concurrent writers, seeding from a trace file, and the
fallback chain provider -> history forecaster on the store -> mock, against a real local HTTP server."""
import json
import multiprocessing
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np

from carbon_aware.grid.forecast import IntensityPoint
from carbon_aware.planning.planner import plan_window
from carbon_aware.grid.clients import fetch_forecast
from carbon_aware.grid.store import GridStore, import_trace
from carbon_aware.grid.traces import load_trace
from tests.conftest import REPO_ROOT
from tests.fake_provider_server import FakeProviderServer, Reply
from tests.test_providers import NOW, SLOT, UK_PATH, connection, uk_rows

HOUR = timedelta(hours=1)


def hourly_points(start: datetime, hours: int, value=lambda i: 200.0 + 50 * np.sin(i / 24 * 2 * np.pi)):
    return [IntensityPoint(start + i * HOUR, HOUR, float(value(i))) for i in range(hours)]


def test_actuals_are_deduplicated_named_by_source_and_revisions_win(grid_store):
    store = GridStore()
    assert store.path == grid_store
    points = hourly_points(SLOT - 3 * HOUR, 3)
    assert store.add_actuals("DE", "electricitymaps", points) == 3
    assert store.add_actuals("DE", "electricitymaps", points) == 0  # the same slots again: nothing new
    assert store.add_actuals("DE", "trace:DE.csv", points[:1]) == 1  # another source is kept apart
    revised = [IntensityPoint(points[0].start, HOUR, 999.0)]
    assert store.add_actuals("DE", "electricitymaps", revised) == 1
    assert len(grid_store.read_text().splitlines()) == 5
    assert store.sources("DE") == {"electricitymaps": 3.0, "trace:DE.csv": 1.0}
    hourly, source = store.hourly_actuals("DE", SLOT, 4, source="electricitymaps")
    assert source == "electricitymaps" and np.isnan(hourly[0])
    np.testing.assert_allclose(hourly[1:], [999.0, points[1].value, points[2].value], atol=1e-3)


def test_forecasts_are_kept_with_their_issue_time(grid_store):
    store = GridStore()
    first = hourly_points(SLOT, 4, value=lambda i: 100.0 + i)
    store.add_forecast("GB", "uk", SLOT, first)
    store.add_forecast("GB", "uk", SLOT + HOUR, first[1:])  # the next issue covers the same slots: kept too
    issued = store.forecasts("GB", "uk")
    assert list(issued) == [int(SLOT.timestamp()), int((SLOT + HOUR).timestamp())]
    assert [r["value"] for r in issued[int(SLOT.timestamp())]] == [100.0, 101.0, 102.0, 103.0]
    assert store.records("actual") == []


def test_a_torn_last_line_is_skipped_and_later_writes_still_count(grid_store):
    store = GridStore()
    store.add_actuals("GB", "uk", hourly_points(SLOT, 2))
    with open(grid_store, "a") as handle:
        handle.write('{"kind": "actual", "region": "GB", "sou')  # a writer died mid-line
    assert len(store.records()) == 2
    store.add_actuals("GB", "uk", hourly_points(SLOT + 5 * HOUR, 1))
    assert len(store.records()) == 3


def _write_many(path: str, worker: int, barrier) -> None:
    store = GridStore(path)
    barrier.wait()
    for chunk in range(20):  # every worker writes the same shared slots and some of its own
        shared = hourly_points(SLOT + chunk * 5 * HOUR, 5)
        own = [IntensityPoint(SLOT + (1000 + worker * 100 + chunk) * HOUR, HOUR, float(worker))]
        store.add_actuals("GB", "uk", shared + own)


def test_concurrent_workers_neither_lose_nor_double_lines(grid_store):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    workers = [context.Process(target=_write_many, args=(str(grid_store), w, barrier)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    lines = [json.loads(line) for line in grid_store.read_text().splitlines()]
    keys = [(r["start"], r["value"]) for r in lines]
    assert len(keys) == len(set(keys)) == 20 * 5 + 4 * 20


def test_store_import_cli_seeds_from_a_trace_file(carbon_dir, grid_store):
    path = carbon_dir / "electricitymaps_via_green-dcc" / "DE-LU_2022_hourly.csv"
    command = [sys.executable, "-m", "carbon_aware", "store", "import", str(path)]
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "8760 new actuals for DE from trace:DE-LU_2022_hourly.csv" in run.stdout
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert again.stdout.startswith("0 new actuals")
    show = subprocess.run([sys.executable, "-m", "carbon_aware", "store", "show"], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=120)
    assert "8760.0 h" in show.stdout and "2022-12-31 23:00" in show.stdout
    trace = load_trace(str(path))
    hourly, _ = GridStore().hourly_actuals("DE", datetime(2022, 7, 1, tzinfo=timezone.utc), 48)
    start = int((datetime(2022, 6, 29, tzinfo=timezone.utc).timestamp() - trace.start) // 3600)
    np.testing.assert_allclose(hourly, trace.actual[start:start + 48], atol=1e-3)


def test_a_working_provider_records_its_forecast_and_actuals(grid_store, monkeypatch):
    with FakeProviderServer() as server:
        server.script(UK_PATH, Reply({"data": uk_rows(hours=48)}))
        actual_rows = [{"from": (SLOT - timedelta(minutes=30 * (i + 1))).strftime("%Y-%m-%dT%H:%MZ"),
                        "to": (SLOT - timedelta(minutes=30 * i)).strftime("%Y-%m-%dT%H:%MZ"),
                        "intensity": {"forecast": 150, "actual": 140 + i, "index": "moderate"}}
                       for i in range(48)][::-1]
        server.script("/intensity/2026-02-28T10:10Z/2026-03-01T10:10Z", Reply({"data": actual_rows}))
        connection(monkeypatch, "neso_default", "neso", host=server.url)
        forecast, reasons = fetch_forecast([{"name": "uk"}], NOW, timedelta(hours=24),
                                           NOW + timedelta(hours=24))
    assert forecast.source == "uk" and reasons == []
    store = GridStore()
    assert store.sources("GB") == {"uk": 24.0}
    assert list(store.forecasts("GB", "uk")) == [int(NOW.timestamp())]
    assert len(store.forecasts("GB", "uk")[int(NOW.timestamp())]) == 96


def test_provider_failure_with_a_day_in_the_store_plans_on_the_history_forecast(grid_store, monkeypatch):
    """A real server answering 503: the chain plans on the history forecaster over the stored actuals
    (a solar-like day: clean at midday), not the mock curve (clean at 03:00), and the plan says so."""
    day = lambda i: 300.0 - 200.0 * max(0.0, np.sin(((i % 24) - 6) / 12 * np.pi))  # noqa: E731
    GridStore().add_actuals("GB", "uk", hourly_points(SLOT - 36 * HOUR, 36, value=lambda i: day(i + 22)))
    with FakeProviderServer() as server:
        server.script(UK_PATH, Reply({"error": "down"}, status=503))
        specs = [{"name": "uk", "conn_id": connection(monkeypatch, "neso_down", "neso", host=server.url)}]
        forecast, reasons = fetch_forecast(specs, NOW, timedelta(hours=24), NOW + timedelta(hours=24))
    assert forecast.source == "history(store:uk)" and forecast.region == "GB"
    assert "HTTP 503" in reasons[0]
    assert reasons[1].startswith("history: planned on the history forecaster over 36 h of stored actuals "
                                 "for GB")
    plan = plan_window(forecast, timedelta(hours=2), NOW, NOW + timedelta(hours=24),
                       fallback_reasons=reasons, planned_at=NOW)
    assert plan.source == "history(store:uk)" and plan.fallback_reasons == reasons
    start_hour = datetime.fromisoformat(plan.start).hour
    assert 9 <= start_hour <= 14, plan.start  # midday, where the stored days were clean


def test_mock_only_when_the_store_holds_less_than_a_day(grid_store, monkeypatch):
    GridStore().add_actuals("GB", "uk", hourly_points(SLOT - 23 * HOUR, 23))
    GridStore().add_actuals("DE", "electricitymaps", hourly_points(SLOT - 48 * HOUR, 48))  # another region
    connection(monkeypatch, "neso_default", "neso", host="http://127.0.0.1:9")
    forecast, reasons = fetch_forecast([{"name": "uk"}], NOW, timedelta(hours=24), NOW + timedelta(hours=24))
    assert forecast.source == "mock"
    assert "cannot reach" in reasons[0]
    assert reasons[1] == "history: the grid store holds 23 h of actuals for GB in the last 29 days; need 24"
    assert reasons[2].startswith("mock:")


def test_seeded_store_serves_a_provider_without_a_token(carbon_dir, grid_store, monkeypatch):
    """Electricity Maps without a token cannot even be built; a seeded store still gives a real forecast."""
    monkeypatch.delenv("AIRFLOW_CONN_ELECTRICITYMAPS_DEFAULT", raising=False)
    import_trace(carbon_dir / "electricitymaps_via_green-dcc" / "US-CAL-CISO_2022_hourly.csv")
    now = datetime(2022, 6, 15, 8, 30, tzinfo=timezone.utc)
    specs = [{"name": "electricitymaps", "zone": "US-CAL-CISO", "conn_id": None}]
    forecast, reasons = fetch_forecast(specs, now, timedelta(hours=24), now + timedelta(hours=24))
    assert forecast.source == "history(store:trace:US-CAL-CISO_2022_hourly.csv)"
    assert "no API token" in reasons[0] and reasons[-1].startswith("history: planned")
    assert forecast.start <= now and forecast.end >= now + timedelta(hours=24)


def test_the_reports_actuals_are_kept_in_the_store(carbon_dir, grid_store):
    from carbon_aware.accounting.report import actuals_for_report

    path = carbon_dir / "neso_carbon_intensity_api" / "neso_2023_national_intensity.csv"
    anchor = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
    spec = {"name": "trace", "path": str(path), "replay_start": "2023-05-01T10:00:00+00:00"}
    plan = {"clock": {"anchor": anchor.isoformat()}, "run_now_start": anchor.isoformat(),
            "deadline": (anchor + timedelta(hours=6)).isoformat(),
            "duration_hours": 1.0, "request": {"providers": [spec]}}
    points = actuals_for_report(plan, anchor + timedelta(hours=7))
    assert len(points) == 16  # 8 h of half-hours: an hour before run-now to report time
    assert GridStore().sources("GB") == {"trace:neso_2023_national_intensity.csv": 8.0}
