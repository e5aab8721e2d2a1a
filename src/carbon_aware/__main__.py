"""``python -m carbon_aware plan``: fetch a forecast and print the plan the DAG would make, \
no Airflow needed.
``python -m carbon_aware store``: seed the grid store from a trace file, or show what it holds.
``python -m carbon_aware db upgrade``: create or upgrade the records database's tables (a deployment's
init step; the first use in a process does it too).

    python -m carbon_aware plan --providers '[{"name": "uk"}]' --job-hours 4 --deadline-hours 24 [--json]
    python -m carbon_aware store import PATH [--region GB] [--source NAME]
    python -m carbon_aware store show
    python -m carbon_aware db upgrade
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timedelta, timezone

from carbon_aware.grid.forecast import ForecastError
from carbon_aware.planning.planner import Plan, PlanningError, plan_window
from carbon_aware.grid.clients import fetch_forecast


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carbon_aware", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="print the best start window")
    plan.add_argument("--providers", default='[{"name": "uk"}]',
                      help="JSON list of provider specs, tried in order, then mock")
    plan.add_argument("--job-hours", type=float, default=1.0)
    plan.add_argument("--deadline-hours", type=float, default=24.0)
    plan.add_argument("--mode", choices=["window", "threshold"], default="window")
    plan.add_argument("--threshold", type=float, default=300.0)
    plan.add_argument("--now", help="ISO 8601 time to plan from (default: now)")
    plan.add_argument("--json", action="store_true", help="print the whole plan as JSON")
    store = sub.add_parser("store", help="the grid store in the records database: $CARBON_RECORDS_URL, "
                                         "else connection carbon_records, else output/carbon_records.db")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    seed = store_sub.add_parser("import",
                                help="add a trace file's actuals (NESO, Electricity Maps, EIA-930)")
    seed.add_argument("path")
    seed.add_argument("--region", help="file under this region (default: the trace's own)")
    seed.add_argument("--source", help="name the source (default: trace:<file name>)")
    store_sub.add_parser("show", help="hours of actuals and forecasts per region and source")
    db = sub.add_parser("db", help="the records database (same as store)")
    db.add_argument("db_command", choices=["upgrade"], help="apply the migrations it has not had")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.command == "store":
        return _store(args)
    if args.command == "db":
        return _db_upgrade()
    try:
        specs = json.loads(args.providers)
    except json.JSONDecodeError as error:
        parser.error(f"--providers: not valid JSON ({error})")
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(timezone.utc)
    deadline = now + timedelta(hours=args.deadline_hours)
    try:
        forecast, reasons = fetch_forecast(specs, now, timedelta(hours=args.deadline_hours), deadline)
        result: Plan = plan_window(forecast, timedelta(hours=args.job_hours), now, deadline, mode=args.mode,
                                   threshold=args.threshold, fallback_reasons=reasons, planned_at=now)
    except (ForecastError, PlanningError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary_line())
        print(f"reason: {result.reason}")
        for reason in result.fallback_reasons:
            print(f"fallback: {reason}")
    return 0


def _store(args: argparse.Namespace) -> int:
    from carbon_aware.grid.store import GridStore, import_trace

    store = GridStore()
    try:
        if args.store_command == "import":
            added, region, source = import_trace(args.path, store, args.region, args.source)
            print(f"{added} new actuals for {region} from {source} -> {store.url}")
            return 0
        summary = store.summary()
    except (ForecastError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"grid store {store.url}")
    for region, source, kind, hours, first, last in summary:
        span = f"{datetime.fromtimestamp(first, timezone.utc):%Y-%m-%d %H:%M} to " \
               f"{datetime.fromtimestamp(last, timezone.utc):%Y-%m-%d %H:%M} UTC"
        print(f"  {region:14} {source:40} {kind:8} {hours:9.1f} h  {span}")
    return 0


def _db_upgrade() -> int:
    from sqlalchemy.engine import make_url

    from carbon_aware.records import new_engine, records_url
    from carbon_aware.records.migrations import HEAD, upgrade

    url = records_url()
    applied = upgrade(new_engine(url))
    shown = make_url(url).render_as_string(hide_password=True)
    print(f"records database {shown}: " + (f"applied migrations {applied}" if applied else "up to date")
          + f" (schema version {HEAD})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

