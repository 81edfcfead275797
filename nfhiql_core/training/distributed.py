"""torch.distributed for `nfhiql train`: one process per device, started by torchrun, with
DistributedDataParallel over the whole agent (value ensemble, φ and both policies).

A process that torchrun started (RANK, WORLD_SIZE and LOCAL_RANK in its environment) joins the
process group, NCCL on GPUs and gloo on CPUs; any other process is a world of one that never touches
torch.distributed. Each rank samples `batch_size / world size` rows of every global batch from its
own RNG stream. Design and multi-node use: docs/design/scaling.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nfhiql_core.errors import ConfigError

# Rank 0 evaluates and writes checkpoints while the other ranks wait in the next collective: this
# bounds a periodic evaluation, not failure detection (torchrun stops every rank when one exits).
COLLECTIVE_TIMEOUT = timedelta(hours=2)
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # index of this process on its node (its GPU under CUDA)
    launched: bool = False  # started by torchrun: joins a process group and trains through DDP, even alone

    @classmethod
    def from_env(cls) -> "World":
        """The world torchrun describes in the environment, else a world of one."""
        if not all(key in os.environ for key in _TORCHRUN_ENV):
            return cls()
        rank, size, local_rank = (int(os.environ[key]) for key in _TORCHRUN_ENV)
        return cls(rank, size, local_rank, launched=True)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run directory (checkpoints, metrics, evaluations)."""
        return self.rank == 0

    def shard_size(self, batch_size: int) -> int:
        """Rows of each global batch this rank samples; ConfigError unless the ranks split it evenly."""
        if batch_size % self.size:
            raise ConfigError(f"train.batch_size ({batch_size}) must be divisible by the number of training "
                              f"processes ({self.size})")
        return batch_size // self.size

    def device(self, name: str) -> torch.device:
        """`train.device` for this rank: 'auto' → CUDA when available, else CPU; under torchrun each rank
        takes the GPU of its LOCAL_RANK."""
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if not self.launched:
            return torch.device(name)
        if name.startswith("cuda:"):
            raise ConfigError(f"train.device: {name!r} under torchrun: use 'cuda' or 'auto' (each rank takes "
                              "the GPU of its LOCAL_RANK)")
        return torch.device("cuda", self.local_rank) if name == "cuda" else torch.device(name)

    def join(self, device: torch.device) -> None:
        """Join torchrun's process group (NCCL on CUDA, gloo on CPU); nothing for a world of one."""
        if not self.launched:
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)

    def leave(self) -> None:
        """Leave the process group joined by `join`."""
        if self.launched and dist.is_initialized():
            dist.destroy_process_group()

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """`module` under DistributedDataParallel (gradients averaged over the ranks), or itself alone."""
        if not self.launched:
            return module
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                       gradient_as_bucket_view=True)

    def mean(self, values: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Scalars averaged over the ranks: batch means of equal shards → the global batch's means."""
        if not self.launched:
            return {k: v.item() for k, v in values.items()}
        stacked = torch.stack([v.detach().float() for v in values.values()])
        dist.all_reduce(stacked)
        return dict(zip(values, (stacked / self.size).tolist()))

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank."""
        if not self.launched:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: T) -> list[T]:
        """Every rank's `obj`, in rank order, on rank 0 (an empty list elsewhere)."""
        if not self.launched:
            return [obj]
        out: list[Any] | None = [None] * self.size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out or []


def seed_rank(seed: int, rank: int, step: int = 0) -> np.random.Generator:
    """Seed torch's global RNG for rank `rank`'s stream started at `step`, and return its numpy generator.

    Rank 0 of a fresh run keeps `seed` itself (and torch's RNG as torch.manual_seed(seed) left it), so a
    one-process run samples what it always did; any other stream is seeded from (seed, rank, step).
    """
    if rank == 0 and step == 0:
        return np.random.default_rng(seed)
    sequence = np.random.SeedSequence(seed, spawn_key=(rank, step))
    torch_seed, = sequence.spawn(1)[0].generate_state(1, np.uint64)
    torch.manual_seed(int(torch_seed))
    return np.random.default_rng(sequence)
