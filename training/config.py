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

from carbon_aware import settings
from carbon_aware.accounting.energy import EmissionsConfig


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and what was expected."""


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainingConfig(_Block):
    run_name: str = Field(min_length=1, max_length=100,
                          pattern=r"^[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*$",
                          description="a folder name: letters, digits, '_', '-' and '.' (not only dots)")
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
    model_save_path: str = Field(default="model.pt", max_length=200,
                                 description="a file name inside the run's directory")

    checkpoint_every_minutes: float = Field(
        default=10.0, gt=0, description="also checkpoint mid-epoch this often"
    )

    @field_validator("model_save_path")
    @classmethod
    def _inside_the_run(cls, value: str) -> str:
        path = Path(value)
        if not value or path.is_absolute() or ".." in path.parts or value.startswith("~"):
            raise ValueError("expected a relative path inside the run's directory (no '/' at the start, "
                             "no '..')")
        return value

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
    root: str = "mnist"  # relative: in the data folder (CARBON_DATA_DIR)
    download: bool = False
    train_subset: int | None = Field(default=None, ge=1)
    test_subset: int | None = Field(default=None, ge=1)
    device_resident: Literal["auto", "always", "never"] = "auto"
    num_workers: int = Field(default=2, ge=0)
    test_batch_size: int = Field(default=1000, ge=1)
    synthetic_train_size: int = Field(default=2048, ge=1)
    synthetic_test_size: int = Field(default=512, ge=1)


class ModelConfig(_Block):
    name: str = Field(default="simple_cnn", description="a registered architecture (training.architectures)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="that architecture's typed settings")

    @field_validator("name")
    @classmethod
    def _registered(cls, value: str) -> str:
        from training.architectures import ARCHITECTURES

        if value not in ARCHITECTURES:
            raise ValueError(f"expected a registered architecture: {', '.join(sorted(ARCHITECTURES))}")
        return value

    @model_validator(mode="after")
    def _typed_kwargs(self) -> "ModelConfig":
        from training.architectures import check_model

        try:
            object.__setattr__(self, "kwargs", check_model(self.name, self.kwargs))
        except ValidationError as error:
            problems = [f"kwargs.{'.'.join(map(str, e['loc']))}: "
                        + ("unknown setting" if e["type"] == "extra_forbidden" else e["msg"])
                        for e in error.errors()]
            raise ValueError(f"{'; '.join(problems)} (settings of {self.name})") from None
        return self


class OutputConfig(_Block):
    dir: str = "."  # relative: in the output folder (CARBON_OUTPUT_DIR)


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
        return resolve_path(self.output.dir, settings.output_root()) / self.training.run_name


def resolve_path(path: str | Path, base: Path) -> Path:
    """Relative paths in configs are relative to their deployment folder (``base``: the data folder for
    ``data.root``, the output folder for ``output.dir``), never the caller's cwd or this package."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else base / path


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
        else:  # the value itself is not shown: it may come from a file
            lines.append(f"{key}: {item['msg'].removeprefix('Value error, ')}")
    return "invalid trainer config:\n  " + "\n  ".join(lines)


# What a DAG run's params may override (``training_overrides``): typed and bounded settings of how to
# train, never a place (run name, output dir, data root, save path), code, or how energy is measured.
OVERRIDABLE: dict[str, Any] = {
    "training.epochs": Annotated[int, Field(ge=1, le=1000)],
    "training.batch_size": Annotated[int, Field(ge=1, le=65536)] | Literal["auto"],
    "training.gradient_accumulation_steps": Annotated[int, Field(ge=1, le=4096)] | Literal["auto"],
    "training.effective_batch_size": Annotated[int, Field(ge=1, le=1_048_576)] | None,
    "training.learning_rate": Annotated[float, Field(gt=0, le=10)],
    "training.optimizer": Literal["adam", "adamw", "sgd"],
    "training.weight_decay": Annotated[float, Field(ge=0, le=1)],
    "training.momentum": Annotated[float, Field(ge=0, lt=1)],
    "training.lr_schedule": Literal["constant", "onecycle"],
    "training.max_grad_norm": Annotated[float, Field(gt=0, le=1e6)] | None,
    "training.precision": Literal["fp32", "fp16", "bf16", "auto"],
    "training.device": Literal["auto", "cuda", "cpu"],
    "training.seed": Annotated[int, Field(ge=0, le=2**31 - 1)],
    "training.checkpoint_every_minutes": Annotated[float, Field(gt=0, le=24 * 60)],
    "data.dataset": Literal["mnist", "synthetic"],
    "data.train_subset": Annotated[int, Field(ge=1, le=100_000_000)] | None,
    "data.test_subset": Annotated[int, Field(ge=1, le=100_000_000)] | None,
    "data.test_batch_size": Annotated[int, Field(ge=1, le=65536)],
    "data.device_resident": Literal["auto", "always", "never"],
    "data.num_workers": Annotated[int, Field(ge=0, le=32)],
    "data.synthetic_train_size": Annotated[int, Field(ge=1, le=10_000_000)],
    "data.synthetic_test_size": Annotated[int, Field(ge=1, le=10_000_000)],
}
MODEL_KWARGS = "model.kwargs."  # + a field of a registered architecture's settings
MAX_OVERRIDES = 50
MAX_OVERRIDE_CHARS = 300


def overridable_keys() -> list[str]:
    from training.architectures import ARCHITECTURES

    fields = sorted({name for a in ARCHITECTURES.values() for name in a.settings.model_fields})
    return [*OVERRIDABLE, "model.name", *(MODEL_KWARGS + name for name in fields)]


def check_overrides(overrides: list[Any]) -> list[str]:
    """Params' overrides, refused unless each is ``KEY=VALUE`` with an allowed key and a value of its type
    within its bounds. Errors name the entry and the key, never the value."""
    from pydantic import TypeAdapter

    from training.architectures import ARCHITECTURES

    if len(overrides) > MAX_OVERRIDES:
        raise ConfigError(f"at most {MAX_OVERRIDES} overrides")
    allowed = overridable_keys()
    for i, text in enumerate(overrides):
        if not isinstance(text, str) or len(text) > MAX_OVERRIDE_CHARS:
            raise ConfigError(f"[{i}]: expected a KEY=VALUE string of at most {MAX_OVERRIDE_CHARS} "
                              "characters")
        try:
            path, value = parse_override(text)
        except ConfigError as error:
            raise ConfigError(f"[{i}]: {error}") from None
        key = ".".join(path)
        if key not in allowed:
            raise ConfigError(f"[{i}]: {key[:60]!r} may not be set from params; "
                              f"allowed: {', '.join(allowed)}")
        if key == "model.name" and (not isinstance(value, str) or value not in ARCHITECTURES):
            raise ConfigError(f"[{i}]: model.name: expected one of {', '.join(sorted(ARCHITECTURES))}")
        if key in OVERRIDABLE:
            try:
                TypeAdapter(OVERRIDABLE[key]).validate_python(value)
            except ValidationError as error:
                problem = error.errors()[0]["msg"].removeprefix("Value error, ")
                raise ConfigError(f"[{i}]: {key}: {problem}") from None
    return overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """``training.epochs=1`` -> (['training', 'epochs'], 1); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError("override: expected KEY=VALUE, e.g. training.epochs=1")
    try:
        return key.strip().split("."), yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"override {key.strip()}: the value is not valid YAML") from None


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
    config_dir = settings.config_dir()
    if (not path.is_file() and not path.is_absolute() and (config_dir / path.name).is_file()
            and path.parent == Path(".")):
        path = config_dir / path.name
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:  # its text quotes the file's lines: only say where
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"{path}: not a readable text file") from None
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
