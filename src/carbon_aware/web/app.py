"""The Carbon page: a FastAPI app the Airflow API server mounts at /carbon (registered by
:mod:`carbon_aware.plugins.carbon_page`).

Reports are untrusted input: the page shows only what passed report_schema's check, and lists a report
that failed it as "unreadable report" with the reason, never with its content.

Every route requires an Airflow login (the browser's session cookie or a bearer token), and each report
is shown only to users whom Airflow's own auth manager allows to read *that report's* DAG's runs.
Plugin apps are not covered by the core API's authentication, so the dependency sits on the app itself.
Reports come from the records database, wherever the report task ran.
"""
from __future__ import annotations

from datetime import datetime
from importlib.resources import files
from typing import Annotated, Any, Callable
from urllib.parse import quote

import jinja2
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from carbon_aware.outputs import PLOT_NAME, REPORT_NAME
from carbon_aware.accounting.report_schema import UnreadableReport, check_report
from carbon_aware.records.reports import StoredReport
from carbon_aware.web.formats import (accuracy, compressed, duration, energy, intensity, mass, moment,
                                     percent, shown)
from carbon_aware.web.runs_view import (NO_REAL_SIGNAL, cumulative, load_runs, readable_report, totals,
                                        unreadable_row)

DAG_ID = "carbon_training"
MOUNT = "/carbon"
PACKAGE_FILES = files("carbon_aware.web")  # templates and static assets ship as package data


def _signed_in():
    """Airflow's own dependency: the logged-in user (401 without a valid session or token)."""
    from airflow.api_fastapi.core_api.security import get_user

    return get_user


signed_in = _signed_in()
app = FastAPI(title="Carbon-aware training", dependencies=[Depends(signed_in)])


def readable_dags(user: Any = Depends(signed_in)) -> Callable[[str], bool]:
    """Whether the user may read a DAG's runs, asked of Airflow's auth manager once per DAG a request
    meets."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    manager, answers = get_auth_manager(), {}

    def may_read(dag_id: str) -> bool:
        if dag_id not in answers:
            answers[dag_id] = manager.is_authorized_dag(method="GET", access_entity=DagAccessEntity.RUN,
                                                        details=DagDetails(id=dag_id), user=user)
        return answers[dag_id]

    return may_read


ReadableDags = Depends(readable_dags)


# The first suffix a key ends with gives its unit: "_g_per_kwh" before "_kwh".
UNIT_BY_SUFFIX = [("_kg", mass), ("_g_per_kwh", intensity), ("_kwh", energy), ("_percentage", percent),
                  ("_pct", percent), ("_seconds", duration), ("_accuracy", accuracy),
                  ("_mb", lambda v: f"{v:.0f} MB"), ("_g", lambda v: mass(v / 1000.0)),
                  ("intensity", intensity)]


def _value(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return shown("yes" if value else "no")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for suffix, show in UNIT_BY_SUFFIX:
            if key.endswith(suffix):
                return shown(show(value))
        return shown(f"{value:g}")
    if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
        try:
            return moment(value)
        except ValueError:
            pass
    if isinstance(value, list):
        return shown("; ".join("n/a" if item is None else str(item) for item in value) or "none")
    return shown("n/a" if value is None else str(value))


# --- pages -----------------------------------------------------------------------------------------
_jinja = jinja2.Environment(loader=jinja2.PackageLoader("carbon_aware.web", "templates"), autoescape=True)


def _page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_jinja.get_template(template).render(**context), status_code=status_code)


def _ui_base(request: Request) -> str:
    """The Airflow UI's root, from where this app is mounted (the API server may sit under a prefix)."""
    root = request.scope.get("root_path", "")
    return root[: -len(MOUNT)] if root.endswith(MOUNT) else root


def _here(request: Request) -> str:
    return request.scope.get("root_path", "")


def _run_link(request: Request, dag_id: str | None, run_id: str) -> str:
    return f"{_ui_base(request)}/dags/{dag_id or DAG_ID}/runs/{quote(run_id, safe='')}"


def _saving_class(kg: float | None) -> str:
    return "" if kg is None else "good" if kg > 0 else "bad" if kg < 0 else ""


def _shown(field: str, show: Callable[[Any], str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda row: shown(show(row[field]))


def _with_sub(field: str, show: Callable[[Any], str], sub: Callable[[dict[str, Any]], str]):
    return lambda row: shown(show(row[field]), sub=sub(row))


def trace_time(iso: str | None) -> str:
    """A replayed trace's own time: text, never a <time> (the reader's local time of it means nothing)."""
    return f"trace time {datetime.fromisoformat(iso):%Y-%m-%d %H:%M} UTC" if iso else ""


def _grid_moment(row: dict[str, Any], field: str) -> dict[str, Any]:
    """A start in grid time (the replay's, for a replayed trace), the trace's own time beneath."""
    return {**moment(row[field], seconds=False), "sub": trace_time(row.get(f"trace_{field}"))}


def _saving(row: dict[str, Any]) -> dict[str, Any]:
    if row.get("no_real_signal"):  # planned on the mock curve: no saving claimed, none counted
        return shown(NO_REAL_SIGNAL, sub="not counted")
    return shown(mass(row["saving_kg"]), css=_saving_class(row["saving_kg"]), sub=percent(row["saving_pct"]))


# The runs table after its first column: (header, row field, what the cell shows, right-aligned number?)
COLUMNS: list[tuple[str, str, Callable[[dict[str, Any]], dict[str, Any]], bool]] = [
    ("provider / region", "provider", _with_sub("provider", str, lambda row: str(row["region"] or "")),
     False),
    ("planned start", "planned_start", lambda row: _grid_moment(row, "planned_start"), False),
    ("actual start", "actual_start", lambda row: _grid_moment(row, "actual_start"), False),
    ("wait", "wait_seconds",
     _with_sub("wait_seconds", duration,
               lambda row: compressed(row["wait_seconds"], row["time_compression"])),
     True),
    ("intensity run-now", "run_now_intensity_g_per_kwh", _shown("run_now_intensity_g_per_kwh", intensity),
     True),
    ("intensity window", "window_intensity_g_per_kwh", _shown("window_intensity_g_per_kwh", intensity),
     True),
    ("energy baseline", "baseline_energy_kwh", _shown("baseline_energy_kwh", energy), True),
    ("energy optimized", "optimized_energy_kwh", _shown("optimized_energy_kwh", energy), True),
    ("emissions baseline", "baseline_emissions_kg", _shown("baseline_emissions_kg", mass), True),
    ("emissions optimized", "optimized_emissions_kg", _shown("optimized_emissions_kg", mass), True),
    ("saving", "saving_kg", lambda row: _saving(row), True),
    ("by place", "place_saving_kg",
     _with_sub("place_saving_kg", lambda kg: "n/a" if kg is None else mass(kg),
               lambda row: f"{row['home_region']} → {row['chosen_region']}"
               if row["chosen_region"] else ""),
     True),
    ("by timing", "timing_saving_kg", _shown("timing_saving_kg", mass), True),
    ("by efficiency", "efficiency_saving_kg", _shown("efficiency_saving_kg", mass), True),
    ("segments", "segments", _shown("segments", lambda n: "n/a" if n is None else str(n)), True),
    ("baseline", "baseline_kind",
     _with_sub("baseline_kind", str, lambda row: f"cost {mass(row['baseline_cost_kg'])}"), False),
    ("accuracy baseline", "baseline_accuracy_pct", _shown("baseline_accuracy_pct", accuracy), True),
    ("accuracy optimized", "optimized_accuracy_pct", _shown("optimized_accuracy_pct", accuracy), True),
    ("re-plans", "replans", _shown("replans", str), True),
    ("fallbacks", "fallback_reasons",
     lambda row: shown("; ".join(row["fallback_reasons"] or []) or "none"), False),
]
CARDS = (("net_saving_kg", "Avoided in total (net)", "counterfactual − actual − baseline measurements"),
         ("saving_kg", "counterfactual − actual", "{priced} of {runs} runs priced"),
         ("baseline_cost_kg", "baseline measurements emitted", "subtracted from the net total"),
         ("timing_saving_kg", "by timing (cleaner window)", "{priced} of {runs} runs priced"),
         ("efficiency_saving_kg", "by efficiency (less energy)", "{priced} of {runs} runs priced"))


def _raw(value: Any) -> str:
    return "; ".join(value) if isinstance(value, list) else "" if value is None else str(value)


def _chart(points: list[dict[str, Any]], width: int = 640, height: int = 200) -> dict[str, Any] | None:
    """Screen coordinates of the cumulative net and gross avoided CO2e over runs."""
    if not points:
        return None
    left, right, top, bottom = 80, width - 10, 10, height - 22
    values = [0.0, *(p["net_kg"] for p in points), *(p["avoided_kg"] for p in points)]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = (right - left) / max(len(points) - 1, 1)

    def y(v: float) -> float:
        return round(bottom - (v - low) / span * (bottom - top), 1)

    xs = [round(left + i * step, 1) for i in range(len(points))]
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": right,
        "top": top,
        "bottom": bottom,
        "zero": y(0.0),
        "max_text": mass(high),
        "min_text": mass(low),
        "first": points[0]["run_id"][:28],
        "last": points[-1]["run_id"][:28] if len(points) > 1 else "",
        "net": " ".join(f"{x},{y(p['net_kg'])}" for x, p in zip(xs, points)),
        "avoided": " ".join(f"{x},{y(p['avoided_kg'])}" for x, p in zip(xs, points)),
        "points": [
            {
                "x": x,
                "y": y(p["net_kg"]),
                "run_id": p["run_id"],
                "value": p["net_kg"],
                "text": mass(p["net_kg"]),
            }
            for x, p in zip(xs, points)
        ],
    }


def _cards(total: dict[str, Any]) -> list[dict[str, Any]]:
    cards = []
    left_out = total.get("runs_no_real_signal")
    for key, label, note in CARDS:
        value = total[key]
        css = _saving_class(-value if key == "baseline_cost_kg" else value)
        note = note.format(priced=total.get(f"{key}_runs_priced"), runs=total["runs"])
        if left_out:
            note += f"; {left_out} run{'s' if left_out > 1 else ''} with {NO_REAL_SIGNAL} not counted"
        cards.append({"key": key, "value": value, "label": label, "text": mass(value), "css": css,
                      "note": note})
    return cards


def _row(row: dict[str, Any], request: Request) -> dict[str, Any]:
    cells = [{"field": field, "raw": _raw(row[field]), "shown": show(row), "numeric": numeric}
             for _, field, show, numeric in COLUMNS]
    return {"run_id": row["run_id"], "report_id": row["report_id"], "dag_id": row.get("dag_id"),
            "cells": cells,
            "run_link": _run_link(request, row.get("dag_id"), row["run_id"]),
            "wait_task_id": row.get("wait_task_id") or "wait_for_window",
            "report_task_id": row.get("report_task_id") or "report"}


@app.get("/", response_class=HTMLResponse)
def runs_page(request: Request, may_read: Callable[[str], bool] = ReadableDags) -> HTMLResponse:
    """Totals and chart count the valid reports only; an unreadable one is listed below them."""
    rows, unreadable = load_runs(may_read)
    context: dict[str, Any] = {"title": "Carbon", "dag_id": DAG_ID, "here": _here(request), "rows": [],
                               "unreadable": unreadable}
    if not rows and not unreadable:
        return _page("runs.html", **context)
    points = cumulative(rows)
    return _page("runs.html", **{**context, "rows": [_row(row, request) for row in rows],
                                 "headers": [column[0] for column in COLUMNS],
                                 "cards": _cards(totals(rows)), "chart": _chart(points)})


@app.get("/api/runs")
def runs_json(may_read: Callable[[str], bool] = ReadableDags) -> JSONResponse:
    """``runs``: the valid reports of the DAGs the caller may read (what the totals sum);
    ``unreadable_runs``: run id, DAG, report id and the reason for each report that failed the check."""
    rows, unreadable = load_runs(may_read)
    return JSONResponse(
        {
            "runs": rows,
            "unreadable_runs": unreadable,
            "totals": totals(rows),
            "cumulative": cumulative(rows),
            "units": {
                "_kg": "kg CO2e",
                "_kwh": "kWh",
                "_g_per_kwh": "gCO2e/kWh",
                "_pct": "%",
                "_seconds": "s",
            },
        }
    )


def _stored_or_404(report_id: int, may_read: Callable[[str], bool]) -> StoredReport:
    stored = readable_report(report_id, may_read)
    if stored is None:
        raise HTTPException(status_code=404, detail=f"no report {report_id}")
    return stored


# The run page's blocks, in order; a block the report does not have is left out.
RUN_BLOCKS = ("baseline", "carbon_savings", "place", "timing", "efficiency", "intensities", "job", "route",
              "stop", "accuracy_impact", "memory_savings", "schedule", "sources", "codecarbon_static")
JOB_FIELDS = ("status", "attempts", "interruptible", "worker_region")  # the rest: the segments table
# (header, segment field, right-aligned number?): each value shown with its unit by _value
SEGMENT_COLUMNS = (("#", "index", True), ("planned start", "planned_start", False),
                   ("start", "start", False), ("end", "end", False), ("energy", "energy_kwh", True),
                   ("emissions", "emissions_g", True),
                   ("mean intensity", "mean_intensity_g_per_kwh", True), ("attempts", "attempts", True),
                   ("stopped by", "stopped", False))


def _block_fields(block: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    fields = []
    for key, value in values.items():
        if isinstance(value, dict):
            fields += [{"label": f"{key}.{k}", "path": f"{block}.{key}.{k}",
                        "shown": _value(k, len(v) if k == "intervals" and isinstance(v, list) else v)}
                       for k, v in value.items()]
        else:
            fields.append({"label": key, "path": f"{block}.{key}", "shown": _value(key, value)})
    return fields


def _segment(segment: dict[str, Any]) -> dict[str, Any]:
    def cell(field: str) -> dict[str, Any]:
        value = segment.get(field)
        if field == "stopped":  # one entry per attempt: its stop reason, None when it ran to the end
            return shown("; ".join(str(reason) for reason in value if reason) or "done" if value else "n/a")
        return _value(field, value)

    return {"index": segment.get("index"),
            "cells": [{"field": field, "shown": cell(field), "numeric": numeric}
                      for _, field, numeric in SEGMENT_COLUMNS]}


def _unreadable_page(stored: StoredReport, error: UnreadableReport, here: str) -> HTMLResponse:
    """422: the report is there but fails the schema check; the raw JSON is still offered for download."""
    row = unreadable_row(stored, error)
    return _page("unreadable.html", status_code=422, title=f"Carbon · {row['run_id']}", here=here,
                 report_name=REPORT_NAME, **row)


@app.get("/runs/{report_id}", response_class=HTMLResponse)
def run_page(report_id: int, request: Request, may_read: Callable[[str], bool] = ReadableDags
             ) -> HTMLResponse:
    stored = _stored_or_404(report_id, may_read)
    try:
        report = check_report(stored.text.encode())
    except UnreadableReport as error:
        return _unreadable_page(stored, error, _here(request))
    here, run_id = _here(request), report["dag_run_id"]
    job = report.get("job") or {}
    shown_blocks = {**report, "job": {key: job.get(key) for key in JOB_FIELDS} if job else None}
    blocks = [{"name": block, "fields": _block_fields(block, shown_blocks[block])}
              for block in RUN_BLOCKS if isinstance(shown_blocks.get(block), dict) and shown_blocks[block]]
    replay = report.get("replay") or {}
    for field in (f for block in blocks if block["name"] == "schedule" for f in block["fields"]):
        field["shown"]["sub"] = trace_time(replay.get(field["path"].removeprefix("schedule.")))
    return _page("run.html", title=f"Carbon · {run_id}", here=here, run_id=run_id, report_id=report_id,
                 dag_id=stored.dag_id, baseline_kind=report.get("baseline_kind") or "",
                 report_name=REPORT_NAME, no_real_signal=report.get("no_real_signal"), replay=replay,
                 run_link=_run_link(request, stored.dag_id, run_id),
                 plot_url=f"{here}/runs/{report_id}/{PLOT_NAME}",
                 blocks=blocks, segment_headers=[column[0] for column in SEGMENT_COLUMNS],
                 segments=[_segment(segment) for segment in job.get("segments") or []])


@app.get("/runs/{report_id}/{name}")
def run_file(report_id: int, name: str, may_read: Callable[[str], bool] = ReadableDags) -> Response:
    """The stored report as a download (as stored, even when it fails the check), or its plot drawn
    from the report's own intervals (a report that fails the check has none)."""
    if name not in (REPORT_NAME, PLOT_NAME):
        raise HTTPException(status_code=404, detail=f"{name!r}: expected {REPORT_NAME} or {PLOT_NAME}")
    stored = _stored_or_404(report_id, may_read)
    if name == REPORT_NAME:
        download = f"{stored.dag_id}-{stored.run_id}-{REPORT_NAME}"
        return Response(stored.text, media_type="application/json",
                        headers={"content-disposition": f"attachment; filename*=utf-8''{quote(download)}"})
    try:
        report = check_report(stored.text.encode())
    except UnreadableReport:
        raise HTTPException(status_code=404, detail=f"no plot for report {report_id}") from None
    from carbon_aware.accounting.report import plot_png

    return Response(plot_png(report), media_type="image/png")


# A DAG id to narrow the ledger to: a plain string (no control characters) up to Airflow's 250.
LedgerDag = Annotated[str | None, Query(min_length=1, max_length=250, pattern=r"^[^\x00-\x1f\x7f]+$")]


@app.get("/ledger", response_class=HTMLResponse)
def ledger_page(request: Request, dag_id: LedgerDag = None, may_read: Callable[[str], bool] = ReadableDags
                ) -> HTMLResponse:
    """Every measured try of the DAGs the user may read, by DAG and task, then the latest tries."""
    from carbon_aware.web import ledger_view

    here = _here(request)
    view = ledger_view.page(ledger_view.read(may_read, dag_id), here,
                            lambda dag, run: _run_link(request, dag, run))
    return _page("ledger.html", title="Carbon · ledger", here=here, dag_id=dag_id, **view)


@app.get("/api/ledger")
def ledger_json(dag_id: LedgerDag = None, may_read: Callable[[str], bool] = ReadableDags) -> JSONResponse:
    """The ledger (:class:`carbon_aware.ledger.models.Ledger`) of the DAGs the caller may read, or of
    ``dag_id`` alone (an unknown or unreadable one: empty lists). Energy in kWh, emissions in g CO2e."""
    from carbon_aware.web import ledger_view

    return JSONResponse(ledger_view.read(may_read, dag_id).model_dump(mode="json"))


@app.get("/icon.svg")
def icon() -> Response:
    svg = PACKAGE_FILES.joinpath("static", "carbon-leaf.svg").read_bytes()
    return Response(svg, media_type="image/svg+xml")


@app.exception_handler(StarletteHTTPException)
async def _refuse(request: Request, error: StarletteHTTPException):
    """Browsers get a page saying to sign in; other clients get JSON. Either way, no data."""
    if error.status_code in (401, 403) and "text/html" in request.headers.get("accept", ""):
        login = f"{_ui_base(request)}/auth/login?next={quote(str(request.url), safe='')}"
        return _page("signin.html", status_code=error.status_code, title="Carbon: sign in", login=login,
                     detail=str(error.detail))
    return JSONResponse({"detail": error.detail}, status_code=error.status_code)
