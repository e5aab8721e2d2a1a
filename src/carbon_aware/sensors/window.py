"""A deferrable sensor that waits for the planned low-carbon window, holding no worker slot."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from airflow.sdk import BaseSensorOperator

from carbon_aware.triggers.window import CarbonWindowTrigger

# The wake-up may run a little late (triggerer load); the timeout leaves this much slack.
TIMEOUT_SLACK = timedelta(minutes=5)
# Shorter waits are slept in the worker: deferring and resuming costs more than that, and Airflow
# 3.3 can fail a task whose trigger fires before the scheduler has processed the deferral
# (apache/airflow#72716, #71580).
MIN_DEFER_SECONDS = 20.0


class CarbonWindowSensor(BaseSensorOperator):
    """Defers until the start chosen by ``plan_task_id``'s plan; on waking, checks the current
    intensity and re-plans (and defers again) when it runs above the forecast by more than the
    tolerance. Never waits past the latest start that still meets the deadline."""

    template_fields: Sequence[str] = ("plan_task_id",)

    def __init__(self, *, plan_task_id: str = "plan_window", min_defer_seconds: float = MIN_DEFER_SECONDS,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.plan_task_id = plan_task_id
        self.min_defer_seconds = min_defer_seconds

    def execute(self, context) -> dict[str, Any]:
        plan = context["ti"].xcom_pull(task_ids=self.plan_task_id)
        return self._wait_or_start(plan, started_at=datetime.now(timezone.utc).isoformat())

    def execute_complete(self, context, event: dict[str, Any]) -> dict[str, Any]:
        self.log.info("woke at %s for the window planned at %s", datetime.now(timezone.utc).isoformat(),
                      event["plan"]["start"])
        return self._on_wake(event["plan"], event["started_at"],
                             fired_at=datetime.fromisoformat(event["moment"]))

    def _wait_or_start(self, plan: dict[str, Any], started_at: str) -> dict[str, Any]:
        from carbon_aware.clock import Clock

        clock = Clock.from_plan(plan, started=datetime.fromisoformat(started_at))
        wake = clock.real(datetime.fromisoformat(plan["start"]))
        latest_start = clock.real(datetime.fromisoformat(plan["deadline"])
                                  - timedelta(hours=plan["duration_hours"]))
        now = datetime.now(timezone.utc)
        if wake <= now:
            self.log.info("planned start %s is not in the future: starting now", plan["start"])
            return self._on_wake(plan, started_at)
        remaining = (wake - now).total_seconds()
        if remaining < self.min_defer_seconds:
            self.log.info("planned start %s is %.1f s away: "
                          "waiting here (shorter than deferring and resuming)", plan["start"], remaining)
            time.sleep(remaining)
            return self._on_wake(plan, started_at, fired_at=wake)
        self.log.info("deferring until %s (grid time %s), %.1f s from now", wake.isoformat(), plan["start"],
                      remaining)
        self.defer(trigger=CarbonWindowTrigger(moment=wake.isoformat(),
                                               payload={"plan": plan, "started_at": started_at}),
                   method_name="execute_complete",
                   timeout=max(latest_start - now, timedelta(0)) + TIMEOUT_SLACK)

    def _on_wake(self, plan: dict[str, Any], started_at: str,
                 fired_at: datetime | None = None) -> dict[str, Any]:
        from carbon_aware.clock import Clock
        from carbon_aware.planning.plan import check_window

        clock = Clock.from_plan(plan, started=datetime.fromisoformat(started_at))
        now = datetime.now(timezone.utc)
        grid_now = clock.grid(now)
        if fired_at is not None and fired_at < now:
            # Only the wait is compressed (demos): the seconds the scheduler took to resume this task
            # after the trigger fired pass at 1x, as they would in a real run. Identical when not compressed.
            grid_now = clock.grid(fired_at) + (now - fired_at)
        plan, check = check_window(plan, grid_now)
        if check:
            self.log.warning("current %s g/kWh vs forecast %s g/kWh: %s", check["current_g_per_kwh"],
                             check["forecast_g_per_kwh"], check["decision"])
        if check and "new_start" in check and datetime.fromisoformat(check["new_start"]) > grid_now:
            return self._wait_or_start(plan, started_at)
        waited = (now - datetime.fromisoformat(started_at)).total_seconds()
        return {"plan": plan, "replans": plan.get("replans", []), "woke_at": now.isoformat(),
                "woke_at_grid": grid_now.isoformat(), "waited_seconds": waited, "last_check": check}


class CarbonRegionSensor(BaseSensorOperator):
    """Once the window opens: the region to train in (returned to XCom with the reason). The plan's region
    when a live Celery worker consumes its queue; if none does, it waits (reschedule mode: no worker slot
    between pokes) until the latest start that still meets the deadline there, then falls back to the next
    best region that has a live worker, and says so. Without regions in the plan it returns at once."""

    template_fields: Sequence[str] = ("wait_task_id",)

    def __init__(self, *, wait_task_id: str = "wait_for_window", **kwargs) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", 10.0)
        super().__init__(**kwargs)
        self.wait_task_id = wait_task_id

    def poke(self, context):
        from airflow.sdk import PokeReturnValue

        from carbon_aware.clock import Clock
        from carbon_aware.planning.regions import choose_route, live_queues

        wait = context["ti"].xcom_pull(task_ids=self.wait_task_id)
        plan = wait["plan"]
        if not plan.get("regions"):
            return PokeReturnValue(is_done=True, xcom_value={"region": None, "reason": "no regions file"})
        clock = Clock.after_wake(wait)
        grid_now = clock.grid(datetime.now(timezone.utc))
        live = live_queues()
        # Decide one poke early: the next look comes poke_interval (plus scheduling) later.
        margin = timedelta(seconds=2 * self.poke_interval) * clock.compression
        route = choose_route(plan, grid_now, live, margin)
        if route is None:
            self.log.warning("no live worker consumes %s's queue %s (live queues: %s): waiting for one "
                             "within the deadline", plan["region"], plan["queue"], sorted(live or []))
            return False
        say = self.log.warning if route["fallback"] else self.log.info
        say("region %s (queue %s): %s", route["region"], route["queue"], route["reason"])
        return PokeReturnValue(is_done=True, xcom_value=route)
