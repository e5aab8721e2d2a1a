"""The models a config may name: a registry of known architectures, each with typed settings.

A config (and so a DAG run's params) names an architecture, never code: ``model.name`` is a key of
:data:`ARCHITECTURES` and ``model.kwargs`` must validate against that architecture's settings model
(typed fields with bounds, nothing else). Code adds its own models with :func:`register`; no torch here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimpleCNNSettings(Settings):
    input_channels: int = Field(default=1, ge=1, le=4)
    num_classes: int = Field(default=10, ge=2, le=1000)
    width: int = Field(default=32, ge=1, le=512)
    hidden: int = Field(default=128, ge=1, le=8192)
    dropout: float = Field(default=0.0, ge=0, lt=1)


class LinearSettings(Settings):
    num_classes: int = Field(default=10, ge=2, le=1000)


@dataclass(frozen=True)
class Architecture:
    settings: type[Settings]
    build: str | Callable[..., Any]  # "module:attribute" written in code, or the class itself


ARCHITECTURES: dict[str, Architecture] = {
    "simple_cnn": Architecture(SimpleCNNSettings, "training.model:SimpleCNN"),
    "linear": Architecture(LinearSettings, "training.model:LinearClassifier"),
}


def register(name: str, settings: type[Settings], build: str | Callable[..., Any]) -> None:
    """Make ``name`` a model configs may use: ``build(**settings)`` must return a ``torch.nn.Module``.
    For code (a DAG author's module, a test), never for anything read from a config or params."""
    if not name.isidentifier():
        raise ValueError(f"model name {name!r}: expected an identifier")
    ARCHITECTURES[name] = Architecture(settings, build)


def check_model(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The architecture's settings from ``kwargs``, validated (pydantic.ValidationError names the field)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"expected one of {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name].settings.model_validate(kwargs).model_dump()
