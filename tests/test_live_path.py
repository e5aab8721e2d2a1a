"""The live path: the history forecaster fed only what a live endpoint serves (Electricity Maps' free
tier: the last 24 h of actuals), through the grid store, over 30 simulated days, against the same
forecaster fed the whole trace. A real local HTTP server stands in for the API."""
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from carbon_aware.evaluation import _curve
from carbon_aware.grid.forecaster import HistoryModel
from carbon_aware.planning.planner import Curve, best_start, plan_window
from carbon_aware.grid.clients import fetch_forecast
from carbon_aware.grid.store import GridStore
from carbon_aware.grid.traces import load_trace
from tests.fake_provider_server import FakeProviderServer, Reply

DAYS, RUNS_PER_DAY, JOB_H, HORIZON_H = 30, 4, 4.0, 24


def history_rows(trace, now: float) -> list[dict]:
    """What /v3/carbon-intensity/history answers at ``now``: the 24 hours before it."""
    first = trace.index(now - 24 * 3600)
    return [{"zone": "DE", "carbonIntensity": float(trace.actual[i]), "isEstimated": False,
             "datetime": datetime.fromtimestamp(trace.start + i * 3600, tz=timezone.utc).isoformat()}
            for i in range(first, first + 24)]


def pooled_share(chosen: list[float], run_now: list[float], oracle: list[float]) -> float:
    return (np.mean(run_now) - np.mean(chosen)) / (np.mean(run_now) - np.mean(oracle))


@pytest.mark.integration
def test_thirty_days_of_live_history_plan_within_0_03_of_the_trace_fed_forecaster(carbon_dir, monkeypatch):
    path = carbon_dir / "electricitymaps_via_green-dcc" / "DE-LU_2023_hourly.csv"
    trace = load_trace(path)
    previous = load_trace(carbon_dir / "electricitymaps_via_green-dcc" / "DE-LU_2022_hourly.csv")
    full = np.concatenate([previous.actual, trace.actual])  # what the trace-fed evaluation reads
    full_start = previous.start
    actual = Curve(trace.times(), trace.times() + 3600.0, trace.actual)
    model = HistoryModel.load()
    duration = JOB_H * 3600
    first_run = datetime(2023, 3, 1, tzinfo=timezone.utc).timestamp()
    spec = {"name": "electricitymaps", "zone": "DE", "conn_id": "em_live", "history": True}
    live, fed, now_means, oracle_means = [], [], [], []
    with FakeProviderServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_EM_LIVE", json.dumps({"conn_type": "electricitymaps",
                                                               "host": server.url, "password": "t"}))
        for run in range(DAYS * RUNS_PER_DAY):
            origin = first_run + run * 24 * 3600 / RUNS_PER_DAY
            now = datetime.fromtimestamp(origin, tz=timezone.utc)
            deadline = now + timedelta(hours=HORIZON_H)
            body = {"zone": "DE", "history": history_rows(trace, origin)}
            server.script("/v3/carbon-intensity/history", Reply(body))
            forecast, reasons = fetch_forecast([spec], now, timedelta(hours=HORIZON_H), deadline)
            assert forecast.source == "history(electricitymaps)" and reasons == []
            plan = plan_window(forecast, timedelta(hours=JOB_H), now, deadline, planned_at=now)
            live.append(datetime.fromisoformat(plan.start).timestamp())
            latest = int((origin - full_start) // 3600) - 1
            values = model.predict_many(full, np.array([latest]), HORIZON_H, full_start, "DE")[0]
            latest_start = origin + (HORIZON_H - JOB_H) * 3600
            fed.append(best_start(_curve(origin, 3600.0, values), duration, origin, latest_start)[0])
            now_means.append(origin)
            oracle_means.append(best_start(actual, duration, origin, latest_start)[0])
    hours_held = GridStore().sources("DE")["electricitymaps"]
    assert hours_held == DAYS * 24 + 24 - 24 / RUNS_PER_DAY  # every hour the endpoint served, once
    realised = {name: actual.window_means(np.array(starts), duration)
                for name, starts in (("live", live), ("fed", fed), ("now", now_means),
                                     ("oracle", oracle_means))}
    live_share = pooled_share(realised["live"], realised["now"], realised["oracle"])
    fed_share = pooled_share(realised["fed"], realised["now"], realised["oracle"])
    print(f"live-path share {live_share:.3f}, trace-fed share {fed_share:.3f} over {len(live)} plans")
    assert fed_share > 0.3  # the comparison means something: the forecaster does save here
    assert abs(live_share - fed_share) <= 0.03
