"""CarbonPlanOperator: the lowest-carbon window (or set of slots) before the deadline, as the plan."""

from __future__ import annotations

from typing import Any, Sequence

from airflow.sdk import BaseOperator

from carbon_aware.compat import AirflowFailException


class CarbonPlanOperator(BaseOperator):
    """Chooses the lowest-carbon window (or, ``interruptible``, set of slots) before the deadline and
    returns the plan. Its settings are the DAG's params (see
    :class:`carbon_aware.planning.params.RunParams`), overridden by ``request``; ``job_params`` names DAG
    params that are the job's own (not validated here). ``trainer_configs`` also validates the built-in
    trainer's configs."""

    template_fields: Sequence[str] = ("request",)

    def __init__(
        self,
        *,
        request: dict[str, Any] | None = None,
        job_params: Sequence[str] = (),
        trainer_configs: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.request = request or {}
        self.job_params = tuple(job_params)
        self.trainer_configs = trainer_configs

    def execute(self, context) -> dict[str, Any]:
        from carbon_aware.planning.params import ParamsError
        from carbon_aware.planning.plan import make_plan

        params = {k: v for k, v in dict(context.get("params") or {}).items() if k not in self.job_params}
        raw = {**params, **self.request}
        try:
            plan = make_plan(raw, context["dag_run"].run_id, trainer_configs=self.trainer_configs)
        except ParamsError as error:  # bad input: say what is wrong, once, and do not retry
            raise AirflowFailException(str(error)) from None
        self.log.info("%s", plan["summary"])
        return plan
