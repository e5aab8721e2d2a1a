"""Regions: the file's validation, the plan across regions, fallbacks per region, and the evaluation."""
import json
import shutil
from datetime import datetime, timedelta, timezone

import pytest

from carbon_aware import evaluation as evaluate
from carbon_aware.grid.forecast import Forecast, IntensityPoint, validate_points
from tests.conftest import REPO_ROOT
from carbon_aware.planning.planner import PlanningError
from carbon_aware.planning.regions import (REGIONS_ENV, Region, RegionsError, default_region,
                                           deployment_regions, fetch_region_forecasts, format_regions,
                                           load_regions, parse_regions, plan_regions, regions_path)
from carbon_aware.grid.store import import_trace
from tests.conftest import CARBON_DIR
from tests.fake_provider_server import FakeProviderServer, Reply

NOW = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
EM = "electricitymaps_via_green-dcc"


def region(name, queue=None, **extra):
    queue = f"training-{name}" if queue is None else queue
    return {"name": name, "providers": [{"name": "mock"}], "queue": queue, **extra}


def error_of(data) -> str:
    with pytest.raises(RegionsError) as caught:
        parse_regions(data, "include/regions.yaml")
    return str(caught.value)


# --- the file ------------------------------------------------------------------------------------

def test_errors_name_the_file_and_the_field():
    assert error_of({"regions": [region("gb"), {"providers": [{"name": "mock"}], "queue": "q"}]}) == \
        "include/regions.yaml: regions[1].name: required field missing"
    assert error_of({"regions": [region("gb"), region("de", queue="")]}).startswith(
        "include/regions.yaml: regions[1].queue: expected a non-empty string")
    assert error_of({"regions": [region("gb", queue="q"), region("de", queue="q")]}) == \
        ("include/regions.yaml: regions[1].queue: 'q' is already used by regions[0]; "
         "each region needs its own queue")
    twice = error_of({"regions": [region("gb"), region("gb")]})
    assert "regions[1].name: 'gb' is already used by regions[0]" in twice
    assert error_of({"regions": [region("gb", speed=0)]}).startswith(
        "include/regions.yaml: regions[0].speed: Input should be greater than 0")
    assert "regions[0].power: Input should be a valid number" in error_of(
        {"regions": [region("gb", power="x")]})
    unknown = error_of({"regions": [region("gb"), {**region("de"), "providers": [{"name": "nope"}]}]})
    assert unknown.startswith("include/regions.yaml: regions[1].providers: providers[0].name: "
                              "expected one of mock, trace, uk")
    assert "regions[0].providers: List should have at least 1 item" in error_of(
        {"regions": [region("gb", providers=[])]})
    assert "regions[0].gpus: unknown field" in error_of({"regions": [region("gb", gpus=2)]})
    assert "regions: List should have at least 1 item" in error_of({"regions": []})
    assert "expected a mapping with a 'regions' list" in error_of(["gb"])


def test_secrets_are_refused_and_never_echoed():
    text = error_of({"regions": [{**region("de"), "providers": [{"name": "nope", "token": "s3cret"}]}]})
    assert "s3cret" not in text and "<redacted>" in text
    spec = {"name": "electricitymaps", "token": "s3cret"}
    text = error_of({"regions": [{**region("de"), "providers": [spec]}]})
    assert "s3cret" not in text and "secrets (token) do not belong in a regions file" in text


def test_a_regions_file_holds_no_endpoint_and_only_its_providers_options():
    """A regions file's specs are held to the same models as params: the endpoint comes from the
    provider's Airflow connection, never from the file."""
    spec = {"name": "electricitymaps", "zone": "DE", "base_url": "http://127.0.0.1:9", "conn_id": "prod_db"}
    text = error_of({"regions": [region("de", providers=[spec])]})
    assert text.startswith("include/regions.yaml: regions[0].providers: providers[0].base_url: "
                           "unknown option for electricitymaps (allowed: zone, conn_id, history)")
    text = error_of({"regions": [region("gb"), region("de", providers=[{"name": "uk", "region_id": 99}])]})
    assert "regions[1].providers: providers[0].region_id: Input should be less than or equal to 17" in text
    text = error_of({"regions": [region("gb", providers=[{"name": "trace", "path": "/etc/passwd"}])]})
    assert "regions[0].providers: providers[0].path: '/etc/passwd' is outside" in text


def test_load_regions_from_yaml(tmp_path):
    path = tmp_path / "regions.yaml"
    path.write_text("regions:\n  - name: gb\n    providers: [{name: mock}]\n    queue: training-gb\n"
                    "  - name: de\n    providers: [{name: mock}]\n    queue: training-de\n    speed: 2\n")
    gb, de = load_regions(path)
    assert (gb.name, gb.queue, gb.speed, gb.power) == ("gb", "training-gb", 1.0, 1.0)
    assert de.speed == 2.0 and de.relative_energy == 0.5
    path.write_text("regions:\n  - name: gb\n    queue: [a]\n")
    with pytest.raises(RegionsError) as caught:
        load_regions(path)
    assert str(caught.value).splitlines() == [
        f"{path}: regions[0].providers: required field missing",
        f"{path}: regions[0].queue: expected a non-empty string without spaces (got ['a'])"]
    path.write_text("regions: [\n")
    with pytest.raises(RegionsError, match=f"{path}: not valid YAML"):
        load_regions(path)
    with pytest.raises(RegionsError, match="cannot read the regions file"):
        load_regions(tmp_path / "missing.yaml")


def test_the_example_file_is_valid_and_its_traces_exist():
    regions = load_regions(REPO_ROOT / "include" / "regions.example.yaml")
    assert [r.queue for r in regions][:2] == ["training-gb", "training-de"]
    for r in regions:
        assert (CARBON_DIR.parent / r.providers[0]["path"]).is_file(), r.providers[0]["path"]


def test_without_a_file_there_is_one_region(monkeypatch, tmp_path):
    monkeypatch.delenv(REGIONS_ENV, raising=False)
    assert not (REPO_ROOT / "include" / "regions.yaml").exists()  # the default deployment is single-region
    assert regions_path() is None
    only, = deployment_regions([{"name": "uk"}])
    assert only == default_region([{"name": "uk"}]) and only.queue == "default"
    monkeypatch.setenv(REGIONS_ENV, str(tmp_path / "nope.yaml"))
    with pytest.raises(RegionsError, match=f"{REGIONS_ENV}=.*nope.yaml: no such file"):
        regions_path()
    monkeypatch.setenv(REGIONS_ENV, str(REPO_ROOT / "include" / "regions.example.yaml"))
    assert [r.name for r in deployment_regions([{"name": "uk"}])] == ["gb", "de", "caiso"]


# --- the plan ------------------------------------------------------------------------------------

def curve(values, source="test"):
    """Hourly slots from NOW."""
    points = [IntensityPoint(NOW + i * HOUR, HOUR, float(v)) for i, v in enumerate(values)]
    return Forecast(validate_points(points, source), source=source), []


def regions_of(*specs):
    return [Region(name=name, providers=[{"name": "mock"}], queue=f"q-{name}", **extra)
            for name, extra in specs]


def test_the_region_with_lower_emissions_wins_and_every_region_is_kept():
    regions = regions_of(("home", {}), ("clean", {}), ("dirty", {}))
    forecasts = {"home": curve([300] * 24), "clean": curve([100] * 24), "dirty": curve([500] * 24)}
    plan = plan_regions(regions, forecasts, 2 * HOUR, NOW, NOW + 24 * HOUR)
    assert (plan["region"], plan["queue"], plan["home_region"]) == ("clean", "q-clean", "home")
    assert plan["ranking"] == ["clean", "home", "dirty"]
    assert plan["mean_intensity"] == pytest.approx(100)
    assert plan["run_now_mean_intensity"] == pytest.approx(300)  # the home region started at once
    assert plan["run_now_start"] == NOW.isoformat()
    assert plan["expected_saving_pct"] == pytest.approx(100 * 200 / 300)
    assert [r["name"] for r in plan["regions"]] == ["home", "clean", "dirty"]
    dirty = plan["regions"][2]
    assert dirty["mean_intensity"] == pytest.approx(500)
    assert dirty["expected_emissions_index"] == pytest.approx(500)
    assert dirty["error"] is None and dirty["source"] == "test"
    assert "* clean" in format_regions(plan)


def test_waiting_at_home_can_beat_moving_now():
    regions = regions_of(("home", {}), ("other", {}))
    home = [300] * 6 + [50, 50] + [300] * 16
    plan = plan_regions(regions, {"home": curve(home), "other": curve([100] * 24)}, 2 * HOUR, NOW,
                        NOW + 24 * HOUR)
    assert plan["region"] == "home" and plan["start"] == (NOW + 6 * HOUR).isoformat()
    assert plan["ranking"] == ["home", "other"]
    assert plan["expected_saving_pct"] == pytest.approx(100 * 250 / 300)
    assert plan["regions"][1]["start"] == NOW.isoformat()  # the other region's best is at once


def test_ties_go_to_the_earlier_listed_region():
    regions = regions_of(("home", {}), ("twin", {}))
    plan = plan_regions(regions, {"home": curve([200] * 24), "twin": curve([200] * 24)}, HOUR, NOW,
                        NOW + 24 * HOUR)
    assert plan["region"] == "home" and plan["ranking"] == ["home", "twin"]


def test_speed_and_power_change_the_choice():
    forecasts = {"home": curve([200] * 24), "other": curve([250] * 24)}
    same = plan_regions(regions_of(("home", {}), ("other", {})), forecasts, 2 * HOUR, NOW, NOW + 24 * HOUR)
    assert same["region"] == "home"
    fast = plan_regions(regions_of(("home", {}), ("other", {"speed": 2.0})), forecasts, 2 * HOUR, NOW,
                        NOW + 24 * HOUR)
    assert fast["region"] == "other" and fast["duration_hours"] == pytest.approx(1.0)  # half the time
    assert fast["end"] == (NOW + HOUR).isoformat()
    other = fast["regions"][1]
    assert other["expected_relative_energy"] == pytest.approx(0.5)
    assert other["expected_emissions_index"] == pytest.approx(125)
    assert fast["expected_saving_pct"] == pytest.approx(100 * 75 / 200)
    hungry = plan_regions(regions_of(("home", {}), ("other", {"speed": 2.0, "power": 2.5})), forecasts,
                          2 * HOUR, NOW, NOW + 24 * HOUR)
    assert hungry["region"] == "home"
    assert hungry["regions"][1]["expected_emissions_index"] == pytest.approx(312.5)
    cleaner = {"home": curve([200] * 24), "other": curve([150] * 24)}
    costly = plan_regions(regions_of(("home", {}), ("other", {"power": 1.5})), cleaner, HOUR, NOW,
                          NOW + 24 * HOUR)
    assert costly["region"] == "home"  # 150 x 1.5 = 225 > 200


def test_a_region_that_cannot_finish_is_recorded_not_chosen_and_home_must_plan():
    regions = regions_of(("home", {}), ("slow", {"speed": 0.5}))
    forecasts = {"home": curve([300] * 24), "slow": curve([10] * 24)}
    plan = plan_regions(regions, forecasts, 2 * HOUR, NOW, NOW + 3 * HOUR)  # 4 h there: past the deadline
    assert plan["region"] == "home" and plan["ranking"] == ["home"]
    assert "cannot finish by the deadline" in plan["regions"][1]["error"]
    assert "not planned" in format_regions(plan)
    with pytest.raises(PlanningError, match="home region home: .*cannot finish"):
        plan_regions(regions_of(("home", {"speed": 0.5}), ("b", {})), forecasts | {"b": curve([1] * 24)},
                     4 * HOUR, NOW, NOW + 3 * HOUR)  # b would finish in 2 h, but home is the counterfactual
    with pytest.raises(PlanningError, match="no forecast for region"):
        plan_regions(regions, {"home": forecasts["home"]}, HOUR, NOW, NOW + 3 * HOUR)


def test_failed_providers_fall_back_per_region_and_are_recorded(carbon_dir, monkeypatch, tmp_path):
    """A real HTTP server (the connection's host) refusing the token, a trace removed after the file was
    read: each region plans on its fallback."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("CARBON_DATA_DIR", str(data))
    shutil.copy(carbon_dir / EM / "GB_2022_hourly.csv", data)
    (data / "gone.csv").write_text("")
    import_trace(carbon_dir / EM / "DE-LU_2022_hourly.csv")  # the store holds DE's actuals
    now = datetime(2022, 6, 15, 8, 0, tzinfo=timezone.utc)
    with FakeProviderServer() as server:
        server.script("/v3/carbon-intensity/forecast", Reply({"message": "bad token"}, 401))
        monkeypatch.setenv("AIRFLOW_CONN_EM_DE", json.dumps({"conn_type": "electricitymaps",
                                                             "host": server.url, "password": "t0ken"}))
        regions = [
            Region(name="gb", queue="training-gb",
                   providers=[{"name": "trace", "path": "GB_2022_hourly.csv", "forecast": "history"}]),
            Region(name="de", queue="training-de",
                   providers=[{"name": "electricitymaps", "zone": "DE", "conn_id": "em_de"}]),
            Region(name="gone", queue="training-gone", providers=[{"name": "trace", "path": "gone.csv"}]),
        ]
        (data / "gone.csv").unlink()
        forecasts = fetch_region_forecasts(regions, now, 24 * HOUR, HOUR)
        assert server.hits("/v3/carbon-intensity/forecast")
    plan = plan_regions(regions, forecasts, HOUR, now, now + 24 * HOUR)
    gb, de, gone = plan["regions"]
    assert gb["source"] == "trace:GB_2022_hourly.csv:history" and gb["fallback_reasons"] == []
    assert de["source"] == "history(store:trace:DE-LU_2022_hourly.csv)"
    assert "answered 401" in de["fallback_reasons"][0]
    assert de["fallback_reasons"][-1].startswith("history: planned")
    assert "t0ken" not in json.dumps(plan)
    assert gone["source"] == "mock" and "no file" in gone["fallback_reasons"][0]
    assert "gone.csv" in gone["fallback_reasons"][0] and gone["fallback_reasons"][-1].startswith("mock:")
    assert all(r["error"] is None and r["mean_intensity"] > 0 for r in plan["regions"])
    assert sorted(plan["ranking"]) == ["de", "gb", "gone"]


# --- the evaluation ------------------------------------------------------------------------------

def test_evaluate_regions_on_two_real_traces(carbon_dir, tmp_path, capsys):
    path = tmp_path / "regions.yaml"
    gb, de = carbon_dir / EM / "GB_2023_hourly.csv", carbon_dir / EM / "DE-LU_2023_hourly.csv"
    path.write_text(f"regions:\n"
                    f"  - {{name: gb, queue: training-gb, providers: [{{name: trace, path: '{gb}'}}]}}\n"
                    f"  - {{name: de, queue: training-de, providers: [{{name: trace, path: '{de}'}}]}}\n")
    out = tmp_path / "regions.json"
    assert evaluate.main(["--regions", str(path), "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [(r["home"], r["job_hours"]) for r in records] == [("gb", 1.0), ("gb", 4.0)]  # the default jobs
    table = capsys.readouterr().out
    for record in records:
        results = {r["policy"]: r for r in record["results"]}
        assert list(results) == ["run now (home)", "temporal only", "spatial only", "spatial + temporal",
                                 "oracle (all regions and starts)"]
        assert record["triggers"] == 365 and record["regions"] == ["gb", "de"]
        oracle = results["oracle (all regions and starts)"]["mean_intensity"]
        assert all(r["mean_intensity"] >= oracle - 1e-9 for r in results.values())
        assert sum(results["spatial + temporal"]["chosen"].values()) == record["triggers"]
        # temporal only at home is the single-trace evaluation's forecast-driven policy, exactly
        single = evaluate.evaluate_trace(evaluate.load_trace(gb), record["job_hours"],
                                         previous=evaluate.previous_year(gb))
        history = next(r for r in single["results"] if r["policy"] == "planner + history")
        assert results["temporal only"]["mean_intensity"] == pytest.approx(history["mean_intensity"])
        assert results["run now (home)"]["mean_intensity"] == pytest.approx(
            next(r for r in single["results"] if r["policy"] == "run_now")["mean_intensity"])
        assert f"{results['spatial + temporal']['saving_pct']:.1f}" in table


def test_evaluate_regions_arguments(carbon_dir, tmp_path):
    with pytest.raises(SystemExit):
        evaluate.main(["--regions"])  # neither a file nor --all
    path = tmp_path / "regions.yaml"
    path.write_text("regions:\n  - {name: a, queue: q, providers: [{name: uk}]}\n")
    with pytest.raises(SystemExit, match="regions\\[0\\].providers: the evaluation replays traces"):
        evaluate.main(["--regions", str(path)])
