"""The directional ant expert as a file: its deterministic actor, run with numpy, and its provenance.

The expert (trained by `nfhiql expert ant`) maps the ant's proprioception plus a unit x-y
direction to the action that walks that way. Its observation is OGBench's: the ant's qpos
without x, y (13) then qvel (14), then the direction (2). The file holds the actor's mean path
only (hidden layers and mean head; the action is tanh of the mean, OGBench's temperature 0),
so datagen runs it without torch; `provenance` records how it was trained.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nfhiql_core.atomic_io import save_npz
from nfhiql_core.errors import ExpertError

FORMAT = "nfhiql-ant-expert/1"
PROPRIO_DIM = 27  # ant qpos[2:] (13) + qvel (14): the observation without the x-y position
DIRECTION_DIM = 2
OBS_DIM = PROPRIO_DIM + DIRECTION_DIM
ACTION_DIM = 8
_GELU_C = np.sqrt(2.0 / np.pi)


def expert_observation(state_ob: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """The expert's input from a maze ant's full state observation (qpos, qvel) and a unit direction."""
    return np.concatenate([state_ob[2:], direction])


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (flax's `nn.gelu` default, which OGBench's networks use)."""
    return 0.5 * x * (1.0 + np.tanh(_GELU_C * (x + 0.044715 * x**3)))


def save_expert(path: str | os.PathLike, hidden: Sequence[tuple[np.ndarray, np.ndarray]],
                mean: tuple[np.ndarray, np.ndarray], provenance: Mapping[str, Any]) -> Path:
    """Atomically write an expert file; each layer is (weight (out, in), bias (out,))."""
    arrays = {"format": np.array(FORMAT), "provenance": np.array(json.dumps(dict(provenance), sort_keys=True))}
    for i, (weight, bias) in enumerate([*hidden, mean]):
        arrays[f"w{i}"], arrays[f"b{i}"] = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
    save_npz(path, arrays)
    return Path(path)


@dataclass(frozen=True)
class AntExpert:
    """A loaded expert: `act(obs)` is the deterministic action tanh(mean(obs))."""

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # hidden layers then the mean head, float64
    provenance: dict[str, Any]
    source: str

    @classmethod
    def load(cls, path: str | os.PathLike) -> AntExpert:
        """Read and validate an expert file; ExpertError (one line, naming the file) if it is not one."""
        path = Path(path)
        if not path.is_file():
            raise ExpertError(f"{path}: expert file not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError) as exc:
            raise ExpertError(f"{path}: not a readable expert file ({type(exc).__name__})") from None
        if str(arrays.get("format", "")) != FORMAT:
            raise ExpertError(f"{path}: not an nfhiql ant expert (format field is not {FORMAT!r})")
        try:
            layers = [(arrays[f"w{i}"], arrays[f"b{i}"]) for i in range(sum(k.startswith("w") for k in arrays))]
        except KeyError as exc:
            raise ExpertError(f"{path}: missing layer array {exc.args[0]}") from None
        if not layers:
            raise ExpertError(f"{path}: holds no layers")
        return cls.from_layers(layers[:-1], layers[-1], json.loads(str(arrays["provenance"])), str(path))

    @classmethod
    def from_layers(cls, hidden: Sequence[tuple[np.ndarray, np.ndarray]], mean: tuple[np.ndarray, np.ndarray],
                    provenance: Mapping[str, Any], source: str) -> AntExpert:
        """An expert from (weight (out, in), bias) pairs; ExpertError (naming `source`) if they do not chain
        OBS_DIM inputs to ACTION_DIM actions."""
        layers = tuple((np.asarray(w, np.float64), np.asarray(b, np.float64)) for w, b in [*hidden, mean])
        dims = [OBS_DIM] + [w.shape[0] for w, _ in layers]
        if dims[-1] != ACTION_DIM or any(w.shape != (out, inp) or b.shape != (out,)
                                         for (w, b), inp, out in zip(layers, dims, dims[1:])):
            raise ExpertError(f"{source}: layer shapes {[w.shape for w, _ in layers]} do not map "
                              f"{OBS_DIM} inputs to {ACTION_DIM} actions")
        return cls(layers, dict(provenance), source)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The expert's action in [-1, 1]^8 for one (29,) observation or a (N, 29) batch."""
        x = np.asarray(obs, np.float64)
        for weight, bias in self.layers[:-1]:
            x = gelu_tanh(x @ weight.T + bias)
        weight, bias = self.layers[-1]
        return np.tanh(x @ weight.T + bias)
