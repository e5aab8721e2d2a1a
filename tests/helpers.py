"""Models that tests register with the trainer's registry (training.architectures.register), as a DAG
author's own code would."""
import torch
from torch import nn

from pydantic import Field

from training.architectures import SimpleCNNSettings, register
from training.model import SimpleCNN


class NaNAfter(SimpleCNN):
    """A SimpleCNN whose output turns NaN after ``good_calls`` training forward passes."""

    def __init__(self, good_calls: int, **kwargs):
        super().__init__(**kwargs)
        self.good_calls = good_calls
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls.item() > self.good_calls:
                return out * float("nan")
        return out


class Linear(nn.Module):
    """A plain linear classifier: a user's own model, to show the import path works."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(28 * 28, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class NaNAfterSettings(SimpleCNNSettings):
    good_calls: int = Field(ge=0, le=10_000)


register("nan_after", NaNAfterSettings, NaNAfter)
