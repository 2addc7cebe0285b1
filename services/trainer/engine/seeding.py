"""Seeds derived from (seed, epoch, …) and the RNG state kept in checkpoints.

Every epoch reseeds the process from (seed, epoch), and every training image is augmented under
its own seed (seed, epoch, index), so an epoch's randomness never depends on the epochs before it
nor on which worker decoded an image: that is what lets a resumed run match an uninterrupted one
bit for bit. Imports torch and the standard library only.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from its parts: fits ``random.seed`` and ``torch.manual_seed`` alike."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def seed_all(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device


def configure_determinism() -> None:
    # Benchmark mode picks convolution algorithms by timing them, which differs from run to run.
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Runs the block under ``seed``, then puts back the process's CPU RNG state.

    In-process loading (``workers=0``) shares the global generators with dropout; restoring
    them keeps the augmentation of one image from shifting the randomness of the model.
    """
    python_state, torch_state = random.getstate(), torch.get_rng_state()
    random.seed(seed)
    torch.default_generator.manual_seed(seed)  # CPU only: CUDA generators stay untouched
    try:
        yield
    finally:
        random.setstate(python_state)
        torch.set_rng_state(torch_state)


def seed_worker(seed: int, worker_id: int) -> None:
    """``worker_init_fn``: images carry their own seeds, this covers anything else in a worker."""
    seed_all(derive_seed("worker", seed, worker_id))


def rng_state() -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return {"python": random.getstate(), "torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
