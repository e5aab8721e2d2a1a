"""Run any training command in a fresh process and measure it from outside.

CodeCarbon runs around the child (GPU via NVML, CPU and RAM as CodeCarbon reads them), appending to
the job's energy log exactly as the built-in trainer's meter does, so the report prices any command
the way it prices ours. The log is the caller's (``accounting.energy.EnergyLog``): under Airflow the
records database, so a retry on another machine continues it. Each launch is one *attempt*; a retry,
or the next slot of an interruptible job, is a new attempt that continues the same log. No Airflow here.

The child gets ``CARBON_JOB_DIR`` (its directory, for checkpoints and an optional ``summary.json``),
``CARBON_RUN_NAME``, ``CARBON_ATTEMPT`` and whatever the caller adds (the job operator adds
``CARBON_CHECKPOINT_URL``). It is stopped with SIGTERM (a slot's end, the carbon budget, the task being
killed) and given ``grace_seconds`` to checkpoint and exit before SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from carbon_aware.accounting.energy import EnergyLog

SUMMARY_NAME = "summary.json"
DEFAULT_GRACE_SECONDS = 300.0
POLL_SECONDS = 1.0
# What a command may report about itself in $CARBON_JOB_DIR/summary.json; the report shows what it finds.
OWN_SUMMARY_KEYS = (
    "final_test_accuracy_pct",
    "final_train_loss",
    "peak_memory_mb",
    "peak_memory_kind",
    "device",
    "precision",
    "effective_batch_size",
    "epochs",
    "config",
    "distributed",
)

# Stop reasons
SLOT_END = "slot_end"
CARBON_BUDGET = "carbon_budget"


class JobFailed(RuntimeError):
    """The command exited non-zero without being asked to stop."""


JOB_PARAMS_NAME = "job_params.json"
MAX_JOB_PARAM_CHARS = 200


def write_job_params(job_dir: Path, values: dict[str, Any]) -> Path:
    """The job's own params as a JSON file in its folder: scalars only (numbers, flags, short text)."""
    from carbon_aware.files import atomic_write_json

    for name, value in values.items():
        short_text = isinstance(value, str) and len(value) <= MAX_JOB_PARAM_CHARS
        if not (value is None or isinstance(value, (bool, int, float)) or short_text):
            raise ValueError(f"param {name}: a job's params are numbers, flags or text of at most "
                             f"{MAX_JOB_PARAM_CHARS} characters")
    path = job_dir / JOB_PARAMS_NAME
    atomic_write_json(path, values)
    return path


def _utc(moment: float | None = None) -> str:
    return datetime.fromtimestamp(moment or time.time(), tz=timezone.utc).isoformat(timespec="milliseconds")


def run_attempt(
    command: list[str],
    job_dir: Path,
    run_name: str,
    *,
    emissions: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    until: datetime | None = None,
    check: Callable[[float], str | None] | None = None,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    emit: Callable[[str], None] = print,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    energy_log: EnergyLog | None = None,
) -> dict[str, Any]:
    """One launch of ``command``, measured into ``energy_log`` (default: the job folder's file). Stops
    it with SIGTERM at ``until`` (real time) or when ``check(cumulative_kwh)`` names a reason. Returns
    the attempt's record."""
    from carbon_aware.accounting.energy import EmissionsConfig, EnergyMeter

    job_dir.mkdir(parents=True, exist_ok=True)
    meter = EnergyMeter(EmissionsConfig(**(emissions or {})), job_dir, run_name, log=energy_log)
    emit(f"attempt {meter.attempt}: launching {' '.join(command)}")
    meter.start()
    if meter.error:
        emit(f"energy not measured: {meter.error}")
    started = time.time()
    tail: deque[str] = deque(maxlen=20)
    process = subprocess.Popen(command, cwd=cwd or job_dir,
                               env=_child_env(env, job_dir, run_name, meter.attempt),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    if on_start:
        on_start(process)
    reader = _stream_output(process, tail, emit)
    stopped = None
    try:
        stopped = _supervise(process, meter, until, check, grace_seconds, emit)
        code = process.wait()
    finally:
        _stop_if_running(process, grace_seconds)  # the task itself is being stopped
        reader.join(timeout=10)
        energy = meter.stop()  # every attempt's energy counts, also a failed one's
    record = _attempt_record(meter, started, code, stopped, energy, emit)
    if stopped is None and code != 0:
        raise JobFailed(f"command exited with {code}:\n" + "\n".join(tail))
    return record


def _child_env(env: dict[str, str] | None, job_dir: Path, run_name: str, attempt: int) -> dict[str, str]:
    return {
        **os.environ,
        **(env or {}),
        "CARBON_JOB_DIR": str(job_dir),
        "CARBON_RUN_NAME": run_name,
        "CARBON_ATTEMPT": str(attempt),
        "PYTHONUNBUFFERED": "1",
    }


def _stream_output(process: subprocess.Popen, tail: deque[str],
                   emit: Callable[[str], None]) -> threading.Thread:
    """The child's output, line by line, to ``emit`` (the task log), its last lines kept in ``tail``."""

    def stream() -> None:
        for line in process.stdout:
            tail.append(line.rstrip())
            emit(line.rstrip())

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    return reader


def _supervise(process: subprocess.Popen, meter, until: datetime | None,
               check: Callable[[float], str | None] | None, grace_seconds: float,
               emit: Callable[[str], None]) -> str | None:
    """Until the child exits: the meter marks its readings (a killed worker loses at most one interval),
    and the child is asked to stop (SIGTERM, SIGKILL after ``grace_seconds``) at ``until`` or when
    ``check`` names a reason. Returns that reason, None when it exited on its own."""
    stopped, asked_at = None, None
    while process.poll() is None:
        time.sleep(POLL_SECONDS)
        meter.maybe_mark()
        if stopped is None:
            if until is not None and datetime.now(timezone.utc) >= until:
                stopped = SLOT_END
            elif check is not None and meter.active:
                stopped = check(meter.totals()["kwh"])
            if stopped:
                emit(f"stopping the job ({stopped}): SIGTERM, up to {grace_seconds:g} s to checkpoint")
                process.send_signal(signal.SIGTERM)
                asked_at = time.monotonic()
        elif time.monotonic() - asked_at > grace_seconds:
            emit(f"the job did not exit within {grace_seconds:g} s of SIGTERM: SIGKILL")
            process.kill()
    return stopped


def _stop_if_running(process: subprocess.Popen, grace_seconds: float) -> None:
    """A child still running when its task is stopped: let it checkpoint first (SIGTERM), then kill it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=min(grace_seconds, 60))
        except subprocess.TimeoutExpired:
            process.kill()


def _attempt_record(meter, started: float, code: int, stopped: str | None, energy: dict[str, Any] | None,
                    emit: Callable[[str], None]) -> dict[str, Any]:
    record = {
        "attempt": meter.attempt,
        "started_at": _utc(started),
        "ended_at": _utc(),
        "seconds": time.time() - started,
        "exit_code": code,
        "stopped": stopped,
        "energy_kwh_total": energy["energy_kwh"] if energy else None,
        "energy_error": meter.error,
    }
    emit(
        f"attempt {meter.attempt}: exit code {code}"
        + (f", stopped ({stopped})" if stopped else "")
        + (f", {energy['energy_kwh']:.6g} kWh so far" if energy else "")
    )
    return record


def _energy_at(entries: list[dict[str, Any]], moment: str | None) -> float | None:
    """Cumulative kWh of the energy log at ``moment``, interpolated between its readings."""
    if not moment or not entries:
        return None
    at = datetime.fromisoformat(moment).timestamp()
    points = [(datetime.fromisoformat(e["time"]).timestamp(), e["kwh"]) for e in entries]
    if at <= points[0][0]:
        return points[0][1]
    for (t0, k0), (t1, k1) in zip(points, points[1:]):
        if t0 <= at <= t1:
            return k0 + (k1 - k0) * ((at - t0) / (t1 - t0) if t1 > t0 else 1.0)
    return points[-1][1]


def job_summary(
    job_dir: Path,
    run_name: str,
    command: list[str],
    segments: list[dict[str, Any]],
    status: str = "completed",
    stop: dict[str, Any] | None = None,
    energy_log: EnergyLog | None = None,
) -> dict[str, Any]:
    """What the report reads about a job: its measured energy and timeline (every attempt, from
    ``energy_log``, default the job folder's file), its segments, and what the command said about
    itself in ``summary.json`` (accuracy, memory, ...)."""
    from carbon_aware.accounting.energy import ENERGY_LOG_NAME, FileEnergyLog

    entries = (energy_log or FileEnergyLog(job_dir / ENERGY_LOG_NAME)).read()
    own_path = job_dir / SUMMARY_NAME
    try:
        own = json.loads(own_path.read_text()) if own_path.is_file() else {}
    except ValueError:
        own = {}
    last = entries[-1] if entries else None
    energy = None
    if last:
        seconds = sum(a["seconds"] for s in segments for a in s["attempts"])
        energy = {
            "source": "codecarbon, around the command's process",
            "energy_kwh": last["kwh"],
            "cpu_energy_kwh": last["cpu_kwh"],
            "gpu_energy_kwh": last["gpu_kwh"],
            "ram_energy_kwh": last["ram_kwh"],
            "duration_seconds": last["seconds"],
            "avg_power_watts": last["kwh"] * 3.6e6 / seconds if seconds > 0 else None,
            "codecarbon_emissions_kg": last["co2_kg"],
            "codecarbon_intensity_g_per_kwh": (
                1000 * last["co2_kg"] / last["kwh"] if last["kwh"] > 0 else None
            ),
        }
    if isinstance(own.get("epochs"), list):  # the command's epochs, with the energy measured up to each
        own["epochs"] = [
            {**e, "energy_kwh_cumulative": _energy_at(entries, e.get("finished_at"))}
            for e in own["epochs"]
            if isinstance(e, dict)
        ]
    attempts = [a for s in segments for a in s["attempts"]]
    # A killed attempt (worker lost) left no record here, but its energy is in the log.
    logged_attempts = max((e["attempt"] for e in entries), default=0)
    return {
        "run_name": run_name,
        "command": command,
        "status": status,
        "stop": stop,
        **{key: own[key] for key in OWN_SUMMARY_KEYS if key in own},
        "energy": energy,
        "energy_error": None if energy else "no energy reading (CodeCarbon could not start?)",
        "energy_timeline": [{k: e[k] for k in ("time", "kwh", "label", "attempt")} for e in entries],
        "attempts": max(len(attempts), logged_attempts),
        # The machines its attempts ran on, in order (readings from the records database name them).
        "workers": list(dict.fromkeys(e["worker"] for e in entries if e.get("worker"))),
        "segments": segments,
        "wall_time_seconds": last["seconds"] if last else sum(a["seconds"] for a in attempts),
        "started_at": attempts[0]["started_at"] if attempts else None,
        "finished_at": attempts[-1]["ended_at"] if attempts else None,
    }


# XCom hands a job's summary to the report; a long job's timeline (a reading every 10 s) would make it
# megabytes. Past this size the copy in XCom keeps at most XCOM_TIMELINE_POINTS of its readings.
XCOM_SUMMARY_BYTES = 100_000
XCOM_TIMELINE_POINTS = 800


def summary_for_xcom(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` as XCom carries it: whole when small; else with its energy timeline thinned and
    ``energy_timeline_points`` saying how many readings the whole one (in the records) has. Each point
    kept is an exact reading, every attempt's first and last and every labelled one (start, epochs, end)
    among them, so pricing only sees fewer, longer intervals (still far shorter than a grid slot)."""
    timeline = summary.get("energy_timeline") or []
    small = len(json.dumps(summary, default=str)) <= XCOM_SUMMARY_BYTES
    if small or len(timeline) <= XCOM_TIMELINE_POINTS:
        return summary
    return {**summary, "energy_timeline": thinned_timeline(timeline, XCOM_TIMELINE_POINTS),
            "energy_timeline_points": len(timeline)}


def thinned_timeline(timeline: list[dict[str, Any]], most: int) -> list[dict[str, Any]]:
    """About ``most`` of the timeline's points, evenly spread; an attempt's first and last point and
    every point labelled otherwise than ``reading`` always stay."""
    stride = -(-len(timeline) // most)
    kept = []
    for k, point in enumerate(timeline):
        before = timeline[k - 1] if k else None
        after = timeline[k + 1] if k + 1 < len(timeline) else None
        edge = any(other is None or other.get("attempt") != point.get("attempt")
                   for other in (before, after))
        if edge or point.get("label") != "reading" or k % stride == 0:
            kept.append(point)
    return kept
