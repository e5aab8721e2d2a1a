"""A region's measured grid intensity over a try or a run: what the ledger prices at once it is known."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from carbon_aware.grid.forecast import IntensityPoint
from carbon_aware.ledger.meter import utc

log = logging.getLogger(__name__)


def actual_points(url: str | None, region: str, anchor: datetime, start: datetime,
                  end: datetime) -> tuple[list[IntensityPoint], str | None]:
    """The region's measured intensity over [start, end): the grid store's (real sources), else what the
    region's providers return (a replayed trace, anchored as its forecasts were)."""
    from carbon_aware.grid.clients import build_provider, spec_region
    from carbon_aware.grid.store import GridStore
    from carbon_aware.ledger.settings import region_specs

    specs = [spec for spec in region_specs(region) if spec.get("name") != "mock"]
    store = GridStore(url)
    for spec in specs:
        where = spec_region(spec)
        if where:
            try:
                rows = store.records("actual", where, since=start, until=end)
            except OSError as error:
                log.warning("ledger: %s", error)
                rows = []
            if rows:
                source = max({r["source"] for r in rows}, key=lambda s: sum(r["seconds"] for r in rows
                                                                            if r["source"] == s))
                return [IntensityPoint(utc(r["start"]), timedelta(seconds=r["seconds"]), r["value"])
                        for r in rows if r["source"] == source], source
    for spec in specs:
        try:
            provider = build_provider(spec, anchor)
            points = provider.actuals(start, end)
        except Exception as error:  # one source down: the next, else the forecast prices it
            log.warning("ledger: actuals from %s: %s", spec.get("name"), error)
            continue
        if points:
            return points, provider.actuals_source
    return [], None
