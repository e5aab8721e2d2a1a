"""CarbonReportOperator: the job priced at the grid intensity of its own time, against running at once."""

from __future__ import annotations

from typing import Any, Sequence

from airflow.sdk import BaseOperator

from carbon_aware.operators.job import JOB_XCOM_KEY


class CarbonReportOperator(BaseOperator):
    """Prices the job (and the baseline task's record, when there is one) at the grid intensity of
    their own times and writes the comparison report: JSON (returned to XCom, stored in the records
    database, a copy in object storage), plot (object storage), table in the log, and MLflow when a
    tracking URI is configured. Runs after a budget stop too.
    ``job_task_id`` may list several tasks (one per region): the one that ran is reported, and
    ``route_task_id``'s choice (region, reason) goes into the report."""

    template_fields: Sequence[str] = ("job_task_id", "wait_task_id", "baseline_task_id", "route_task_id")

    def __init__(self, *, job_task_id: str | list[str], wait_task_id: str = "wait_for_window",
                 baseline_task_id: str | None = None, route_task_id: str | None = None, **kwargs) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.job_task_id = job_task_id
        self.wait_task_id = wait_task_id
        self.baseline_task_id = baseline_task_id
        self.route_task_id = route_task_id

    def execute(self, context) -> dict[str, Any]:
        from carbon_aware.accounting.report import write_report

        ti = context["ti"]
        wait = ti.xcom_pull(task_ids=self.wait_task_id)
        job_tasks = [self.job_task_id] if isinstance(self.job_task_id, str) else list(self.job_task_id)
        job_task, job = next(((t, j) for t in job_tasks
                              if (j := ti.xcom_pull(task_ids=t, key=JOB_XCOM_KEY))),
                             (None, None))
        if not wait or not job:
            raise ValueError(f"nothing to report: no {'plan' if not wait else 'job result'} in XCom of "
                             f"{self.wait_task_id if not wait else job_tasks!r} (did it fail?)")
        baseline = ti.xcom_pull(task_ids=self.baseline_task_id) if self.baseline_task_id else None
        route = ti.xcom_pull(task_ids=self.route_task_id) if self.route_task_id else None
        plan = routed_plan(wait["plan"], route)
        run_id = context["dag_run"].run_id
        tasks = {"wait": self.wait_task_id, "job": job_task, "report": self.task_id}
        result, table = write_report(run_id, plan, wait, baseline, job, dag_id=context["dag"].dag_id,
                                     route=route, tasks=tasks)
        self.log.info("\n%s", table)
        self.log.info("report: %s\nplot:   %s", result["files"]["json"], result["files"]["plot"])
        from carbon_aware.accounting.tracking import log_run
        from carbon_aware.outputs import PLOT_NAME, REPORT_NAME, run_dir_for

        local = run_dir_for(run_id, context["dag"].dag_id)  # publish's own copies on this machine
        mlflow_run = log_run(result, {"optimized": job, "baseline": baseline and baseline["summary"]},
                             local / REPORT_NAME, local / PLOT_NAME,
                             experiment=context["dag"].dag_id, run_name=run_id)
        if mlflow_run:
            self.log.info("MLflow: logged as run %s", mlflow_run)
        return result


def routed_plan(plan: dict[str, Any], route: dict[str, Any] | None) -> dict[str, Any]:
    """The plan to price with: when the route fell back to another region than planned, that region's
    grid (its providers from the regions file; its forecast is not in the plan, so its actuals price)."""
    if not route or not route.get("region") or route["region"] == plan.get("region"):
        return plan
    from carbon_aware.planning.regions import load_regions, regions_path

    region = next(r for r in load_regions(regions_path()) if r.name == route["region"])
    return {**plan, "region": region.name, "queue": region.queue, "providers": region.providers,
            "curve": [], "source": f"{plan['source']} (planned for {plan['region']})"}
