"""The training loop: mixed precision, exact gradient accumulation, atomic resumable checkpoints.

Accumulation is exact: each micro-batch's loss is its *sum* over samples divided by the number of
samples in the whole optimizer step, so K micro-batches of b give the same gradient as one batch
of K*b with a mean loss, the last partial step of an epoch included.
"""
from __future__ import annotations

import contextlib
import logging
import math
import resource
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from torch.nn.parallel import DistributedDataParallel

from training.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from training.config import TrainerConfig
from training.distributed import Distributed, DistributedError, setup, teardown
from carbon_aware.files import atomic_write_json
from training.data import BatchSource, epoch_plan, fits_on_device, load_splits
from carbon_aware.accounting.energy import ENERGY_LOG_NAME, EnergyMeter, utc_now_iso
from training.model import build_model
from training.summary import build_summary, device_model, validate_summary

log = logging.getLogger("training")

NONFINITE_CHECK_EVERY = 50  # optimizer steps between host syncs that look for a NaN/inf loss
PTDTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TrainingError(RuntimeError):
    pass


class NonFiniteLossError(TrainingError):
    pass


class TrainingInterrupted(TrainingError):
    """SIGTERM arrived; a checkpoint was written and ``resume: true`` continues from it."""


class RunExistsError(TrainingError):
    pass


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingError("training.device: 'cuda' requested but no CUDA device is available")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def device_model_for(requested: str) -> str:
    """The model of the device a run with ``training.device: requested`` would use here."""
    return device_model(resolve_device(requested))


def resolve_precision(requested: str, device: torch.device) -> str:
    if requested != "auto":
        return requested
    if device.type != "cuda":  # bf16 autocast where the CPU has native bf16 (AVX512-BF16, AMX), else fp32
        return (
            "bf16"
            if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
            else "fp32"
        )
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


# On CPU a larger micro-batch is slower per sample for this kind of network (measured on 2 cores: 256 is
# slower than 64), so "fits" there means at most this many; on a GPU it is what memory allows.
CPU_MAX_MICRO_BATCH = 64


def _fits(model: torch.nn.Module, sample: torch.Tensor, batch: int, autocast) -> bool:
    """One forward and backward pass of ``batch`` samples, to see whether the device has the memory."""
    x = sample.expand(batch, *sample.shape[1:]).contiguous()
    try:
        with autocast():
            model(x).float().sum().backward()
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        model.zero_grad(set_to_none=True)
        del x
        torch.cuda.empty_cache()


def resolve_batch(
    t, device: torch.device, model: torch.nn.Module, sample: torch.Tensor, autocast
) -> tuple[int, int]:
    """(micro-batch, accumulation steps): as configured, or for ``batch_size: auto`` the largest micro-batch
    up to ``effective_batch_size`` that fits the device, with accumulation only for what does not fit."""
    if t.batch_size != "auto":
        return t.batch_size, t.gradient_accumulation_steps
    target = t.effective_batch_size
    if device.type == "cuda":
        largest = target
        while largest > 1 and not _fits(model, sample, largest, autocast):
            largest //= 2
        torch.cuda.reset_peak_memory_stats(device)
    else:
        largest = min(target, CPU_MAX_MICRO_BATCH)
    steps = math.ceil(target / largest)
    return math.ceil(target / steps), steps


def _optimizer(model: torch.nn.Module, config: TrainerConfig, device: torch.device) -> torch.optim.Optimizer:
    t = config.training
    fused = {"fused": True} if device.type == "cuda" else {}
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.learning_rate, momentum=t.momentum,
                               weight_decay=t.weight_decay)
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay, **fused)


def _scheduler(optimizer, config: TrainerConfig, steps_per_epoch: int):
    t = config.training
    if t.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=t.learning_rate,
                                                   total_steps=t.epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)


@contextlib.contextmanager
def _stop_on_sigterm():
    """Yields a flag set by SIGTERM, so the loop can checkpoint at the next step boundary."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def _peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_peak_rss"


@torch.no_grad()
def evaluate(model, batches: BatchSource, batch_size: int, autocast,
             ctx: Distributed | None = None) -> tuple[float, float]:
    """(mean loss, accuracy %) over the whole test set; under DDP each rank scores its shard and the
    sums are added, so the figures mean what they mean in a single process."""
    ctx = ctx or Distributed()
    model.eval()
    loss_sum = torch.zeros((), device=batches.device)
    correct = torch.zeros((), device=batches.device, dtype=torch.long)
    for x, y in batches.sequential(batch_size, ctx.shard(torch.arange(len(batches)))):
        with autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(dim=1) == y).sum()
    model.train()
    totals = ctx.sum(torch.stack([loss_sum.double(), correct.double()])).tolist()
    return totals[0] / len(batches), 100.0 * totals[1] / len(batches)


def _check_run_dir(config: TrainerConfig, run_dir: Path, checkpoint_path: Path) -> None:
    if config.training.resume:
        return
    leftovers = [
        p for p in (run_dir / "summary.json", checkpoint_path, run_dir / ENERGY_LOG_NAME) if p.exists()
    ]
    if leftovers:
        raise RunExistsError(
            f"training.run_name: output for run {config.training.run_name!r} already exists "
            f"({leftovers[0]}); "
            "choose a new run_name, or set training.resume: true to continue it"
        )


def train(config: TrainerConfig, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train per ``config``; writes ``summary.json`` under the run directory and returns it.

    Launched by ``torchrun`` (and ``training.distributed: auto``), every rank calls this: they train one
    model with DistributedDataParallel, rank 0 alone writes files, and every rank returns rank 0's
    summary (see training/distributed.py)."""
    try:
        ctx, device = setup(config.training.distributed, resolve_device(config.training.device))
    except DistributedError as error:
        raise TrainingError(str(error)) from None
    quiet = not ctx.is_main and log.level < logging.WARNING
    previous_level = log.level
    if quiet:  # one progress log, rank 0's
        log.setLevel(logging.WARNING)
    try:
        return _train(config, ctx, device, on_step)
    finally:
        if quiet:
            log.setLevel(previous_level)
        teardown(ctx)


@dataclass
class _Run:
    """One training run's parts, shared by its setup, epochs, checkpoints and summary."""

    config: TrainerConfig
    ctx: Distributed
    device: torch.device
    precision: str
    run_dir: Path
    checkpoint_path: Path
    train_split: Any
    test_split: Any
    resident: bool
    train_batches: BatchSource
    test_batches: BatchSource
    model: torch.nn.Module
    autocast: Callable[[], Any]
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    ddp_model: torch.nn.Module | None = None
    state: dict[str, Any] = field(default_factory=dict)
    meter: EnergyMeter | None = None
    segment_start: float = 0.0  # perf_counter at the last checkpoint: the run time since is not in state
    last_checkpoint: float = 0.0  # monotonic

    @property
    def t(self):
        return self.config.training


def _train(config: TrainerConfig, ctx: Distributed, device: torch.device,
           on_step: Callable[[int], None] | None) -> dict[str, Any]:
    run = _setup(config, ctx, device)
    _resume(run)
    # CodeCarbon measures the machine: one tracker, rank 0's, writes the energy log.
    emissions = config.emissions if ctx.is_main else config.emissions.model_copy(update={"enabled": False})
    run.meter = EnergyMeter(emissions, run.run_dir, run.t.run_name, resumed_from=run.state["energy"])
    run.meter.start()
    run.model.train()
    run.segment_start, run.last_checkpoint = time.perf_counter(), time.monotonic()
    try:
        with _stop_on_sigterm() as stop:
            for epoch in range(run.state["epoch"], run.t.epochs):
                _train_epoch(run, epoch, stop, on_step)
    finally:
        energy = run.meter.stop()  # every attempt's energy counts, also an interrupted one's
    return _finish(run, energy)


def _setup(config: TrainerConfig, ctx: Distributed, device: torch.device) -> _Run:
    """The run's folder, device, data, model, batch size, optimizer and fresh state."""
    t = config.training
    run_dir = config.run_dir()
    checkpoint_path = run_dir / "checkpoints" / "last.pt"
    _check_run_dir(config, run_dir, checkpoint_path)
    ctx.barrier()  # every rank has looked before rank 0 writes anything
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    precision = resolve_precision(t.precision, device)
    _prepare_device(device, precision, ctx)
    torch.manual_seed(t.seed)

    train_split, test_split = load_splits(config.data, t.seed)
    dataset_bytes = (train_split.images.numel() + test_split.images.numel()
                     + 8 * (len(train_split) + len(test_split)))
    resident = fits_on_device(dataset_bytes, device, config.data.device_resident)
    train_batches = BatchSource(train_split, device, resident, config.data.num_workers)
    test_batches = BatchSource(test_split, device, resident, config.data.num_workers)
    log.info("data: %s, %d train / %d test samples, %s", config.data.dataset, len(train_split),
             len(test_split),
             "resident on device" if resident else f"DataLoader with {config.data.num_workers} workers")
    model = build_model(config.model).to(device)  # DDP gives every rank rank 0's initial weights
    if ctx.rank > 0:
        torch.manual_seed(t.seed + ctx.rank)  # own dropout masks; rank 0 draws what a single process draws
    autocast = (lambda: contextlib.nullcontext()) if precision == "fp32" else (
        lambda: torch.autocast(device_type=device.type, dtype=PTDTYPE[precision]))
    run = _Run(config=config, ctx=ctx, device=device, precision=precision, run_dir=run_dir,
               checkpoint_path=checkpoint_path, train_split=train_split, test_split=test_split,
               resident=resident, train_batches=train_batches, test_batches=test_batches, model=model,
               autocast=autocast)
    if t.batch_size == "auto":
        _resolve_auto_batch(run)
    if ctx.enabled:
        log.info("DDP: each optimizer step's %d samples split over %d ranks, micro-batches of %d",
                 run.t.effective_batch_size, ctx.world_size, run.t.batch_size)
    run.optimizer = _optimizer(model, config, device)
    steps_per_epoch = math.ceil(len(train_split) / run.t.effective_batch_size)
    run.scheduler = _scheduler(run.optimizer, config, steps_per_epoch)
    run.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    run.state = {"epoch": 0, "step": 0, "global_step": 0, "history": [], "elapsed_seconds": 0.0,
                 "samples_seen": 0, "epoch_loss_sum": 0.0, "epoch_samples": 0, "attempts": 0,
                 "started_at": utc_now_iso(), "energy": None}
    return run


def _prepare_device(device: torch.device, precision: str, ctx: Distributed) -> None:
    log.info("device: %s%s | precision: %s%s", device,
             f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "", precision,
             f" | DDP: {ctx.world_size} processes, {ctx.backend}" if ctx.enabled else "")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)


def _resolve_auto_batch(run: _Run) -> None:
    """``batch_size: auto``: the largest micro-batch that fits every rank, with the accumulation steps
    that keep the effective batch size; written into the run's config."""
    t, ctx, device = run.t, run.ctx, run.device
    sample = next(run.test_batches.sequential(1))[0].to(device)
    micro, steps = resolve_batch(t, device, run.model, sample, run.autocast)
    agreed = ctx.min_int(micro, device)
    if agreed != micro:  # the ranks' GPUs differ: the largest micro-batch that fits them all
        steps = math.ceil(t.effective_batch_size / agreed)
        micro = math.ceil(t.effective_batch_size / steps)
    run.config.training = t.model_copy(update={"batch_size": micro, "gradient_accumulation_steps": steps,
                                               "effective_batch_size": micro * steps})
    log.info("batch_size auto: micro-batch %d x %d accumulation steps = %d per optimizer step",
             micro, steps, micro * steps)


def _resume(run: _Run) -> None:
    """Continues from the run's checkpoint when ``training.resume`` is set and one exists (written by as
    many processes as this run has); wraps the model for DDP."""
    t, ctx, checkpoint_path = run.t, run.ctx, run.checkpoint_path
    if t.resume and checkpoint_path.exists():
        checkpoint = load_checkpoint(checkpoint_path, run.device)
        saved_world = checkpoint.get("world_size", 1)
        if saved_world != ctx.world_size:
            launch = (f"torchrun --nproc_per_node={saved_world}" if saved_world > 1
                      else "one process (python -m training)")
            raise TrainingError(
                f"training.resume: checkpoint {checkpoint_path} was written by {saved_world} process(es), "
                f"this run has {ctx.world_size}; resume it with {launch}, or start a new run_name"
            )
        run.model.load_state_dict(checkpoint["model"])
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        run.scheduler.load_state_dict(checkpoint["scheduler"])
        run.scaler.load_state_dict(checkpoint["scaler"])
        restore_rng_state(checkpoint.get("rank_rng", [checkpoint["rng"]])[ctx.rank])
        run.state.update(checkpoint["state"])
        if run.state["epoch"] >= t.epochs:
            log.info("checkpoint %s already holds all %d epochs: writing the summary", checkpoint_path,
                     t.epochs)
        else:
            log.info("resumed from %s at epoch %d, step %d", checkpoint_path, run.state["epoch"] + 1,
                     run.state["step"])
    elif t.resume:
        log.info("resume: no checkpoint at %s, starting fresh", checkpoint_path)
    run.state["attempts"] += 1
    run.ddp_model = (DistributedDataParallel(run.model, device_ids=[run.device.index]
                                             if run.device.type == "cuda" else None)
                     if ctx.enabled else run.model)


def _write_checkpoint(run: _Run) -> None:
    """Rank 0 writes (atomically); the barrier keeps every rank until the file is complete."""
    rank_rng = run.ctx.gather_objects(rng_state())
    if run.ctx.is_main:
        checkpoint = {
            "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(), "rng": rank_rng[0],
            "config": run.config.model_dump(), "state": run.state, "world_size": run.ctx.world_size,
        }
        if run.ctx.enabled:
            checkpoint["rank_rng"] = rank_rng
        save_checkpoint(run.checkpoint_path, checkpoint)
    run.ctx.barrier()
    run.last_checkpoint = time.monotonic()


def _train_epoch(run: _Run, epoch: int, stop: threading.Event,
                 on_step: Callable[[int], None] | None) -> None:
    """One epoch from the state's step (the checkpoint's), checkpointing when due or asked to stop, then
    its test evaluation and record."""
    t, state = run.t, run.state
    epoch_start = time.perf_counter()
    plan = epoch_plan(len(run.train_split), t.batch_size, t.gradient_accumulation_steps, t.seed, epoch)
    plan = plan[state["step"]:]
    group_sizes = [sum(len(idx) for idx in group) for group in plan]  # samples over all ranks
    loss_sum = torch.zeros((), device=run.device)  # this rank's, summed over ranks when read
    epoch_samples_before = state["epoch_samples"]
    batches = zip(group_sizes, run.train_batches.groups(run.ctx.shard_plan(plan, t.batch_size)))
    for step, (group_size, group) in enumerate(batches, start=state["step"]):
        _optimizer_step(run, group, group_size, loss_sum)
        state["global_step"] += 1
        state["epoch_samples"] += group_size
        state["samples_seen"] += group_size
        if state["global_step"] % NONFINITE_CHECK_EVERY == 0:
            so_far = run.ctx.sum(loss_sum.clone())
            if not torch.isfinite(so_far):
                raise NonFiniteLossError(
                    f"loss became {so_far.item()} in epoch {epoch + 1} near step {step + 1}")
        if on_step is not None:
            on_step(state["global_step"])
        run.meter.maybe_mark()
        _checkpoint_if_due(run, epoch, step, loss_sum, stop)
    _end_epoch(run, epoch, run.ctx.sum(loss_sum).item(), epoch_start, epoch_samples_before, stop)


def _optimizer_step(run: _Run, group: list, group_size: int, loss_sum: torch.Tensor) -> None:
    """One optimizer step over a group of micro-batches (exact accumulation), each one's summed loss added
    to ``loss_sum``."""
    t, ctx, scaler = run.t, run.ctx, run.scaler
    for i, (x, y) in enumerate(group):
        with ctx.no_sync(run.ddp_model, last=i == len(group) - 1):
            with run.autocast():
                logits = run.ddp_model(x)
                summed = F.cross_entropy(logits.float(), y, reduction="sum")
                loss = summed / group_size
                if ctx.enabled:  # DDP averages the ranks' gradients: undo its division
                    loss = loss * ctx.world_size
            scaler.scale(loss).backward()
        loss_sum += summed.detach()
    if t.max_grad_norm is not None:
        scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), t.max_grad_norm)
    scaler.step(run.optimizer)
    scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()


def _checkpoint_if_due(run: _Run, epoch: int, step: int, loss_sum: torch.Tensor,
                       stop: threading.Event) -> None:
    """Every rank stops or checkpoints at the same step, whichever saw SIGTERM first; a stop raises
    ``TrainingInterrupted`` once the checkpoint is written."""
    stopping, due = run.ctx.any_of(
        [stop.is_set(), time.monotonic() - run.last_checkpoint >= run.t.checkpoint_every_minutes * 60])
    if not (stopping or due):
        return
    state = run.state
    state.update(epoch=epoch, step=step + 1,
                 epoch_loss_sum=state["epoch_loss_sum"] + run.ctx.sum(loss_sum).item(),
                 elapsed_seconds=state["elapsed_seconds"] + time.perf_counter() - run.segment_start,
                 energy=run.meter.checkpoint_state())
    loss_sum.zero_()  # now counted in state["epoch_loss_sum"]
    run.segment_start = time.perf_counter()
    _write_checkpoint(run)
    if stopping:
        raise TrainingInterrupted(f"SIGTERM: checkpoint written at epoch {epoch + 1}, "
                                  f"step {step + 1} ({run.checkpoint_path})")
    log.info("checkpoint at epoch %d, step %d (every %g min)", epoch + 1, step + 1,
             run.t.checkpoint_every_minutes)


def _end_epoch(run: _Run, epoch: int, loss_since_checkpoint: float, epoch_start: float,
               epoch_samples_before: int, stop: threading.Event) -> None:
    """The epoch's test evaluation, energy mark and record; a checkpoint; a stop if SIGTERM came."""
    state = run.state
    epoch_loss = state["epoch_loss_sum"] + loss_since_checkpoint
    if not math.isfinite(epoch_loss):
        raise NonFiniteLossError(f"loss became {epoch_loss} in epoch {epoch + 1}")
    test_loss, test_accuracy = evaluate(run.model, run.test_batches, run.config.data.test_batch_size,
                                        run.autocast, run.ctx)
    epoch_seconds = time.perf_counter() - epoch_start
    energy_kwh = run.meter.mark(f"epoch {epoch + 1}")
    record = {
        "epoch": epoch + 1,
        "train_loss": epoch_loss / state["epoch_samples"],
        "test_loss": test_loss,
        "test_accuracy_pct": test_accuracy,
        "seconds": epoch_seconds,
        "samples_per_second": (state["epoch_samples"] - epoch_samples_before) / epoch_seconds,
        "energy_kwh_cumulative": energy_kwh,
        "finished_at": utc_now_iso(),
    }
    state["history"].append(record)
    state.update(epoch=epoch + 1, step=0, epoch_loss_sum=0.0, epoch_samples=0,
                 elapsed_seconds=state["elapsed_seconds"] + time.perf_counter() - run.segment_start,
                 energy=run.meter.checkpoint_state())
    run.segment_start = time.perf_counter()
    _write_checkpoint(run)
    log.info("epoch %d/%d | loss %.4f | test acc %.2f%% | %.0f samples/s | energy %s",
             epoch + 1, run.t.epochs, record["train_loss"], test_accuracy, record["samples_per_second"],
             f"{energy_kwh:.6f} kWh" if energy_kwh is not None else "n/a")
    if run.ctx.any_of([stop.is_set()])[0]:
        raise TrainingInterrupted(f"SIGTERM: checkpoint written after epoch {epoch + 1} "
                                  f"({run.checkpoint_path})")


def _finish(run: _Run, energy: dict[str, Any] | None) -> dict[str, Any]:
    """Rank 0 saves the model and writes ``summary.json``; every rank returns rank 0's summary."""
    model_path = run.run_dir / run.t.model_save_path
    summary = None
    if run.ctx.is_main:
        save_checkpoint(model_path, {"model": run.model.state_dict(), "config": run.config.model_dump()})
        peak_mb, peak_kind = _peak_memory_mb(run.device)
        summary = build_summary(
            config=run.config, device=run.device, precision=run.precision,
            grad_scaler=run.scaler.is_enabled(), resident=run.resident,
            train_samples=len(run.train_split), test_samples=len(run.test_split), state=run.state,
            peak_memory_mb=peak_mb, peak_memory_kind=peak_kind, energy=energy,
            energy_error=run.meter.error, energy_timeline=run.meter.timeline,
            checkpoint_path=run.checkpoint_path, model_path=model_path, distributed=run.ctx.summary(),
        )
        validate_summary(summary)
        atomic_write_json(run.run_dir / "summary.json", summary)
    return run.ctx.from_main(summary)
