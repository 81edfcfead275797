"""Training checkpoints: model (EMA copies included), optimizer, learning-rate schedule, RNG states (of
every training process) and step in one atomically written file."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from nfhiql_core.algo.agent import AgentConfig, HIQLAgent
from nfhiql_core.atomic_io import atomic_open
from nfhiql_core.config import from_dict, to_dict
from nfhiql_core.errors import NfhiqlError
from nfhiql_core.training.distributed import seed_rank

FORMAT = "nfhiql-checkpoint/1"


class CheckpointError(NfhiqlError):
    """A checkpoint file is missing, unreadable or not an nfhiql checkpoint."""


@dataclass
class Checkpoint:
    """What a checkpoint holds; `config` is the full training config as a plain dict, `scheduler` the
    learning-rate schedule's state (None without a schedule, and in checkpoints written before schedules);
    `numpy_rng`/`torch_rng` are rank 0's RNG states and `rank_rngs` those of ranks 1, 2, … of a
    distributed run (`rng_state` dicts; empty for one process)."""

    step: int
    obs_dim: int
    action_dim: int
    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    numpy_rng: dict[str, Any]
    torch_rng: torch.Tensor
    scheduler: dict[str, Any] | None = None
    rank_rngs: list[dict[str, Any]] = field(default_factory=list)

    def build_agent(self, device: str | torch.device = "cpu") -> HIQLAgent:
        """Rebuild the agent with its trained weights (optimizer and schedule state included)."""
        agent_config = from_dict(AgentConfig, self.config["agent"], "checkpoint", "agent.")
        total_steps = self.config.get("train", {}).get("steps")
        agent = HIQLAgent(agent_config, self.obs_dim, self.action_dim, total_steps).to(device)
        self.restore(agent)
        return agent

    def restore(self, agent: HIQLAgent) -> None:
        """Load the weights, optimizer state and learning-rate schedule state into `agent`."""
        agent.load_state_dict(self.model)
        agent.optimizer.load_state_dict(self.optimizer)
        if agent.scheduler is not None:
            agent.scheduler.load_state_dict(self.scheduler)


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """This process's RNG states: its numpy sampling generator and torch's global RNG."""
    return {"numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}


def save_checkpoint(path: str | Path, agent: HIQLAgent, config: Any, step: int,
                    rng: np.random.Generator, rank_rngs: Sequence[dict[str, Any]] = ()) -> None:
    """Atomically write the training state at `step` (a crash never leaves a torn file); `rng` is this
    process's generator, `rank_rngs` the `rng_state` of ranks 1, 2, … of a distributed run."""
    state = {
        "format": FORMAT,
        "step": step,
        "obs_dim": agent.obs_dim,
        "action_dim": agent.action_dim,
        "config": to_dict(config),
        "model": agent.state_dict(),
        "optimizer": agent.optimizer.state_dict(),
        **rng_state(rng),
        "rank_rngs": list(rank_rngs),
        "scheduler": None if agent.scheduler is None else agent.scheduler.state_dict(),
    }
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def read_state(path: Path, fmt: str, what: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state dict saved at `path` (tensors only, no pickled code) if its `format` field is `fmt`;
    CheckpointError (one line naming the file and `what` it should be) otherwise."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise CheckpointError(f"{path}: not {what} (format field is not {fmt!r})")
    return state


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; CheckpointError (one line) if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    state = read_state(path, FORMAT, "an nfhiql checkpoint", map_location)
    return Checkpoint(**{k: state[k] for k in Checkpoint.__dataclass_fields__ if k in state})


def restore_rng(checkpoint: Checkpoint, rank: int = 0) -> np.random.Generator:
    """Restore torch's global RNG and return the numpy generator of rank `rank` at the checkpointed state.

    A rank the checkpoint holds no state for (a run resumed by more processes than wrote it) starts a
    fresh stream seeded from the recipe's seed, its rank and the checkpoint's step.
    """
    if rank > len(checkpoint.rank_rngs):
        return seed_rank(checkpoint.config["seed"], rank, checkpoint.step)
    state = {"numpy_rng": checkpoint.numpy_rng, "torch_rng": checkpoint.torch_rng} if rank == 0 \
        else checkpoint.rank_rngs[rank - 1]
    torch.set_rng_state(state["torch_rng"].cpu())
    rng = np.random.default_rng()
    rng.bit_generator.state = state["numpy_rng"]
    return rng

