"""The report's pricing and its saving split, on hand-computed numbers (no Airflow, no training)."""
from datetime import datetime, timedelta, timezone

import pytest

from carbon_aware.grid.forecast import IntensityPoint
from carbon_aware.accounting.report import build_report, format_table, grid_timeline, price_run

T0 = datetime(2023, 3, 1, 10, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def slot(start_min: float, end_min: float, value: float) -> IntensityPoint:
    return IntensityPoint(at(start_min), at(end_min) - at(start_min), value)


def recomputed(block: dict) -> float:
    return sum(i["kwh"] * i["g_per_kwh"] for i in block["intervals"])


def test_an_interval_split_across_two_slots_is_shared_in_proportion_to_time():
    priced = price_run([(at(0), 0.0), (at(45), 3.0)], [], [slot(0, 30, 100), slot(30, 60, 200)])
    # 30 of 45 minutes at 100 g/kWh (2 kWh), 15 at 200 (1 kWh): 200 + 200 g
    assert [(i["kwh"], i["g_per_kwh"], i["source"]) for i in priced["intervals"]] == [
        (pytest.approx(2.0), 100, "forecast"), (pytest.approx(1.0), 200, "forecast")]
    assert priced["emissions_g"] == pytest.approx(400.0) and priced[
        "mean_intensity_g_per_kwh"
    ] == pytest.approx(400 / 3)
    assert recomputed(priced) == pytest.approx(priced["emissions_g"]) and priced["nearest_share"] == 0


def test_actuals_where_known_and_the_forecast_for_the_rest():
    priced = price_run([(at(0), 0.0), (at(60), 4.0)], [slot(0, 30, 120)], [slot(0, 60, 100)])
    assert priced["emissions_g"] == pytest.approx(2 * 120 + 2 * 100)
    assert priced["intensity_source"] == "actual+forecast"
    assert [i["source"] for i in priced["intervals"]] == ["actual", "forecast"]


def test_a_gap_is_priced_at_the_nearest_known_slot_and_its_share_reported():
    priced = price_run([(at(0), 0.0), (at(90), 3.0)], [], [slot(0, 30, 100), slot(60, 90, 300)])
    # 1 kWh at 100, 1 kWh in the gap at the nearest slot (both touch it: the earlier one, 100), 1 kWh at 300
    assert priced["emissions_g"] == pytest.approx(100 + 100 + 300)
    assert priced["nearest_share"] == pytest.approx(1 / 3)
    assert [i["source"] for i in priced["intervals"]] == ["forecast", "nearest", "forecast"]
    past_the_curve = price_run([(at(120), 0.0), (at(150), 1.0)], [], [slot(0, 30, 100), slot(60, 90, 300)])
    assert past_the_curve["emissions_g"] == pytest.approx(300) and past_the_curve["nearest_share"] == 1


def test_a_one_point_timeline_is_an_instant_priced_at_its_slot():
    timeline = grid_timeline({"energy_timeline": [{"time": at(15).isoformat(), "kwh": 0.5}]}, None, 1.0)
    assert timeline == [(at(15), 0.0), (at(15), 0.5)]
    priced = price_run(timeline, [], [slot(0, 30, 100), slot(30, 60, 200)])
    assert priced["emissions_g"] == pytest.approx(50.0) and len(priced["intervals"]) == 1


def _plan(curve: list[IntensityPoint], run_now: datetime, start: datetime, compression: float = 1.0) -> dict:
    return {
        "clock": {"anchor": run_now.isoformat(), "compression": compression},
        "curve": [p.to_dict() for p in curve],
        "duration_hours": 1.0,
        "run_now_start": run_now.isoformat(),
        "run_now_mean_intensity": 200.0,
        "mean_intensity": 100.0,
        "expected_saving_pct": 50.0,
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
        "deadline": (run_now + timedelta(hours=24)).isoformat(),
        "mode": "window",
        "reason": "lowest mean",
        "source": "test",
        "region": "GB",
        "fallback_reasons": [],
    }


def _summary(start: datetime, kwh: float | None, accuracy: float = 98.0) -> dict:
    timeline = [] if kwh is None else [{"time": start.isoformat(), "kwh": 0.0},
                                       {"time": (start + timedelta(minutes=30)).isoformat(), "kwh": kwh / 2},
                                       {"time": (start + timedelta(hours=1)).isoformat(), "kwh": kwh}]
    return {"run_name": "r", "device": {"type": "cpu"}, "precision": "fp32", "effective_batch_size": 64,
            "wall_time_seconds": 3600.0, "energy": None if kwh is None else {"energy_kwh": kwh},
            "energy_error": None if kwh is not None else "disabled", "energy_timeline": timeline,
            "final_test_accuracy_pct": accuracy, "peak_memory_mb": 500.0, "peak_memory_kind": "cpu_peak_rss",
            "started_at": start.isoformat(), "finished_at": (start + timedelta(hours=1)).isoformat()}


CURVE = [slot(0, 60, 200), slot(60, 240, 150), slot(240, 300, 100)]  # run-now 10:00 at 200, 14:00 at 100


def _report(baseline: dict | None, optimized_kwh: float | None, curve=CURVE, actual=()) -> dict:
    """The optimized run from 14:00 to 15:00 (its window), reported at 15:00."""
    return build_report(dag_run_id="manual__x", plan=_plan(curve, T0, at(240)),
                        wait={"woke_at_grid": at(240).isoformat()}, baseline=baseline,
                        optimized=_summary(at(240), optimized_kwh), actual=list(actual), report_time=at(300))


@pytest.mark.parametrize("kind", ["cached", "measured", "off"])
def test_saving_is_counterfactual_minus_actual_split_into_timing_and_efficiency(kind):
    # The baseline config took 2 kWh (measured last week when cached); the optimized run 1 kWh at 14:00.
    baseline = None if kind == "off" else {
        "kind": kind, "key": "k", "dag_run_id": "manual__first", "measured_at": "2023-02-20T00:00:00+00:00",
        "summary": _summary(T0 - timedelta(days=9) if kind == "cached" else T0, 2.0, accuracy=97.5)}
    report = _report(baseline, 1.0)
    t, e, c = report["timing"], report["efficiency"], report["carbon_savings"]
    assert report["baseline_kind"] == kind
    assert t["saving_kg"] == pytest.approx((200 - 100) * 1.0 / 1000)  # its own 1 kWh: run-now vs window
    assert c["optimized_emissions_kg"] == pytest.approx(0.1)
    if kind == "off":
        assert e["saving_kg"] is None and c["baseline_emissions_kg"] == pytest.approx(0.2)
        assert c["reduction_kg"] == pytest.approx(0.1) and report["baseline"]["measurement_cost_kg"] == 0
    else:
        assert e["saving_kg"] == pytest.approx((2.0 - 1.0) * 200 / 1000)
        assert c["baseline_emissions_kg"] == pytest.approx(0.4) and c["reduction_kg"] == pytest.approx(0.3)
        assert c["reduction_kg"] == pytest.approx(t["saving_kg"] + e["saving_kg"])
        assert report["baseline"]["measurement_cost_kg"] == pytest.approx(0.4 if kind == "measured" else 0.0)
        assert report["baseline"]["source_run"] == "manual__first"
        assert report["accuracy_impact"]["baseline_accuracy"] == 97.5
    for name, block in report["intensities"].items():
        if isinstance(block, dict):
            assert recomputed(block) == pytest.approx(block["emissions_g"], rel=1e-9), name
    assert f"baseline: {kind}" in format_table(report)


def test_null_energy_gives_unpriced_figures_not_an_error():
    report = _report(None, None)
    assert report["intensities"]["optimized"] is None and report["carbon_savings"]["reduction_kg"] is None
    assert "n/a" in format_table(report)


def test_after_a_replan_the_run_now_hour_is_priced_from_actuals_or_the_nearest_slot():
    replanned = [slot(120, 240, 150), slot(240, 300, 100)]  # a re-plan at 12:00 cut the run-now hour off
    with_actuals = _report(None, 1.0, curve=replanned, actual=[slot(-60, 60, 210)])
    assert with_actuals["timing"]["run_now_intensity_g_per_kwh"] == pytest.approx(210)
    assert with_actuals["intensities"]["optimized_at_run_now"]["intensity_source"] == "actual"
    without = _report(None, 1.0, curve=replanned)
    assert without["timing"]["run_now_intensity_g_per_kwh"] == pytest.approx(150)  # nearest: the 12:00 slot
    assert without["intensities"]["optimized_at_run_now"]["nearest_share"] == 1
    assert "nearest known intensity" in format_table(without)


def test_an_interrupted_run_draws_nothing_while_paused_and_its_run_now_counterfactual_has_no_pause():
    from carbon_aware.accounting.report import back_to_back, joined, timeline_pieces

    def reading(minutes, kwh, attempt):
        return {"time": at(minutes).isoformat(), "kwh": kwh, "attempt": attempt}

    # Attempt 1 ran 0-30 min (2 kWh), paused through the dirty hour, attempt 2 ran 90-120 min (2 more kWh);
    # attempt 2's start reading already held a little energy (0.1 kWh) counted before its first mark.
    summary = {"energy_timeline": [reading(0, 0.0, 1), reading(30, 2.0, 1), reading(90, 2.1, 2),
                                   reading(120, 4.0, 2)],
               "segments": [{"index": 0, "attempts": [{"attempt": 1}]},
                            {"index": 1, "attempts": [{"attempt": 2}]}]}
    curve = [slot(0, 30, 100), slot(30, 90, 500), slot(90, 120, 100)]
    pieces = timeline_pieces(summary, None, 1.0)
    assert [p[0][1] for p in pieces] == [0.0, 2.0]  # each piece starts where the one before ended
    actual = price_run(joined(pieces), [], curve)
    assert actual["emissions_g"] == pytest.approx(4.0 * 100)  # nothing priced at the dirty 500
    at_run_now = back_to_back(pieces, at(0))
    assert at_run_now[-1][0] == at(60)  # 30 + 30 minutes of running, end to end
    assert price_run(at_run_now, [], curve)["emissions_g"] == pytest.approx(2.0 * 100 + 2.0 * 500)


def test_a_plan_on_the_mock_curve_is_priced_but_claims_no_saving():
    from carbon_aware.planning.plan import no_real_signal

    plan = {**_plan(CURVE, T0, at(240)), "source": "mock",
            "fallback_reasons": ["trace: no data", "mock: the original curve (no provider answered)"]}
    report = build_report(dag_run_id="manual__mock", plan=plan, wait={"woke_at_grid": at(240).isoformat()},
                          baseline=None, optimized=_summary(at(240), 1.0), actual=[], report_time=at(300))
    assert report["no_real_signal"].startswith("no real signal: the plan used the mock curve")
    assert "every configured provider failed" in report["no_real_signal"]
    # still priced (the energy is real, the intensity the curve's), but no difference is a saving
    assert report["carbon_savings"]["optimized_emissions_kg"] == pytest.approx(0.1)
    for block, key in (("carbon_savings", "reduction_kg"), ("carbon_savings", "reduction_percentage"),
                       ("timing", "saving_kg"), ("timing", "saving_percentage"), ("efficiency", "saving_kg"),
                       ("intensities", "expected_saving_pct")):
        assert report[block][key] is None, (block, key)
    table = format_table(report)
    assert "saving: not counted: no real signal" in table and "saving: n/a" not in table
    real = _report(None, 1.0)
    assert real["no_real_signal"] is None and real["carbon_savings"]["reduction_kg"] == pytest.approx(0.1)
    # across regions: the home region's curve prices the counterfactual, so a mock home is no signal too
    regional = {"source": "trace:gb.csv:file", "home_region": "de", "fallback_reasons": [],
                "regions": [{"name": "de", "source": "mock"}, {"name": "gb", "source": "trace:gb.csv:file"}]}
    assert "the home region de used the mock curve" in no_real_signal(regional)
    assert no_real_signal({**regional, "regions": [{"source": "history(store:x)"}]}) is None


def test_a_replayed_trace_reports_its_own_time_beside_the_grid_time():
    three_years = (T0 - datetime(2020, 3, 1, 10, tzinfo=timezone.utc)).total_seconds()
    plan = {**_plan(CURVE, T0, at(240)), "replay": {"trace": "neso.csv", "offset_seconds": -three_years}}
    report = build_report(dag_run_id="manual__replay", plan=plan,
                          wait={"woke_at_grid": at(241).isoformat()}, baseline=None,
                          optimized=_summary(at(240), 1.0), actual=[], report_time=at(300))
    assert report["replay"] == {
        "trace": "neso.csv", "offset_seconds": -three_years, "run_now_start": "2020-03-01T10:00:00+00:00",
        "planned_start": "2020-03-01T14:00:00+00:00", "actual_start": "2020-03-01T14:01:00+00:00",
        "deadline": "2020-03-02T10:00:00+00:00"}
    assert report["schedule"]["planned_start"] == at(240).isoformat()  # the grid time stays as it was
    rows = format_table(report).splitlines()
    grid = next(r for r in rows if r.startswith("start (grid time, UTC)"))
    trace = next(r for r in rows if r.startswith("start (trace time, UTC)"))
    assert grid.split()[-2:] == ["2023-03-01T10:00", "2023-03-01T14:01"]
    assert trace.split()[-2:] == ["2020-03-01T10:00", "2020-03-01T14:01"]
    assert _report(None, 1.0)["replay"] is None
    assert "trace time" not in format_table(_report(None, 1.0))
