"""Images to tensors: decoding, the augmentation presets, and seeded loaders.

The training sampler hands each image its own seed, derived from (seed, epoch, index), with its
index; the dataset augments under that seed. So an image's augmentation depends on neither the
epochs before nor the worker that decodes it, and persistent workers (whose ``worker_init_fn``
runs once, not per epoch) stay exact. Imports torch, torchvision, Pillow, ``contracts.training``
and the engine's own modules.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from contracts.training import Hyperparameters
from services.trainer.engine.api import Sample
from services.trainer.engine.seeding import derive_seed, isolated_rng, seed_worker
from services.vision.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    load_image,
)

Transform = Callable[[Image.Image], Tensor]


def build_transform(augmentation: str, size: int, *, train: bool) -> Transform:
    """The preset's random crop and colour changes in training; a plain resize otherwise."""
    if not train or augmentation == "none":
        return eval_transform(size)
    if augmentation == "light":
        head: list[v2.Transform] = [v2.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=True)]
        head.append(v2.RandomHorizontalFlip())
    else:
        head = [v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True)]
        head += [v2.RandomHorizontalFlip(), v2.ColorJitter(0.3, 0.3, 0.3, 0.05)]
    tail = [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose([*head, *tail, v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class SampleDataset(Dataset[tuple[Tensor, int]]):
    """Decodes one sample per key (index, augmentation seed); holds no decoded image."""

    def __init__(self, samples: Sequence[Sample], transform: Transform, size: int) -> None:
        self.samples, self.transform, self.size = list(samples), transform, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        index, seed = key
        sample = self.samples[index]
        image = load_image(sample.path, self.size)
        with isolated_rng(seed):
            return self.transform(image), sample.label


class EpochSampler(Sampler[tuple[int, int]]):
    """Keys for one epoch: a permutation drawn from (seed, epoch) when ``shuffle``, each index
    with its augmentation seed (seed, epoch, index)."""

    def __init__(self, size: int, seed: int, *, shuffle: bool) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order: Sequence[int] = range(self.size)
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed("order", self.seed, self.epoch))
            order = torch.randperm(self.size, generator=generator).tolist()
        for index in order:
            yield index, derive_seed("sample", self.seed, self.epoch, index)


def make_loader(
    dataset: Dataset[Any],
    h: Hyperparameters,
    sampler: Sampler[tuple[int, int]],
    device: str,
    *,
    drop_last: bool = False,
    batch_size: int | None = None,
    collate: Callable[[list[Any]], Any] | None = None,
) -> DataLoader[Any]:
    """Batches of ``batch_size`` (``h.batch_size`` unless a rank's share of it) of ``dataset``
    (a task's, keyed by the sampler), from ``h.workers`` persistent processes (or in-process);
    ``collate`` puts a batch together (a detector's is lists, not one tensor)."""
    workers = h.workers
    return DataLoader(
        dataset,
        batch_size=batch_size or h.batch_size,
        collate_fn=collate,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.startswith("cuda"),
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(h.seed),
        persistent_workers=workers > 0,
        prefetch_factor=1 if workers else None,  # one decoded batch per worker: memory stays flat
        worker_init_fn=partial(seed_worker, h.seed) if workers else None,
        # The trainer is a threaded process (event loop, NATS client): forking it could copy a
        # lock another thread holds. Spawned workers start clean (a script calling ``train``
        # needs the ``if __name__ == "__main__"`` guard; ``python -m`` services have it).
        multiprocessing_context=multiprocessing.get_context("spawn") if workers else None,
    )
