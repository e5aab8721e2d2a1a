"""Carbon-aware training on Airflow: the parts any DAG can use.

    from carbon_aware import (CarbonPlanOperator, CarbonWindowSensor, CarbonJobOperator,
                              CarbonReportOperator)

Imported lazily, so that the planner, providers and evaluation CLI work without Airflow installed.
"""
from __future__ import annotations

_PARTS = {
    "CarbonPlanOperator": "carbon_aware.operators.plan",
    "CarbonJobOperator": "carbon_aware.operators.job",
    "CarbonTrainerOperator": "carbon_aware.operators.job",
    "CarbonReportOperator": "carbon_aware.operators.report",
    "CarbonWindowSensor": "carbon_aware.sensors.window",
    "CarbonRegionSensor": "carbon_aware.sensors.window",
    "CarbonWindowTrigger": "carbon_aware.triggers.window",
}
__all__ = list(_PARTS)


def __getattr__(name: str):
    if name in _PARTS:
        import importlib

        return getattr(importlib.import_module(_PARTS[name]), name)
    raise AttributeError(f"module 'carbon_aware' has no attribute {name!r}")
