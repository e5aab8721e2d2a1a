"""The Carbon page's app without the API server, on reports in the records database: rows, totals,
units, downloads, empty state, per-DAG visibility, and the auth dependency in place. The
logged-in/logged-out browser path runs in tests/stack/test_browser.py."""

import json
import re
import time

import pytest
from fastapi.testclient import TestClient

from carbon_aware.records import engine_for, tables
from carbon_aware.records.reports import save_report
from carbon_aware.web import app as web
from carbon_aware.web.runs_view import load_runs, totals


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


def readable(*hidden: str):
    """The auth manager's answer, as a test chooses it: every DAG but ``hidden``."""
    return lambda: (lambda dag_id: dag_id not in hidden)


@pytest.fixture
def client():
    web.app.dependency_overrides[web.signed_in] = lambda: None
    web.app.dependency_overrides[web.readable_dags] = readable()
    yield TestClient(web.app)
    web.app.dependency_overrides.clear()


def _write(report: dict) -> int:
    """The report as the report task stores it; returns its id (the page's link)."""
    return save_report(report.get("dag_id") or "carbon_training", report["dag_run_id"], report)


def _store_raw(run_id: str, text: str | bytes, dag_id: str = "carbon_training") -> int:
    """A stored report that is not what the report task writes (a corrupt or foreign row)."""
    text = text.decode("latin-1") if isinstance(text, bytes) else text
    with engine_for().begin() as connection:
        return connection.execute(tables.reports.insert().values(
            dag_id=dag_id, run_id=run_id, report=text, created_at=time.time())).inserted_primary_key[0]


def test_empty_state_explains_how_to_start(client):
    page = client.get("/").text
    assert (
        "No report you may read yet" in page
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
    report_id = _write(report)
    page = client.get(f"/runs/{report_id}").text
    assert (
        'id="chart"' in page and "download comparison_report.json" in page and "electricitymaps:DE" in page
    )
    # Intensities in g/kWh, energy in Wh: the unit comes from the key's most specific suffix.
    assert 'data-field="timing.run_now_intensity_g_per_kwh">250 g/kWh<' in page
    assert 'data-field="efficiency.baseline_energy_kwh">8 Wh<' in page
    download = client.get(f"/runs/{report_id}/comparison_report.json")
    assert download.json() == report and "attachment" in download.headers["content-disposition"]
    plot = client.get(f"/runs/{report_id}/comparison.png")  # drawn from the stored report
    assert plot.headers["content-type"] == "image/png" and plot.content.startswith(b"\x89PNG")


def test_without_the_override_anonymous_requests_get_no_data():
    report_id = _write(_report("manual__secret", "2026-11-22T12:00:00+00:00", 0.0004, 0.0003))
    anonymous = TestClient(web.app)
    for path in ("/", "/api/runs", f"/runs/{report_id}", f"/runs/{report_id}/comparison_report.json"):
        response = anonymous.get(path, headers={"accept": "text/html"})
        assert response.status_code == 401
        assert "electricitymaps" not in response.text and "CO₂e" not in response.text
    assert "Sign in" in anonymous.get("/", headers={"accept": "text/html"}).text


def test_each_report_is_shown_only_to_users_who_may_read_its_dag(client):
    mine = _write({**_report("manual__mine", "2026-11-22T12:00:00+00:00", 0.0004, 0.0003), "dag_id": "mine"})
    theirs = _write({**_report("manual__theirs", "2026-11-23T12:00:00+00:00", 0.0009, 0.0003),
                     "dag_id": "theirs"})
    _store_raw("manual__theirs_broken", "{", dag_id="theirs")
    web.app.dependency_overrides[web.readable_dags] = readable("theirs")
    body = client.get("/api/runs").json()
    assert [row["run_id"] for row in body["runs"]] == ["manual__mine"] and body["unreadable_runs"] == []
    assert body["totals"]["saving_kg"] == pytest.approx(0.0004)
    page = client.get("/").text
    assert "manual__theirs" not in page and "manual__mine" in page
    for path in (f"/runs/{theirs}", *(f"/runs/{theirs}/{name}"
                                      for name in ("comparison_report.json", "comparison.png"))):
        assert client.get(path).status_code == 404, path  # the same answer as no report at all
    assert client.get(f"/runs/{mine}").status_code == 200


def test_unreadable_report_is_listed_but_not_counted():
    broken = _store_raw("broken", "{not json")
    _write(_report("manual__ok", "2026-11-22T12:00:00+00:00", 0.0004, 0.0003))
    rows, unreadable = load_runs(lambda dag_id: True)
    assert [row["run_id"] for row in rows] == ["manual__ok"] and totals(rows)["runs"] == 1
    assert unreadable == [{"run_id": "broken", "dag_id": "carbon_training", "report_id": broken,
                           "unreadable": "not JSON"}]


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


def test_a_run_without_a_real_signal_is_labelled_and_left_out_of_the_totals(client):
    _write(_report("manual__real", "2026-11-21T12:00:00+00:00", 0.0004, 0.0003, kind="measured"))
    mocked = _report("manual__mock", "2026-11-22T12:00:00+00:00", 0.0011, 0.0011, kind="measured")
    mocked["no_real_signal"] = "no real signal: the plan used the mock curve (every provider failed)"
    mocked["carbon_savings"]["reduction_kg"] = None  # as build_report writes it
    legacy = _report("manual__legacy", "2026-11-23T12:00:00+00:00", 0.0011, 0.0011)  # from before the label
    legacy["sources"]["forecast"] = "mock"
    mocked_id = _write(mocked)
    _write(legacy)
    body = client.get("/api/runs").json()
    rows = {row["run_id"]: row for row in body["runs"]}
    assert rows["manual__mock"]["no_real_signal"] == mocked["no_real_signal"]
    assert rows["manual__legacy"]["no_real_signal"] == "no real signal: planned on the mock curve"
    for run_id in ("manual__mock", "manual__legacy"):
        assert rows[run_id]["saving_kg"] is None and rows[run_id]["timing_saving_kg"] is None, run_id
        assert rows[run_id]["net_saving_kg"] is None and rows[run_id]["saving_pct"] is None, run_id
    t = body["totals"]
    assert (t["runs"], t["runs_no_real_signal"]) == (1, 2)
    assert t["saving_kg"] == pytest.approx(0.0004) and t["timing_saving_kg"] == pytest.approx(0.0003)
    assert t["baseline_cost_kg"] == pytest.approx(0.002)
    assert t["baseline_emissions_kg"] == pytest.approx(0.002)
    assert [p["run_id"] for p in body["cumulative"]] == ["manual__real"]
    page = client.get("/").text
    assert page.count("<circle") == 1 and "2 runs with no real signal not counted" in page
    mock_row = re.search(r'<tr data-run-id="manual__mock"[^>]*>(.*?)</tr>', page, re.S).group(1)
    assert re.search(r'data-field="saving_kg" data-value="">no real signal<span class="local">not counted',
                     mock_row)
    run_page = client.get(f"/runs/{mocked_id}").text
    assert re.search(r'id="no-real-signal">no real signal: the plan used the mock curve', run_page)


def test_a_replayed_trace_shows_the_traces_own_time_beside_the_grid_time(client):
    report = _report("manual__replay", "2026-11-23T15:00:00+00:00", 0.0004, 0.0003)
    report["replay"] = {"trace": "neso_2023_national_intensity.csv", "offset_seconds": -1.0,
                        "run_now_start": "2023-03-01T06:00:00+00:00",
                        "planned_start": "2023-03-01T10:00:00+00:00",
                        "actual_start": "2023-03-01T10:00:02+00:00", "deadline": "2023-03-02T06:00:00+00:00"}
    report_id = _write(report)
    row = client.get("/api/runs").json()["runs"][0]
    assert (row["trace"], row["trace_planned_start"]) == ("neso_2023_national_intensity.csv",
                                                          "2023-03-01T10:00:00+00:00")
    page = client.get("/").text
    assert re.search(r'data-field="planned_start"[^>]*><time datetime="2026-11-23T14:00:00\+00:00">'
                     r'2026-11-23 14:00 UTC</time><span class="local">trace time 2023-03-01 10:00 UTC', page)
    run_page = client.get(f"/runs/{report_id}").text
    assert 'id="replay">A replayed trace, neso_2023_national_intensity.csv' in run_page
    assert re.search(r'data-field="schedule.actual_start"><time[^>]*>2026-11-23 14:00:02 UTC</time>'
                     r'<span class="local">trace time 2023-03-01 10:00 UTC', run_page)
    plain = _write(_report("manual__plain", "2026-11-24T15:00:00+00:00", 0.0, 0.0))
    assert "trace time" not in client.get(f"/runs/{plain}").text


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
    report_id = _write(report)

    row = client.get("/api/runs").json()["runs"][0]
    assert (row["place_saving_kg"], row["chosen_region"], row["segments"]) == (0.0009, "gb", 2)
    page = client.get("/").text
    place = 'data-field="place_saving_kg" data-value="0.0009">900 mg CO₂e<span class="local">de → gb'
    assert place in page
    assert 'data-field="segments" data-value="2">2<' in page
    run_link = "/dags/carbon_own_job/runs/manual__2026-11-24T10%3A00%3A00%2B00%3A00"  # the run's own DAG
    assert f'{run_link}/tasks/wait"' in page and f'{run_link}/tasks/report"' in page

    page = client.get(f"/runs/{report_id}").text
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
    report_id = _write(report)
    for page in (client.get("/").text, client.get(f"/runs/{report_id}").text):
        assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "&lt;b&gt;uk&lt;/b&gt; down" in client.get("/").text


# --- untrusted reports: one that does not match the schema is listed as unreadable, never shown ---------
SECRET = "ZZ-SECRET-ZZ"  # in every corrupt report; must reach neither the page nor the JSON
CORRUPT_DIR = "manual__corrupt"


def _corrupt(change) -> str:
    report = _report(CORRUPT_DIR, "2026-11-24T12:00:00+00:00", 0.0009, 0.0001)
    return json.dumps(change(report) or report)


def _set(path: str, value):
    def change(report):
        *parents, last = path.split(".")
        block = report
        for key in parents:
            block = block.setdefault(key, {})
        block[last] = value

    return change


def _oversized_file(report):
    report["padding"] = SECRET * (9 * 1024 * 1024 // len(SECRET))


CORRUPTIONS = {  # name: (file text, the reason listed, or None where only its start is fixed)
    "top-level list": (json.dumps([SECRET]), "schema: report: not an object"),
    "string number": (_corrupt(_set("carbon_savings.reduction_kg", SECRET)),
                      "schema: carbon_savings.reduction_kg: not a number"),
    "bool number": (_corrupt(_set("timing.saving_kg", True)), "schema: timing.saving_kg: not a number"),
    "NaN": (_corrupt(_set("timing.saving_kg", float("nan"))), "not JSON"),
    "huge number": (_corrupt(_set("efficiency.saving_kg", 10**400)),
                    "schema: efficiency.saving_kg: not a number"),
    "out of range": (_corrupt(_set("carbon_savings.reduction_kg", 1e300)),
                     "schema: carbon_savings.reduction_kg: out of range"),
    "bad date": (_corrupt(_set("generated_at", SECRET)), "schema: generated_at: not an ISO date-time"),
    "number date": (_corrupt(_set("generated_at", 20261124)), "schema: generated_at: not a string"),
    "bad planned start": (_corrupt(_set("schedule.planned_start", "yesterday " + SECRET)),
                          "schema: schedule.planned_start: not an ISO date-time"),
    "bad segment date": (_corrupt(_set("job.segments", [{"index": 1, "start": SECRET}])),
                         "schema: job.segments[0].start: not an ISO date-time"),
    "oversized string": (_corrupt(_set("sources.forecast", SECRET * 300)),
                         "schema: sources.forecast: too long"),
    "oversized id": (_corrupt(_set("dag_run_id", SECRET * 30)), "schema: dag_run_id: too long"),
    "path in a dag id": (_corrupt(_set("dag_id", "../" + SECRET)), "schema: dag_id: not an Airflow id"),
    "huge list": (_corrupt(_set("sources.fallback_reasons", [SECRET] * 1001)),
                  "schema: sources.fallback_reasons: too many items"),
    "dict for a list": (_corrupt(_set("sources.fallback_reasons", {SECRET: 1})),
                        "schema: sources.fallback_reasons: not a list"),
    "list for a block": (_corrupt(_set("carbon_savings", [SECRET])),
                         "schema: carbon_savings: not an object"),
    "intervals not a list": (_corrupt(_set("intensities", {"baseline": {"intervals": 3}})),
                             "schema: intensities.baseline: intervals not a list"),
    "nested too deep": (_corrupt(_set("route", {SECRET: {"a": {"b": SECRET}}})),
                        "schema: route.?: too deeply nested"),
    "long text deep down": (_corrupt(_set("intensities", {"baseline": {"error": SECRET * 300}})),
                            "schema: intensities.baseline: text too long"),
    "no run id": (_corrupt(lambda report: report.pop("dag_run_id") and None), "schema: dag_run_id: missing"),
    "not JSON": ("{" + SECRET, "not JSON"),
    "not UTF-8 JSON": (b"\xff\xfe" + SECRET.encode(), "not JSON"),
    "nested 100000 deep": ("[" * 100_000 + "]" * 100_000, "not JSON"),
    "oversized file": (_corrupt(_oversized_file), "too big (over 8 MiB)"),
}


@pytest.fixture
def corrupt_among_good(client, request):
    """Two good runs and, in ``manual__corrupt``, the corrupt report named by the test's parameter."""
    text, reason = CORRUPTIONS[request.param]
    _write(_report("manual__good1", "2026-11-22T12:00:00+00:00", 0.0004, 0.0003))
    _write(_report("manual__good2", "2026-11-23T12:00:00+00:00", 0.0005, 0.0002))
    corrupt = _store_raw(CORRUPT_DIR, text)
    return client, reason, corrupt


@pytest.mark.parametrize("corrupt_among_good", list(CORRUPTIONS), indirect=True)
def test_a_corrupt_report_is_listed_as_unreadable_and_the_others_shown(corrupt_among_good):
    client, reason, corrupt = corrupt_among_good
    page = client.get("/")
    assert page.status_code == 200 and SECRET not in page.text
    for run_id in ("manual__good1", "manual__good2"):
        assert f'<tr data-run-id="{run_id}"' in page.text
    row = r'<tr data-run-id="manual__corrupt"[^>]*class="unreadable">(.*?)</tr>'
    unreadable = re.search(row, page.text, re.S)
    assert unreadable and "unreadable report" in unreadable.group(1) and reason in unreadable.group(1)
    assert page.text.count("<circle") == 2  # the chart, like the totals, counts the valid runs only

    api = client.get("/api/runs")
    assert api.status_code == 200 and SECRET not in api.text
    body = api.json()
    assert [row["run_id"] for row in body["runs"]] == ["manual__good2", "manual__good1"]
    listed = {"run_id": CORRUPT_DIR, "dag_id": "carbon_training", "report_id": corrupt, "unreadable": reason}
    assert body["unreadable_runs"] == [listed]
    assert body["totals"]["runs"] == 2 and body["totals"]["saving_kg"] == pytest.approx(0.0009)

    run_page = client.get(f"/runs/{corrupt}")
    assert run_page.status_code == 422 and SECRET not in run_page.text
    assert "unreadable report" in run_page.text and reason in run_page.text
    # The stored JSON is still served as a download (an attachment, never shown on the page).
    download = client.get(f"/runs/{corrupt}/comparison_report.json")
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]


def test_only_unreadable_reports_still_list_them_with_empty_totals(client):
    _store_raw("manual__x", "[]")
    page = client.get("/")
    assert page.status_code == 200 and "unreadable report" in page.text
    assert "No report you may read" not in page.text
    assert client.get("/api/runs").json()["totals"]["runs"] == 0


@pytest.mark.parametrize("path", ["/runs/a%00b", "/runs/a%00b/comparison_report.json", "/runs/1x",
                                  "/runs/..%2F..%2Fetc", "/runs/99999", "/runs/1/plan.json"])
def test_only_stored_reports_by_their_id_are_served(client, path):
    _write(_report("manual__a", "2026-11-22T12:00:00+00:00", 0.0, 0.0))
    assert client.get(path).status_code in (404, 422), path
