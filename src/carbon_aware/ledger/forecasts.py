"""One forecast per region per hour for every shadow plan: the first try that starts in an hour fetches
its region's forecast (in its meter's thread, after the meter is measuring) through the provider chain,
and every other try of that hour, on any worker, uses the stored one. A real provider's forecast also
goes to the grid store, as every fetch does (``grid.clients.record``); a replayed trace's does not, so it
is kept here, with the moment the replay is anchored to (the first fetch's), so that every later fetch
replays the same trace hours at the same real times."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select

from carbon_aware.grid.forecast import IntensityPoint
from carbon_aware.records import engine_for, tables
from carbon_aware.records.upsert import insert_for

FORECASTS = tables.ledger_forecasts
HORIZON = timedelta(hours=48)


@dataclass(frozen=True)
class StoredForecast:
    region: str
    hour: datetime
    source: str
    anchor: datetime
    points: list[IntensityPoint]

    @property
    def mock(self) -> bool:
        return self.source.startswith("mock")


def _hour(moment: datetime) -> int:
    return int(moment.timestamp()) // 3600 * 3600


def anchor_of(url: str | None, region: str) -> datetime | None:
    """The real moment this region's replays are anchored to: its first stored forecast's."""
    c = FORECASTS.c
    with engine_for(url).connect() as connection:
        anchor = connection.execute(select(c.anchor).where(c.region == region)
                                    .order_by(c.hour).limit(1)).scalar()
    return datetime.fromtimestamp(anchor, tz=timezone.utc) if anchor is not None else None


def keep_forecast(url: str | None, region: str, specs: list[dict[str, Any]], now: datetime) -> bool:
    """Fetch and keep ``region``'s forecast for the hour of ``now`` unless one is kept already; returns
    whether this call fetched it."""
    from carbon_aware.grid.clients import fetch_forecast

    c = FORECASTS.c
    with engine_for(url).connect() as connection:
        if connection.execute(select(c.id).where(c.region == region, c.hour == _hour(now))).first():
            return False
    anchor = anchor_of(url, region) or now
    forecast, _reasons = fetch_forecast(specs, now, HORIZON, now + timedelta(hours=1), anchor=anchor)
    points = [[p.start.timestamp(), p.duration.total_seconds(), p.value] for p in forecast.points]
    row = {"region": region, "hour": _hour(now), "source": forecast.source[:200],
           "anchor": anchor.timestamp(), "points": json.dumps(points), "fetched_at": time.time()}
    with engine_for(url).begin() as connection:
        statement = insert_for(connection)(FORECASTS).values(**row)
        connection.execute(statement.on_conflict_do_nothing(index_elements=["region", "hour"]))
    return True


def forecast_at(url: str | None, region: str, moment: datetime) -> StoredForecast | None:
    """The forecast a try that started at ``moment`` had: the one kept for that hour (fetched as it
    started), else the latest kept before."""
    c = FORECASTS.c
    with engine_for(url).connect() as connection:
        row = connection.execute(select(c.hour, c.source, c.anchor, c.points)
                                 .where(c.region == region, c.hour <= _hour(moment))
                                 .order_by(c.hour.desc()).limit(1)).first()
    if row is None:
        return None
    points = [IntensityPoint(datetime.fromtimestamp(start, tz=timezone.utc), timedelta(seconds=seconds),
                             float(value)) for start, seconds, value in json.loads(row.points)]
    return StoredForecast(region, datetime.fromtimestamp(row.hour, tz=timezone.utc), row.source,
                          datetime.fromtimestamp(row.anchor, tz=timezone.utc), points)
