"""The Carbon page's app without the API server: rows, totals, units, files, empty state, and the
auth dependency in place. The logged-in/logged-out browser path runs in tests/stack/test_browser.py."""

import json
import re

import pytest
from fastapi.testclient import TestClient

from carbon_aware import web
from carbon_aware.outputs import run_dir_for
from carbon_aware.runs_view import load_rows, totals


def _report(
    run_id: str,
    generated_at: str,
    saving_kg: float,
    timing_kg: float,
    fallback: list[str] | None = None,
    kind: str = "cached",
) -> dict:
    return {
        "report_version": "2.0",
        "dag_run_id": run_id,
        "generated_at": generated_at,
        "baseline_kind": kind,
        "baseline": {
            "kind": kind,
            "note": "n",
            "source_run": "manual__first",
            "measured_at": "2026-11-01T00:00:00+00:00",
            "key": "k",
            "measurement_cost_kg": 0.002 if kind == "measured" else 0.0,
        },
        "carbon_savings": {
            "baseline_emissions_kg": 0.002,
            "optimized_emissions_kg": 0.002 - saving_kg,
            "reduction_kg": saving_kg,
            "reduction_percentage": saving_kg / 0.002 * 100,
        },
        "timing": {
            "saving_kg": timing_kg,
            "saving_percentage": 10.0,
            "run_now_intensity_g_per_kwh": 250.0,
            "chosen_window_intensity_g_per_kwh": 225.0,
        },
        "efficiency": {
            "saving_kg": saving_kg - timing_kg,
            "saving_percentage": 1.0,
            "baseline_energy_kwh": 0.008,
            "optimized_energy_kwh": 0.0079,
        },
        "accuracy_impact": {
            "baseline_accuracy": 98.1,
            "optimized_accuracy": 98.3,
            "degradation_percentage": -0.2,
        },
        "schedule": {
            "run_now_start": "2026-11-23T10:00:00+00:00",
            "planned_start": "2026-11-23T14:00:00+00:00",
            "actual_start": "2026-11-23T14:00:02+00:00",
            "wait_seconds": 14402.0,
            "time_compression": 1.0,
        },
        "sources": {"forecast": "electricitymaps:DE", "region": "DE", "fallback_reasons": fallback or []},
        "replans": [{"decision": "re-planned"}],
    }


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("CARBON_OUTPUT_DIR", str(tmp_path))
    web.app.dependency_overrides[web.may_read_runs] = lambda: None
    yield TestClient(web.app)
    web.app.dependency_overrides.clear()


def _write(report: dict):
    directory = run_dir_for(report["dag_run_id"])
    directory.mkdir(parents=True)
    (directory / "comparison_report.json").write_text(json.dumps(report))
    return directory


def test_empty_state_explains_how_to_start(client):
    page = client.get("/").text
    assert (
        "No carbon_training report yet" in page
        and "Trigger" in page
        and "airflow dags trigger carbon_training" in page
    )
    assert client.get("/api/runs").json()["runs"] == []


def test_rows_newest_first_with_units_and_totals(client):
    _write(_report("manual__2026-11-22T10:00:00+00:00", "2026-11-22T12:00:00+00:00", 0.0004, 0.0003))
    _write(
        _report(
            "scheduled__2026-11-23T00:00:00+00:00",
            "2026-11-23T15:00:00+00:00",
            -0.0001,
            0.0002,
            fallback=["uk: timed out"],
        )
    )
    body = client.get("/api/runs").json()
    assert [row["run_id"] for row in body["runs"]] == [
        "scheduled__2026-11-23T00:00:00+00:00",
        "manual__2026-11-22T10:00:00+00:00",
    ]
    assert body["totals"]["saving_kg"] == pytest.approx(0.0003)
    assert body["totals"]["timing_saving_kg"] == pytest.approx(0.0005)
    assert body["totals"]["efficiency_saving_kg"] == pytest.approx(-0.0002)
    assert body["runs"][0]["replans"] == 1 and body["runs"][0]["fallback_reasons"] == ["uk: timed out"]

    page = client.get("/").text
    table = page[page.index('<table id="runs"') :]
    assert table.index("scheduled__2026-11-23") < table.index("manual__2026-11-22")
    for text in (
        "400 mg CO₂e",
        "300 mg CO₂e",
        "250 g/kWh",
        "225 g/kWh",
        "8 Wh",
        "7.9 Wh",
        "98.10 %",
        "4.0 h",
        "2026-11-23 14:00 UTC",
        "uk: timed out",
        'data-total="saving_kg"',
    ):
        assert text in page, text
    run_link = "/dags/carbon_training/runs/manual__2026-11-22T10%3A00%3A00%2B00%3A00"  # the Airflow run
    assert f'{run_link}/tasks/wait_for_window"' in page  # a report without task ids: carbon_training's


def test_run_page_download_and_plot(client):
    report = _report("manual__2026-11-22T10:00:00+00:00", "2026-11-22T12:00:00+00:00", 0.0004, 0.0003)
    directory = _write(report)
    (directory / "comparison.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    page = client.get(f"/runs/{directory.name}").text
    assert (
        'id="chart"' in page and "download comparison_report.json" in page and "electricitymaps:DE" in page
    )
    # Intensities in g/kWh, energy in Wh: the unit comes from the key's most specific suffix.
    assert 'data-field="timing.run_now_intensity_g_per_kwh">250 g/kWh<' in page
    assert 'data-field="efficiency.baseline_energy_kwh">8 Wh<' in page
    download = client.get(f"/runs/{directory.name}/comparison_report.json")
    assert download.json() == report and "attachment" in download.headers["content-disposition"]
    assert client.get(f"/runs/{directory.name}/comparison.png").headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    "path", ["/runs/..%2F..%2Fetc", "/runs/nope", "/runs/x/plan.json", "/runs/..%2F/comparison_report.json"]
)
def test_only_report_files_of_known_runs_are_served(client, path):
    _write(_report("manual__a", "2026-11-22T12:00:00+00:00", 0.0, 0.0))
    assert client.get(path).status_code == 404


def test_without_the_override_anonymous_requests_get_no_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CARBON_OUTPUT_DIR", str(tmp_path))
    _write(_report("manual__secret", "2026-11-22T12:00:00+00:00", 0.0004, 0.0003))
    anonymous = TestClient(web.app)
    for path in ("/", "/api/runs", "/runs/manual__secret"):
        response = anonymous.get(path, headers={"accept": "text/html"})
        assert response.status_code == 401
        assert "electricitymaps" not in response.text and "CO₂e" not in response.text
    assert "Sign in" in anonymous.get("/", headers={"accept": "text/html"}).text


def test_unreadable_report_is_left_out(tmp_path, monkeypatch):
    monkeypatch.setenv("CARBON_OUTPUT_DIR", str(tmp_path))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "comparison_report.json").write_text("{not json")
    _write(_report("manual__ok", "2026-11-22T12:00:00+00:00", 0.0004, 0.0003))
    rows = load_rows()
    assert [row["run_id"] for row in rows] == ["manual__ok"] and totals(rows)["runs"] == 1


def test_net_total_subtracts_baseline_measurements_and_charts_the_running_sum(client):
    _write(_report("manual__1", "2026-11-21T12:00:00+00:00", 0.0004, 0.0003, kind="measured"))  # cost 2 g
    _write(_report("manual__2", "2026-11-22T12:00:00+00:00", 0.0005, 0.0003))
    _write(_report("manual__3", "2026-11-23T12:00:00+00:00", 0.0006, 0.0003))
    body = client.get("/api/runs").json()
    assert body["totals"]["saving_kg"] == pytest.approx(0.0015)
    assert body["totals"]["baseline_cost_kg"] == pytest.approx(0.002)
    assert body["totals"]["net_saving_kg"] == pytest.approx(-0.0005)
    assert [round(p["net_kg"], 7) for p in body["cumulative"]] == [-0.0016, -0.0011, -0.0005]
    page = client.get("/").text
    assert 'data-total="net_saving_kg" data-value="-0.0005' in page and "-500 mg CO₂e" in page
    assert page.count("<circle") == 3
    assert re.search(r'data-run-id="manual__3"\s+data-value="-0.0005', page)


def test_a_legacy_report_with_a_measured_baseline_counts_it_as_emitted(client):
    legacy = _report("manual__old", "2026-11-20T12:00:00+00:00", 0.0004, 0.0003)
    del legacy["baseline"]
    legacy["baseline_kind"] = "measured baseline run, started at once"
    _write(legacy)
    totals_ = client.get("/api/runs").json()["totals"]
    assert totals_["baseline_cost_kg"] == pytest.approx(0.002) and totals_["net_saving_kg"] == pytest.approx(
        -0.0016
    )


def _cells(page: str, selector: str) -> dict[str, str]:
    """The text of every cell whose data-field starts with ``selector``, tags stripped."""
    return {
        field: re.sub(r"<[^>]+>", " ", text).split()[0] if text.strip() else ""
        for field, text in re.findall(
            rf'data-field="({re.escape(selector)}[^"]*)"[^>]*>(.*?)</td>', page, re.S
        )
    }


def test_a_routed_interruptible_run_shows_its_place_route_and_segments(client):
    report = _report("manual__2026-11-24T10:00:00+00:00", "2026-11-24T12:00:00+00:00", 0.0012, 0.0001)
    report["place"] = {
        "saving_kg": 0.0009,
        "saving_percentage": 45.0,
        "home_region": "de",
        "chosen_region": "gb",
        "queue": "training-gb",
        "ranking": ["gb", "de"],
    }
    report["route"] = {
        "queue": "training-gb",
        "region": "gb",
        "fallback": False,
        "reason": "the planned region",
    }
    report["dag_id"] = "carbon_own_job"
    report["tasks"] = {"wait": "wait", "job": "train", "report": "report"}
    report["job"] = {
        "status": "completed",
        "attempts": 2,
        "interruptible": True,
        "worker_region": "gb",
        "command": ["python", "train.py"],
        "segments": [
            {
                "index": 1,
                "start": "2026-11-24T13:00:00+00:00",
                "end": "2026-11-24T14:00:00+00:00",
                "planned_start": "2026-11-24T13:00:00+00:00",
                "energy_kwh": 0.002,
                "emissions_g": 0.5,
                "mean_intensity_g_per_kwh": 250.0,
                "attempts": [1],
                "stopped": ["slot_end"],
            },
            {
                "index": 2,
                "start": "2026-11-24T16:00:00+00:00",
                "end": "2026-11-24T17:00:00+00:00",
                "planned_start": "2026-11-24T16:00:00+00:00",
                "energy_kwh": 0.002,
                "emissions_g": 0.3,
                "mean_intensity_g_per_kwh": 150.0,
                "attempts": [2],
                "stopped": [None],
            },
        ],
    }
    directory = _write(report)

    row = client.get("/api/runs").json()["runs"][0]
    assert (row["place_saving_kg"], row["chosen_region"], row["segments"]) == (0.0009, "gb", 2)
    page = client.get("/").text
    place = 'data-field="place_saving_kg" data-value="0.0009">900 mg CO₂e<span class="local">de → gb'
    assert place in page
    assert 'data-field="segments" data-value="2">2<' in page
    run_link = "/dags/carbon_own_job/runs/manual__2026-11-24T10%3A00%3A00%2B00%3A00"  # the run's own DAG
    assert f'{run_link}/tasks/wait"' in page and f'{run_link}/tasks/report"' in page

    page = client.get(f"/runs/{directory.name}").text
    assert page.count('<tr data-segment="') == 2
    segments = re.findall(r'<tr data-segment="\d">(.*?)</tr>', page, re.S)
    assert [_cells(s, "job.segments.")["job.segments.stopped"] for s in segments] == ["slot_end", "done"]
    assert _cells(segments[0], "job.segments.")["job.segments.emissions_g"] == "500"  # 0.5 g = 500 mg
    shown = _cells(page, "")
    assert shown["place.chosen_region"] == "gb" and shown["route.queue"] == "training-gb"
    assert shown["job.interruptible"] == "yes" and shown["job.attempts"] == "2"
    assert "job.command" not in shown  # the argv stays in the JSON, off the page


def test_report_text_is_escaped_not_markup(client):
    report = _report(
        "manual__<script>x</script>", "2026-11-22T12:00:00+00:00", 0.0, 0.0, fallback=["<b>uk</b> down"]
    )
    directory = _write(report)
    for page in (client.get("/").text, client.get(f"/runs/{directory.name}").text):
        assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "&lt;b&gt;uk&lt;/b&gt; down" in client.get("/").text
