"""Models: the original pipeline's SimpleCNN and a linear classifier, built from the registry
(:mod:`training.architectures`) with their typed settings."""
from __future__ import annotations

import importlib

import torch
from torch import nn

from training.architectures import ARCHITECTURES
from training.config import ModelConfig


class SimpleCNN(nn.Module):
    """Two conv blocks and two linear layers, as in the original pipeline.

    No batch-dependent layers (no BatchNorm), so gradient accumulation is exactly equivalent
    to the large batch; dropout is off by default for the same reason.
    """

    def __init__(self, input_channels: int = 1, num_classes: int = 10, width: int = 32, hidden: int = 128,
                 dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_channels, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 7 * 7, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LinearClassifier(nn.Module):
    """One linear layer over the flattened image: the smallest model worth training."""

    def __init__(self, num_classes: int = 10, pixels: int = 28 * 28):
        super().__init__()
        self.fc = nn.Linear(pixels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def build_model(config: ModelConfig) -> nn.Module:
    """The registered architecture ``config.name`` with its validated settings (no import path from a
    config ever reaches an import)."""
    architecture = ARCHITECTURES[config.name]
    build = architecture.build
    if isinstance(build, str):  # written in code (the registry), never read from a config
        module_name, _, attribute = build.partition(":")
        build = getattr(importlib.import_module(module_name), attribute)
    model = build(**architecture.settings.model_validate(config.kwargs).model_dump())
    if not isinstance(model, nn.Module):
        raise ValueError(f"model.name: {config.name!r} did not build a torch.nn.Module")
    return model
