"""The triggerer side of a wait: sleep until a moment, then fire. Modelled on the standard provider's
``DateTimeTrigger``: it carries the moment and a few scalars, never a plan; the operator that deferred
keeps its state in its own XCom (Airflow keeps a task's XComs across a deferral) and reads it back
when it resumes. Imported by the triggerer from the plugins folder or the installed package.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

Scalar = str | int | float | bool | None


class CarbonWindowTrigger(BaseTrigger):
    """Fires ``{"moment": moment, **payload}`` at ``moment`` (ISO 8601, real wall-clock time).
    ``payload`` holds scalars only (a start time, a slot index): what the trigger row stores stays small."""

    def __init__(self, moment: str, payload: dict[str, Scalar] | None = None):
        super().__init__()
        datetime.fromisoformat(moment)  # a bad moment fails where it is deferred, not in the triggerer
        payload = dict(payload or {})
        for key, value in payload.items():
            if not isinstance(value, (str, int, float, bool, type(None))):
                raise TypeError(f"CarbonWindowTrigger payload {key!r}: scalars only, "
                                f"got {type(value).__name__}")
        self.moment = moment
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
