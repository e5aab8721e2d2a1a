"""The planner against brute force, the deadline, partial slots, threshold mode and the composite
objective."""
import json
import random
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from carbon_aware.grid.forecast import Forecast, ForecastError, IntensityPoint
from carbon_aware.planning.planner import PlanningError, composite_cost, plan_window
from carbon_aware.grid.clients.mock import MockProvider

T0 = datetime(2026, 5, 1, tzinfo=timezone.utc)


def curve(values, minutes=60, start=T0):
    step = timedelta(minutes=minutes)
    return Forecast([IntensityPoint(start + i * step, step, float(v)) for i, v in enumerate(values)],
                    source="test")


def exact_mean(forecast, start, duration):
    """Integrate the step function second by second (slow and obviously right)."""
    total, t, end = 0.0, start, start + duration
    for p in forecast.points:
        overlap = (min(end, p.end) - max(t, p.start)).total_seconds()
        if overlap > 0:
            total += overlap * p.value
    return total / duration.total_seconds()


@pytest.mark.parametrize("seed", range(25))
def test_equals_brute_force_on_random_curves(seed):
    rng = random.Random(seed)
    minutes = rng.choice([30, 60])
    forecast = curve([rng.uniform(50, 500) for _ in range(rng.randint(20, 60))], minutes=minutes)
    earliest = T0 + timedelta(minutes=rng.randint(0, 90))
    duration = timedelta(minutes=rng.randint(10, 300))
    deadline = min(forecast.end, earliest + duration + timedelta(minutes=rng.randint(0, 900)))
    plan = plan_window(forecast, duration, earliest, deadline)
    grid = [earliest + timedelta(minutes=m)
            for m in range(0, int((deadline - duration - earliest).total_seconds() // 60) + 1)]
    brute = min(exact_mean(forecast, s, duration) for s in grid)
    assert plan.mean_intensity <= brute + 1e-9
    assert plan.mean_intensity == pytest.approx(exact_mean(forecast, plan.start_time, duration), abs=1e-9)
    assert earliest <= plan.start_time and plan.start_time + duration <= deadline


def test_partial_slots_are_weighted_by_overlap():
    # 90 minutes starting half-way into a 100 slot: 30 min at 100 + 60 min at 400 -> 300
    forecast = curve([100, 400, 400, 400])
    plan = plan_window(forecast, timedelta(minutes=90), T0 + timedelta(minutes=30), T0 + timedelta(hours=2))
    assert plan.run_now_mean_intensity == pytest.approx(300.0)
    # the cheapest 90 min window must include the whole 100 slot: it starts at 00:00? no, now is 00:30
    assert plan.start_time == T0 + timedelta(minutes=30)


def test_best_window_can_start_mid_slot():
    # a 90-minute job: [low 60 min][high]... the best window straddles the low slot and half of a mid slot
    forecast = curve([500, 100, 200, 500, 500])
    plan = plan_window(forecast, timedelta(minutes=90), T0, T0 + timedelta(hours=5))
    assert plan.start_time == T0 + timedelta(hours=1)
    assert plan.mean_intensity == pytest.approx((60 * 100 + 30 * 200) / 90)


def test_ties_go_to_the_earliest_start():
    plan = plan_window(curve([300, 100, 100, 100, 100]), timedelta(hours=1), T0, T0 + timedelta(hours=5))
    assert plan.start_time == T0 + timedelta(hours=1)


def test_never_plans_past_the_deadline_or_before_now():
    forecast = curve([400] * 10 + [10] * 10)  # the clean hours lie after the deadline
    now = T0 + timedelta(minutes=7)
    plan = plan_window(forecast, timedelta(hours=2), now, T0 + timedelta(hours=9))
    assert plan.start_time >= now and plan.start_time + timedelta(hours=2) <= T0 + timedelta(hours=9)
    assert plan.expected_saving_pct == pytest.approx(0.0)


def test_threshold_mode_starts_in_the_first_slot_below_the_threshold():
    forecast = curve([420, 350, 290, 100, 50])
    plan = plan_window(forecast, timedelta(hours=1), T0, T0 + timedelta(hours=5), mode="threshold",
                       threshold=300)
    assert plan.start_time == T0 + timedelta(hours=2) and "first slot below 300" in plan.reason


def test_threshold_mode_falls_back_to_the_best_window_before_the_deadline():
    forecast = curve([420, 350, 330, 310, 305, 100])
    plan = plan_window(forecast, timedelta(hours=1), T0, T0 + timedelta(hours=5), mode="threshold",
                       threshold=300)
    assert plan.start_time == T0 + timedelta(hours=4)  # the 100 slot ends after the deadline
    assert "no slot below 300" in plan.reason


def test_threshold_slot_too_late_for_the_deadline_is_not_taken():
    forecast = curve([420, 420, 420, 100, 100])
    plan = plan_window(forecast, timedelta(hours=2), T0, T0 + timedelta(hours=4), mode="threshold",
                       threshold=300)
    assert plan.start_time + timedelta(hours=2) <= T0 + timedelta(hours=4)


def test_composite_objective_trades_carbon_against_price():
    intensity = curve([300, 200, 250])
    price = [IntensityPoint(p.start, p.duration, v) for p, v in zip(intensity.points, [0.10, 0.50, 0.10])]
    carbon_only = plan_window(intensity, timedelta(hours=1), T0, T0 + timedelta(hours=3))
    cheap_carbon = plan_window(intensity, timedelta(hours=1), T0, T0 + timedelta(hours=3),
                               cost_points=composite_cost(intensity.points, price,
                                                          carbon_price_per_tonne=50))
    dear_carbon = plan_window(intensity, timedelta(hours=1), T0, T0 + timedelta(hours=3),
                              cost_points=composite_cost(intensity.points, price,
                                                         carbon_price_per_tonne=10_000))
    assert carbon_only.start_time == T0 + timedelta(hours=1)
    assert cheap_carbon.start_time == T0 + timedelta(hours=2)  # 0.10 + 50e-6*250 beats 0.50 + 50e-6*200
    # 0.50 + 0.01*200 = 2.5 beats 0.10 + 0.01*250 = 2.6
    assert dear_carbon.start_time == T0 + timedelta(hours=1)
    assert cheap_carbon.mean_intensity == pytest.approx(250)


def test_gaps_are_never_planned_over():
    points = curve([300, 300, 10, 300, 300]).points
    del points[2]  # a missing hour where the value would have been lowest
    forecast = Forecast(points, source="test")
    plan = plan_window(forecast, timedelta(hours=2), T0, T0 + timedelta(hours=5))
    assert not (plan.start_time < T0 + timedelta(hours=3)
                and plan.start_time + timedelta(hours=2) > T0 + timedelta(hours=2))


def test_impossible_requests_fail_clearly():
    forecast = curve([300] * 3)
    with pytest.raises(PlanningError, match="cannot finish by the deadline"):
        plan_window(forecast, timedelta(hours=4), T0, T0 + timedelta(hours=3))
    with pytest.raises(ForecastError, match="forecast too short"):
        plan_window(forecast, timedelta(hours=4), T0, T0 + timedelta(hours=8))


def test_mock_curve_matches_the_original_pipeline_shape():
    mock = MockProvider()
    values = {h: mock.intensity(T0 + timedelta(hours=h)) for h in range(24)}
    assert min(values, key=values.get) == 3 and max(values, key=values.get) == 18
    assert values[3] == pytest.approx(200) and values[18] == pytest.approx(450)
    forecast = mock.forecast(T0 + timedelta(minutes=10), timedelta(hours=24))
    assert forecast.start == T0 and forecast.end >= T0 + timedelta(hours=24, minutes=10)
    evening = mock.forecast(T0 + timedelta(hours=12), timedelta(hours=24))
    plan = plan_window(evening, timedelta(hours=2), T0 + timedelta(hours=12), T0 + timedelta(hours=36))
    assert plan.start_time.hour in (2, 3)


def test_plan_is_json_ready_and_summarised():
    import json

    plan = plan_window(curve([412] * 12 + [188] * 12), timedelta(hours=4), T0, T0 + timedelta(hours=24))
    json.dumps(plan.to_dict())
    assert ("Now 412 g/kWh; best 4 h window starts 2026-05-01 12:00 UTC at 188 g/kWh (−54%)"
            in plan.summary_line())
    assert np.isclose(plan.expected_saving_pct, 100 * (412 - 188) / 412)


@pytest.mark.integration
def test_plan_cli_prints_the_window_and_fallbacks():
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    providers = '[{"name": "trace", ' \
                '"path": "carbon/electricitymaps_via_green-dcc/' \
                'US-CAL-CISO_2023_hourly.csv", ' \
                '"replay_start": "2023-07-01T00:00:00Z"}, {"name": "nope"}]'
    out = subprocess.run([sys.executable, "-m", "carbon_aware", "plan", "--providers", providers,
                          "--job-hours", "4", "--now", "2026-07-01T00:00:00+00:00", "--json"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    # On California's grid the cleanest 4 hours of 1 July lie around local midday (19:00 UTC), not at night.
    assert plan["source"].endswith(":history") and 16 <= datetime.fromisoformat(plan["start"]).hour <= 21
    assert plan["expected_saving_pct"] > 20


def test_a_users_plan_needs_no_demo_trainer_unless_its_configs_or_overrides_are_used(monkeypatch):
    """The provider is installed without the trainer's distribution: planning a user's job must not
    import it; naming the trainer's overrides then says what is missing (tests/test_install.py runs
    this in a virtualenv that really lacks it)."""
    from carbon_aware.planning.params import ParamsError
    from carbon_aware.planning.plan import make_plan

    for name in ("training", "training.config"):
        monkeypatch.setitem(sys.modules, name, None)  # `import training` now raises ImportError
    request = {"providers": [{"name": "mock"}], "job_duration_hours": 1, "deadline_hours": 6,
               "baseline": "off"}
    plan = make_plan(request, "no_trainer", trainer_configs=False)
    assert plan["start"] and plan["request"]["training_overrides"] == []
    with pytest.raises(ParamsError, match=r"training_overrides: overrides for the built-in trainer"):
        make_plan({**request, "training_overrides": ["training.epochs=1"]}, "no_trainer",
                  trainer_configs=False)
    with pytest.raises(ImportError):
        make_plan(request, "no_trainer", trainer_configs=True)  # the demo's own DAG does need it
