"""Data-parallel training under ``torchrun``: the process group, each rank's shard, agreement between ranks.

``training.distributed: auto`` trains with DistributedDataParallel when ``torchrun`` launched the process
(``LOCAL_RANK`` and ``MASTER_ADDR`` set, or ``WORLD_SIZE`` > 1; one process too, which measures the DDP
path against the plain one): NCCL on GPUs (rank ``r`` on ``cuda:LOCAL_RANK``), gloo on CPU. Otherwise
:func:`setup` returns a plain :class:`Distributed` whose collectives do nothing, so the loop has one
code path.

``training.effective_batch_size`` stays the samples per optimizer step *across all ranks*: every rank draws
the same epoch plan, and each optimizer step's indices are split into ``world_size`` contiguous shards, one
per rank, which each rank serves in micro-batches of ``training.batch_size``. Each micro-batch's summed loss
is divided by the step's global sample count and multiplied by ``world_size`` (DDP averages the ranks'
gradients), so the update is the single-process one up to float summation order.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


class DistributedError(RuntimeError):
    pass


@dataclass
class Distributed:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None
    active: bool = False  # in a process group, the model wrapped in DDP
    # Flags and Python objects travel over gloo on the CPU even when the gradients go over NCCL, so agreeing
    # on a stop does not wait for the GPU's queued work each step.
    cpu_group: Any = None

    @property
    def enabled(self) -> bool:
        return self.active

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def summary(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend}

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of ``indices`` (sizes differ by at most one; may be empty)."""
        return indices.tensor_split(self.world_size)[self.rank] if self.enabled else indices

    def shard_plan(self, plan: list[list[torch.Tensor]], micro_batch: int) -> list[list[torch.Tensor]]:
        """Each optimizer step's indices (all micro-batches of the global plan) split across the ranks,
        then into micro-batches. A rank whose shard of a short last step is empty still gets one (empty)
        micro-batch, so every rank runs one synchronising backward pass per step."""
        if not self.enabled:
            return plan
        sharded = []
        for group in plan:
            mine = self.shard(torch.cat(group))
            sharded.append(list(mine.split(micro_batch)) if len(mine) else [mine])
        return sharded

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks (in place; the tensor must be on this rank's device)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any_of(self, flags: list[bool]) -> list[bool]:
        """Each flag, true on every rank when it is true on any: the ranks stop or checkpoint at one step."""
        if not self.enabled:
            return flags
        values = torch.tensor([int(flag) for flag in flags], dtype=torch.int32)
        dist.all_reduce(values, op=dist.ReduceOp.MAX, group=self.cpu_group)
        return [bool(value) for value in values.tolist()]

    def min_int(self, value: int, device: torch.device) -> int:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], device=device, dtype=torch.long)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return int(tensor.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.cpu_group)

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj, group=self.cpu_group)
        return gathered

    def from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.cpu_group)
        return box[0]

    def no_sync(self, model: torch.nn.Module, last: bool):
        """DDP's ``no_sync`` on accumulation micro-steps: gradients are all-reduced once per step."""
        if self.enabled and not last:
            return model.no_sync()
        return contextlib.nullcontext()


def launched_world_size() -> int:
    """The number of processes ``torchrun`` started (1 when it did not launch this one)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"WORLD_SIZE: expected an integer, got {raw!r}") from None


def setup(mode: str, device: torch.device) -> tuple[Distributed, torch.device]:
    """Joins the process group when launched by torchrun with more than one process; returns the context
    and this rank's device (``cuda:LOCAL_RANK`` on GPUs)."""
    world_size = launched_world_size()
    by_torchrun = world_size > 1 or {"LOCAL_RANK", "MASTER_ADDR"} <= os.environ.keys()
    if not by_torchrun or (mode == "off" and world_size == 1):
        return Distributed(), device
    if mode == "off":
        raise DistributedError(
            f"training.distributed: 'off', but torchrun started {world_size} processes (WORLD_SIZE); "
            "set training.distributed: auto, or launch one process with python -m training"
        )
    if not dist.is_available():
        raise DistributedError("training.distributed: this PyTorch build has no torch.distributed")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK {local_rank}: only {torch.cuda.device_count()} CUDA devices are visible; "
                "start at most that many processes per node (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30), **kwargs)
    cpu_group = dist.new_group(backend="gloo") if backend == "nccl" else None
    return Distributed(world_size, rank, local_rank, backend, True, cpu_group), device


def teardown(ctx: Distributed) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
