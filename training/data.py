"""MNIST (or a synthetic stand-in) as uint8 tensors, served as shuffled micro-batches by index.

When the data fits in device memory (MNIST is 47 MB as uint8) it lives there and a batch is one
``index_select``; otherwise a DataLoader with pinned memory and workers serves the same indices.
Both paths draw the same micro-batches, so results do not depend on the path taken.
"""
from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import MNIST

from carbon_aware import settings
from training.config import DataConfig, resolve_path

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Fraction of free device memory the resident dataset may take.
RESIDENT_MEMORY_SHARE = 0.25


class DataError(RuntimeError):
    pass


def _expected_files_message(root: Path, problem: str) -> str:
    names = [f"{name}[.gz]" for pair in MNIST_FILES.values() for name in pair]
    return (
        f"MNIST {problem} in {root}. Expected the four original IDX files: {', '.join(names)}. "
        "Point data.root at them, or set data.download: true on a machine with internet."
    )


class LocalMNIST(MNIST):
    """torchvision's MNIST reading the original IDX files (gzipped or not) straight from ``root``."""

    @property
    def raw_folder(self) -> str:
        return str(self.root)

    def _find(self, name: str) -> Path | None:
        for candidate in (Path(self.raw_folder) / name, Path(self.raw_folder) / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        return None

    def _check_exists(self) -> bool:
        return all(self._find(name) for pair in MNIST_FILES.values() for name in pair)

    def _load_data(self):
        images_name, labels_name = MNIST_FILES["train" if self.train else "test"]
        images = _read_idx(self._find(images_name), magic=2051)
        labels = _read_idx(self._find(labels_name), magic=2049)
        if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
            raise DataError(f"{images_name}/{labels_name}: "
                            f"{tuple(images.shape)} images vs {labels.shape[0]} labels")
        return images, labels.long()


def _read_idx(path: Path, magic: int) -> torch.Tensor:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(_expected_files_message(path.parent,
                                                f"file {path.name} is unreadable ({error})")) from None
    header = int.from_bytes(raw[:4], "big")
    if header != magic:
        raise DataError(_expected_files_message(path.parent,
                                                f"file {path.name} has magic {header}, expected {magic}"))
    ndim = magic & 0xFF
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) - offset != math.prod(shape):
        raise DataError(_expected_files_message(path.parent, f"file {path.name} is truncated or corrupt"))
    return torch.frombuffer(bytearray(raw[offset:]), dtype=torch.uint8).view(*shape)


@dataclass
class Split:
    images: torch.Tensor  # uint8, (N, 28, 28)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return self.labels.shape[0]


def load_splits(config: DataConfig, seed: int) -> tuple[Split, Split]:
    if config.dataset == "synthetic":
        train, test = (_synthetic(config.synthetic_train_size, seed),
                       _synthetic(config.synthetic_test_size, seed + 1))
    else:
        root = resolve_path(config.root, settings.data_dir())
        try:
            train_set = LocalMNIST(root, train=True, download=config.download)
            test_set = LocalMNIST(root, train=False, download=False)
        except RuntimeError as error:
            if isinstance(error, DataError):
                raise
            raise DataError(_expected_files_message(root, "files not found")) from None
        train, test = Split(train_set.data, train_set.targets), Split(test_set.data, test_set.targets)
    return _subset(train, config.train_subset), _subset(test, config.test_subset)


def _subset(split: Split, size: int | None) -> Split:
    if size is None or size >= len(split):
        return split
    return Split(split.images[:size], split.labels[:size])


def _synthetic(size: int, seed: int) -> Split:
    """Ten fixed random prototypes plus noise: learnable, so smoke tests can check accuracy rises."""
    # shared by both splits
    prototypes = torch.rand(10, 28, 28, generator=torch.Generator().manual_seed(1234))
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (size,), generator=generator)
    noise = torch.rand(size, 28, 28, generator=generator)
    images = (0.7 * prototypes[labels] + 0.3 * noise) * 255
    return Split(images.to(torch.uint8), labels)


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    return ((images_uint8.float() / 255.0) - MNIST_MEAN).div_(MNIST_STD).unsqueeze(1)


def epoch_plan(size: int, micro_batch: int, accumulation: int, seed: int,
               epoch: int) -> list[list[torch.Tensor]]:
    """The epoch's optimizer steps, each a list of micro-batch index tensors.

    The permutation depends only on (seed, epoch), so a resumed run and runs with different
    micro-batch splits of the same effective batch see the same samples in the same steps.
    The last step may be partial (fewer micro-batches, a smaller last micro-batch).
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    permutation = torch.randperm(size, generator=generator)
    return [list(group.split(micro_batch)) for group in permutation.split(micro_batch * accumulation)]


class _IndexedDataset(Dataset):
    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index):
        return self.split.images[index], self.split.labels[index]


class BatchSource:
    """Serves (x, y) micro-batches for lists of index tensors, on the training device."""

    def __init__(self, split: Split, device: torch.device, resident: bool, num_workers: int):
        self.device = device
        self.resident = resident
        self.num_workers = num_workers
        self.split = Split(split.images.to(device), split.labels.to(device)) if resident else split

    def __len__(self) -> int:
        return len(self.split)

    def groups(self, plan: list[list[torch.Tensor]]) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
        if self.resident:
            for group in plan:
                yield [self._take(idx.to(self.device, non_blocking=True)) for idx in group]
            return
        micro_batches = [idx.tolist() for group in plan for idx in group if len(idx)]
        loader = DataLoader(
            _IndexedDataset(self.split),
            batch_sampler=micro_batches,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        batches = iter(loader)
        for group in plan:
            yield [self._prepare(*next(batches)) if len(idx) else self._empty() for idx in group]

    def _empty(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A micro-batch of no samples (a DDP rank's share of a step shorter than the world size)."""
        return self._prepare(self.split.images[:0], self.split.labels[:0])

    def _take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize(self.split.images.index_select(0, idx)), self.split.labels.index_select(0, idx)

    def _prepare(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        return normalize(images), labels.to(self.device, non_blocking=True)

    def sequential(
        self, batch_size: int, indices: torch.Tensor | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Unshuffled batches (of ``indices``, default all), for evaluation."""
        indices = torch.arange(len(self.split)) if indices is None else indices
        for group in self.groups([[idx] for idx in indices.split(batch_size)]):
            yield group[0]


def fits_on_device(split_sizes_bytes: int, device: torch.device, policy: str) -> bool:
    if policy != "auto":
        return policy == "always"
    if device.type == "cpu":
        return True  # already in memory: indexing beats worker processes
    free, _total = torch.cuda.mem_get_info(device)
    return split_sizes_bytes < RESIDENT_MEMORY_SHARE * free
