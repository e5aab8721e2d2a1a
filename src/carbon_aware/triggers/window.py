"""The triggerer side of the wait: sleep until the planned start, then hand back the plan.

Everything the sensor needs to resume travels in the event (Airflow 3.3's test mode drops
``defer(kwargs=...)``). Imported by the triggerer from the plugins folder or the installed package.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent


class CarbonWindowTrigger(BaseTrigger):
    def __init__(self, moment: str, payload: dict[str, Any]):
        super().__init__()
        self.moment = moment  # ISO 8601, real (wall-clock) time to wake at
        self.payload = payload

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("carbon_aware.triggers.window.CarbonWindowTrigger",
                {"moment": self.moment, "payload": self.payload})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        wake = datetime.fromisoformat(self.moment)
        self.log.info("carbon window trigger: waking at %s", wake.isoformat())
        while (remaining := (wake - datetime.now(timezone.utc)).total_seconds()) > 0:
            await asyncio.sleep(min(remaining, 60.0))  # short naps: robust to clock changes
        yield TriggerEvent({"moment": self.moment, **self.payload})
