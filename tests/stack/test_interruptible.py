"""An interruptible run on the real engine: the trainer runs in its first slot, is stopped with SIGTERM at
the slot's end, the operator defers through the dirty hours (the triggerer holds it, no worker slot,
no trainer process), and the next slot resumes from the checkpoint; the report prices each segment."""

from datetime import datetime

import pytest

from tests.stack.conftest import NESO_TRACE, TEST_CONFIG
from tests.stack.services import trainer_processes

pytestmark = [pytest.mark.integration, pytest.mark.stack, pytest.mark.timeout(900)]

FIRST_SLOT_SECONDS = 30.0  # real seconds of the first one-hour slot (time compressed)


def interruptible_conf() -> dict:
    """A replay of the real NESO 2023 trace whose interruptible plan (the DAG's own planner) has a
    pause of at least an hour between two slots; compressed so that the first slot lasts 30 s."""
    from datetime import timedelta, timezone

    from carbon_aware.planning.plan import make_plan

    def pause_hours(conf: dict, now: datetime) -> float:
        segments = make_plan(conf, "probe", now=now)["segments"]
        if len(segments) < 2:
            return 0.0
        return (
            datetime.fromisoformat(segments[1]["start"]) - datetime.fromisoformat(segments[0]["end"])
        ).total_seconds() / 3600

    now = datetime.now(timezone.utc)
    for month, day, hour in ((m, d, h) for m in (3, 4, 5, 6) for d in range(1, 29) for h in (0, 6, 12, 18)):
        conf = {
            "providers": [
                {
                    "name": "trace",
                    "path": str(NESO_TRACE),
                    "replay_start": f"2023-{month:02d}-{day:02d}T{hour:02d}:00:00Z",
                }
            ],
            "job_duration_hours": 2,
            "deadline_hours": 6,
            "interruptible": True,
            "min_segment_minutes": 60,
            "resume_cost_minutes": 5,
            "baseline": "off",
            "baseline_config": TEST_CONFIG,
            "optimized_config": TEST_CONFIG,
            "training_overrides": ["training.epochs=25", "training.checkpoint_every_minutes=0.1"],
        }
        # The run plans a little later than this probe: the pause must hold for the next minutes too.
        if all(pause_hours(conf, now + timedelta(minutes=m)) >= 1 for m in (0, 1, 3)):
            conf["time_compression"] = 3600 / FIRST_SLOT_SECONDS
            return conf
    raise AssertionError("no replay start in March-June 2023 gives an interruptible plan with a pause")


def test_an_interruptible_run_pauses_deferred_between_slots_and_resumes(stack):
    run_id = stack.trigger(interruptible_conf())
    seen: list[dict] = []

    def watch() -> None:
        ti = stack.task_instances(run_id).get("train_optimized") or {}
        if ti.get("state") == "deferred":
            pool = stack.get("/api/v2/pools/gpu")
            if stack.task_instances(run_id)["train_optimized"]["state"] == "deferred":
                seen.append({"ti": ti, "gpu_pool": pool, "trainers": trainer_processes(stack.output_dir)})

    run = stack.wait_for_run(run_id, timeout=800, on_poll=watch)
    assert run["state"] == "success", stack.diagnostics()

    log = stack.log(run_id, "train_optimized", 1)
    # Deferred between the slots: held by the triggerer, no gpu slot taken, no trainer running.
    assert seen, "never saw train_optimized deferred between its slots:\n" + log[-6000:]
    assert any(
        (v["ti"].get("trigger") or {}).get("classpath") == "carbon_aware.triggers.window.CarbonWindowTrigger"
        for v in seen
    ), seen[0]["ti"]
    for view in seen:
        assert view["gpu_pool"]["running_slots"] == 0 and view["trainers"] == [], view
    assert "stopping the job (slot_end)" in log and "resumed from" in log, log[-4000:]
    assert "deferring" in log and "holding no worker slot" in log

    report = stack.xcom(run_id, "report")
    assert stack.stored_report(run_id) == report
    job = report["job"]
    assert job["interruptible"] and len(job["planned_segments"]) >= 2
    assert len(job["segments"]) >= 2 and job["attempts"] >= 2, job
    assert job["segments"][0]["stopped"] == ["slot_end"]
    for segment in job["segments"]:
        assert segment["energy_kwh"] > 0 and segment["emissions_g"] > 0, segment
    # Time-compressed: each slot after the first is priced from its planned start (a second of trigger
    # latency would be two minutes of grid time here), the first from the sensor's release.
    at = datetime.fromisoformat
    assert at(job["segments"][0]["start"]) == at(report["schedule"]["actual_start"])
    assert all(at(s["start"]) == at(s["planned_start"]) for s in job["segments"][1:]), job["segments"]
    # Each segment was priced on its own and together they are the run's priced emissions.
    total = report["intensities"]["optimized"]["emissions_g"]
    assert sum(s["emissions_g"] for s in job["segments"]) == pytest.approx(total, rel=1e-6)
    report_log = stack.log(run_id, "report", 1)
    assert "segments:" in report_log, report_log[-3000:]
