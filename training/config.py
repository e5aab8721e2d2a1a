"""Trainer configuration: YAML files validated by pydantic, with ``--set key=value`` overrides.

Every block forbids unknown keys, so a typo fails at once with the key's dotted path
instead of being silently ignored.
"""
from __future__ import annotations

import copy

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "include" / "configs"


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and what was expected."""


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainingConfig(_Block):
    run_name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    epochs: int = Field(ge=1)
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        description="micro-batch size (samples per forward pass); auto: the largest that fits the device")
    gradient_accumulation_steps: Annotated[int, Field(ge=1)] | Literal["auto"] = 1
    effective_batch_size: int | None = Field(
        default=None, ge=1, description="samples per optimizer step; required with batch_size: auto")
    learning_rate: float = Field(gt=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    lr_schedule: Literal["constant", "onecycle"] = "constant"
    max_grad_norm: float | None = Field(default=None, gt=0)
    precision: Literal["fp32", "fp16", "bf16", "auto"] = "fp32"
    device: Literal["auto", "cuda", "cpu"] = "auto"
    distributed: Literal["auto", "off"] = Field(
        default="auto",
        description="auto: DistributedDataParallel when torchrun starts more than one process")
    seed: int = 0
    resume: bool = False
    model_save_path: str = "model.pt"

    checkpoint_every_minutes: float = Field(
        default=10.0, gt=0, description="also checkpoint mid-epoch this often"
    )

    @model_validator(mode="after")
    def _batch_is_consistent(self) -> "TrainingConfig":
        auto = self.batch_size == "auto"
        if auto != (self.gradient_accumulation_steps == "auto"):
            raise ValueError(
                "batch_size and gradient_accumulation_steps: expected both 'auto' or both numbers "
                f"(got {self.batch_size!r} and {self.gradient_accumulation_steps!r})"
            )
        if auto and self.effective_batch_size is None:
            raise ValueError(
                "effective_batch_size: required with batch_size: auto (the samples per optimizer step)"
            )
        if not auto:
            product = self.batch_size * self.gradient_accumulation_steps
            if self.effective_batch_size is not None and self.effective_batch_size != product:
                raise ValueError(f"effective_batch_size ({self.effective_batch_size}) is not batch_size x "
                                 f"gradient_accumulation_steps ({product})")
            object.__setattr__(self, "effective_batch_size", product)
        return self


class DataConfig(_Block):
    dataset: Literal["mnist", "synthetic"] = "mnist"
    root: str = "../shared/data/mnist"
    download: bool = False
    train_subset: int | None = Field(default=None, ge=1)
    test_subset: int | None = Field(default=None, ge=1)
    device_resident: Literal["auto", "always", "never"] = "auto"
    num_workers: int = Field(default=2, ge=0)
    test_batch_size: int = Field(default=1000, ge=1)
    synthetic_train_size: int = Field(default=2048, ge=1)
    synthetic_test_size: int = Field(default=512, ge=1)


class ModelConfig(_Block):
    name: str = Field(default="simple_cnn",
                      description="'simple_cnn' or an import path 'package.module:Class'")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_or_import_path(cls, value: str) -> str:
        if value != "simple_cnn" and ":" not in value:
            raise ValueError("expected 'simple_cnn' or an import path 'package.module:Class'")
        return value


class EmissionsConfig(_Block):
    enabled: bool = True
    country_iso_code: str = Field(default="GBR", pattern=r"^[A-Z]{3}$")
    region: str | None = None
    measure_power_secs: float = Field(default=1.0, gt=0)
    log_every_seconds: float = Field(
        default=10.0, gt=0, description="energy log reading interval during training"
    )


class OutputConfig(_Block):
    dir: str = "output"


class TrainerConfig(_Block):
    training: TrainingConfig
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    emissions: EmissionsConfig = Field(default_factory=EmissionsConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    on_device: dict[Literal["cpu", "cuda"], list[str]] = Field(
        default_factory=dict, description="KEY=VALUE settings for training on that device (the device "
        "training.device resolves to), applied before the caller's overrides, which win")

    def run_dir(self) -> Path:
        return resolve_path(self.output.dir) / self.training.run_name


def resolve_path(path: str | Path) -> Path:
    """Relative paths in configs are relative to the repository root, not the caller's cwd."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        # a union's branch names ("constrained-int", "literal['auto']") are not keys of the config
        key = (
            ".".join(
                str(part) for part in item["loc"] if not str(part).startswith(("constrained-", "literal["))
            )
            or "<root>"
        )
        if item["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        elif item["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        elif item["type"] == "value_error":  # a check across keys: the message names them
            lines.append(f"{key}: {item['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{key}: {item['msg']} (got {item.get('input')!r})")
    return "invalid trainer config:\n  " + "\n  ".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``training.epochs=1`` -> (['training', 'epochs'], 1); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. training.epochs=1")
    return key.strip().split("."), yaml.safe_load(raw)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a block")
            node = child
        node[path[-1]] = value
    return raw


def build_config(raw: dict[str, Any]) -> TrainerConfig:
    try:
        return TrainerConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainerConfig:
    path = Path(path)
    if (not path.is_file() and not path.is_absolute() and (CONFIG_DIR / path.name).is_file()
            and path.parent == Path(".")):
        path = CONFIG_DIR / path.name
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of blocks (training, data, ...)")
    overrides = list(overrides or [])
    config = build_config(apply_overrides(copy.deepcopy(raw), overrides))
    device_settings = config.on_device.get(training_device(config.training.device), [])
    return build_config(apply_overrides(raw, [*device_settings, *overrides])) if device_settings else config


def training_device(requested: str) -> str:
    """The device type ``training.device`` resolves to on this machine (auto: cuda when one is there)."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
