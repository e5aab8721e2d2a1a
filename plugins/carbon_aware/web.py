"""The Carbon page: a FastAPI app the Airflow API server mounts at /carbon (see plugins/carbon_page.py).

Every route requires an Airflow login allowed to read carbon_training's runs: the browser's session
cookie or a bearer token, checked by Airflow's own auth manager. Plugin apps are not covered by the
core API's authentication, so the dependency sits on the app itself.
"""
from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import jinja2
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from carbon_aware.outputs import PLOT_NAME, REPO_ROOT, REPORT_NAME, output_root
from carbon_aware.runs_view import cumulative, load_report, load_rows, report_file, totals

DAG_ID = "carbon_training"
MOUNT = "/carbon"
ICON = REPO_ROOT / "include" / "static" / "carbon-leaf.svg"


def _may_read_runs():
    """Airflow's own check: a logged-in user allowed to read carbon_training's runs."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=DAG_ID)


may_read_runs = _may_read_runs()
app = FastAPI(title="Carbon-aware training", dependencies=[Depends(may_read_runs)])


# --- formatting: every number carries its unit ----------------------------------------------------
def mass(kg: float | None) -> str:
    if kg is None:
        return "n/a"
    if abs(kg) >= 1:
        return f"{kg:.3g} kg CO₂e"
    if abs(kg) >= 1e-3:
        return f"{kg * 1e3:.3g} g CO₂e"
    return f"{kg * 1e6:.3g} mg CO₂e"


def energy(kwh: float | None) -> str:
    if kwh is None:
        return "n/a"
    return f"{kwh:.3g} kWh" if abs(kwh) >= 1 else f"{kwh * 1e3:.3g} Wh"


def intensity(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} g/kWh"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f} %"


def accuracy(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} %"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def compressed(seconds: float | None, compression: float | None) -> str:
    """A demo's wait runs faster than grid time: say how much grid time it stood for."""
    if seconds is None or not compression or compression == 1:
        return ""
    return f'<span class="local">time ×{compression:g}: {duration(seconds * compression)} of grid time</span>'


def moment(iso: str | None, seconds: bool = True) -> str:
    """UTC on the server; the page's script adds the reader's local time beside it."""
    if not iso:
        return "n/a"
    at = datetime.fromisoformat(iso)
    shown = at.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    return f'<time datetime="{html.escape(at.isoformat())}">{shown} UTC</time>'


UNIT_BY_SUFFIX = [("_kg", mass), ("_kwh", energy), ("_g_per_kwh", intensity), ("_percentage", percent), ("_pct", percent),
                  ("_seconds", duration), ("_accuracy", accuracy), ("_mb", lambda v: f"{v:.0f} MB")]


def _value(key: str, value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for suffix, show in UNIT_BY_SUFFIX:
            if key.endswith(suffix):
                return html.escape(show(value))
        return html.escape(f"{value:g}")
    if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
        try:
            return moment(value)
        except ValueError:
            pass
    if isinstance(value, list):
        return html.escape("; ".join(str(item) for item in value)) or "none"
    return "n/a" if value is None else html.escape(str(value))


# --- pages -----------------------------------------------------------------------------------------
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#1a202c;background:#fff}
h1{font-size:1.4rem;margin:0 0 .3rem} h2{font-size:1.1rem;margin:1.4rem 0 .5rem} .muted{color:#4a5568;font-size:.9rem}
table{border-collapse:collapse;font-size:.8rem} th,td{border-bottom:1px solid #e2e8f0;padding:.35rem .55rem;text-align:left;vertical-align:top}
th{background:#f7fafc;position:sticky;top:0} td.num{text-align:right;white-space:nowrap} time{white-space:nowrap} .local{display:block;color:#4a5568;font-size:.8em}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:.8rem 0} .card{border:1px solid #e2e8f0;border-radius:.5rem;padding:.7rem 1rem;min-width:12rem}
.card b{display:block;font-size:1.25rem} .good{color:#276749} .bad{color:#9b2c2c} .empty{border:1px dashed #a0aec0;padding:1.2rem;border-radius:.5rem;max-width:46rem}
code{background:#edf2f7;padding:0 .25rem;border-radius:.2rem} img.chart{max-width:100%;border:1px solid #e2e8f0}
"""
LOCAL_TIME_SCRIPT = """
for (const t of document.querySelectorAll('time[datetime]')) {
  const local = document.createElement('span'); local.className = 'local';
  local.textContent = new Date(t.dateTime).toLocaleString() + ' (your time)'; t.after(local);
}
"""


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
                        f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{STYLE}</style></head>"
                        f"<body>{body}<script>{LOCAL_TIME_SCRIPT}</script></body></html>", status_code=status_code)


def _ui_base(request: Request) -> str:
    """The Airflow UI's root, from where this app is mounted (the API server may sit under a prefix)."""
    root = request.scope.get("root_path", "")
    return root[: -len(MOUNT)] if root.endswith(MOUNT) else root


def _here(request: Request) -> str:
    return request.scope.get("root_path", "")


def _cell(field: str, value: Any, text: str, numeric: bool = True) -> str:
    raw = "; ".join(value) if isinstance(value, list) else "" if value is None else str(value)
    return f'<td class="{"num" if numeric else ""}" data-field="{field}" data-value="{html.escape(raw)}">{text}</td>'


def _saving_class(kg: float | None) -> str:
    return "" if kg is None else "good" if kg > 0 else "bad" if kg < 0 else ""


def _shown(field: str, show: Callable[[Any], str]) -> Callable[[dict[str, Any]], str]:
    return lambda row: show(row[field])


# The runs table after its first column: (header, row field, the cell's text, right-aligned number?)
COLUMNS: list[tuple[str, str, Callable[[dict[str, Any]], str], bool]] = [
    ("provider / region", "provider", lambda row: f'{html.escape(str(row["provider"]))}<span class="local">'
                                                  f'{html.escape(str(row["region"] or ""))}</span>', False),
    ("planned start", "planned_start", lambda row: moment(row["planned_start"], seconds=False), False),
    ("actual start", "actual_start", lambda row: moment(row["actual_start"], seconds=False), False),
    ("wait", "wait_seconds", lambda row: duration(row["wait_seconds"]) + compressed(row["wait_seconds"], row["time_compression"]), True),
    ("intensity run-now", "run_now_intensity_g_per_kwh", _shown("run_now_intensity_g_per_kwh", intensity), True),
    ("intensity window", "window_intensity_g_per_kwh", _shown("window_intensity_g_per_kwh", intensity), True),
    ("energy baseline", "baseline_energy_kwh", _shown("baseline_energy_kwh", energy), True),
    ("energy optimized", "optimized_energy_kwh", _shown("optimized_energy_kwh", energy), True),
    ("emissions baseline", "baseline_emissions_kg", _shown("baseline_emissions_kg", mass), True),
    ("emissions optimized", "optimized_emissions_kg", _shown("optimized_emissions_kg", mass), True),
    ("saving", "saving_kg", lambda row: f'<span class="{_saving_class(row["saving_kg"])}">{mass(row["saving_kg"])}</span>'
                                        f'<span class="local">{percent(row["saving_pct"])}</span>', True),
    ("by timing", "timing_saving_kg", _shown("timing_saving_kg", mass), True),
    ("by efficiency", "efficiency_saving_kg", _shown("efficiency_saving_kg", mass), True),
    ("baseline", "baseline_kind", lambda row: f'{html.escape(str(row["baseline_kind"]))}<span class="local">'
                                              f'cost {mass(row["baseline_cost_kg"])}</span>', False),
    ("accuracy baseline", "baseline_accuracy_pct", _shown("baseline_accuracy_pct", accuracy), True),
    ("accuracy optimized", "optimized_accuracy_pct", _shown("optimized_accuracy_pct", accuracy), True),
    ("re-plans", "replans", _shown("replans", str), True),
    ("fallbacks", "fallback_reasons", lambda row: html.escape("; ".join(row["fallback_reasons"] or [])) or "none", False),
]


TEMPLATES = Path(__file__).resolve().parent / "templates"
_jinja = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
CARDS = (("net_saving_kg", "Avoided in total (net)", "counterfactual − actual − baseline measurements"),
         ("saving_kg", "counterfactual − actual", "{priced} of {runs} runs priced"),
         ("baseline_cost_kg", "baseline measurements emitted", "subtracted from the net total"),
         ("timing_saving_kg", "by timing (cleaner window)", "{priced} of {runs} runs priced"),
         ("efficiency_saving_kg", "by efficiency (less energy)", "{priced} of {runs} runs priced"))


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


def _totals_html(total: dict[str, Any], points: list[dict[str, Any]]) -> str:
    cards = []
    for key, label, note in CARDS:
        value = total[key]
        css = _saving_class(-value if key == "baseline_cost_kg" else value)
        cards.append({"key": key, "value": value, "label": label, "text": mass(value), "css": css,
                      "note": note.format(priced=total.get(f"{key}_runs_priced"), runs=total["runs"])})
    return _jinja.get_template("totals.html").render(cards=cards, chart=_chart(points))


def _row_html(row: dict[str, Any], request: Request) -> str:
    here = _here(request)
    run_link = f"{_ui_base(request)}/dags/{DAG_ID}/runs/{quote(row['run_id'], safe='')}"
    first = (f'<td><a href="{here}/runs/{quote(row["directory"])}">{html.escape(row["run_id"])}</a><span class="local">'
             f'<a href="{run_link}" target="_top">Airflow run</a> · <a href="{run_link}/tasks/report" target="_top">report log</a> · '
             f'<a href="{run_link}/tasks/wait_for_window" target="_top">wait log</a></span></td>')
    cells = "".join(_cell(field, row[field], text(row), numeric) for _, field, text, numeric in COLUMNS)
    return f'<tr data-run-id="{html.escape(row["run_id"])}">{first}{cells}</tr>'


def _empty_state() -> str:
    return (f'<div class="empty"><h2>No carbon_training report yet</h2><p>Reports appear here when a run\'s '
            f'<code>report</code> task has finished. To start one: open <b>Dags → {DAG_ID}</b> and press <b>Trigger</b> '
            f'(the form explains each parameter), or run <code>airflow dags trigger {DAG_ID}</code>. '
            f'For a quick CPU run, set <code>baseline_config</code> and <code>optimized_config</code> to '
            f'<code>include/configs/test.yaml</code>.</p><p class="muted">Reading reports from '
            f'<code>{html.escape(str(output_root()))}</code>.</p></div>')


@app.get("/", response_class=HTMLResponse)
def runs_page(request: Request) -> HTMLResponse:
    rows = load_rows()
    if not rows:
        return _page("Carbon", f"<h1>Carbon saving per run</h1>{_empty_state()}")
    total = totals(rows)
    header = "".join(f"<th>{html.escape(name)}</th>" for name in ["run", *(column[0] for column in COLUMNS)])
    body = "".join(_row_html(row, request) for row in rows)
    return _page(
        "Carbon",
        f"""<h1>Carbon saving per run</h1>
<p class="muted">Emissions are each run's measured energy over time × the grid's intensity at that time (actual where
known, else the forecast). Saving = counterfactual (the baseline config started at once) − actual
(the optimized run in its window) = timing + efficiency; a baseline measured in a run was really emitted,
so the net total subtracts it. Positive is avoided CO₂e. Times in UTC, your local time beneath.
<a href="{_here(request)}/api/runs">JSON</a></p>
{_totals_html(total, cumulative(rows))}
<table id="runs"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>""",
    )


@app.get("/api/runs")
def runs_json() -> JSONResponse:
    rows = load_rows()
    return JSONResponse(
        {
            "dag_id": DAG_ID,
            "runs": rows,
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


def _report_or_404(directory: str) -> dict[str, Any]:
    report = load_report(directory)
    if report is None:
        raise HTTPException(status_code=404, detail=f"no report for run directory {directory!r}")
    return report


@app.get("/runs/{directory}", response_class=HTMLResponse)
def run_page(directory: str, request: Request) -> HTMLResponse:
    report = _report_or_404(directory)
    here, run_id = _here(request), report["dag_run_id"]
    run_link = f"{_ui_base(request)}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}"
    blocks = []
    for block in (
        "baseline",
        "carbon_savings",
        "timing",
        "efficiency",
        "intensities",
        "accuracy_impact",
        "memory_savings",
        "schedule",
        "sources",
        "codecarbon_static",
    ):
        values = report.get(block) or {}
        rows = []
        for key, value in values.items():
            if isinstance(value, dict):
                rows += [
                    f'<tr><th>{html.escape(key)}.{html.escape(k)}</th><td data-field="{block}.{key}.{k}">'
                    f'{_value(k, len(v) if k == "intervals" else v)}</td></tr>'
                    for k, v in value.items()
                ]
            else:
                rows.append(f'<tr><th>{html.escape(key)}</th><td data-field="{block}.{key}">{_value(key, value)}</td></tr>')
        blocks.append(f'<div><h2>{html.escape(block)}</h2><table>{"".join(rows)}</table></div>')
    plot = report_file(directory, PLOT_NAME)
    chart = (f'<img class="chart" id="chart" alt="grid intensity with the run-now and chosen windows" '
             f'src="{here}/runs/{quote(directory)}/{PLOT_NAME}">' if plot else '<p class="muted">No plot was written for this run.</p>')
    return _page(f"Carbon · {run_id}", f"""<p><a href="{here}/">← all runs</a></p>
<h1>{html.escape(run_id)}</h1>
<p class="muted">{html.escape(report.get("baseline_kind") or "")} · <a href="{run_link}" target="_top">Airflow run</a> ·
<a href="{here}/runs/{quote(directory)}/{REPORT_NAME}" download>download {REPORT_NAME}</a></p>
{chart}
<div class="cards">{''.join(blocks)}</div>""")


@app.get("/runs/{directory}/{name}")
def run_file(directory: str, name: str) -> FileResponse:
    if name not in (REPORT_NAME, PLOT_NAME):
        raise HTTPException(status_code=404, detail=f"{name!r}: expected {REPORT_NAME} or {PLOT_NAME}")
    path = report_file(directory, name)
    if path is None:
        raise HTTPException(status_code=404, detail=f"no {name} for run directory {directory!r}")
    if name == REPORT_NAME:
        return FileResponse(path, media_type="application/json", filename=f"{directory}-{REPORT_NAME}")
    return FileResponse(path, media_type="image/png")


@app.get("/icon.svg")
def icon() -> FileResponse:
    return FileResponse(ICON, media_type="image/svg+xml")


@app.exception_handler(StarletteHTTPException)
async def _refuse(request: Request, error: StarletteHTTPException):
    """Browsers get a page saying to sign in; other clients get JSON. Either way, no data."""
    if error.status_code in (401, 403) and "text/html" in request.headers.get("accept", ""):
        login = f"{_ui_base(request)}/auth/login?next={quote(str(request.url), safe='')}"
        return _page("Carbon: sign in", f'<h1>Sign in to Airflow to see the carbon reports</h1><p><a href="{login}">'
                                         f'Sign in</a> ({html.escape(str(error.detail))})</p>', status_code=error.status_code)
    return JSONResponse({"detail": error.detail}, status_code=error.status_code)
