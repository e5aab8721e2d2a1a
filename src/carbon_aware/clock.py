"""Demo time: the one place real time and grid time differ.

A run's ``time_compression`` (1 in production) makes waiting for a window pass faster: demos replay a
day of grid time in minutes. Everything that waits or prices asks a :class:`Clock`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass
class Clock:
    """Maps real time to grid time. ``compression`` > 1 only in demos: waiting passes that much faster
    from ``started`` (real) = ``anchor`` (grid), and each run is priced as if it took its planned
    duration from its intended start (the baseline at once, the optimized run when it was released:
    the trigger's moment plus the real seconds the scheduler took to resume the sensor)."""

    anchor: datetime
    compression: float = 1.0
    started: datetime | None = None

    def grid(self, real: datetime) -> datetime:
        return self.anchor + (real - (self.started or self.anchor)) * self.compression

    def real(self, grid: datetime) -> datetime:
        return (self.started or self.anchor) + (grid - self.anchor) / self.compression

    @classmethod
    def from_plan(cls, plan: dict[str, Any], started: datetime | None = None) -> "Clock":
        compression = plan["clock"]["compression"]
        return cls(
            datetime.fromisoformat(plan["clock"]["anchor"]),
            compression,
            started if compression != 1 else None,
        )

    @classmethod
    def after_wake(cls, wait: dict[str, Any]) -> "Clock":
        """The clock of a task that runs after the window sensor: grid time passes ``compression`` times
        faster than real time from the sensor's release (``woke_at`` real = ``woke_at_grid``)."""
        compression = wait["plan"]["clock"]["compression"]
        return cls(
            datetime.fromisoformat(wait["woke_at_grid"]),
            compression,
            datetime.fromisoformat(wait["woke_at"]) if compression != 1 else None,
        )
