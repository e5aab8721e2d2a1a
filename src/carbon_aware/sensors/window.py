"""A sensor that waits for the planned low-carbon window: deferred by default (holding no worker slot),
or poking (``deferrable=False``, with ``mode``, ``timeout`` and ``soft_fail`` as for any sensor)."""
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
# The sensor's own XCom while deferred: the plan it follows (re-planned or not) and when it started.
WAIT_XCOM_KEY = "wait"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class CarbonWindowSensor(BaseSensorOperator):
    """Waits until the start chosen by ``plan_task_id``'s plan; on waking, checks the current
    intensity and re-plans (and waits again) when it runs above the forecast by more than the
    tolerance. Never waits past the latest start that still meets the deadline.

    Deferrable by default, like the standard provider's ``DateTimeSensorAsync``: the trigger carries the
    moment to wake at, the plan stays in XCom. With ``deferrable=False`` it pokes (``mode="poke"`` or
    ``"reschedule"``), and ``timeout``, ``soft_fail`` and ``poke_interval`` apply as to any sensor; a
    deferred wait is bounded by ``timeout`` too."""

    template_fields: Sequence[str] = ("plan_task_id",)

    def __init__(self, *, plan_task_id: str = "plan_window", deferrable: bool = True,
                 min_defer_seconds: float = MIN_DEFER_SECONDS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.plan_task_id = plan_task_id
        self.deferrable = deferrable
        self.min_defer_seconds = min_defer_seconds
        self._wait: dict[str, Any] | None = None  # poke mode: the wait between pokes

    def execute(self, context) -> dict[str, Any]:
        if not self.deferrable:
            return super().execute(context)  # pokes, honouring mode, timeout and soft_fail
        plan = context["ti"].xcom_pull(task_ids=self.plan_task_id)
        return self._wait_or_start(context, plan, started_at=_now().isoformat())

    def execute_complete(self, context, event: dict[str, Any]) -> dict[str, Any]:
        wait = context["ti"].xcom_pull(task_ids=self.task_id, key=WAIT_XCOM_KEY)
        self.log.info("woke at %s for the window planned at %s", _now().isoformat(), wait["plan"]["start"])
        return self._on_wake(context, wait["plan"], wait["started_at"],
                             fired_at=datetime.fromisoformat(event["moment"]))

    def poke(self, context):
        from airflow.sdk import PokeReturnValue

        wait = self._waiting(context)
        plan, started_at = wait["plan"], wait["started_at"]
        wake = self._clock(plan, started_at).real(datetime.fromisoformat(plan["start"]))
        if wake > _now():
            self.log.info("planned start %s (grid time) is %.0f s away", plan["start"],
                          (wake - _now()).total_seconds())
            return False
        # As when a trigger fires: the time since the planned moment passes at 1x (see _check).
        fired_at = wake if wake > datetime.fromisoformat(started_at) else None
        plan, woke = self._check(plan, started_at, fired_at)
        if woke is None:
            self._keep(context, {"plan": plan, "started_at": started_at})
            return False
        return PokeReturnValue(is_done=True, xcom_value=woke)

    @staticmethod
    def _clock(plan: dict[str, Any], started_at: str):
        from carbon_aware.clock import Clock

        return Clock.from_plan(plan, started=datetime.fromisoformat(started_at))

    def _wait_or_start(self, context, plan: dict[str, Any], started_at: str) -> dict[str, Any]:
        clock = self._clock(plan, started_at)
        wake = clock.real(datetime.fromisoformat(plan["start"]))
        latest_start = clock.real(datetime.fromisoformat(plan["deadline"])
                                  - timedelta(hours=plan["duration_hours"]))
        now = _now()
        if wake <= now:
            self.log.info("planned start %s is not in the future: starting now", plan["start"])
            return self._on_wake(context, plan, started_at)
        remaining = (wake - now).total_seconds()
        if remaining < self.min_defer_seconds:
            self.log.info("planned start %s is %.1f s away: "
                          "waiting here (shorter than deferring and resuming)", plan["start"], remaining)
            time.sleep(remaining)
            return self._on_wake(context, plan, started_at, fired_at=wake)
        self.log.info("deferring until %s (grid time %s), %.1f s from now", wake.isoformat(), plan["start"],
                      remaining)
        context["ti"].xcom_push(key=WAIT_XCOM_KEY, value={"plan": plan, "started_at": started_at})
        left = timedelta(seconds=self.timeout) - (now - datetime.fromisoformat(started_at))
        self.defer(trigger=CarbonWindowTrigger(moment=wake.isoformat()), method_name="execute_complete",
                   timeout=min(max(latest_start - now, timedelta(0)) + TIMEOUT_SLACK,
                               max(left, timedelta(0))))

    def _on_wake(self, context, plan: dict[str, Any], started_at: str,
                 fired_at: datetime | None = None) -> dict[str, Any]:
        plan, woke = self._check(plan, started_at, fired_at)
        return self._wait_or_start(context, plan, started_at) if woke is None else woke

    def _check(self, plan: dict[str, Any], started_at: str,
               fired_at: datetime | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The window opened: (plan, what the sensor returns), or (the new plan, None) when the grid runs
        above the forecast and the start moved later."""
        from carbon_aware.planning.plan import check_window

        clock = self._clock(plan, started_at)
        now = _now()
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
            return plan, None
        waited = (now - datetime.fromisoformat(started_at)).total_seconds()
        return plan, {"plan": plan, "replans": plan.get("replans", []), "woke_at": now.isoformat(),
                      "woke_at_grid": grid_now.isoformat(), "waited_seconds": waited, "last_check": check}

    def _waiting(self, context) -> dict[str, Any]:
        """What a poke follows: the plan (as last re-planned) and when the wait began. In poke mode the
        same instance pokes again; in reschedule mode each poke is a fresh task run whose XComs Airflow
        has cleared, so a re-plan is kept in the run's folder (see :meth:`_keep`)."""
        if self._wait is not None:
            return self._wait
        plan = context["ti"].xcom_pull(task_ids=self.plan_task_id)
        first = context["ti"].get_first_reschedule_date(context) if self.reschedule else None
        self._wait = {"plan": plan, "started_at": (first or _now()).isoformat()}
        if self.reschedule:
            from carbon_aware.records.task_state import kept

            self._wait = kept(self._state_key(context)) or self._wait
        return self._wait

    def _keep(self, context, wait: dict[str, Any]) -> None:
        self._wait = wait
        if self.reschedule:
            from carbon_aware.records.task_state import keep

            keep(self._state_key(context), wait)

    def _state_key(self, context):
        """Per try: a retry waits on the plan task's plan again, as a deferred sensor's retry does. In the
        records database, not a file: the next poke may run on another worker."""
        from carbon_aware.records.task_state import TaskKey

        ti = context["ti"]
        return TaskKey(ti.dag_id, ti.run_id, self.task_id, ti.try_number)


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
