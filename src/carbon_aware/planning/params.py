"""The DAG's run parameters, validated before any waiting or training starts."""
from __future__ import annotations

import types
from typing import Any, Iterable, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from carbon_aware.redaction import looks_secret

RENAMED = {"run_baseline": "replaced by baseline: cached (default), every_run or off"}


class ParamsError(ValueError):
    pass


def check_provider_specs(providers: list[Any], where: str) -> list[dict[str, Any]]:
    """Each provider spec checked against its provider's model (``providers.specs``: known ``name``,
    known options of the right type, no secrets, no endpoint) and normalized; ``where`` says whose."""
    from carbon_aware.grid.clients.specs import validate_provider_specs

    return validate_provider_specs(providers, where)


class RunParams(BaseModel):
    """The DAG's run parameters. The trigger form's fields are generated from these (:func:`param_schemas`):
    each field's default, type, bounds, choices and description, in this order."""

    model_config = ConfigDict(extra="forbid")

    providers: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"name": "uk"}], max_length=10,
        description="Carbon-intensity sources, tried in order, then the mock curve. Each is an object with "
        "'name' (uk, electricitymaps, watttime, carbon_aware_sdk, trace, mock) and its options, e.g. "
        '{"name": "uk", "region_id": 13}, {"name": "electricitymaps", "zone": "DE", "history": true}, '
        '{"name": "trace", "path": "carbon/...csv", "replay_start": "2023-03-01T00:00:00Z"} (a file '
        "in the deployment's data folder). Endpoints and tokens come from Airflow connections, never "
        "from here: a spec may name a 'conn_id' of its provider's connection type.")
    job_duration_hours: float | None = Field(
        default=1.0, gt=0, le=48,
        description="Expected training time in hours; empty = the last run's measured duration.")
    deadline_hours: float = Field(default=24.0, gt=0, le=48,
                                  description="Latest finish, in hours after the run starts.")
    planning_mode: Literal["window", "threshold"] = Field(
        default="window",
        description="window: lowest mean intensity before the deadline. threshold: the original "
        "rule (first slot below the threshold, else the best window).")
    carbon_threshold: float = Field(default=300.0, gt=0, le=2000,
                                    description="gCO2/kWh, threshold mode only.")
    replan_tolerance_pct: float = Field(
        default=20.0, ge=0, le=500,
        description="On waking, re-plan if the current intensity is this much above the forecast.")
    max_replans: int = Field(default=3, ge=0, le=10, description="Re-plans allowed per run.")
    # trainer configs: file names in the deployment's config folder (carbon_aware.settings.config_dir)
    baseline_config: str = Field(
        default="baseline.yaml", min_length=1, max_length=200,
        description="Trainer config of the run-now baseline: a file in the deployment's config folder.")
    optimized_config: str = Field(
        default="optimized.yaml", min_length=1, max_length=200,
        description="Trainer config of the carbon-aware run: a file in the deployment's config folder.")
    training_overrides: list[str] = Field(
        default_factory=list,
        description="KEY=VALUE overrides for both trainer configs, e.g. training.epochs=1.")
    baseline: Literal["cached", "every_run", "off"] = Field(
        default="cached",
        description="What the saving is measured against. cached: the baseline config's energy, measured "
        "once per (config with overrides, device model, dataset, trainer version) and reused; "
        "every_run: train the baseline at once in every run (it doubles the emissions); off: "
        "timing only, the optimized run's energy priced at run-now.")
    baseline_max_age_days: float = Field(
        default=30.0, ge=0, le=3650,
        description="A cached baseline older than this is measured again (0: now).")
    # interruptible jobs (checkpointed training): run in the cleanest segments instead of one window
    interruptible: bool = Field(
        default=False,
        description="The trainer checkpoints and resumes: run it in the cleanest slots before the deadline, "
        "pausing on dirty hours in between (the task defers, holding no worker slot).")
    min_segment_minutes: float = Field(
        default=30.0, gt=0, le=48 * 60,
        description="Interruptible: the shortest slot worth starting the job for.")
    resume_cost_minutes: float = Field(
        default=5.0, ge=0, le=24 * 60,
        description="Interruptible: what a pause costs (restart and reload), in run time.")
    carbon_budget_g: float | None = Field(
        default=None, gt=0,
        description="Optional: grams of CO2 the optimized run may emit, priced as its energy comes in; it "
        "stops at its next checkpoint when finishing would exceed it (the task fails, no retry).")
    time_compression: float = Field(
        default=1.0, ge=1, le=86400,
        description="Demos only: 3600 makes each forecast hour of waiting pass in one second.")

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, providers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return check_provider_specs(providers, "params")

    @field_validator("training_overrides")
    @classmethod
    def _allowed_overrides(cls, overrides: list[str]) -> list[str]:
        if not overrides:  # a user's own job: the demo trainer need not be installed
            return overrides
        try:
            from training.config import ConfigError, check_overrides
        except ImportError:
            raise ValueError("overrides for the built-in trainer, which is not installed "
                             "(pip install ./training from the provider's repository)") from None
        try:
            return check_overrides(overrides)
        except ConfigError as error:
            raise ValueError(str(error)) from None

    @model_validator(mode="after")
    def _job_fits_before_deadline(self) -> "RunParams":
        if self.job_duration_hours is not None and self.job_duration_hours > self.deadline_hours:
            raise ValueError(f"job_duration_hours ({self.job_duration_hours}) is longer than deadline_hours "
                             f"({self.deadline_hours}): the job cannot finish by the deadline")
        return self


def _got(value: Any) -> str:
    """What an error shows of the refused value: a number, a flag or a short word, never a structure
    or a long text (either may carry a secret or a file's content)."""
    if value is None or isinstance(value, (bool, int, float)):
        return f" (got {value!r})"
    if isinstance(value, str) and len(value) <= 40 and "=" not in value and not looks_secret(value):
        return f" (got {value!r})"
    return ""


def validate_params(raw: dict[str, Any]) -> RunParams:
    known = {key: value for key, value in raw.items()
             if key in RunParams.model_fields or not key.startswith("_")}
    try:
        return RunParams.model_validate(known)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            name = ".".join(str(part) for part in item["loc"]) or "params"
            message = ("unknown param" if item["type"] == "extra_forbidden"
                       else item["msg"].removeprefix("Value error, "))
            if name in RENAMED:
                message += f" ({RENAMED[name]})"
            shown = "" if any(looks_secret(part) for part in item["loc"]) else _got(item.get("input"))
            lines.append(f"param {name}: {message}{shown}")
        raise ParamsError("invalid DAG params:\n  " + "\n  ".join(lines)) from None


# --- the trigger form: JSON schemas generated from RunParams ------------------------------------------

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}
_BOUNDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


def _type_schema(annotation: Any) -> dict[str, Any]:
    """A field's type as JSON schema: Literal -> enum, X | None -> [type, "null"], list[X] -> array."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType) and type(None) in args and len(args) == 2:
        inner = _type_schema(next(arg for arg in args if arg is not type(None)))
        return {**inner, "type": [inner["type"], "null"]}
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0])}
    if origin is dict:
        return {"type": "object"}
    if annotation in _JSON_TYPES:
        return {"type": _JSON_TYPES[annotation]}
    raise TypeError(f"no JSON schema for the type {annotation!r}")


def _constraints(name: str, metadata: list[Any], array: bool) -> dict[str, Any]:
    """A field's bounds (gt, ge, lt, le) and lengths (of a list: items; of a text: characters)."""
    schema: dict[str, Any] = {}
    for rule in metadata:
        bounds = {key: getattr(rule, attr) for attr, key in _BOUNDS.items() if hasattr(rule, attr)}
        if hasattr(rule, "max_length"):
            bounds["maxItems" if array else "maxLength"] = rule.max_length
        if hasattr(rule, "min_length"):
            bounds["minItems" if array else "minLength"] = rule.min_length
        if not bounds:  # a new kind of constraint must reach the form too
            raise TypeError(f"param {name}: no JSON schema for the constraint {rule!r}")
        schema.update(bounds)
    return schema


def field_schema(name: str) -> dict[str, Any]:
    """``RunParams`` field ``name`` as its trigger-form field's JSON schema: its default, type, bounds,
    choices and description."""
    field = RunParams.model_fields[name]
    typed = _type_schema(field.annotation)
    array = typed.get("type") in ("array", ["array", "null"])
    return {"default": field.get_default(call_default_factory=True), **typed,
            **_constraints(name, field.metadata, array), "description": field.description}


def param_schemas(include: Iterable[str] | None = None,
                  changes: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The trigger form's fields (``include``: these, in this order; else all of ``RunParams``), each
    updated with its entry in ``changes`` (a DAG's own default, a narrower schema, its description)."""
    names = list(RunParams.model_fields) if include is None else list(include)
    changes = changes or {}
    unknown = sorted((set(names) | set(changes)) - set(RunParams.model_fields))
    if unknown:
        raise ValueError(f"not RunParams fields: {', '.join(unknown)}")
    left_out = sorted(set(changes) - set(names))
    if left_out:
        raise ValueError(f"changes to params that are not included: {', '.join(left_out)}")
    return {name: {**field_schema(name), **changes.get(name, {})} for name in names}
