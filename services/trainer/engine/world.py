"""The processes one run trains in: one (``SOLO``) or one per device under torch.distributed.

What changes when a run trains on several devices lives here, so the epoch loop reads the same
for one process and for many: each rank takes its share of every global batch (``ShardSampler``),
the model is wrapped in DistributedDataParallel (``wrap``), sums are added across ranks
(``all_sum``), and only rank 0 writes checkpoints and reports. Launching the ranks is ``ddp``'s.
Imports torch and the engine's ``data`` module only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from services.trainer.engine.data import EpochSampler


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run: ``rank`` of ``size``."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes checkpoints and reports to the caller."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SOLO = World()


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal shares, the larger ones first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class ShardSampler(Sampler[tuple[int, int]]):
    """Rank ``world.rank``'s keys of each global batch of ``batch_size`` drawn by ``epochs``.

    Global batch k is the single-process run's batch k: each rank takes a contiguous share of
    it (``shares``), so the ranks' gradients, averaged, are the gradient of that batch. A last
    global batch smaller than the number of ranks is dropped: a rank with no images would leave
    the others waiting in the gradient exchange.
    """

    def __init__(self, epochs: EpochSampler, world: World, batch_size: int) -> None:
        self.epochs, self.world, self.batch_size = epochs, world, batch_size

    @property
    def seed(self) -> int:
        return self.epochs.seed

    def set_epoch(self, epoch: int) -> None:
        self.epochs.set_epoch(epoch)

    def global_sizes(self) -> list[int]:
        """The size of every global batch this sampler's ranks train on, in order."""
        full, rest = divmod(len(self.epochs), self.batch_size)
        return [self.batch_size] * full + ([rest] if rest >= self.world.size else [])

    def __len__(self) -> int:
        return sum(shares(size, self.world.size)[self.world.rank] for size in self.global_sizes())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        keys = list(self.epochs)
        for k, size in enumerate(self.global_sizes()):
            part = shares(size, self.world.size)
            start = k * self.batch_size + sum(part[: self.world.rank])
            yield from keys[start : start + part[self.world.rank]]


def local_batch(batch_size: int, world: World) -> int:
    """Each rank's share of a full global batch (``batch_size`` is a multiple of the ranks)."""
    return batch_size // world.size


def loss_weight(sampler: Sampler[tuple[int, int]], world: World) -> list[float]:
    """Per local batch, the factor that makes the ranks' averaged gradient the global batch's
    mean: ``size * local / global`` (1.0 wherever the shares are equal)."""
    if not isinstance(sampler, ShardSampler):
        return []
    weights = []
    for size in sampler.global_sizes():
        local = shares(size, world.size)[world.rank]
        weights.append(world.size * local / size)
    return weights


def wrap(model: nn.Module, device: torch.device, world: World) -> nn.Module:
    """``model`` for training on ``world``: DistributedDataParallel over several ranks (with
    synchronised BatchNorm on CUDA, where torch has it), the model itself on one."""
    if not world.distributed:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The model a checkpoint stores and a measurement times: never the DDP wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_sum(values: Sequence[float], device: torch.device, world: World) -> list[float]:
    """``values`` added up across the ranks (float64), or as they are on one."""
    if not world.distributed:
        return list(values)
    # NCCL reduces CUDA tensors only; gloo takes CPU ones.
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


class Strided(Sampler[tuple[int, int]]):
    """Every ``world.size``-th key of ``sampler`` from ``world.rank``: a rank's share of the
    validation images, whose sums ``all_sum`` adds up (no padding, so nothing counts twice)."""

    def __init__(self, sampler: EpochSampler, world: World) -> None:
        self.sampler, self.world = sampler, world

    def __len__(self) -> int:
        return len(range(self.world.rank, len(self.sampler), self.world.size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i, key in enumerate(self.sampler):
            if i % self.world.size == self.world.rank:
                yield key
