"""A task try's energy, measured beside it by a meter process of its own: the task's process starts it
(one fork and exec: the task never waits for CodeCarbon, which takes seconds to find the hardware, and
never shares its interpreter with it) and tells it when the try ended; the meter reads CodeCarbon every
``reading_seconds`` and commits each reading to the records database as it is taken, so a killed try
keeps what was read before. A try whose process dies without saying so (its pipe closes) is recorded as
killed then. Nothing the meter does can fail the task: a meter that cannot start records the try's
energy as unknown, with the reason.

    python -m carbon_aware.ledger.meter   (reads its order, one JSON line, on stdin)
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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
        from carbon_aware.records.tables import ledger_tasks as tasks

        c = tasks.c
        return (c.dag_id == self.dag_id, c.run_id == self.run_id, c.task_id == self.task_id,
                c.map_index == self.map_index, c.try_number == self.try_number)


@dataclass(frozen=True)
class MeterOrder:
    """What a try's process hands its meter: small, serialisable, no secret on a command line."""

    key: TryKey
    url: str  # the records database
    region: str
    specs: list[dict[str, Any]]  # the region's provider specs, for the hour's forecast
    deadline: float  # the shadow plan's latest end, epoch s
    reading_seconds: float
    started_at: float
    worker: str


class MeterProcess:
    """The task's side: starts the meter, tells it the try's end. Neither waits on the meter."""

    def __init__(self, order: MeterOrder):
        self.order = order
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        self._process = subprocess.Popen([sys.executable, "-m", "carbon_aware.ledger.meter"],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, text=True)
        self._send({**asdict(self.order)})

    def stop(self, state: str) -> None:
        self._send({"state": state, "ended_at": time.time()})
        self._process.stdin.close()

    def wait(self, timeout: float) -> int | None:
        """The meter's exit code once it has written everything (tests and the benchmark)."""
        return self._process.wait(timeout)

    def _send(self, message: dict[str, Any]) -> None:
        self._process.stdin.write(json.dumps(message) + "\n")
        self._process.stdin.flush()


class TaskMeter:
    """The meter's side, in its own process: the try's row, the readings, the end."""

    def __init__(self, order: MeterOrder, orders=sys.stdin):
        self.order, self.key, self._orders = order, order.key, orders
        self._stopped = threading.Event()
        self._state, self._ended_at = "killed", None  # what a closed pipe without a word means

    def run(self) -> None:
        from carbon_aware.ledger.forecasts import keep_forecast

        threading.Thread(target=self._listen, daemon=True).start()
        self._call(self._write_row)
        meter, scratch = self._meter()
        try:
            if meter is not None:
                self._call(lambda: keep_forecast(self.order.url, self.order.region, self.order.specs,
                                                 utc(self.order.started_at)))
            while meter is not None and not self._stopped.wait(self.order.reading_seconds):
                self._call(lambda: meter.mark("reading"))
            if meter is not None:
                self._call(meter.stop)
            self._call(self._finish)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _listen(self) -> None:
        """The try's word that it ended; the pipe closing without one: it was killed."""
        for line in self._orders:
            message = json.loads(line)
            self._state, self._ended_at = message["state"], message["ended_at"]
        self._ended_at = self._ended_at or time.time()
        self._stopped.set()

    def _write_row(self) -> None:
        """The try's row; a try resumed after a deferral keeps its first start and its deadline."""
        from carbon_aware.records import engine_for, tables
        from carbon_aware.records.upsert import insert_for

        values = {**asdict(self.key), "worker": self.order.worker[:200], "region": self.order.region[:64],
                  "started_at": self.order.started_at, "ended_at": None, "state": "running",
                  "energy_error": None, "deadline": self.order.deadline, "priced": None}
        with engine_for(self.order.url).begin() as connection:
            statement = insert_for(connection)(tables.ledger_tasks).values(**values)
            resumed = {name: statement.excluded[name] for name in ("worker", "ended_at", "state", "priced")}
            connection.execute(statement.on_conflict_do_update(index_elements=list(asdict(self.key)),
                                                               set_=resumed))

    def _meter(self):
        from carbon_aware.accounting.energy import EmissionsConfig, EnergyMeter
        from carbon_aware.records.jobs import RecordsEnergyLog

        scratch = Path(tempfile.mkdtemp(prefix="carbon-ledger-"))  # CodeCarbon's own CSV, not kept
        seconds = self.order.reading_seconds
        config = EmissionsConfig(measure_power_secs=min(1.0, seconds), log_every_seconds=seconds)
        energy_log = RecordsEnergyLog(self.key.dag_id, self.key.run_id, self.key.job, self.order.worker,
                                      self.order.url)
        try:
            meter = EnergyMeter(config, scratch, self.key.job, log=energy_log)
            meter.start()  # CodeCarbon failing leaves meter.error set, never raises
            error = meter.error
        except Exception as failure:
            meter, error = None, f"the meter failed: {_reason(failure)}"
        if error is None and self._stopped.is_set():
            error = (f"the try ended {self._ended_at - self.order.started_at:.1f} s after it started, "
                     "before its meter could start")
        if error is not None:
            self._call(lambda: self._set(energy_error=error[:2000]))
            return None, scratch
        return meter, scratch

    def _finish(self) -> None:
        self._set(ended_at=self._ended_at, state=self._state)

    def _set(self, **values) -> None:
        from sqlalchemy import update

        from carbon_aware.records import engine_for, tables

        with engine_for(self.order.url).begin() as connection:
            connection.execute(update(tables.ledger_tasks).where(*self.key.where()).values(**values))

    def _call(self, action) -> None:
        try:
            action()
        except Exception as error:  # one step failing (the database, a provider) costs that step only
            log.warning("carbon ledger: %s: %s", self.key.task_id, _reason(error))


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def read_order(line: str) -> MeterOrder:
    data = json.loads(line)
    return MeterOrder(**{**data, "key": TryKey(**data["key"])})


def main() -> None:
    TaskMeter(read_order(sys.stdin.readline())).run()


if __name__ == "__main__":
    main()
