"""Models: the original pipeline's SimpleCNN, or any ``package.module:Class`` with kwargs."""
from __future__ import annotations

import importlib

import torch
from torch import nn

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


def build_model(config: ModelConfig) -> nn.Module:
    if config.name == "simple_cnn":
        cls = SimpleCNN
    else:
        module_name, _, class_name = config.name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"model.name: cannot import {config.name!r} ({error})") from None
    try:
        model = cls(**config.kwargs)
    except TypeError as error:
        raise ValueError(f"model.kwargs: {error}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"model.name: {config.name!r} did not build a torch.nn.Module")
    return model
