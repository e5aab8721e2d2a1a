"""The grid store in the records database: upserts, sources, issue times, reads bounded by time on the
indexes, concurrent writers and migrating processes, seeding from a trace file, only real signals kept,
and the fallback chain provider -> history forecaster on the store -> mock, against a real local HTTP
server."""
import multiprocessing
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import event, select, text

from carbon_aware.grid.forecast import IntensityPoint
from carbon_aware.planning.planner import plan_window
from carbon_aware.grid.clients import build_provider, fetch_forecast
from carbon_aware.grid.store import GridStore, StoreError, import_trace
from carbon_aware.grid.traces import load_trace
from carbon_aware.records import engine_for
from carbon_aware.records.migrations import HEAD, MIGRATIONS, upgrade
from carbon_aware.records.tables import schema_version
from tests.conftest import REPO_ROOT
from tests.fake_provider_server import FakeProviderServer, Reply
from tests.test_providers import NOW, SLOT, UK_PATH, connection, uk_rows

HOUR = timedelta(hours=1)
NESO_2023 = "neso_carbon_intensity_api/neso_2023_national_intensity.csv"


def hourly_points(start: datetime, hours: int, value=lambda i: 200.0 + 50 * np.sin(i / 24 * 2 * np.pi)):
    return [IntensityPoint(start + i * HOUR, HOUR, float(value(i))) for i in range(hours)]


def test_actuals_are_deduplicated_named_by_source_and_revisions_replace(records_db):
    store = GridStore()
    assert store.url == records_db
    points = hourly_points(SLOT - 3 * HOUR, 3)
    assert store.add_actuals("DE", "electricitymaps", points) == 3
    assert store.add_actuals("DE", "electricitymaps", points) == 0  # the same slots again: nothing new
    assert store.add_actuals("DE", "trace:DE.csv", points[:1]) == 1  # another source is kept apart
    revised = [IntensityPoint(points[0].start, HOUR, 999.0)]
    assert store.add_actuals("DE", "electricitymaps", revised) == 1
    rows = store.records("actual", "DE", "electricitymaps")
    assert [r["value"] for r in rows] == [999.0, round(points[1].value, 3), round(points[2].value, 3)]
    assert len(store.records()) == 4  # the revision replaced its slot's row
    assert store.sources("DE") == {"electricitymaps": 3.0, "trace:DE.csv": 1.0}
    hourly, source = store.hourly_actuals("DE", SLOT, 4, source="electricitymaps")
    assert source == "electricitymaps" and np.isnan(hourly[0])
    np.testing.assert_allclose(hourly[1:], [999.0, points[1].value, points[2].value], atol=1e-3)


def test_forecasts_are_kept_with_their_issue_time(records_db):
    store = GridStore()
    first = hourly_points(SLOT, 4, value=lambda i: 100.0 + i)
    assert store.add_forecast("GB", "uk", SLOT, first) == 4
    assert store.add_forecast("GB", "uk", SLOT + HOUR, first[1:]) == 3  # the next issue: kept too
    issued = store.forecasts("GB", "uk")
    assert list(issued) == [int(SLOT.timestamp()), int((SLOT + HOUR).timestamp())]
    assert [r["value"] for r in issued[int(SLOT.timestamp())]] == [100.0, 101.0, 102.0, 103.0]
    assert issued[int(SLOT.timestamp())][0]["issued"] == int(SLOT.timestamp())
    assert list(store.forecasts("GB", since=SLOT + HOUR)) == [int((SLOT + HOUR).timestamp())]
    assert list(store.forecasts("GB", until=SLOT + HOUR)) == [int(SLOT.timestamp())]
    assert store.forecasts("GB", "electricitymaps") == {} and store.records("actual") == []


def test_reads_are_bounded_by_time(records_db):
    store = GridStore()
    store.add_actuals("GB", "uk", hourly_points(SLOT - 48 * HOUR, 48))
    store.add_actuals("GB", "uk", [IntensityPoint(SLOT - 30 * HOUR + HOUR / 2, 2 * HOUR, 1.0)])  # straddles
    window = store.records("actual", "GB", since=SLOT - 30 * HOUR, until=SLOT - 27 * HOUR)
    starts = [r["start"] - int(SLOT.timestamp()) for r in window]
    assert starts == [-30 * 3600, -30 * 3600 + 1800, -29 * 3600, -28 * 3600]
    assert store.sources("GB", since=SLOT - 10 * HOUR, until=SLOT) == {"uk": 10.0}
    hourly, _ = store.hourly_actuals("GB", SLOT - 24 * HOUR, 3)
    assert len(hourly) == 3 and not np.isnan(hourly).any()


def _statements_of(store: GridStore, read) -> list[tuple[str, tuple]]:
    seen = []
    listener = lambda conn, cursor, sql, params, context, many: seen.append((sql, params))  # noqa: E731
    event.listen(store.engine, "before_cursor_execute", listener)
    try:
        read()
    finally:
        event.remove(store.engine, "before_cursor_execute", listener)
    return [(sql, params) for sql, params in seen if sql.lstrip().upper().startswith("SELECT")]


def test_window_reads_use_the_indexes_not_a_scan_of_the_history(records_db):
    """What keeps a read flat with the store's age: SQLite's plan for each windowed read searches an
    index on (region, kind, time); it never scans the table."""
    store = GridStore()
    store.add_actuals("GB", "uk", hourly_points(SLOT - 48 * HOUR, 48))
    store.add_forecast("GB", "uk", SLOT, hourly_points(SLOT, 48))
    reads = [lambda: store.hourly_actuals("GB", SLOT, 28 * 24),
             lambda: store.forecasts("GB", since=SLOT - 28 * 24 * HOUR, until=SLOT + HOUR),
             lambda: store.forecasts("GB", "uk", since=SLOT - 28 * 24 * HOUR, until=SLOT + HOUR)]
    statements = [statement for read in reads for statement in _statements_of(store, read)]
    assert len(statements) == len(reads)
    with store.engine.connect() as connection:  # not while a read runs: SQLite's reads lock too
        for sql, params in statements:
            plan = " | ".join(row[-1] for row in connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {sql}", params))
            assert "SEARCH carbon_grid_points USING INDEX" in plan and "SCAN carbon_grid_points" not in plan
            assert "start>" in plan.replace(" ", "") or "issued>" in plan.replace(" ", ""), plan


def _write_many(url: str, worker: int, barrier, counts) -> None:
    store = GridStore(url)
    barrier.wait()
    written = 0
    for chunk in range(20):  # every worker writes the same shared slots and some of its own
        shared = hourly_points(SLOT + chunk * 5 * HOUR, 5)
        own = [IntensityPoint(SLOT + (1000 + worker * 100 + chunk) * HOUR, HOUR, float(worker))]
        written += store.add_actuals("GB", "uk", shared + own)
    counts.put(written)


def test_concurrent_workers_neither_lose_nor_double_rows(records_db):
    context = multiprocessing.get_context("spawn")
    barrier, counts = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_write_many, args=(records_db, w, barrier, counts)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    rows = GridStore(records_db).records()
    keys = [(r["start"], r["value"]) for r in rows]
    assert len(keys) == len(set(keys)) == 20 * 5 + 4 * 20
    assert sum(counts.get(timeout=5) for _ in workers) == 20 * 5 + 4 * 20  # each slot new exactly once


def test_migrations_are_idempotent(records_db):
    engine = engine_for(records_db)
    assert upgrade(engine) == [] and upgrade(engine) == []
    with engine.connect() as connection:
        versions = connection.execute(select(schema_version.c.version)).scalars().all()
    assert versions == [number for number, _, _ in MIGRATIONS] and versions[-1] == HEAD


def _start_on(url: str, worker: int, barrier, counts) -> None:
    barrier.wait()
    counts.put(GridStore(url).add_actuals("GB", f"worker{worker}", hourly_points(SLOT, 3)))


def test_two_processes_starting_on_a_fresh_sqlite_file_both_succeed(tmp_path):
    """Both migrate the same new file at once: one creates the tables, the other finds them made."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    context = multiprocessing.get_context("spawn")
    barrier, counts = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_start_on, args=(url, w, barrier, counts)) for w in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert [counts.get(timeout=5) for _ in workers] == [3, 3]
    assert GridStore(url).sources("GB") == {"worker0": 3.0, "worker1": 3.0}
    with engine_for(url).connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM carbon_schema_version")).scalar() == HEAD


def test_a_process_finding_a_new_file_mid_write_waits_to_switch_it_to_wal(tmp_path):
    """SQLite answers a switch to WAL "database is locked" at once, busy timeout or not, while another
    process holds a new file's write lock (the first of several processes starting on it)."""
    path = tmp_path / "fresh.db"
    first = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    first.execute("CREATE TABLE other (x)")
    first.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        sqlite3.connect(path, timeout=5).execute("PRAGMA journal_mode=WAL")
    threading.Timer(0.5, first.execute, ["COMMIT"]).start()
    with engine_for(f"sqlite:///{path}").connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.execute(text("SELECT max(version) FROM carbon_schema_version")).scalar() == HEAD
    first.close()


def test_the_benchmark_measures_each_age_and_leaves_a_shared_database_as_it_was(records_db, capsys):
    from carbon_aware.grid import store_bench

    GridStore().add_actuals("GB", "uk", hourly_points(SLOT, 3))
    argv = ["--url", records_db, "--ages", "2,3", "--regions", "2", "--repeats", "1", "--max-ratio", "50"]
    assert store_bench.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["2", "3", "last/first", "(ms:"]
    assert int(lines[3].split()[2]) > int(lines[2].split()[2]) > 3  # the store grew with its age
    assert GridStore().sources("GB") == {"uk": 3.0} and len(GridStore().records()) == 3  # bench rows gone


def test_an_unreachable_store_is_a_reason_not_a_crash(tmp_path, monkeypatch):
    """No database: the chain says why in its reasons (naming the database, never its password) and
    plans on the mock curve."""
    (tmp_path / "a-file").write_text("")
    sqlite = GridStore(f"sqlite:///{tmp_path / 'a-file' / 'records.db'}")
    with pytest.raises(StoreError, match="unreachable"):
        sqlite.add_actuals("GB", "uk", hourly_points(SLOT, 1))
    postgres = GridStore("postgresql+psycopg2://carbon:s3cret-pw@127.0.0.1:9/records")
    with pytest.raises(StoreError, match="unreachable") as error:
        postgres.records()
    assert "s3cret-pw" not in str(error.value) and "carbon:***@127.0.0.1:9" in str(error.value)
    with pytest.raises(StoreError, match=r"grid store mysql\+nodriver://u:\*\*\*@h/db: unreachable"):
        GridStore("mysql+nodriver://u:pw@h/db").forecasts("GB")
    connection(monkeypatch, "neso_default", "neso", host="http://127.0.0.1:9")
    forecast, reasons = fetch_forecast([{"name": "uk"}], NOW, timedelta(hours=24), NOW + timedelta(hours=24),
                                       store=postgres)
    assert forecast.source == "mock"
    assert reasons[1].startswith("history: grid store postgresql+psycopg2://carbon:***@127.0.0.1:9/records")
    assert "s3cret-pw" not in " ".join(reasons)


def test_store_import_cli_seeds_from_a_trace_file(carbon_dir):
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


def test_a_working_provider_records_its_forecast_and_actuals(monkeypatch):
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
    assert {(r["kind"], r["source"]) for r in store.records(region="GB")} == {("actual", "uk"),
                                                                            ("forecast", "uk")}
    actuals = store.records("actual", "GB")
    assert [r["value"] for r in actuals] == [140.0 + i for i in range(48)][::-1]  # what the server said


def test_provider_failure_with_a_day_in_the_store_plans_on_the_history_forecast(monkeypatch):
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


def test_mock_only_when_the_store_holds_less_than_a_day(monkeypatch):
    GridStore().add_actuals("GB", "uk", hourly_points(SLOT - 23 * HOUR, 23))
    GridStore().add_actuals("DE", "electricitymaps", hourly_points(SLOT - 48 * HOUR, 48))  # another region
    connection(monkeypatch, "neso_default", "neso", host="http://127.0.0.1:9")
    forecast, reasons = fetch_forecast([{"name": "uk"}], NOW, timedelta(hours=24), NOW + timedelta(hours=24))
    assert forecast.source == "mock"
    assert "cannot reach" in reasons[0]
    assert reasons[1] == "history: the grid store holds 23 h of actuals for GB in the last 29 days; need 24"
    assert reasons[2].startswith("mock:")


def test_seeded_store_serves_a_provider_without_a_token(carbon_dir, monkeypatch):
    """Electricity Maps without a token cannot even be built; a seeded store still gives a real forecast."""
    monkeypatch.delenv("AIRFLOW_CONN_ELECTRICITYMAPS_DEFAULT", raising=False)
    import_trace(carbon_dir / "electricitymaps_via_green-dcc" / "US-CAL-CISO_2022_hourly.csv")
    now = datetime(2022, 6, 15, 8, 30, tzinfo=timezone.utc)
    specs = [{"name": "electricitymaps", "zone": "US-CAL-CISO", "conn_id": None}]
    forecast, reasons = fetch_forecast(specs, now, timedelta(hours=24), now + timedelta(hours=24))
    assert forecast.source == "history(store:trace:US-CAL-CISO_2022_hourly.csv)"
    assert "no API token" in reasons[0] and reasons[-1].startswith("history: planned")
    assert forecast.start <= now and forecast.end >= now + timedelta(hours=24)


def test_a_replay_run_leaves_the_store_empty(carbon_dir):
    """A replayed 2023 trace carries today's times: neither the plan's recording, the history
    forecaster over it, nor the report's refetch of its actuals (which hands the store only a name)
    may store it as the region's grid data. Nor may the mock curve."""
    from carbon_aware.accounting.report import actuals_for_report

    anchor = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
    spec = {"name": "trace", "path": str(carbon_dir / NESO_2023),
            "replay_start": "2023-05-01T10:00:00+00:00"}
    forecast, reasons = fetch_forecast([spec], anchor, timedelta(hours=24), anchor + timedelta(hours=24))
    assert forecast.source == "trace:neso_2023_national_intensity.csv:file" and reasons == []
    forecast, reasons = fetch_forecast([{**spec, "forecast": "history", "history": True}], anchor,
                                       timedelta(hours=24), anchor + timedelta(hours=24))
    assert forecast.source == "history(trace)" and reasons == []
    plan = {"clock": {"anchor": anchor.isoformat()}, "run_now_start": anchor.isoformat(),
            "deadline": (anchor + timedelta(hours=6)).isoformat(),
            "duration_hours": 1.0, "request": {"providers": [spec]}}
    assert len(actuals_for_report(plan, anchor + timedelta(hours=7))) == 16  # still served to the report
    fetch_forecast([{"name": "mock", "region": "GB"}], anchor, timedelta(hours=24), anchor + HOUR)
    replay = build_provider(spec, anchor)
    assert not replay.real_signal and replay.actuals_source == "replay:neso_2023_national_intensity.csv"
    assert GridStore().add_actuals("GB", replay.actuals_source, hourly_points(anchor, 2)) == 0
    assert GridStore().add_actuals("GB", "trace:x.csv", hourly_points(anchor, 2), provider=replay) == 0
    assert GridStore().records() == []


def test_a_trace_at_its_own_times_is_a_real_signal(carbon_dir):
    """Not a replay: the 2023 values at 2023's times are what the grid did, stored under the trace."""
    now = datetime(2023, 5, 2, 10, 0, tzinfo=timezone.utc)
    spec = {"name": "trace", "path": str(carbon_dir / NESO_2023)}
    forecast, reasons = fetch_forecast([spec], now, timedelta(hours=24), now + timedelta(hours=24))
    assert reasons == [] and build_provider(spec, now).real_signal
    store = GridStore()
    assert store.sources("GB") == {"trace:neso_2023_national_intensity.csv": 24.0}
    assert list(store.forecasts("GB")) == [int(now.timestamp())]
    assert {r["source"] for r in store.records("forecast")} == {forecast.source}
