"""A regions file feeds the plan and the report: make_plan on two real 2023 traces (Germany and Great
Britain), a region whose provider fails planned on its fallback, and the report's place + timing +
efficiency split, checked against figures read straight from the trace files."""
import csv
import json
from datetime import datetime, timedelta, timezone

import pytest

from carbon_aware.planning.plan import check_window, make_plan
from carbon_aware.planning.regions import REGIONS_ENV
from carbon_aware.accounting.report import actuals_for_report, build_report, format_table
from tests.conftest import CARBON_DIR

EM = CARBON_DIR / "electricitymaps_via_green-dcc"
TRACES = {"de": EM / "DE-LU_2023_hourly.csv", "gb": EM / "GB_2023_hourly.csv"}
REPLAY = "2023-03-01T06:00:00Z"
NOW = datetime(2026, 3, 1, 6, tzinfo=timezone.utc)  # replays 2023-03-01 06:00 UTC
HOURS, DEADLINE = 2, 12


def trace_values(name: str, hours: int) -> list[float]:
    """The trace's hourly direct intensities from the replayed moment on, read with the csv module."""
    with open(TRACES[name], newline="", encoding="utf-8-sig") as handle:
        rows = {r["Datetime (UTC)"]: float(r["Carbon Intensity gCO₂eq/kWh (direct)"])
                for r in csv.DictReader(handle)}
    first = datetime(2023, 3, 1, 6)
    return [rows[(first + timedelta(hours=h)).strftime("%Y-%m-%d %H:%M:%S")] for h in range(hours)]


def best_window(values: list[float], hours: int) -> tuple[int, float]:
    """(start hour, mean) of the lowest-mean window of ``hours`` hourly slots; the earliest on ties."""
    means = [sum(values[s:s + hours]) / hours for s in range(len(values) - hours + 1)]
    return min(range(len(means)), key=lambda s: (means[s], s)), min(means)


def spec(name: str, path=None, forecast: str = "oracle") -> str:
    return (f"{{name: trace, path: '{path or TRACES[name]}', replay_start: '{REPLAY}', "
            f"forecast: {forecast}}}")


def write_regions(tmp_path, monkeypatch, *rows: str) -> None:
    path = tmp_path / "regions.yaml"
    path.write_text("regions:\n" + "".join(f"  - {row}\n" for row in rows))
    monkeypatch.setenv(REGIONS_ENV, str(path))


def region_row(name: str, extra: str = "", path=None, forecast: str = "oracle") -> str:
    return f"{{name: {name}, queue: training-{name}, providers: [{spec(name, path, forecast)}]{extra}}}"


def params(**extra) -> dict:
    return {"providers": [{"name": "mock"}], "job_duration_hours": HOURS, "deadline_hours": DEADLINE,
            "time_compression": 1.0, **extra}


@pytest.fixture
def de_home_plan(tmp_path, monkeypatch) -> dict:
    write_regions(tmp_path, monkeypatch, region_row("de"), region_row("gb"))
    return make_plan(params(), "regions", now=NOW, trainer_configs=False)


def test_make_plan_chooses_the_region_with_lower_emissions_and_keeps_every_region(de_home_plan):
    plan = de_home_plan
    truth = {name: trace_values(name, DEADLINE) for name in TRACES}
    best = {name: best_window(values, HOURS) for name, values in truth.items()}
    expected = min(best, key=lambda name: best[name][1])
    assert expected == "gb"  # Great Britain's grid ran far cleaner than Germany's that day
    assert (plan["region"], plan["queue"], plan["home_region"]) == ("gb", "training-gb", "de")
    assert plan["ranking"] == sorted(best, key=lambda name: best[name][1])
    for row in plan["regions"]:
        start, mean = best[row["name"]]
        assert row["mean_intensity"] == pytest.approx(mean)
        assert row["start"] == (NOW + timedelta(hours=start)).isoformat()
        assert row["run_now_mean_intensity"] == pytest.approx(sum(truth[row["name"]][:HOURS]) / HOURS)
        assert row["fallback_reasons"] == [] and row["error"] is None
        assert row["source"] == f"trace:{TRACES[row['name']].name}:oracle"
    # the plan is Great Britain's window; its run-now counterfactual is Germany's, started at once
    assert plan["start"] == (NOW + timedelta(hours=best["gb"][0])).isoformat()
    assert plan["run_now_start"] == NOW.isoformat() and plan["run_now_region"] == "de"
    assert plan["run_now_mean_intensity"] == pytest.approx(sum(truth["de"][:HOURS]) / HOURS)
    # the plan names each trace by its place in the data folder: every worker reads it from its own
    assert plan["providers"][0]["path"] == str(TRACES["gb"].relative_to(CARBON_DIR.parent))
    assert plan["home_providers"][0]["path"] == str(TRACES["de"].relative_to(CARBON_DIR.parent))
    curves = {"curve": "gb", "home_curve": "de"}
    for key, name in curves.items():
        values = {p["start"]: p["g_per_kwh"] for p in plan[key]}
        assert [values[(NOW + timedelta(hours=h)).isoformat()] for h in range(DEADLINE)] == truth[name]
    assert "region gb (queue training-gb; run-now counterfactual: home region de" in plan["summary"]
    assert "* gb" in plan["summary"] and "  de" in plan["summary"]
    json.dumps(plan)  # it travels through XCom


def test_a_region_whose_provider_fails_is_planned_on_its_fallback_with_the_reason(tmp_path, monkeypatch):
    # "gone": its trace ends before the replayed moment, so its provider fails when planning
    write_regions(tmp_path, monkeypatch, region_row("de"), region_row("gb"),
                  region_row("gone", path=EM / "US-NY-NYIS_2021_hourly.csv"))
    plan = make_plan(params(), "regions", now=NOW, trainer_configs=False)
    de, gb, gone = plan["regions"]
    assert de["fallback_reasons"] == [] and gb["fallback_reasons"] == []
    assert gone["error"] is None and gone["source"] == "mock" and gone["mean_intensity"] > 0
    assert gone["fallback_reasons"][0].startswith("trace: 2023-03-01 06:00 UTC is outside")
    assert "US-NY-NYIS_2021_hourly.csv" in gone["fallback_reasons"][0]
    assert gone["fallback_reasons"][-1].startswith("mock:")
    assert sorted(plan["ranking"]) == ["de", "gb", "gone"]
    assert "fallbacks: ['trace: 2023-03-01 06:00 UTC is outside" in plan["summary"]


def test_without_a_regions_file_the_plan_has_no_region_keys(monkeypatch):
    monkeypatch.delenv(REGIONS_ENV, raising=False)
    plan = make_plan(params(providers=[{"name": "trace", "path": str(TRACES["gb"]), "replay_start": REPLAY,
                                        "forecast": "oracle"}]), "single", now=NOW, trainer_configs=False)
    assert not {"regions", "ranking", "home_region", "home_curve", "providers", "queue"} & set(plan)
    assert plan["region"] == "GB" and "region gb" not in plan["summary"]


def test_an_interruptible_job_is_planned_across_regions(tmp_path, monkeypatch):
    write_regions(tmp_path, monkeypatch, region_row("de"), region_row("gb"))
    plan = make_plan(params(interruptible=True, min_segment_minutes=60, resume_cost_minutes=10), "int",
                     now=NOW, trainer_configs=False)
    assert plan["interruptible"] and plan["region"] == "gb"
    for row in plan["regions"]:
        assert row["segments"] >= 1
        # running time counts the resume overhead: the index is never below energy x mean
        least = row["expected_relative_energy"] * row["mean_intensity"]
        assert row["expected_emissions_index"] >= least - 1e-9


def test_a_replan_stays_in_the_chosen_region(de_home_plan):
    plan = {**de_home_plan, "request": {**de_home_plan["request"], "replan_tolerance_pct": 0}}
    # the grid runs far above "the forecast"
    plan["curve"] = [{**p, "g_per_kwh": 1.0} for p in plan["curve"]]
    grid_now = NOW + timedelta(hours=1)
    updated, check = check_window(plan, grid_now)
    assert check["decision"].startswith("re-planned") and check["current_source"] == "trace"
    assert check["current_g_per_kwh"] == pytest.approx(trace_values("gb", 1)[0])  # Britain's last hour
    assert updated["source"] == "trace:GB_2023_hourly.csv:oracle" and updated["region"] == "gb"


# --- the report ----------------------------------------------------------------------------------

def summary(start: datetime, kwh: float, hours: float = HOURS) -> dict:
    """A run drawing ``kwh`` evenly over ``hours`` from ``start`` (readings every half hour)."""
    steps = int(hours * 2)
    timeline = [{"time": (start + timedelta(minutes=30 * k)).isoformat(), "kwh": kwh * k / steps}
                for k in range(steps + 1)]
    return {"run_name": "r", "device": {"type": "cpu"}, "precision": "fp32", "effective_batch_size": 64,
            "wall_time_seconds": hours * 3600, "energy": {"energy_kwh": kwh}, "energy_timeline": timeline,
            "final_test_accuracy_pct": 98.0, "peak_memory_mb": 500.0, "peak_memory_kind": "cpu_peak_rss",
            "started_at": start.isoformat(), "finished_at": (start + timedelta(hours=hours)).isoformat()}


def report_for(plan: dict, *, baseline_kwh: float | None = 2.0, home_actual=None) -> dict:
    start = datetime.fromisoformat(plan["start"])
    baseline = None if baseline_kwh is None else {
        "kind": "measured", "key": "k", "dag_run_id": "r", "measured_at": NOW.isoformat(),
        "summary": summary(NOW, baseline_kwh)}
    return build_report(dag_run_id="regions", plan=plan, wait={"woke_at_grid": start.isoformat()},
                        baseline=baseline, optimized=summary(start, 1.0), actual=[],
                        home_actual=home_actual, report_time=start + timedelta(hours=HOURS))


def adds_up(report: dict) -> None:
    c, terms = report["carbon_savings"], [report[k]["saving_kg"] for k in ("place", "timing", "efficiency")]
    total = sum(t for t in terms if t is not None)
    assert total == pytest.approx(c["reduction_kg"], rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("baseline_kwh", [2.0, None])
def test_the_report_splits_the_saving_into_place_timing_and_efficiency(de_home_plan, baseline_kwh):
    report = report_for(de_home_plan, baseline_kwh=baseline_kwh)
    de, gb = trace_values("de", DEADLINE), trace_values("gb", DEADLINE)
    de_now, gb_now = sum(de[:HOURS]) / HOURS, sum(gb[:HOURS]) / HOURS
    _start, gb_best = best_window(gb, HOURS)
    place, t, e, c = report["place"], report["timing"], report["efficiency"], report["carbon_savings"]
    # 1 kWh drawn evenly over 2 h: at run-now in Germany, at run-now in Britain, in Britain's window
    assert place["saving_kg"] == pytest.approx((de_now - gb_now) / 1000)
    assert t["saving_kg"] == pytest.approx((gb_now - gb_best) / 1000)
    assert (place["home_region"], place["chosen_region"]) == ("de", "gb")
    assert place["home_run_now_intensity"] == pytest.approx(de_now)
    assert place["chosen_run_now_intensity"] == pytest.approx(gb_now)
    assert c["optimized_emissions_kg"] == pytest.approx(gb_best / 1000)
    if baseline_kwh is None:
        assert e["saving_kg"] is None and c["baseline_emissions_kg"] == pytest.approx(de_now / 1000)
    else:  # the baseline config's 2 kWh started at once at home
        assert e["saving_kg"] == pytest.approx((2.0 - 1.0) * de_now / 1000)
        assert c["baseline_emissions_kg"] == pytest.approx(2.0 * de_now / 1000)
    adds_up(report)
    assert [r["name"] for r in report["regions"]] == ["de", "gb"]
    table = format_table(report)
    assert "= place " in table and "(gb vs de at run-now) + timing" in table
    assert "baseline (run now in de)" in table and "* gb" in table
    json.dumps(report)


def test_home_actuals_price_the_counterfactual(de_home_plan):
    """The report fetches each region's actuals from its own providers; the home ones price run-now."""
    grid_now = NOW + timedelta(hours=DEADLINE)
    chosen = actuals_for_report(de_home_plan, grid_now)
    home = actuals_for_report(de_home_plan, grid_now, home=True)
    at = {p.start: p.value for p in home}
    assert [at[NOW + timedelta(hours=h)] for h in range(4)] == trace_values("de", 4)
    assert [p.value for p in chosen if p.start == NOW] == trace_values("gb", 1)
    doubled = [type(p)(p.start, p.duration, 2 * p.value) for p in home]  # a home grid twice as dirty
    report = report_for(de_home_plan, home_actual=doubled)
    de_now = sum(trace_values("de", HOURS)) / HOURS
    assert report["place"]["home_run_now_intensity"] == pytest.approx(2 * de_now)
    assert report["intensities"]["optimized_at_run_now_home"]["intensity_source"] == "actual"
    adds_up(report)


def test_place_is_zero_when_home_wins_and_the_report_is_then_the_single_region_one(tmp_path, monkeypatch):
    # Britain at 3x the power: its index (3 x ~181) loses to Germany's best window (~316)
    write_regions(tmp_path, monkeypatch, region_row("de"), region_row("gb", extra=", power: 3"))
    plan = make_plan(params(), "home", now=NOW, trainer_configs=False)
    assert plan["region"] == "de" and plan["ranking"] == ["de", "gb"]
    report = report_for(plan)
    assert report["place"]["saving_kg"] == 0
    adds_up(report)
    single = {k: v for k, v in plan.items()
              if k not in ("home_region", "home_curve", "home_providers", "regions", "ranking", "providers")}
    alone = report_for(single)
    assert alone["place"] is None and alone["regions"] is None
    for key in ("timing", "efficiency", "carbon_savings"):
        assert report[key] == alone[key]
    assert "place" not in format_table(alone).split("saving:")[1].splitlines()[0]


# --- the whole DAG -------------------------------------------------------------------------------

@pytest.mark.integration
def test_dags_test_with_a_regions_file_reports_place_timing_and_efficiency(airflow_db, tmp_path):
    """The real DAG through `airflow dags test`: planned across Germany (home) and Britain on their
    history forecasts, both configs trained, the report's three terms adding up to the saving. The
    tasks still run on the one default queue (routing to the region's queue is not wired yet)."""
    from carbon_aware.outputs import run_dir_for
    from carbon_aware.records.reports import report_of
    from tests.test_dag import _dags_test, trace_params

    path = tmp_path / "regions.yaml"
    rows = (region_row("de", forecast="history"), region_row("gb", forecast="history"))
    path.write_text("regions:\n" + "".join(f"  - {row}\n" for row in rows))
    out = _dags_test({**airflow_db, REGIONS_ENV: str(path)}, trace_params(baseline="every_run"))
    log = out.stdout + out.stderr
    assert out.returncode == 0 and "state=success" in log, log[-4000:]
    run_id = log.split("DagRun Finished:")[1].split("run_id=")[1].split(",")[0]
    report = report_of("carbon_training", run_id)
    plan = json.loads((run_dir_for(run_id, "carbon_training") / "plan.json").read_text())
    assert [r["name"] for r in plan["regions"]] == ["de", "gb"] and plan["home_region"] == "de"
    assert all(r["source"].endswith(":history") and r["fallback_reasons"] == [] for r in plan["regions"])
    assert plan["queue"] == f"training-{plan['region']}"
    place = report["place"]
    assert (place["home_region"], place["chosen_region"]) == ("de", plan["region"])
    assert report["regions"] == plan["regions"] and report["baseline_kind"] == "measured"
    assert None not in (place["saving_kg"], report["timing"]["saving_kg"], report["efficiency"]["saving_kg"])
    adds_up(report)
    home = report["intensities"]["optimized_at_run_now_home"]
    assert home["intensity_source"] == "actual"  # the home trace's actuals, fetched from its own provider
    assert "= place " in log and f"region {plan['region']} (queue training-{plan['region']}" in log
