"""FIFO replay buffer of online transitions, sampled uniformly, with a state for checkpoints."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

FIELDS = ("observations", "actions", "rewards", "masks", "next_observations")


class ReplayBuffer:
    """Fixed-capacity float32 ring buffer; once full, new transitions overwrite the oldest."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int):
        if capacity < 1:
            raise ValueError("replay buffer capacity must be >= 1")
        shapes = {"observations": (obs_dim,), "actions": (action_dim,), "rewards": (), "masks": (),
                  "next_observations": (obs_dim,)}
        self.arrays = {key: np.zeros((capacity, *shapes[key]), np.float32) for key in FIELDS}
        self.capacity, self.size, self.pointer = capacity, 0, 0

    def add(self, observation: np.ndarray, action: np.ndarray, reward: float, mask: float,
            next_observation: np.ndarray) -> None:
        """Store one transition (`mask` = 0 where the episode terminated: no bootstrap)."""
        for key, value in zip(FIELDS, (observation, action, reward, mask, next_observation)):
            self.arrays[key][self.pointer] = value
        self.pointer = (self.pointer + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """`batch_size` transitions drawn uniformly with replacement."""
        idx = rng.integers(0, self.size, batch_size)
        return {key: values[idx] for key, values in self.arrays.items()}

    def state(self) -> dict[str, Any]:
        """The filled part as tensors (for torch.save with weights_only loading), plus the pointer."""
        return {"size": self.size, "pointer": self.pointer,
                **{key: torch.from_numpy(values[:self.size]) for key, values in self.arrays.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a `state()` snapshot into this (same-capacity) buffer."""
        if state["size"] > self.capacity:
            raise ValueError(f"checkpoint holds {state['size']} transitions, more than the capacity {self.capacity}")
        self.size, self.pointer = int(state["size"]), int(state["pointer"])
        for key, values in self.arrays.items():
            values[:self.size] = state[key].numpy()
