"""Real traces: every file in ../shared/data/carbon parses; the history model and the evaluation on
real data."""
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from carbon_aware.evaluation import evaluate_trace, previous_year, year_line
from carbon_aware.grid.forecast import ForecastError
from carbon_aware.grid.forecaster import HistoryModel, fit, fit_files
from carbon_aware.grid.clients.trace import TraceProvider
from carbon_aware.grid.traces import load_trace
from tests.conftest import REPO_ROOT


def test_every_shared_trace_parses(carbon_dir):
    paths = sorted(carbon_dir.rglob("*.csv"))
    assert len(paths) == 27
    for path in paths:
        trace = load_trace(path)
        valid = trace.actual[~np.isnan(trace.actual)]
        assert len(valid) > 0.99 * len(trace.actual) - 100, path.name
        assert 0 < valid.min() and valid.max() < 1000, path.name
        assert trace.step in (1800.0, 3600.0)


def test_neso_file_has_forecast_actual_and_the_known_gap(carbon_dir):
    trace = load_trace(carbon_dir / "neso_carbon_intensity_api" / "neso_2023_national_intensity.csv")
    assert trace.format == "neso" and trace.step == 1800 and trace.forecast is not None
    gap_start = trace.index(datetime(2023, 10, 20, 22, tzinfo=timezone.utc).timestamp())
    assert np.isnan(trace.actual[gap_start:gap_start + 91]).all()
    # as the data README says
    assert np.nanmean(np.abs(trace.forecast - trace.actual)) == pytest.approx(9.9, abs=0.2)


def test_electricitymaps_and_eia_formats(carbon_dir):
    em = load_trace(carbon_dir / "electricitymaps_via_green-dcc" / "DE-LU_2023_hourly.csv")
    assert (em.format, em.region, len(em.actual)) == ("electricitymaps", "DE", 8760)
    assert np.nanmean(em.actual) == pytest.approx(307.662, abs=0.01)
    lca = load_trace(carbon_dir / "electricitymaps_via_green-dcc" / "DE-LU_2023_hourly.csv", signal="lca")
    assert np.nanmean(lca.actual) == pytest.approx(366.972, abs=0.01)
    pjm = load_trace(carbon_dir / "eia930_via_sustaindc" / "PJM_NG_avgCI.csv")
    assert pjm.format == "eia930" and np.isnan(pjm.actual).sum() == 23 + 5  # empty rows and the glitch hours
    assert np.nanmin(pjm.actual) > 100


def test_unknown_csv_is_rejected(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ForecastError, match="unknown format"):
        load_trace(bad)


def test_trace_provider_replays_with_an_offset(carbon_dir):
    path = carbon_dir / "neso_carbon_intensity_api" / "neso_2023_national_intensity.csv"
    real_now = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
    provider = TraceProvider.replaying(path, real_now, datetime(2023, 3, 1, 9, tzinfo=timezone.utc))
    forecast = provider.forecast(real_now, timedelta(hours=24))
    assert forecast.start == real_now and forecast.end == real_now + timedelta(hours=24)
    trace = load_trace(path)
    assert forecast.points[0].value == trace.forecast[
        trace.index(datetime(2023, 3, 1, 9, tzinfo=timezone.utc).timestamp())]
    actuals = provider.actuals(real_now - timedelta(hours=2), real_now)
    assert len(actuals) == 4 and actuals[-1].end == real_now
    history = TraceProvider.replaying(path, real_now, datetime(2023, 3, 1, 9, tzinfo=timezone.utc),
                                      forecast="history")
    assert history.forecast(real_now, timedelta(hours=24)).source.endswith(":history")


def test_shipped_history_model_is_fitted_on_2021_2022_only(carbon_dir):
    series, names = fit_files(carbon_dir)
    assert names and all(("2021" in n or "2022" in n) for n in names)
    assert HistoryModel.load().fitted_on == names


def test_fitting_is_reproducible_and_the_model_round_trips(carbon_dir, tmp_path):
    """Two fits on the same data give the same file; a saved model predicts as it did before saving."""
    series, names = fit_files(carbon_dir)
    small = [(hourly[:24 * 120], start, region) for hourly, start, region in series[:2]]
    first, second = fit(small, names[:2]), fit(small, names[:2])
    assert first.save(tmp_path / "a.json.gz") == second.save(tmp_path / "b.json.gz")
    assert (tmp_path / "a.json.gz").read_bytes() == (tmp_path / "b.json.gz").read_bytes()
    hourly, start, region = series[0]
    origins = np.arange(24 * 40, 24 * 40 + 48, 6)
    loaded = HistoryModel.load(tmp_path / "a.json.gz")
    np.testing.assert_allclose(loaded.predict_many(hourly, origins, 24, start, region),
                               first.predict_many(hourly, origins, 24, start, region), rtol=1e-6)


def test_a_short_history_is_taken_as_missing_not_repeated(carbon_dir):
    """One day of actuals is enough to forecast; more history changes (and here improves) the forecast."""
    trace = load_trace(carbon_dir / "electricitymaps_via_green-dcc" / "US-CAL-CISO_2022_hourly.csv")
    start, hourly = trace.hourly()
    model = HistoryModel.load()
    errors = {}
    for days in (1, 28):
        error = []
        for origin in range(24 * 40, 24 * 340, 24 * 7 + 5):
            end = datetime.fromtimestamp(start + (origin + 1) * 3600, tz=timezone.utc)
            history = hourly[origin + 1 - 24 * days:origin + 1]
            predicted = model.predict(history, 24, end=end, region=trace.region)
            error.append(np.mean(np.abs(predicted - hourly[origin + 1:origin + 25])))
        errors[days] = np.mean(error)
    assert errors[28] < errors[1]
    with pytest.raises(ValueError, match="at least 24 hours"):
        model.predict(hourly[:23], 24, end=datetime(2022, 1, 2, tzinfo=timezone.utc), region="US-CAL-CISO")


def test_history_beats_persistence_and_the_neso_forecast_matches_argmin(carbon_dir):
    gb = carbon_dir / "electricitymaps_via_green-dcc" / "GB_2023_hourly.csv"
    began = time.perf_counter()
    result = evaluate_trace(load_trace(gb), 1.0, previous=previous_year(gb))
    assert time.perf_counter() - began < 5.0  # a full year
    shares = {r["policy"]: r["oracle_share"] for r in result["results"]}
    assert result["days"] >= 360
    assert shares["planner + history"] > shares["planner + persistence"]
    assert shares["planner + history"] >= 0.65
    assert shares["oracle"] == pytest.approx(1.0) and shares["run_now"] == pytest.approx(0.0)
    neso = evaluate_trace(load_trace(carbon_dir / "neso_carbon_intensity_api"
                                     / "neso_2023_national_intensity.csv"), 4.0)
    own = {r["policy"]: r["oracle_share"] for r in neso["results"]}["planner + trace's own forecast"]
    assert own >= 0.89


def test_naive_rules_do_not_save_on_a_solar_grid(carbon_dir):
    caiso = carbon_dir / "electricitymaps_via_green-dcc" / "US-CAL-CISO_2023_hourly.csv"
    result = {r["policy"]: r
              for r in evaluate_trace(load_trace(caiso), 4.0, previous=previous_year(caiso))["results"]}
    assert result["fixed 02:00 local"]["saving_pct"] < -5  # night is dirtier than the afternoon there
    assert abs(result["threshold 300 g/kWh, 1 h wait"]["saving_pct"]) < 2
    assert result["planner + history"]["saving_pct"] > 15


@pytest.mark.integration
def test_evaluate_cli_prints_the_table(carbon_dir):
    path = carbon_dir / "electricitymaps_via_green-dcc" / "DE-LU_2023_hourly.csv"
    out = subprocess.run([sys.executable, "-m", "carbon_aware.evaluation", "--trace", str(path),
                          "--job-hours", "1"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "planner + history" in out.stdout and "oracle share captured" in out.stdout


def test_every_trigger_hour_pools_the_share_and_scores_the_forecasts(carbon_dir):
    caiso = carbon_dir / "electricitymaps_via_green-dcc" / "US-CAL-CISO_2023_hourly.csv"
    one = evaluate_trace(load_trace(caiso), 4.0, previous=previous_year(caiso), trigger_hours=[0, 12])
    assert one["trigger_hours_utc"] == [0, 12] and one["triggers"] >= 2 * 360
    rows = {r["policy"]: r for r in one["results"]}
    assert rows["oracle"]["oracle_share"] == pytest.approx(1.0)
    skill = one["forecast_skill"]["planner + history"]
    assert len(skill["mape_pct_by_lead"]) == 24
    assert skill["mape_pct_by_lead"][0] < skill["mape_pct_by_lead"][23]  # the next hour is the easiest
    assert skill["rank_corr_by_lead"][0] > 0.9
    persistence_skill = one["forecast_skill"]["planner + persistence"]
    assert skill["rank_corr_within_horizon"] > persistence_skill["rank_corr_within_horizon"]


def test_level_correction_fades_with_lead():
    from carbon_aware.evaluation import level_corrected

    forecast = np.full((1, 24), 100.0)
    corrected = level_corrected(forecast, np.array([120.0]), np.array([100.0]), half_life=6.0)
    assert corrected[0, 5] == pytest.approx(110.0) and corrected[0, 23] == pytest.approx(100 + 20 / 16)


@pytest.mark.integration
def test_evaluate_cli_all_trigger_hours_json_and_readme_table(carbon_dir, tmp_path):
    path = carbon_dir / "electricitymaps_via_green-dcc" / "GB_2023_hourly.csv"
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- evaluation table: begin -->\nold\n"
                      "<!-- evaluation table: end -->\nafter\n")
    command = [sys.executable, "-m", "carbon_aware.evaluation", "--trace", str(path), "--job-hours", "1",
               "--trigger-hours", "all", "--json", str(tmp_path / "e.json"), "--update-readme", str(readme)]
    out = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    records = json.loads((tmp_path / "e.json").read_text())
    assert records[0]["trace"] == "GB_2023_hourly.csv" and records[0]["region"] == "GB"
    assert records[0]["job_hours"] == 1 and records[0]["trigger_hours_utc"] == list(range(24))
    share = next(r for r in records[0]["results"] if r["policy"] == "planner + history")
    assert 0 < share["oracle_share"] < 1 and share["saving_pct"] > 0
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "| GB (GB_2023_hourly.csv) | " in text and "--trigger-hours all" in text
    assert f"{share['oracle_share']:.2f}" in text
    bad = subprocess.run([sys.executable, "-m", "carbon_aware.evaluation", "--trace", str(path),
                          "--trigger-hours", "25"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "--trigger-hours: expected 'all' or hours 0-23" in bad.stderr


def test_the_demo_year_line_scores_the_dags_policy_over_the_whole_trace(carbon_dir):
    path = carbon_dir / "neso_carbon_intensity_api" / "neso_2023_national_intensity.csv"
    began = time.perf_counter()
    line = year_line(path, 1.0, 24.0)
    assert time.perf_counter() - began < 10
    ev = {r["policy"]: r for r in evaluate_trace(load_trace(path), 1.0, 24.0)["results"]}
    own, oracle = ev["planner + trace's own forecast"]["saving_pct"], ev["oracle"]["saving_pct"]
    assert line.startswith("run daily in 2023 on this trace") and "own forecast" in line
    assert f"{-own:+.1f} % vs starting at once; the oracle {-oracle:+.1f} %" in line and 0 < own < oracle
    history = year_line(path, 1.0, 24.0, forecast="history")  # the trace provider with forecast: history
    assert "history" in history and history != line
