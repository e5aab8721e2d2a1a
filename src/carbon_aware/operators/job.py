"""CarbonJobOperator: any command run in the planned window, measured by CodeCarbon, with a carbon
budget; CarbonTrainerOperator: the built-in trainer as that command. The whole flow:

    plan = CarbonPlanOperator(task_id="plan", request={"providers": [{"name": "uk"}],
                                                       "job_duration_hours": 4})
    wait = CarbonWindowSensor(task_id="wait", plan_task_id="plan")
    train = CarbonJobOperator(task_id="train", command=["torchrun", "--nproc_per_node=4", "train.py"])
    report = CarbonReportOperator(task_id="report", job_task_id="train")
    plan >> wait >> train >> report

A retry may run on another worker, with a disk of its own: nothing passes through a shared folder.
Each task works in its own folder on its machine (``outputs.run_dir_for(run_id, dag_id) / run_name``,
the command's ``$CARBON_JOB_DIR``). What a retry needs comes from Airflow's own services: the plan from
XCom; every energy reading of every attempt, written while it runs, from the records database
(``carbon_energy_readings``, keyed by DAG, run and ``run_name``, each with its worker's host name), so a
killed attempt's energy still counts; and the checkpoints from object storage. That last part is a
convention for the command: files it writes under ``$CARBON_JOB_DIR/checkpoints/`` (subfolders too;
the built-in trainer writes ``checkpoints/last.pt``) are copied to ``$CARBON_CHECKPOINT_URL``
(``<CARBON_OBJECTS_URL>/<dag>/<run>/<run_name>/checkpoints``) while it runs and when it exits, and put
back in that folder before every attempt, wherever it runs, so it resumes by reading its own folder.
Write them atomically (under a name starting with ``.`` or holding ``.tmp``, then rename), as the
trainer does: a file half written is never copied. The job's summary goes to XCom (the report's
hand-off; a long energy timeline there is thinned) and, whole, to the records (``carbon_job_summaries``).

Nothing heavy is imported at DAG parse time: each ``execute`` imports what it needs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from airflow.sdk import BaseOperator

from carbon_aware.sensors.window import MIN_DEFER_SECONDS
from carbon_aware.triggers.window import CarbonWindowTrigger

WORKER_REGION_ENV = "CARBON_REGION"  # set on each region's Celery workers: the summary names it
JOB_PARAMS_ENV = "CARBON_JOB_PARAMS"  # the path of the job's params file (CarbonJobOperator.job_params)
# The object-store URL of the job's checkpoint folder; files it writes in $CARBON_JOB_DIR/checkpoints are
# copied there and fetched back before a retry, wherever that runs.
CHECKPOINT_URL_ENV = "CARBON_CHECKPOINT_URL"
JOB_XCOM_KEY = "job"  # the job's summary, pushed also when the job ends failed (the carbon budget)
# Between slots: the job's progress (next slot, segments so far, the budget's books), read back on resume.
STATE_XCOM_KEY = "job_state"
# Before this share of the expected duration has run, the budget projection is too noisy to act on.
BUDGET_MIN_PROGRESS = 0.1


@dataclass(frozen=True)
class _Job:
    """A job's fixed parts across its slots (see :meth:`CarbonJobOperator._job`)."""

    plan: dict[str, Any]
    clock: Any
    dir: Path
    command: list[str]
    env: dict[str, str]
    slots: list[dict[str, Any]]
    interruptible: bool
    budget: float | None
    grace: float
    worker_region: str | None
    energy: Any  # the job's energy log in the records database (records.jobs.RecordsEnergyLog)
    checkpoints: Any  # its checkpoint folder mirrored to the object store (objects.FolderMirror)
    key: tuple[str, str]  # (dag_id, run_id)


def _intensity_at(curve: list[dict[str, Any]], moment: datetime) -> float:
    """The plan's intensity for ``moment``: its slot, else the nearest slot."""

    def distance(row):
        start, end = datetime.fromisoformat(row["start"]), datetime.fromisoformat(row["end"])
        return max((start - moment).total_seconds(), (moment - end).total_seconds(), 0.0)

    return min(curve, key=distance)["g_per_kwh"]


def first_open_slot(wait: dict[str, Any]) -> int:
    """The first planned slot that has not ended yet (a retry after a lost worker goes on from there; the
    last slot if all have ended)."""
    from carbon_aware.clock import Clock

    plan = wait["plan"]
    slots = plan.get("segments") or [{"start": plan["start"], "end": plan["end"]}]
    grid_now = Clock.after_wake(wait).grid(datetime.now(timezone.utc))
    return next((k for k, slot in enumerate(slots) if datetime.fromisoformat(slot["end"]) > grid_now),
                len(slots) - 1)


class CarbonJobOperator(BaseOperator):
    """Runs ``command`` (an argv list, templated) in a fresh process, streaming its output to the task
    log and measuring its energy from outside (see :mod:`carbon_aware.accounting.jobs`). Its pool is
    Airflow's default unless the DAG passes one (carbon_training passes ``pool="gpu"``, a pool the
    deployment creates: one slot per GPU).

    It follows the plan the window sensor ``wait_task_id`` released: with an interruptible plan it runs
    during each planned slot, sends SIGTERM at a slot's end, waits for the job to checkpoint and exit,
    and defers (holding no worker slot) until the next slot, where it starts the command again to
    resume; the last slot runs on until the job is done. With ``carbon_budget_g`` (or the plan's
    ``carbon_budget_g`` param) it prices the energy as it comes in at the current intensity and stops
    the job at its next checkpoint when finishing would exceed the budget: the task then fails without
    retries and the report says so. Exit code 0 without a SIGTERM means the job is done.

    ``job_params`` names DAG params the command reads as data (``$CARBON_JOB_PARAMS``, a JSON file in
    its folder). Params are untrusted: do not template them into ``command``, ``env`` or ``cwd``."""

    template_fields: Sequence[str] = ("command", "run_name", "env", "cwd")
    ui_color = "#d9f2d9"

    def __init__(
        self,
        *,
        command: list[str] | None = None,
        run_name: str = "job",
        wait_task_id: str = "wait_for_window",
        carbon_budget_g: float | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        emissions: dict[str, Any] | None = None,
        grace_seconds: float | None = None,
        job_params: Sequence[str] = (),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.command = command
        self.job_params = tuple(job_params)
        self.run_name = run_name
        self.wait_task_id = wait_task_id
        self.carbon_budget_g = carbon_budget_g
        self.env = env
        self.cwd = cwd
        self.emissions = emissions
        self.grace_seconds = grace_seconds

    def build_command(self, plan: dict[str, Any], job_dir: Path) -> list[str]:
        if (
            not isinstance(self.command, (list, tuple))
            or not self.command
            or not all(isinstance(part, str) and part for part in self.command)
        ):
            raise ValueError(
                f"{self.task_id}: command: expected a non-empty list of strings (argv), "
                f"got {self.command!r}"
            )
        return list(self.command)

    def execute(self, context) -> dict[str, Any]:
        wait = context["ti"].xcom_pull(task_ids=self.wait_task_id)
        if not wait or "plan" not in wait:
            raise ValueError(f"{self.task_id}: no released plan in XCom of task {self.wait_task_id!r}")
        if context["ti"].try_number > 1:  # a retry goes on from the first slot that has not ended
            return self._run(context, {"wait": wait, "next": first_open_slot(wait), "segments": []})
        # A first try starts its first slot now: the seconds the scheduler took to start this task after
        # the sensor's release pass at 1x, also in time-compressed demos (as in the sensor).
        released = {"grid": wait["woke_at_grid"], "real": datetime.now(timezone.utc).isoformat()}
        return self._run(context, {"wait": wait, "next": 0, "segments": [], "released": released})

    def execute_complete(self, context, event: dict[str, Any]) -> dict[str, Any]:
        state = context["ti"].xcom_pull(task_ids=self.task_id, key=STATE_XCOM_KEY)
        return self._run(context, {**state, "wait": context["ti"].xcom_pull(task_ids=self.wait_task_id)})

    def _run(self, context, state: dict[str, Any]) -> dict[str, Any]:
        """Runs the job slot by slot from ``state["next"]`` until it is done, stopped by the budget, or
        deferred until its next slot."""
        from carbon_aware.accounting.jobs import CARBON_BUDGET

        job = self._job(context, state)
        while True:
            index = state["next"]
            until = self._enter_slot(context, job, state, index)
            segment = self._segment(job, state, index)
            check = (self._budget_check(job.budget, job, state)
                     if job.budget is not None else None)
            record = self._attempt(job, until, check)
            segment["attempts"].append(record)
            state["segments"].append(segment)
            state["next"] = index + 1
            if record["stopped"] in (None, CARBON_BUDGET):
                return self._finish(context, job, state, record)
            self.log.info("slot %d ended: the job checkpointed and exited (code %s)", index + 1,
                          record["exit_code"])

    def _job(self, context, state: dict[str, Any]) -> "_Job":
        """What stays the same across the job's slots: its plan, clock, folder, command and limits."""
        from carbon_aware.accounting.jobs import DEFAULT_GRACE_SECONDS
        from carbon_aware.clock import Clock
        from carbon_aware.objects import url
        from carbon_aware.records.jobs import RecordsEnergyLog

        plan = state["wait"]["plan"]
        clock = Clock.after_wake(state["wait"])
        if state.get("released") and clock.compression != 1:
            clock = Clock(datetime.fromisoformat(state["released"]["grid"]), clock.compression,
                          datetime.fromisoformat(state["released"]["real"]))
        dag_id, run_id = context["ti"].dag_id, context["ti"].run_id
        job_dir = self._job_dir(dag_id, run_id)
        slots = plan.get("segments") or [{"start": plan["start"], "end": plan["end"]}]
        budget = self.carbon_budget_g if self.carbon_budget_g is not None else plan["request"].get(
            "carbon_budget_g")
        worker_region = os.environ.get(WORKER_REGION_ENV)
        if worker_region:
            self.log.info("running on a worker of region %s (queue %s)", worker_region, self.queue)
        checkpoints = self._checkpoints(dag_id, run_id, job_dir)
        env = {**(self.env or {}), **self._job_params_file(context, job_dir),
               CHECKPOINT_URL_ENV: url(checkpoints.remote)}
        return _Job(plan=plan, clock=clock, dir=job_dir, command=self.build_command(plan, job_dir), env=env,
                    slots=slots, interruptible=bool(plan["request"].get("interruptible")) and len(slots) > 1,
                    budget=budget, grace=self.grace_seconds or DEFAULT_GRACE_SECONDS,
                    worker_region=worker_region, energy=RecordsEnergyLog(dag_id, run_id, self.run_name),
                    checkpoints=checkpoints, key=(dag_id, run_id))

    def _job_dir(self, dag_id: str, run_id: str) -> Path:
        """The job's folder on this machine (nothing in it is read by another task or machine)."""
        from carbon_aware.outputs import run_dir_for

        return run_dir_for(run_id, dag_id) / self.run_name

    def _checkpoints(self, dag_id: str, run_id: str, job_dir: Path):
        """``<job dir>/checkpoints`` mirrored at ``<objects>/<dag>/<run>/<job>/checkpoints``."""
        from carbon_aware import objects

        remote = objects.run_path(dag_id, run_id) / self.run_name / objects.CHECKPOINTS
        return objects.FolderMirror(job_dir / objects.CHECKPOINTS, remote)

    def _enter_slot(self, context, job: "_Job", state: dict[str, Any], index: int) -> datetime | None:
        """Waits for slot ``index`` of an interruptible job (deferring when it is far enough away) and
        returns when the attempt must stop: the slot's end, None for the last slot or a whole run."""
        if not job.interruptible:
            return None
        if index >= len(job.slots):
            self.log.warning("the planned slots are used up and the job is not done: running on to finish")
            return None
        start = datetime.fromisoformat(job.slots[index]["start"])
        wake = job.clock.real(start)
        remaining = (wake - datetime.now(timezone.utc)).total_seconds()
        if remaining >= MIN_DEFER_SECONDS:
            self.log.info("slot %d/%d starts %s (grid time): deferring %.0f s, holding no worker slot",
                          index + 1, len(job.slots), start.isoformat(), remaining)
            # The trigger carries the moment only; the state waits in this task's XCom (the plan in the
            # sensor's), which Airflow keeps across a deferral.
            progress = {key: value for key, value in state.items() if key != "wait"}
            context["ti"].xcom_push(key=STATE_XCOM_KEY, value=progress)
            self.defer(trigger=CarbonWindowTrigger(moment=wake.isoformat()), method_name="execute_complete")
        if remaining > 0:
            time.sleep(remaining)
        if index < len(job.slots) - 1:  # the last slot runs on until the job is done
            return job.clock.real(datetime.fromisoformat(job.slots[index]["end"]))
        return None

    def _segment(self, job: "_Job", state: dict[str, Any], index: int) -> dict[str, Any]:
        """The record of slot ``index`` (the last planned one when the job runs on past them)."""
        slot = job.slots[min(index, len(job.slots) - 1)]
        hours = (datetime.fromisoformat(slot["end"]) - datetime.fromisoformat(slot["start"])).total_seconds()
        return {
            "index": index,
            "grid_start": self._grid_start(job.clock, state, slot, in_slot=index < len(job.slots)),
            "grid_hours": hours / 3600 if job.interruptible else job.plan["duration_hours"],
            "planned_start": slot["start"],
            "planned_end": slot["end"],
            "attempts": [],
        }

    def _attempt(self, job: "_Job", until: datetime | None, check) -> dict[str, Any]:
        """One launch: the checkpoints an earlier attempt left in the object store fetched first (it may
        have run on another machine), this one's copied there while it runs and when it ends."""
        from carbon_aware.accounting.jobs import run_attempt
        from carbon_aware.objects import url

        restored = job.checkpoints.restore()
        if restored:
            self.log.info("checkpoints from %s: %s", url(job.checkpoints.remote), ", ".join(restored))
        with job.checkpoints.watching(self.log.warning):
            return run_attempt(job.command, job.dir, self.run_name, emissions=self.emissions, env=job.env,
                               cwd=self.cwd, until=until, check=check, grace_seconds=job.grace,
                               emit=self.log.info, energy_log=job.energy)

    def _finish(self, context, job: "_Job", state: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        """The job is done (its summary, also in XCom) or stopped by the carbon budget (a failure)."""
        from carbon_aware.accounting.jobs import CARBON_BUDGET, job_summary
        from carbon_aware.compat import AirflowFailException
        from carbon_aware.objects import url

        if record["stopped"] == CARBON_BUDGET:
            stop = {"reason": "carbon_budget", "budget_g": job.budget, **state.get("budget", {})}
            summary = job_summary(job.dir, self.run_name, job.command, state["segments"],
                                  status="stopped_by_budget", stop=stop, energy_log=job.energy)
            self._keep(context, job, summary)
            raise AirflowFailException(
                f"stopped by the carbon budget at {stop['spent_g']:.4g} g (budget {job.budget:g} g; "
                f"finishing was projected at {stop['projected_g']:.4g} g); the job checkpointed in "
                f"{url(job.checkpoints.remote)}"
            )
        summary = job_summary(job.dir, self.run_name, job.command, state["segments"], energy_log=job.energy)
        summary["worker_region"] = job.worker_region
        return self._keep(context, job, summary)

    def _keep(self, context, job: "_Job", summary: dict[str, Any]) -> dict[str, Any]:
        """The summary in the records database, whole, and in XCom (the report's hand-off), with a long
        energy timeline thinned (``accounting.jobs.summary_for_xcom``); returns the XCom copy."""
        from carbon_aware.accounting.jobs import summary_for_xcom
        from carbon_aware.records.jobs import save_summary

        save_summary(*job.key, self.run_name, summary)
        handed = summary_for_xcom(summary)
        context["ti"].xcom_push(key=JOB_XCOM_KEY, value=handed)
        return handed

    def _job_params_file(self, context, job_dir: Path) -> dict[str, str]:
        """The DAG params named in ``job_params`` go to the command as data, never in its argv or
        environment: a JSON file in the job's folder, whose path is in ``$CARBON_JOB_PARAMS``."""
        if not self.job_params:
            return {}
        from carbon_aware.accounting.jobs import write_job_params

        params = dict(context.get("params") or {})
        path = write_job_params(job_dir, {name: params.get(name) for name in self.job_params})
        return {JOB_PARAMS_ENV: str(path)}

    @staticmethod
    def _grid_start(clock, state: dict[str, Any], slot: dict[str, Any], in_slot: bool) -> str:
        """Where this attempt starts in grid time. In a time-compressed demo a second of process start-up
        or trigger latency is an hour of grid time at x3600, so a first try is priced from its intended
        start: the sensor's release for its first slot, each later slot's planned start. Retries, and a
        job running on past its slots, start when they start."""
        if clock.compression != 1 and state.get("released") and in_slot:
            return state["released"]["grid"] if not state["segments"] else slot["start"]
        return clock.grid(datetime.now(timezone.utc)).isoformat()

    def _budget_check(self, budget: float, job: "_Job", state: dict[str, Any]):
        """Prices each new reading at the intensity of its time (the plan's curve) and projects the
        energy still to come from the share of the expected duration already run."""
        from carbon_aware.accounting.jobs import CARBON_BUDGET

        plan, clock = job.plan, job.clock
        logged = job.energy.read()
        books = state.setdefault("budget", {"spent_g": 0.0, "kwh": 0.0, "projected_g": 0.0})
        if logged and logged[-1]["kwh"] > books["kwh"]:  # attempts this operator did not see (a retry)
            books["spent_g"] += (logged[-1]["kwh"] - books["kwh"]) * _intensity_at(
                plan["curve"], clock.grid(datetime.now(timezone.utc))
            )
            books["kwh"] = logged[-1]["kwh"]
        expected = plan["duration_hours"] * 3600  # the job runs in real time, also in compressed demos
        ran_before = sum(a["seconds"] for s in state["segments"] for a in s["attempts"])
        started = time.monotonic()

        def check(kwh: float) -> str | None:
            intensity = _intensity_at(plan["curve"], clock.grid(datetime.now(timezone.utc)))
            books["spent_g"] += max(kwh - books["kwh"], 0.0) * intensity
            books["kwh"] = max(kwh, books["kwh"])
            progress = (ran_before + time.monotonic() - started) / expected if expected > 0 else 1.0
            remaining_kwh = kwh * (1 - progress) / progress if BUDGET_MIN_PROGRESS <= progress < 1 else 0.0
            books["projected_g"] = books["spent_g"] + remaining_kwh * intensity
            books["intensity_g_per_kwh"] = intensity
            if books["spent_g"] > budget or books["projected_g"] > budget:
                self.log.warning(
                    "carbon budget: %.4g g spent, %.4g g projected to finish > budget %g g",
                    books["spent_g"],
                    books["projected_g"],
                    budget,
                )
                return CARBON_BUDGET
            return None

        return check


class CarbonTrainerOperator(CarbonJobOperator):
    """The built-in trainer as the job: the command is ``python -m training --config <the plan's
    optimized_config>`` with its ``training_overrides``, writing into the run's directory."""

    def __init__(self, *, config_param: str = "optimized_config", **kwargs) -> None:
        super().__init__(**kwargs)
        self.config_param = config_param

    def build_command(self, plan: dict[str, Any], job_dir: Path) -> list[str]:
        from carbon_aware.accounting.trainer_job import trainer_command, trainer_emissions

        request = plan["request"]
        if self.emissions is None:  # measured from outside as the config says (country, sampling)
            self.emissions = trainer_emissions(request[self.config_param], request["training_overrides"])
        return trainer_command(
            request[self.config_param], request["training_overrides"], job_dir.parent, self.run_name
        )
