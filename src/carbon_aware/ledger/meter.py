"""A task try's energy, measured beside it: CodeCarbon started, read every ``reading_seconds`` and
stopped in a thread of the task's own process, every reading committed to the records database as it is
taken. The task never waits for the meter to start (CodeCarbon takes seconds to find the hardware), and
nothing the meter does can fail the task: a meter that cannot start logs one warning and the try's
energy is recorded as unknown, with the reason."""
from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import update

from carbon_aware.records import engine_for, tables
from carbon_aware.records.upsert import upsert

log = logging.getLogger(__name__)
TASKS = tables.ledger_tasks
STOP_WAIT_SECONDS = 10.0  # at most this long at the end of a task for the meter's last reading


@dataclass(frozen=True)
class TryKey:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int

    @property
    def job(self) -> str:
        """The readings' job name in ``carbon_energy_readings``: one per try."""
        index = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"ledger:{self.task_id}{index}:try-{self.try_number}"

    def where(self):
        c = TASKS.c
        return (c.dag_id == self.dag_id, c.run_id == self.run_id, c.task_id == self.task_id,
                c.map_index == self.map_index, c.try_number == self.try_number)


class TaskMeter:
    """Measures one try. :meth:`start` returns at once; :meth:`stop` waits at most
    ``STOP_WAIT_SECONDS`` for the last reading."""

    def __init__(self, key: TryKey, url: str, region: str, deadline: datetime, reading_seconds: float,
                 on_started=None):
        self.key, self.url, self.region, self.deadline = key, url, region, deadline
        self.reading_seconds = reading_seconds
        self.on_started = on_started  # called in the meter's thread once it measures (the forecast)
        self.started_at = time.time()
        self.worker = socket.gethostname()
        self._stop = threading.Event()
        self._state, self._ended_at = "running", None
        self._thread = threading.Thread(target=self._run, name=f"carbon-ledger-{key.task_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, state: str) -> None:
        self._state, self._ended_at = state, time.time()
        self._stop.set()
        self._thread.join(STOP_WAIT_SECONDS)
        if self._thread.is_alive():
            log.warning("carbon ledger: the meter did not finish within %.0f s; the energy of %s is the "
                        "last reading's", STOP_WAIT_SECONDS, self.key.task_id)

    # the meter's thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._write_row()
        except Exception as error:  # no database: nothing to measure into
            log.warning("carbon ledger: %s not recorded (%s)", self.key.task_id, _reason(error))
            return
        meter, scratch = self._meter()
        try:
            if meter is not None and self.on_started is not None:
                self._call(self.on_started)
            while meter is not None and not self._stop.wait(self.reading_seconds):
                self._call(lambda: meter.mark("reading"))
            if meter is not None:
                self._call(meter.stop)
            self._call(self._finish)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _write_row(self) -> None:
        values = {"dag_id": self.key.dag_id, "run_id": self.key.run_id, "task_id": self.key.task_id,
                  "map_index": self.key.map_index, "try_number": self.key.try_number,
                  "worker": self.worker[:200], "region": self.region[:64], "started_at": self.started_at,
                  "ended_at": None, "state": "running", "energy_error": None,
                  "deadline": self.deadline.timestamp(), "priced": None}
        with engine_for(self.url).begin() as connection:
            upsert(connection, TASKS, values,
                   keys=("dag_id", "run_id", "task_id", "map_index", "try_number"))

    def _meter(self):
        from carbon_aware.accounting.energy import EmissionsConfig, EnergyMeter
        from carbon_aware.records.jobs import RecordsEnergyLog

        scratch = Path(tempfile.mkdtemp(prefix="carbon-ledger-"))  # CodeCarbon's own CSV, not kept
        config = EmissionsConfig(measure_power_secs=min(1.0, self.reading_seconds),
                                 log_every_seconds=self.reading_seconds)
        energy_log = RecordsEnergyLog(self.key.dag_id, self.key.run_id, self.key.job, self.worker, self.url)
        try:
            meter = EnergyMeter(config, scratch, self.key.job, log=energy_log)
            meter.start()  # logs its own warning when CodeCarbon cannot start
            error = meter.error
        except Exception as failure:
            meter, error = None, f"the meter failed: {_reason(failure)}"
        if error is not None or meter is None or not meter.active:
            self._call(lambda: self._set(energy_error=(error or "the meter did not start")[:2000]))
            return None, scratch
        return meter, scratch

    def _finish(self) -> None:
        self._set(ended_at=self._ended_at or time.time(), state=self._state)

    def _set(self, **values) -> None:
        with engine_for(self.url).begin() as connection:
            connection.execute(update(TASKS).where(*self.key.where()).values(**values))

    def _call(self, action) -> None:
        try:
            action()
        except Exception as error:
            log.warning("carbon ledger: %s: %s", self.key.task_id, _reason(error))


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)
