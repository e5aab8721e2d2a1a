"""A DAG's params (the trigger form) as Airflow ``Param`` objects, generated from the one params model,
:class:`carbon_aware.planning.params.RunParams`: its defaults, types, bounds, choices and descriptions."""

from __future__ import annotations

from typing import Any, Iterable

from airflow.sdk import Param

from carbon_aware.planning.params import RunParams, param_schemas


def dag_params(include: Iterable[str] | None = None, *, job_params: dict[str, Param] | None = None,
               **changes: dict[str, Any]) -> dict[str, Param]:
    """The DAG's params: ``RunParams``' fields (``include``: these, in this order; else all), each updated
    by the keyword of its name (e.g. ``baseline={"default": "off", "enum": ["off"]}``), then
    ``job_params``: the job's own params (``CarbonPlanOperator(job_params=...)``), not RunParams'."""
    clash = sorted(set(job_params or {}) & set(RunParams.model_fields))
    if clash:
        raise ValueError(f"job params may not reuse RunParams' names: {', '.join(clash)}")
    params = {}
    for name, schema in param_schemas(include, changes).items():
        schema = dict(schema)
        params[name] = Param(schema.pop("default"), description=schema.pop("description"), **schema)
    return {**params, **(job_params or {})}
