"""``summary.json``: one run's results, in a versioned, validated schema (documented in README.md)."""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import jsonschema
import torch

from carbon_aware.accounting.energy import utc_now_iso

SCHEMA_VERSION = "1.0"

_NUMBER = {"type": "number"}
_NULLABLE_NUMBER = {"type": ["number", "null"]}
_TIME = {"type": "string", "format": "date-time"}

SUMMARY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "carbon-aware training summary",
    "type": "object",
    "required": [
        "schema_version", "run_name", "status", "config", "device", "precision", "grad_scaler",
        "micro_batch_size", "gradient_accumulation_steps", "effective_batch_size", "data", "epochs",
        "final_test_accuracy_pct", "final_train_loss", "wall_time_seconds", "throughput_samples_per_second",
        "peak_memory_mb", "peak_memory_kind", "energy", "energy_error", "energy_timeline",
        "started_at", "finished_at", "attempts", "training_metrics", "carbon_metrics", "gpu_metrics",
    ],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "run_name": {"type": "string"},
        "status": {"const": "completed"},
        "config": {"type": "object"},
        "device": {"type": "object", "required": ["type", "name", "torch_version"]},
        "precision": {"enum": ["fp32", "fp16", "bf16"]},
        "grad_scaler": {"type": "boolean"},
        "micro_batch_size": {"type": "integer", "minimum": 1},
        "gradient_accumulation_steps": {"type": "integer", "minimum": 1},
        "effective_batch_size": {"type": "integer", "minimum": 1},
        "data": {"type": "object",
                 "required": ["dataset", "train_samples", "test_samples", "device_resident"]},
        "epochs": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object",
                "required": ["epoch", "train_loss", "test_loss", "test_accuracy_pct", "seconds",
                             "samples_per_second", "energy_kwh_cumulative", "finished_at"],
                "properties": {
                    "epoch": {"type": "integer", "minimum": 1},
                    "train_loss": _NUMBER, "test_loss": _NUMBER,
                    "test_accuracy_pct": {"type": "number", "minimum": 0, "maximum": 100},
                    "seconds": _NUMBER, "samples_per_second": _NUMBER,
                    "energy_kwh_cumulative": _NULLABLE_NUMBER, "finished_at": _TIME,
                },
            },
        },
        "final_test_accuracy_pct": {"type": "number", "minimum": 0, "maximum": 100},
        "final_train_loss": _NUMBER,
        "wall_time_seconds": {"type": "number", "minimum": 0},
        "throughput_samples_per_second": {"type": "number", "minimum": 0},
        "peak_memory_mb": {"type": "number", "minimum": 0},
        "peak_memory_kind": {"enum": ["cuda_max_allocated", "cpu_peak_rss"]},
        "energy": {
            "oneOf": [
                {"type": "null"},
                {"type": "object", "required": ["energy_kwh", "cpu_energy_kwh", "gpu_energy_kwh",
                                                "ram_energy_kwh", "avg_power_watts",
                                                "codecarbon_emissions_kg", "duration_seconds"]},
            ]
        },
        "energy_error": {"type": ["string", "null"]},
        "energy_timeline": {
            "type": "array",
            "items": {"type": "object", "required": ["time", "kwh", "label"],
                      "properties": {"time": _TIME, "kwh": {"type": "number", "minimum": 0},
                                     "label": {"type": "string"}}},
        },
        "started_at": _TIME, "finished_at": _TIME,
        "attempts": {"type": "integer", "minimum": 1},
        "distributed": {
            "type": "object", "required": ["world_size", "backend"],
            "properties": {"world_size": {"type": "integer", "minimum": 1},
                           "backend": {"enum": ["nccl", "gloo", None]}},
        },
    },
}


class SummarySchemaError(ValueError):
    pass


def validate_summary(summary: dict[str, Any]) -> None:
    try:
        jsonschema.validate(summary, SUMMARY_SCHEMA, format_checker=jsonschema.FormatChecker())
    except jsonschema.ValidationError as error:
        where = "/".join(str(part) for part in error.absolute_path) or "<root>"
        raise SummarySchemaError(f"summary.json invalid at {where}: {error.message}") from None


def device_model(device: torch.device) -> str:
    """What the energy of a run depends on: the GPU's name, or the CPU's model and the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} x{torch.get_num_threads()} threads"


def _device_block(device: torch.device) -> dict[str, Any]:
    name = device_model(device)
    return {"type": device.type, "name": name, "torch_version": torch.__version__,
            "cuda_version": torch.version.cuda if device.type == "cuda" else None}


def build_summary(*, config, device, precision, grad_scaler, resident, train_samples, test_samples, state,
                  peak_memory_mb, peak_memory_kind, energy, energy_error, energy_timeline,
                  checkpoint_path: Path, model_path: Path,
                  distributed: dict[str, Any] | None = None) -> dict[str, Any]:
    t = config.training
    history = state["history"]
    last = history[-1]
    wall = state["elapsed_seconds"]
    samples = state["samples_seen"]
    return {
        "schema_version": SCHEMA_VERSION,
        "run_name": t.run_name,
        "status": "completed",
        "config": config.model_dump(),
        "device": _device_block(device),
        "precision": precision,
        "grad_scaler": grad_scaler,
        "micro_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "effective_batch_size": t.effective_batch_size,
        "data": {"dataset": config.data.dataset, "train_samples": train_samples,
                 "test_samples": test_samples, "device_resident": resident},
        "epochs": history,
        "final_test_accuracy_pct": last["test_accuracy_pct"],
        "final_train_loss": last["train_loss"],
        "wall_time_seconds": wall,
        "throughput_samples_per_second": samples / wall if wall > 0 else 0.0,
        "peak_memory_mb": peak_memory_mb,
        "peak_memory_kind": peak_memory_kind,
        "energy": energy,
        "energy_error": energy_error,
        "energy_timeline": energy_timeline,
        "started_at": state["started_at"],
        "finished_at": utc_now_iso(),
        "attempts": state["attempts"],
        "distributed": distributed or {"world_size": 1, "backend": None},
        "checkpoint_path": str(checkpoint_path),
        "model_path": str(model_path),
        # The original pipeline's blocks, kept so its users find their numbers where they were.
        "training_metrics": {"final_accuracy": last["test_accuracy_pct"], "final_loss": last["train_loss"],
                             "epochs": len(history), "total_time_seconds": wall},
        "carbon_metrics": {
            "total_emissions_kg": energy["codecarbon_emissions_kg"] if energy else None,
            "energy_consumed_kwh": energy["energy_kwh"] if energy else None,
            "avg_power_watts": energy["avg_power_watts"] if energy else None,
        },
        "gpu_metrics": {"peak_memory_mb": peak_memory_mb,
                        "gradient_accumulation_steps": t.gradient_accumulation_steps,
                        "effective_batch_size": t.effective_batch_size},
    }
