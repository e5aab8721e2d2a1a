"""The Carbon page's Ledger view (/carbon/ledger) and its JSON (/carbon/api/ledger), on a ledger a test
builds from the models (the book that reads the records database stands in as a fake): the figures by DAG
and task, per run measured as one unit and per try, each with its unit; per-DAG visibility in both, even
when the book would leak; the note on shared machines; the line on totals of the newest tries only;
unknown energy with its reason; hostile ids escaped. The ledger's own figures
are tested in tests/test_ledger.py, and on the Celery stack in tests/stack/test_ledger.py."""
import re
import sys
import types
from datetime import date, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

import carbon_aware.ledger as ledger_package
from carbon_aware.ledger.models import (SHARED_MACHINE_NOTE, Ledger, LedgerDay, LedgerTask, PricedInterval,
                                        RunLedger, Shadow, TaskLedger)
from carbon_aware.web import app as web
from carbon_aware.web import ledger_view

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
ETL, SECRET = "nightly_etl", "secret_dag"
HOSTILE = "<script>alert(1)</script>"
RUN_23, RUN_22 = "scheduled__2026-11-23T00:00:00+00:00", "scheduled__2026-11-22T00:00:00+00:00"
NO_METER = "the meter could not start: CodeCarbon found no hardware"
MOCK_NOTE = "the forecast fell back to the mock curve: no shadow plan"
RUN_NOTE = "a try of the run has no energy: no shadow plan for the run"
RECORDED = {ETL: 2504, SECRET: 7919}  # tries of each DAG in the records (the entries: the newest only)


def _interval(start: datetime, minutes: int, kwh: float, g_per_kwh: float, source: str) -> PricedInterval:
    return PricedInterval(start=start, end=start + timedelta(minutes=minutes), kwh=kwh, g_per_kwh=g_per_kwh,
                          source=source)


def _entries() -> list[LedgerTask]:
    """Five tries, in no particular order: two of ``extract`` (the later one with a shadow plan), an
    unmeasured ``load``, a task with a hostile id, and one of a DAG some users may not read."""
    extract = LedgerTask(
        dag_id=ETL, run_id=RUN_23, task_id="extract", try_number=1, worker="worker-1", region="uk",
        started_at=T0 + timedelta(hours=1), ended_at=T0 + timedelta(hours=1, minutes=10), state="success",
        energy_kwh=0.012, cpu_kwh=0.01, ram_kwh=0.002, gpu_kwh=0.0, measured_seconds=590.0, emissions_g=3.0,
        mean_intensity_g_per_kwh=250.0, intensity_sources=["actual:neso"],
        intervals=[_interval(T0 + timedelta(hours=1), 10, 0.012, 250.0, "actual:neso")],
        shadow=Shadow(deadline=T0 + timedelta(hours=20), start=T0 + timedelta(hours=6),
                      end=T0 + timedelta(hours=6, minutes=10), forecast_source="neso",
                      forecast_issued=T0 + timedelta(minutes=30), emissions_g=1.8, priced_on="actual",
                      saved_g=1.2, saved_pct=40.0))
    earlier = LedgerTask(
        dag_id=ETL, run_id=RUN_22, task_id="extract", try_number=1, worker="worker-2", region="uk",
        started_at=T0 - timedelta(days=1), ended_at=T0 - timedelta(days=1) + timedelta(minutes=5),
        state="failed", energy_kwh=0.008, measured_seconds=290.0, emissions_g=2.4,
        mean_intensity_g_per_kwh=300.0, intensity_sources=["forecast:neso", "nearest"],
        intervals=[_interval(T0 - timedelta(days=1), 5, 0.008, 300.0, "forecast:neso")],
        shadow_note=MOCK_NOTE)
    load = LedgerTask(
        dag_id=ETL, run_id=RUN_23, task_id="load", try_number=1, worker="worker-1", region="uk",
        started_at=T0 + timedelta(minutes=30), ended_at=None, state="ended unreported", energy_kwh=None,
        energy_note=NO_METER, shadow_note="no energy, no shadow plan")
    hostile = LedgerTask(
        dag_id=ETL, run_id=RUN_23, task_id=HOSTILE, try_number=1, worker="worker-1", region="uk",
        started_at=T0 + timedelta(hours=2), ended_at=T0 + timedelta(hours=2, minutes=1), state="success",
        energy_kwh=0.001, emissions_g=0.25, mean_intensity_g_per_kwh=250.0, intensity_sources=["actual:neso"])
    secret = LedgerTask(
        dag_id=SECRET, run_id="manual__secret-run", task_id="train", try_number=3, worker="gpu-secret-worker",
        region="de", started_at=T0 + timedelta(hours=3), ended_at=T0 + timedelta(hours=4), state="success",
        energy_kwh=2.5, emissions_g=900.0, mean_intensity_g_per_kwh=360.0, intensity_sources=["actual:de"])
    return [load, secret, earlier, hostile, extract]


def _tasks() -> list[TaskLedger]:
    return [
        TaskLedger(dag_id=ETL, task_id="extract", runs=2, tries=2, energy_kwh=0.02, emissions_g=5.4,
                   mean_intensity_g_per_kwh=270.0, would_have_saved_g=1.2, would_have_saved_pct=40.0,
                   unmeasured_tries=0,
                   trend=[LedgerDay(day=date(2026, 11, 23), tries=1, energy_kwh=0.012, emissions_g=3.0,
                                    would_have_saved_g=1.2),
                          LedgerDay(day=date(2026, 11, 22), tries=1, energy_kwh=0.008, emissions_g=2.4,
                                    would_have_saved_g=0.0)]),
        TaskLedger(dag_id=ETL, task_id="load", runs=1, tries=1, energy_kwh=0.0, emissions_g=0.0,
                   mean_intensity_g_per_kwh=None, would_have_saved_g=0.0, would_have_saved_pct=None,
                   unmeasured_tries=1, trend=[]),
        TaskLedger(dag_id=ETL, task_id=HOSTILE, runs=1, tries=1, energy_kwh=0.001, emissions_g=0.25,
                   mean_intensity_g_per_kwh=250.0, would_have_saved_g=0.0, would_have_saved_pct=None,
                   unmeasured_tries=0,
                   trend=[LedgerDay(day=date(2026, 11, 23), tries=1, energy_kwh=0.001, emissions_g=0.25,
                                    would_have_saved_g=0.0)]),
        TaskLedger(dag_id=SECRET, task_id="train", runs=1, tries=1, energy_kwh=2.5, emissions_g=900.0,
                   mean_intensity_g_per_kwh=360.0, would_have_saved_g=0.0, would_have_saved_pct=None,
                   unmeasured_tries=0,
                   trend=[LedgerDay(day=date(2026, 11, 23), tries=1, energy_kwh=2.5, emissions_g=900.0,
                                    would_have_saved_g=0.0)]),
    ]


def _runs() -> list[RunLedger]:
    """Runs as one unit, in no particular order: ETL's two (the later with a shadow plan, the earlier
    without one) and one of the DAG some users may not read."""
    later = RunLedger(
        dag_id=ETL, run_id=RUN_23, started_at=T0 + timedelta(minutes=30),
        ended_at=T0 + timedelta(hours=2, minutes=1), tries=3, energy_kwh=0.013, emissions_g=3.25,
        shadow=Shadow(deadline=T0 + timedelta(hours=20), start=T0 + timedelta(hours=5),
                      end=T0 + timedelta(hours=6, minutes=31), forecast_source="neso",
                      forecast_issued=T0 + timedelta(minutes=15), emissions_g=2.6,
                      priced_on="actual+forecast", saved_g=0.65, saved_pct=20.0))
    earlier = RunLedger(
        dag_id=ETL, run_id=RUN_22, started_at=T0 - timedelta(days=1),
        ended_at=T0 - timedelta(days=1) + timedelta(minutes=5), tries=1, energy_kwh=0.008, emissions_g=2.4,
        shadow_note=RUN_NOTE)
    secret = RunLedger(
        dag_id=SECRET, run_id="manual__secret-run", started_at=T0 + timedelta(hours=3),
        ended_at=T0 + timedelta(hours=4), tries=3, energy_kwh=2.5, emissions_g=900.0,
        shadow=Shadow(deadline=T0 + timedelta(hours=30), start=T0 + timedelta(hours=12),
                      end=T0 + timedelta(hours=13), forecast_source="de", forecast_issued=T0,
                      emissions_g=700.0, priced_on="forecast", saved_g=200.0, saved_pct=22.2))
    return [earlier, secret, later]


ASKED: list[str] = []  # the DAG ids the fake book asked may_read about


def _ledger(shows) -> Ledger:
    return Ledger(tasks=[t for t in _tasks() if shows(t.dag_id)],
                  entries=[e for e in _entries() if shows(e.dag_id)],
                  runs=[r for r in _runs() if shows(r.dag_id)],
                  tries_total=sum(n for dag_id, n in RECORDED.items() if shows(dag_id)))


def fake_ledger(may_read) -> Ledger:
    """As book.ledger does: only the DAGs ``may_read`` allows."""
    ASKED.clear()

    def shows(dag_id: str) -> bool:
        ASKED.append(dag_id)
        return may_read(dag_id)

    return _ledger(shows)


def leaky_ledger(may_read) -> Ledger:
    """A book that forgets to ask: the view must still leave out what the user may not read."""
    return _ledger(lambda dag_id: True)


def readable(*hidden: str):
    """The auth manager's answer, as a test chooses it: every DAG but ``hidden``."""
    return lambda: (lambda dag_id: dag_id not in hidden)


@pytest.fixture
def use_book(monkeypatch):
    """Stands a fake in for carbon_aware.ledger.book (whether or not the real one is imported yet)."""

    def use(ledger) -> None:
        book = types.SimpleNamespace(ledger=ledger)
        monkeypatch.setitem(sys.modules, "carbon_aware.ledger.book", book)
        monkeypatch.setattr(ledger_package, "book", book, raising=False)

    use(fake_ledger)
    return use


@pytest.fixture
def client(use_book):
    web.app.dependency_overrides[web.signed_in] = lambda: None
    web.app.dependency_overrides[web.readable_dags] = readable()
    yield TestClient(web.app)
    web.app.dependency_overrides.clear()


def _rows(page: str, kind: str) -> list[tuple[str, str]]:
    """(attributes, cells) of every ``<tr class="kind" ...>`` in the page."""
    return re.findall(rf'<tr class="{kind}"([^>]*)>(.*?)</tr>', page, re.S)


def _cells(row: str) -> dict[str, tuple[str, str]]:
    """Each cell of a row by its first class: (data-value, text with the tags stripped)."""
    return {css: (raw, " ".join(re.sub(r"<[^>]+>", " ", text).split()))
            for css, raw, text in re.findall(r'<td class="([\w-]+)[^"]*" data-value="([^"]*)">(.*?)</td>',
                                             row, re.S)}


def _attrs(attributes: str) -> dict[str, str]:
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', attributes))


def test_the_view_lists_each_task_and_try_with_its_figures_and_units(client):
    page = client.get("/ledger")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    tasks = {(_attrs(a)["dag-id"], _attrs(a)["task-id"]): _cells(row) for a, row in _rows(page.text,
                                                                                         "ledger-task")}
    assert set(tasks) == {(ETL, "extract"), (ETL, "load"), (ETL, "&lt;script&gt;alert(1)&lt;/script&gt;"),
                          (SECRET, "train")}
    extract = tasks[(ETL, "extract")]
    assert extract["runs"] == ("2", "2") and extract["tries"] == ("2", "2")
    assert extract["energy-kwh"] == ("0.02", "20 Wh") and extract["emissions-g"] == ("5.4", "5.4 g CO₂e")
    assert extract["mean-intensity"] == ("270.0", "270 g/kWh")
    assert extract["would-have-saved-g"] == ("1.2", "1.2 g CO₂e")
    assert extract["would-have-saved-pct"] == ("40.0", "+40.0 %")
    assert extract["unmeasured-tries"] == ("0", "0") and tasks[(ETL, "load")]["unmeasured-tries"][0] == "1"
    assert tasks[(ETL, "load")]["mean-intensity"] == ("", "n/a")

    # The trend: a sparkline and the days, oldest first.
    extract_row = next(row for a, row in _rows(page.text, "ledger-task") if 'data-task-id="extract"' in a)
    assert extract_row.count("<circle") == 2 and "<polyline" in extract_row
    trend = re.search(r'<details class="ledger-trend" data-dag-id="nightly_etl" data-task-id="extract">'
                      r'(.*?)</details>', page.text, re.S).group(1)
    days = [(_attrs(a)["day"], _cells(row)) for a, row in _rows(trend, "ledger-day")]
    assert [day for day, _ in days] == ["2026-11-22", "2026-11-23"]
    assert days[1][1]["emissions-g"] == ("3.0", "3 g CO₂e")
    assert days[1][1]["would-have-saved-g"] == ("1.2", "1.2 g CO₂e")

    tries = [(_attrs(a), _cells(row)) for a, row in _rows(page.text, "ledger-try")]
    assert [(t["task-id"], t["run-id"]) for t, _ in tries] == [  # newest first
        ("train", "manual__secret-run"), ("&lt;script&gt;alert(1)&lt;/script&gt;", RUN_23),
        ("extract", RUN_23), ("load", RUN_23), ("extract", RUN_22)]
    attrs, cells = tries[2]
    assert (attrs["dag-id"], attrs["try"], attrs["map-index"]) == (ETL, "1", "-1")
    assert cells["worker"][1] == "worker-1" and cells["region"][1] == "uk"
    assert cells["started-at"] == ("2026-11-23T11:00:00+00:00", "2026-11-23 11:00:00 UTC")
    assert cells["ended-at"][1] == "2026-11-23 11:10:00 UTC" and cells["state"][1] == "success"
    assert cells["energy-kwh"] == ("0.012", "12 Wh measured over 9.8 min")
    assert cells["emissions-g"] == ("3.0", "3 g CO₂e")
    assert cells["mean-intensity"] == ("250.0", "250 g/kWh")
    assert cells["intensity-sources"][1] == "actual:neso"
    assert cells["shadow-window"] == (
        "2026-11-23T16:00:00+00:00/2026-11-23T16:10:00+00:00",
        "2026-11-23 16:00 – 16:10 UTC forecast neso issued 2026-11-23 10:30 UTC; "
        "deadline 2026-11-24 06:00 UTC")
    assert cells["would-have-saved-g"] == (
        "1.2", "1.2 g CO₂e +40.0 % · would have emitted 1.8 g CO₂e · priced on actual")
    earlier = tries[4][1]
    assert earlier["shadow-window"] == ("", MOCK_NOTE) and earlier["would-have-saved-g"] == ("", "n/a")
    assert earlier["intensity-sources"][1] == "forecast:neso; nearest"
    # "would have", never a saving achieved
    assert "would have saved (shadow plan)" in page.text and "never a saving achieved" in page.text


def test_the_runs_as_one_unit_are_listed_with_their_figures_and_shadow_window(client):
    page = client.get("/ledger").text
    assert page.index('id="ledger-tasks"') < page.index('id="ledger-runs"') < page.index('id="ledger-tries"')
    runs = [(_attrs(a), _cells(row)) for a, row in _rows(page, "ledger-run")]
    assert [(r["dag-id"], r["run-id"]) for r, _ in runs] == [  # newest first
        (SECRET, "manual__secret-run"), (ETL, RUN_23), (ETL, RUN_22)]
    cells = runs[1][1]
    assert cells["dag-id"][1] == ETL and cells["run-id"] == (RUN_23, RUN_23)
    assert cells["started-at"] == ("2026-11-23T10:30:00+00:00", "2026-11-23 10:30:00 UTC")
    assert cells["ended-at"] == ("2026-11-23T12:01:00+00:00", "2026-11-23 12:01:00 UTC")
    assert cells["tries"] == ("3", "3")
    assert cells["energy-kwh"] == ("0.013", "13 Wh") and cells["emissions-g"] == ("3.25", "3.25 g CO₂e")
    assert cells["shadow-window"] == (
        "2026-11-23T15:00:00+00:00/2026-11-23T16:31:00+00:00",
        "2026-11-23 15:00 – 16:31 UTC forecast neso issued 2026-11-23 10:15 UTC; "
        "deadline 2026-11-24 06:00 UTC")
    assert cells["would-have-saved-g"] == (
        "0.65", "650 mg CO₂e +20.0 % · would have emitted 2.6 g CO₂e · priced on actual+forecast")
    assert cells["would-have-saved-pct"] == ("20.0", "+20.0 %")
    run_link = f"/dags/{ETL}/runs/scheduled__2026-11-23T00%3A00%3A00%2B00%3A00"  # the Airflow run
    row = next(row for a, row in _rows(page, "ledger-run") if RUN_23 in a)
    assert f'<td class="run-id" data-value="{RUN_23}"><a href="{run_link}" target="_top">' in row
    # "would have", never a saving achieved
    section = page[page.index("Runs as one unit"):page.index('id="ledger-runs"')]
    assert "<b>would have</b>" in section and "never a saving achieved" in section
    headers = page[page.index('id="ledger-runs"'):page.index("</thead>", page.index('id="ledger-runs"'))]
    assert "<th>shadow window (would have run)</th>" in headers
    assert "<th>would have saved (shadow plan)</th>" in headers


def test_a_run_without_a_shadow_plan_shows_why(client):
    page = client.get("/ledger").text
    earlier = next(_cells(row) for a, row in _rows(page, "ledger-run") if RUN_22 in a)
    assert earlier["shadow-window"] == ("", RUN_NOTE)
    assert earlier["would-have-saved-g"] == ("", "n/a") and earlier["would-have-saved-pct"] == ("", "n/a")
    assert earlier["emissions-g"] == ("2.4", "2.4 g CO₂e")


def test_without_runs_as_one_unit_there_is_no_runs_table(client, use_book):
    use_book(lambda may_read: Ledger(tasks=_tasks(), entries=_entries()))
    page = client.get("/ledger").text
    assert 'id="ledger-runs"' not in page and "Runs as one unit" not in page
    assert 'class="ledger-try"' in page


def test_totals_of_the_newest_tries_only_say_so(client, use_book):
    page = client.get("/ledger").text
    line = re.search(r'<p class="note" id="ledger-partial"([^>]*)>(.*?)</p>', page, re.S)
    total = sum(RECORDED.values())
    assert _attrs(line.group(1)) == {"tries": "5", "tries-total": str(total)}
    assert f"cover the newest 5 of {total} tries" in " ".join(line.group(2).split())
    assert (page.index('id="ledger-note"') < page.index('id="ledger-partial"')
            < page.index('id="ledger-tasks"'))
    # Every try the records hold is in the entries: no such line.
    use_book(lambda may_read: _ledger(lambda dag_id: True).model_copy(update={"tries_total": 5}))
    assert 'id="ledger-partial"' not in client.get("/ledger").text
    use_book(lambda may_read: Ledger(tasks=_tasks(), entries=_entries()))  # a count not given: 0
    assert 'id="ledger-partial"' not in client.get("/ledger").text


def test_unknown_energy_shows_why(client):
    page = client.get("/ledger").text
    load = next(_cells(row) for a, row in _rows(page, "ledger-try") if 'data-task-id="load"' in a)
    assert load["energy-kwh"] == ("", f"unknown {NO_METER}")
    assert load["emissions-g"] == ("", "unknown") and load["state"][1] == "ended unreported"
    assert load["ended-at"] == ("", "not reported")


def test_the_note_on_shared_machines_is_shown_above_the_tables(client):
    page = client.get("/ledger").text
    note = re.search(r'<p class="note" id="ledger-note">(.*?)</p>', page, re.S).group(1)
    assert escape(SHARED_MACHINE_NOTE) in note
    assert page.index('id="ledger-note"') < page.index('id="ledger-tasks"') < page.index('id="ledger-tries"')


@pytest.mark.parametrize("book", [fake_ledger, leaky_ledger])
def test_a_dag_the_user_may_not_read_is_in_neither_the_page_nor_the_json(client, use_book, book):
    use_book(book)
    web.app.dependency_overrides[web.readable_dags] = readable(SECRET)
    for response in (client.get("/ledger"), client.get("/api/ledger")):
        assert response.status_code == 200
        for hidden in (SECRET, "gpu-secret-worker", "manual__secret-run", "900 g CO₂e", "900.0", "700.0",
                       "200 g CO₂e", str(RECORDED[SECRET]), str(sum(RECORDED.values()))):
            assert hidden not in response.text, hidden
    body = client.get("/api/ledger").json()
    assert {t["dag_id"] for t in body["tasks"]} == {e["dag_id"] for e in body["entries"]} == {ETL}
    assert {r["dag_id"] for r in body["runs"]} == {ETL} and len(body["runs"]) == 2
    assert len(body["entries"]) == 4
    # A book that asked counts the readable DAGs' tries; one that leaked is not trusted with its count.
    assert body["tries_total"] == (RECORDED[ETL] if book is fake_ledger else 4)
    page = client.get("/ledger").text
    assert {_attrs(a)["dag-id"] for a, _ in _rows(page, "ledger-run")} == {ETL}
    # Asked for by name: the same answer as a DAG that does not exist.
    named = client.get("/api/ledger", params={"dag_id": SECRET})
    assert named.json() == {"tasks": [], "entries": [], "runs": [], "tries_total": 0,
                            "note": SHARED_MACHINE_NOTE}
    page = client.get("/ledger", params={"dag_id": SECRET}).text
    assert "No measured try you may read yet" in page and "gpu-secret-worker" not in page
    if book is fake_ledger:  # the book was asked with the user's own answer
        assert SECRET in ASKED


def test_the_json_is_the_ledger_models_dump(client):
    everything = _ledger(lambda dag_id: True)
    expected = everything.model_dump(mode="json")
    body = client.get("/api/ledger").json()
    assert body == expected and body["note"] == SHARED_MACHINE_NOTE
    assert Ledger.model_validate(body) == everything and len(body["runs"]) == 3
    only = client.get("/api/ledger", params={"dag_id": ETL}).json()
    assert only == {**expected, "tasks": [t for t in expected["tasks"] if t["dag_id"] == ETL],
                    "entries": [e for e in expected["entries"] if e["dag_id"] == ETL],
                    "runs": [r for r in expected["runs"] if r["dag_id"] == ETL],
                    "tries_total": RECORDED[ETL]}
    assert ASKED and set(ASKED) <= {ETL, SECRET}
    unknown = client.get("/api/ledger", params={"dag_id": "no_such_dag"})
    assert unknown.status_code == 200 and unknown.json() == {"tasks": [], "entries": [], "runs": [],
                                                              "tries_total": 0, "note": SHARED_MACHINE_NOTE}


@pytest.mark.parametrize("dag_id", ["x" * 251, "", "a\x00b", "a\nb"])
def test_a_dag_id_that_is_not_a_plain_short_string_is_refused(client, dag_id):
    for path in ("/api/ledger", "/ledger"):
        assert client.get(path, params={"dag_id": dag_id}).status_code == 422, (path, dag_id)
    assert client.get("/api/ledger", params={"dag_id": "x" * 250}).json()["tasks"] == []


def test_hostile_ids_are_escaped_not_markup(client):
    page = client.get("/ledger").text
    assert HOSTILE not in page and "<script>" not in page.split("</style>")[1].rsplit("<script>", 1)[0]
    assert 'data-task-id="&lt;script&gt;alert(1)&lt;/script&gt;"' in page
    assert ">&lt;script&gt;alert(1)&lt;/script&gt;<" in page
    assert "/tasks/%3Cscript%3Ealert%281%29%3C%2Fscript%3E" in page  # the task's link, quoted
    assert client.get("/api/ledger").json()["tasks"][2]["task_id"] == HOSTILE  # JSON: the id as it is


def test_the_pages_link_to_each_other(client):
    assert 'href="/ledger"' in client.get("/").text
    page = client.get("/ledger").text
    assert 'href="/">← Carbon runs</a>' in page and 'href="/api/ledger"' in page
    assert f'href="/ledger?dag_id={ETL}"' in page  # narrow to one DAG
    narrowed = client.get("/ledger", params={"dag_id": ETL}).text
    assert f'href="/api/ledger?dag_id={ETL}"' in narrowed and 'href="/ledger">All DAGs</a>' in narrowed
    run_link = f"/dags/{ETL}/runs/scheduled__2026-11-23T00%3A00%3A00%2B00%3A00"  # the Airflow run
    assert f'href="{run_link}" target="_top"' in page and f'href="{run_link}/tasks/extract"' in page


def test_an_empty_ledger_says_how_to_opt_in(client, use_book):
    use_book(lambda may_read: Ledger(tasks=[], entries=[]))
    page = client.get("/ledger").text
    assert "No measured try you may read yet" in page and "carbon-ledger" in page
    assert escape(SHARED_MACHINE_NOTE) in page and 'class="ledger-try"' not in page


def test_the_page_lists_the_latest_200_tries_the_json_all(client, use_book):
    many = [LedgerTask(dag_id=ETL, run_id=f"manual__{i:03d}", task_id="t", try_number=1, worker="w",
                       region="uk", started_at=T0 + timedelta(minutes=i), ended_at=None, state="running",
                       energy_kwh=0.001 * i) for i in range(205)]
    use_book(lambda may_read: Ledger(tasks=[], entries=many))
    page = client.get("/ledger").text
    run_ids = [_attrs(a)["run-id"] for a, _ in _rows(page, "ledger-try")]
    assert len(run_ids) == ledger_view.LATEST_TRIES and run_ids[0] == "manual__204"
    assert run_ids[-1] == "manual__005" and "the latest 200 of\n205" in page
    assert "still running" in page
    assert len(client.get("/api/ledger").json()["entries"]) == 205


def test_without_the_override_anonymous_requests_get_no_ledger(use_book):
    anonymous = TestClient(web.app)
    for path in ("/ledger", "/api/ledger"):
        response = anonymous.get(path, headers={"accept": "text/html"})
        assert response.status_code == 401 and ETL not in response.text and "CO₂e" not in response.text
