"""Airflow's listener interface on the worker: a try of a task of an opted-in DAG gets a meter
process (:class:`~carbon_aware.ledger.meter.MeterProcess`) when it starts running, told when it ends.
Registered by the provider's plugin (:mod:`carbon_aware.plugins.carbon_ledger`). Every hook returns
within milliseconds and never raises: Airflow logs a listener's exception, but the ledger must not even
do that to a task."""
from __future__ import annotations

import logging
import socket
import threading
from datetime import datetime, timezone
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

_meters: dict[Any, Any] = {}  # TryKey -> TaskMeter, in this process
_warned: set[str] = set()
_lock = threading.Lock()


def _key(task_instance):
    from carbon_aware.ledger.meter import TryKey

    map_index = getattr(task_instance, "map_index", -1)
    return TryKey(task_instance.dag_id, task_instance.run_id, task_instance.task_id,
                  -1 if map_index is None else int(map_index), int(task_instance.try_number or 1))


def _warn_once(what: str, error: Exception) -> None:
    if what not in _warned:
        _warned.add(what)
        log.warning("carbon ledger: %s (%s: %s); tasks run unmeasured", what, type(error).__name__, error)


def _measured_dag(task_instance) -> Any | None:
    """The task's DAG when this is a try running on a worker (the Task SDK's task instance, which has its
    task and DAG) of a DAG in the ledger; else None."""
    if type(task_instance).__name__ != "RuntimeTaskInstance":
        return None  # a state change seen elsewhere (scheduler, API server): nothing to measure here
    dag = getattr(getattr(task_instance, "task", None), "dag", None)
    from carbon_aware.ledger.settings import settings

    if dag is None or not settings().measures(task_instance.dag_id, getattr(dag, "tags", ())):
        return None
    return dag


@hookimpl
def on_task_instance_running(previous_state, task_instance):
    try:
        dag = _measured_dag(task_instance)
        if dag is None:
            return
        from carbon_aware.ledger.meter import MeterOrder, MeterProcess
        from carbon_aware.ledger.schedule import shadow_deadline
        from carbon_aware.ledger.settings import settings, worker_grid
        from carbon_aware.records import records_url

        now = datetime.now(timezone.utc)
        region, specs = worker_grid()
        deadline = shadow_deadline(dag, now, settings().deadlines.get(task_instance.dag_id))
        order = MeterOrder(key=_key(task_instance), url=records_url(), region=region, specs=specs,
                           deadline=deadline.timestamp(), reading_seconds=settings().reading_seconds,
                           started_at=now.timestamp(), worker=socket.gethostname())
        meter = MeterProcess(order)
        meter.start()
        with _lock:
            _meters[order.key] = meter
    except Exception as error:  # never the task's problem
        _warn_once("the meter could not start", error)


def _stop(task_instance, state: str) -> None:
    try:
        with _lock:
            meter = _meters.pop(_key(task_instance), None)
        if meter is not None:
            meter.stop(state)
    except Exception as error:
        _warn_once("the meter could not stop", error)


@hookimpl
def on_task_instance_success(previous_state, task_instance):
    _stop(task_instance, "success")


@hookimpl
def on_task_instance_failed(previous_state, task_instance, error=None):
    state = getattr(task_instance, "state", None)
    _stop(task_instance, str(getattr(state, "value", state) or "failed"))


@hookimpl(optionalhook=True)
def on_task_instance_skipped(previous_state, task_instance):
    _stop(task_instance, "skipped")


@hookimpl
def before_stopping(component):
    """The end of a try's process with no state hook: it deferred, or a sensor gave back its slot until
    its next poke. Its meter stops here; the try's resumption (same try number) continues its readings."""
    with _lock:
        left = list(_meters.values())
        _meters.clear()
    for meter in left:
        try:
            meter.stop("deferred")
        except Exception as error:
            _warn_once("the meter could not stop", error)
