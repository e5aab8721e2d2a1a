"""Interruptible jobs: the segment DP against brute force, its constraints, plans and the evaluation CLI."""
import itertools
import json
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from carbon_aware.grid.forecast import Forecast, IntensityPoint
from carbon_aware.planning.params import ParamsError, validate_params
from carbon_aware.planning.planner import (Curve, PlanningError, best_segments, best_start, plan_segments,
                                  plan_window, segment_grid, segments_cost, unit_costs)
from tests.conftest import REPO_ROOT

T0 = datetime(2026, 5, 1, tzinfo=timezone.utc)
H = 3600.0


def hourly(values, step=H, start=0.0):
    starts = start + step * np.arange(len(values))
    return Curve(starts, starts + step, np.asarray(values, dtype=float))


def forecast(values, minutes=60):
    step = timedelta(minutes=minutes)
    points = [IntensityPoint(T0 + i * step, step, float(v)) for i, v in enumerate(values)]
    return Forecast(points, source="test")


def work_of(segments, resume_s):
    """Each segment's work: its length, less the resume overhead for every segment after the first."""
    return [(b - a) - (resume_s if i else 0.0) for i, (a, b) in enumerate(segments)]


def brute_force(costs, work, minimum, resume):
    """The cheapest choice of units over every subset: runs of chosen units are segments; the first does
    its length in work, later ones their length less the resume units; each does >= minimum."""
    best = np.inf
    for chosen in itertools.product([0, 1], repeat=len(costs)):
        runs = [len(list(group)) for bit, group in itertools.groupby(chosen) if bit]
        done = [n - (resume if i else 0) for i, n in enumerate(runs)]
        if runs and sum(done) == work and min(done) >= minimum:
            best = min(best, sum(c for c, bit in zip(costs, chosen) if bit))
    return best


@pytest.mark.parametrize("seed", range(30))
def test_equals_brute_force_on_small_random_curves(seed):
    rng = random.Random(seed)
    values = [rng.choice([rng.uniform(50, 500), 100.0]) for _ in range(rng.randint(5, 7))]
    curve = hourly(values)
    earliest = rng.choice([0.0, 0.5 * H])  # half-way into the first slot: half a slot of it is left
    latest_end = curve.ends[-1] - rng.choice([0.0, 0.5 * H, H])
    duration = min(rng.choice([1, 2, 3, 4]) * H * rng.choice([0.5, 1.0]), latest_end - earliest)
    minimum, resume = rng.choice([0.5, 1, 2]) * H, rng.choice([0.0, 0.5 * H, H])
    grid = segment_grid(np.concatenate([curve.starts, curve.ends]), duration, earliest, latest_end,
                        min_segment_s=minimum, resume_cost_s=resume)
    costs = unit_costs(curve, grid.edges())
    assert grid.units <= 14 and grid.step in (1800.0, 3600.0)
    brute = brute_force(list(costs), grid.work, grid.min_units, grid.resume_units)
    segments = best_segments(curve, duration, earliest, latest_end, min_segment_s=minimum,
                             resume_cost_s=resume)
    cost, covered = segments_cost(curve, segments)
    assert cost == pytest.approx(brute, rel=1e-12)
    assert sum(work_of(segments, resume)) == pytest.approx(duration)
    assert min(work_of(segments, resume)) >= min(minimum, duration) - 1e-6
    assert earliest <= segments[0][0] and segments[-1][1] <= latest_end
    assert all(a < b for a, b in segments) and all(b < c for (_, b), (c, _) in zip(segments, segments[1:]))


@pytest.mark.parametrize("seed", range(10))
def test_never_worse_than_the_best_contiguous_window(seed):
    rng = np.random.default_rng(seed)
    offset = [0.0, 30.0][seed % 2]  # slots off whole minutes: the grid may miss the best window
    curve = hourly(rng.uniform(50, 500, 48), start=offset)
    earliest, duration = offset + rng.integers(0, 120) * 60.0, float(rng.integers(2, 30)) * 1800
    latest_end = curve.ends[-1]
    segments = best_segments(curve, duration, earliest, latest_end, min_segment_s=H, resume_cost_s=600)
    _, mean = best_start(curve, duration, earliest, latest_end - duration)
    cost, _ = segments_cost(curve, segments)
    assert cost <= mean * duration * (1 + 1e-12)
    assert sum(work_of(segments, 600)) >= duration - 1e-6


def test_min_segment_is_respected_even_when_single_slots_are_cheapest():
    curve = hourly([10, 500] * 12)  # alternating clean and dirty hours
    for minimum in (1, 2, 3):
        segments = best_segments(curve, 6 * H, 0, 24 * H, min_segment_s=minimum * H, resume_cost_s=0)
        assert all(b - a >= minimum * H for a, b in segments)
        assert sum(b - a for a, b in segments) == 6 * H
    assert len(best_segments(curve, 6 * H, 0, 24 * H, min_segment_s=H, resume_cost_s=0)) == 6


def test_a_growing_resume_cost_means_fewer_segments():
    curve = hourly([10, 400, 400, 20, 400, 400, 30, 400, 400, 40, 400, 400])
    counts = [len(best_segments(curve, 4 * H, 0, 12 * H, min_segment_s=H, resume_cost_s=minutes * 60))
              for minutes in (0, 30, 60, 120, 600)]
    assert counts == sorted(counts, reverse=True) and counts[0] == 4 and counts[-1] == 1
    # the overhead runs where each later segment restarts (the dirty half hour before a clean hour)
    segments = best_segments(curve, 4 * H, 0, 12 * H, min_segment_s=H, resume_cost_s=30 * 60)
    assert segments == [(0, H), (2.5 * H, 4 * H), (5.5 * H, 7 * H), (8.5 * H, 10 * H)]
    assert segments_cost(curve, segments)[0] == pytest.approx((10 + 20 + 30 + 40) * H + 3 * 1800 * 400)


def test_earliest_and_deadline_are_respected():
    curve = hourly([5] * 4 + [300] * 10 + [5] * 4)  # the clean hours lie before now and after the deadline
    segments = best_segments(curve, 3 * H, 4 * H + 600, 14 * H, min_segment_s=H, resume_cost_s=0)
    assert segments[0][0] >= 4 * H + 600 and segments[-1][1] <= 14 * H
    # a partial slot at earliest: 10:10 on a 10:00 slot leaves 50 minutes of it (grid of 10 minutes)
    curve = hourly([300, 10, 300, 300, 10, 300])
    segments = best_segments(curve, 110 * 60, H + 600, 6 * H, min_segment_s=50 * 60, resume_cost_s=0)
    assert segments[0] == (H + 600, 2 * H) and segments[1][0] == 4 * H
    assert sum(b - a for a, b in segments) == 110 * 60


def test_a_job_filling_the_whole_horizon_runs_in_one_piece():
    curve = hourly([300, 10, 300, 10, 300, 10])
    assert best_segments(curve, 6 * H, 0, 6 * H, min_segment_s=H, resume_cost_s=0) == [(0.0, 6 * H)]


def test_clear_errors_when_the_job_cannot_fit():
    curve = hourly([100] * 6)
    with pytest.raises(PlanningError, match="does not fit"):
        best_segments(curve, 7 * H, 0, 6 * H, min_segment_s=H, resume_cost_s=0)
    with pytest.raises(PlanningError, match="min_segment must be positive"):
        best_segments(curve, 2 * H, 0, 6 * H, min_segment_s=0, resume_cost_s=0)
    # a hole in the forecast leaves no stretch long enough for the minimum segment
    gappy = Curve(np.array([0, 2, 4]) * H, np.array([1, 3, 5]) * H, np.array([100.0, 100.0, 100.0]))
    with pytest.raises(PlanningError, match="no set of segments"):
        best_segments(gappy, 2 * H, 0, 5 * H, min_segment_s=2 * H, resume_cost_s=0)
    # resuming costs more than the pauses leave room for
    with pytest.raises(PlanningError, match="no set of segments"):
        best_segments(gappy, 3 * H, 0, 5 * H, min_segment_s=H, resume_cost_s=H)
    assert len(best_segments(gappy, 3 * H, 0, 5 * H, min_segment_s=H, resume_cost_s=0)) == 3


def test_plan_segments_reports_segments_means_and_the_saving():
    fc = forecast([500, 100, 500, 500, 100, 100, 500, 90, 500, 500])
    plan = plan_segments(fc, timedelta(hours=3), T0, T0 + timedelta(hours=10),
                         min_segment=timedelta(hours=1), resume_cost=timedelta(minutes=6))
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["interruptible"] is True and len(data["segments"]) == 2
    first, second = data["segments"]
    assert (first["start"], first["end"]) == ((T0 + timedelta(hours=4)).isoformat(),
                                              (T0 + timedelta(hours=6)).isoformat())
    assert (second["start"], second["end"]) == ((T0 + timedelta(minutes=414)).isoformat(),
                                                (T0 + timedelta(hours=8)).isoformat())
    assert second["mean_intensity"] == pytest.approx((6 * 500 + 60 * 90) / 66)
    assert data["start"] == first["start"] and data["end"] == second["end"]
    emissions = 120 * 100 + 6 * 500 + 60 * 90
    assert data["mean_intensity"] == pytest.approx(emissions / 186)
    assert data["run_now_mean_intensity"] == pytest.approx((500 + 100 + 500) / 3)
    assert data["expected_saving_pct"] == pytest.approx(100 * (1 - emissions / (180 * 1100 / 3)))
    assert "2 segments" in plan.summary_line() and "1 resume at 6 min" in plan.reason
    same = plan_window(fc, timedelta(hours=3), T0, T0 + timedelta(hours=10), interruptible=True,
                       min_segment=timedelta(hours=1), resume_cost=timedelta(minutes=6))
    assert same.to_dict()["segments"] == data["segments"]


def test_a_contiguous_plan_carries_its_window_as_one_segment():
    plan = plan_window(forecast([400, 100, 100, 400]), timedelta(hours=2), T0, T0 + timedelta(hours=4))
    assert plan.interruptible is False
    assert plan.segments == [{"start": plan.start, "end": plan.end, "mean_intensity": plan.mean_intensity}]
    with pytest.raises(PlanningError, match="window mode"):
        plan_window(forecast([400] * 4), timedelta(hours=1), T0, T0 + timedelta(hours=4), mode="threshold",
                    threshold=300, interruptible=True)


def test_interruptible_params_are_validated_naming_the_field():
    params = validate_params({"interruptible": True, "min_segment_minutes": 45})
    assert params.interruptible and params.min_segment_minutes == 45 and params.resume_cost_minutes == 5
    with pytest.raises(ParamsError) as error:
        validate_params({"interruptible": "maybe", "min_segment_minutes": 0, "resume_cost_minutes": -1})
    text = str(error.value)
    assert "param interruptible:" in text
    assert "param min_segment_minutes: Input should be greater than 0" in text
    assert "param resume_cost_minutes: Input should be greater than or equal to 0" in text


@pytest.mark.integration
def test_evaluate_cli_scores_both_contiguous_and_interruptible(carbon_dir, tmp_path):
    path = carbon_dir / "electricitymaps_via_green-dcc" / "US-CAL-CISO_2023_hourly.csv"
    command = [sys.executable, "-m", "carbon_aware.evaluation", "--trace", str(path), "--job-hours", "4",
               "--horizon-hours", "24", "--interruptible", "--min-segment-hours", "2",
               "--resume-cost-minutes", "10", "--json", str(tmp_path / "e.json")]
    out = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "interruptible vs contiguous" in out.stdout and "oracle, interruptible" in out.stdout
    record = json.loads((tmp_path / "e.json").read_text())[0]
    rows = {r["policy"]: r for r in record["results"]}
    for name in ("planner + history", "oracle"):
        assert name in rows and f"{name}, interruptible" in rows
    assert record["interruptible"] == {"min_segment_hours": 2.0, "resume_cost_minutes": 10.0,
                                       "triggers": record["triggers"]}
    # planning segments on the actuals can only do better than the best window on them
    assert rows["oracle, interruptible"]["saving_pct"] >= rows["oracle"]["saving_pct"] - 1e-9
    assert rows["oracle, interruptible"]["mean_segments"] >= 1
    bad = subprocess.run(command[:-2] + ["--min-segment-hours", "0"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--min-segment-hours: expected a positive number" in bad.stderr
