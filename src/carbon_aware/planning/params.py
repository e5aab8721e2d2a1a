"""The DAG's run parameters, validated before any waiting or training starts."""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# A key that contains any of these (lower-cased, separators removed) looks like a credential: refused in
# params and in regions files, its value redacted wherever it is shown.
SECRET_WORDS = ("token", "secret", "passw", "pwd", "auth", "bearer", "credential", "key", "cookie",
                "session", "signature")


RENAMED = {"run_baseline": "replaced by baseline: cached (default), every_run or off"}


class ParamsError(ValueError):
    pass


def check_provider_specs(providers: list[Any], where: str) -> list[dict[str, Any]]:
    """Each provider spec checked against its provider's model (``providers.specs``: known ``name``,
    known options of the right type, no secrets, no endpoint) and normalized; ``where`` says whose."""
    from carbon_aware.grid.clients.specs import validate_provider_specs

    return validate_provider_specs(providers, where)


class RunParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[dict[str, Any]] = Field(default_factory=lambda: [{"name": "uk"}], max_length=10)
    job_duration_hours: float | None = Field(default=1.0, gt=0, le=48)
    deadline_hours: float = Field(default=24.0, gt=0, le=48)
    planning_mode: Literal["window", "threshold"] = "window"
    carbon_threshold: float = Field(default=300.0, gt=0, le=2000)
    replan_tolerance_pct: float = Field(default=20.0, ge=0, le=500)
    max_replans: int = Field(default=3, ge=0, le=10)
    # trainer configs: file names in the deployment's config folder (carbon_aware.settings.config_dir)
    baseline_config: str = Field(default="baseline.yaml", min_length=1, max_length=200)
    optimized_config: str = Field(default="optimized.yaml", min_length=1, max_length=200)
    training_overrides: list[str] = Field(default_factory=list)
    baseline: Literal["cached", "every_run", "off"] = "cached"
    baseline_max_age_days: float = Field(default=30.0, ge=0, le=3650)
    time_compression: float = Field(default=1.0, ge=1, le=86400)
    carbon_budget_g: float | None = Field(default=None, gt=0)
    # interruptible jobs (checkpointed training): run in the cleanest segments instead of one window
    interruptible: bool = False
    min_segment_minutes: float = Field(default=30.0, gt=0, le=48 * 60)
    resume_cost_minutes: float = Field(default=5.0, ge=0, le=24 * 60)

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, providers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return check_provider_specs(providers, "params")

    @field_validator("training_overrides")
    @classmethod
    def _allowed_overrides(cls, overrides: list[str]) -> list[str]:
        from training.config import ConfigError, check_overrides

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


def looks_secret(key: Any) -> bool:
    """True for any key that looks like a credential, however spelled: ``auth-token``, ``accessToken``,
    ``API_KEY``, ``Bearer``, ``client-secret``, ``passwd`` ..."""
    squeezed = re.sub(r"[^a-z0-9]", "", str(key).lower())
    return any(word in squeezed for word in SECRET_WORDS)


def redact(value: Any) -> Any:
    """``value`` with every secret-looking entry's value hidden, so an error can show what it refused."""
    if isinstance(value, dict):
        return {k: "<redacted>" if looks_secret(k) else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


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
