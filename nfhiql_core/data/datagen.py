"""Generate OGBench-format offline datasets with OGBench's own environments and scripted oracles.

Follows OGBench's published data_gen_scripts (generate_locomaze.py, generate_manipspace.py):

- pointmaze navigate: start in a random free cell, goal in a random non-hallway cell, a new goal on
  success; action = unit direction to the next BFS cell + N(0, 0.5^2), clipped to [-1, 1];
  1001 steps per episode (published: 1000 episodes).
- pointmaze stitch: same oracle, goal exactly 4 BFS cells away, no new goal; 201 steps
  (published: 5000 episodes).
- antmaze navigate / stitch: the same start, goal and new-goal logic, but the action is the
  directional ant expert's (`--expert`, trained by `nfhiql expert ant`) walking towards the next
  BFS cell, plus N(0, 0.2^2), clipped to [-1, 1] (see docs/design/ant-expert.md).
- manipulation play (cube-single, cube-double, scene, puzzle-3x3): OGBench's plan oracles with
  temporally correlated plan noise (noise 0.1, smoothing 0.5) in the env's `data_collection` mode,
  the oracle for the env's current target task (scene: cube, button, drawer or window; puzzle: the
  buttons, pressed with the gripper closed), a new random target after each task; 1001 steps
  (published: 1000 episodes). Cube stacking probability 0 (single), U(0, 0.25) (double), 0.5
  elsewhere. Scene episodes in which the cube leaves the visible table (too far right, or too far
  left outside the drawer) are rolled out again, as OGBench does; scene and puzzle files also hold
  `button_states`.

Unlike OGBench's scripts, everything is seeded: episode i draws from `SeedSequence(seed).spawn(n)[i]`,
so the output depends only on `seed`, not on the number of workers. OGBench's `-val` split is not
written; generate it as a separate file with another seed.

An expert-driven dataset is refused (ExpertError, nothing written) when fewer than `min_goal_rate`
of its first `PROBE_EPISODES` episodes reach a goal: checked as soon as those episodes are in,
so a weak expert costs a minute, not the whole run.
"""
from __future__ import annotations

import functools
import multiprocessing as mp
import os
import pathlib
from collections import deque
from dataclasses import dataclass
from typing import Iterator, Sequence

import gymnasium
import numpy as np
import nfhiql_core.headless_gl  # noqa: F401, I001  (before MuJoCo: picks its OpenGL backend)
import ogbench  # noqa: F401  (registers the OGBench environments with gymnasium)
from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
from ogbench.manipspace.oracles.plan.plan_oracle import PlanOracle
from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle
from tqdm import tqdm

from nfhiql_core.atomic_io import ensure_writable, save_npz
from nfhiql_core.errors import ConfigError, ExpertError
from nfhiql_core.data.ant_expert import AntExpert
from nfhiql_core.data.oracles import DEFAULT_NOISE, PLAN_NOISE_SMOOTHING, ant_oracle_action, maze_oracle_action

_MAZE_TYPES = ("navigate", "stitch")
_PLAY_TYPES = ("play",)
_MAZES = ("medium", "large", "giant", "teleport")
_MANIPULATION = ("cube", "scene", "puzzle")  # OGBench's manipspace families
SUPPORTED_ENVS: tuple[str, ...] = tuple(
    f"{agent}maze-{maze}-{kind}" for agent in ("point", "ant") for maze in _MAZES for kind in _MAZE_TYPES
) + ("cube-single-play", "cube-double-play", "scene-play", "puzzle-3x3-play")

_DEFAULT_STEPS = {"navigate": 1001, "stitch": 201, "play": 1001}
_STITCH_DISTANCE = 4  # BFS cells between start and goal in stitch episodes.
_P_STACK_RANGE = {"cube-single-v0": (0.0, 0.0), "cube-double-v0": (0.0, 0.25)}  # others: 0.5
# Scene health test on the cube's qpos (x, y, z at 14:17): y ≥ 0.29 is off the table's right; y ≤ −0.3 is
# left of the table unless z is the drawer's height band.
_SCENE_QPOS_CUBE = slice(14, 17)
_SCENE_MAX_Y, _SCENE_MIN_Y, _SCENE_DRAWER_Z = 0.29, -0.3, (0.06, 0.08)
_MAX_SCENE_ATTEMPTS = 100
_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1))
PROBE_EPISODES = 20  # expert datasets: the goal-reaching rate is checked on this many first episodes
# A trained expert reaches its first goal in nearly every episode (a navigate episode's 1001 steps
# cover the medium maze several times over); an untrained or barely walking one almost never does.
DEFAULT_MIN_GOAL_RATE = 0.8

Cell = tuple[int, int]


@dataclass(frozen=True)
class _Spec:
    """Everything a worker needs to roll out one kind of episode."""

    env_id: str  # gymnasium id, e.g. "pointmaze-medium-v0"
    family: str  # "maze" (point), "ant", or a manipulation family: "cube", "scene", "puzzle"
    dataset_type: str
    max_episode_steps: int
    noise: float
    expert: str | None  # ant: path of the directional expert file


def generate_dataset(
    env_name: str,
    num_episodes: int,
    seed: int,
    out_path: str | os.PathLike,
    *,
    workers: int = 1,
    max_episode_steps: int | None = None,
    noise: float | None = None,
    dataset_type: str | None = None,
    expert: str | os.PathLike | None = None,
    min_goal_rate: float | None = DEFAULT_MIN_GOAL_RATE,
    force: bool = False,
    progress: bool = True,
) -> pathlib.Path:
    """Roll out `num_episodes` oracle episodes of `env_name` and write them as an OGBench npz file.

    Defaults for `max_episode_steps`, `noise` and `dataset_type` follow OGBench's published procedure
    for the dataset name; the keyword arguments override them. Ant mazes need `expert` (a file from
    `nfhiql expert ant`); `min_goal_rate` None skips its weakness check. Returns the written path.
    """
    spec = _resolve_spec(env_name, max_episode_steps, noise, dataset_type, expert)
    if num_episodes < 1 or workers < 1:
        raise ConfigError(f"num_episodes and workers must be >= 1 (got {num_episodes}, {workers})")
    if min_goal_rate is not None and not 0.0 <= min_goal_rate <= 1.0:
        raise ConfigError(f"datagen: min_goal_rate must be in [0, 1] (got {min_goal_rate})")
    path = ensure_writable(out_path, force)
    seqs = np.random.SeedSequence(seed).spawn(num_episodes)
    probe = min(PROBE_EPISODES, num_episodes) if spec.expert and min_goal_rate is not None else 0
    with tqdm(total=num_episodes, desc=f"datagen {env_name}", unit="ep", disable=not progress) as bar:
        episodes, reached, total_goals = [], 0, 0
        for episode, goals in _episodes(spec, seqs, workers):
            episodes.append(episode)
            reached += goals > 0
            total_goals += goals
            bar.update(1)
            bar.set_postfix(goal_rate=f"{reached / len(episodes):.2f}")
            if len(episodes) == probe and reached < min_goal_rate * probe:
                raise ExpertError(f"{spec.expert}: expert too weak: {reached} of the first {probe} episodes reached "
                                  f"a goal (need {min_goal_rate:.0%}); train it longer or pass --allow-weak-expert")
    save_npz(path, {key: np.concatenate([ep[key] for ep in episodes]) for key in episodes[0]})
    if progress:
        print(f"{path}: {num_episodes} episodes, {reached / num_episodes:.1%} reached at least one goal, "
              f"{total_goals / num_episodes:.2f} goals reached per episode")
    return path


def _resolve_spec(
    env_name: str, max_episode_steps: int | None, noise: float | None, dataset_type: str | None,
    expert: str | os.PathLike | None,
) -> _Spec:
    """Turn a dataset name plus overrides into a validated `_Spec`."""
    name = env_name.removesuffix("-v0")
    if name not in SUPPORTED_ENVS:
        raise ConfigError(f"datagen: unsupported env {env_name!r}; supported: {', '.join(SUPPORTED_ENVS)}")
    prefix, name_type = name.rsplit("-", 1)
    family = {"pointmaze": "maze", "antmaze": "ant"}.get(prefix.split("-")[0], prefix.split("-")[0])
    if (family == "ant") != (expert is not None):
        raise ConfigError(f"datagen: {env_name}: " + ("needs --expert FILE (from `nfhiql expert ant`)"
                                                       if family == "ant" else "takes no --expert"))
    if expert is not None:
        AntExpert.load(expert)  # a bad file fails here, not in every worker
    kind = dataset_type or name_type
    allowed = _PLAY_TYPES if family in _MANIPULATION else _MAZE_TYPES
    if kind not in allowed:
        raise ConfigError(f"datagen: dataset_type {kind!r} not available for {prefix}; choose from {allowed}")
    steps = _DEFAULT_STEPS[kind] if max_episode_steps is None else max_episode_steps
    sigma = DEFAULT_NOISE[family] if noise is None else noise
    if steps < 1 or sigma < 0:
        raise ConfigError(f"datagen: need max_episode_steps >= 1 and noise >= 0 (got {steps}, {sigma})")
    return _Spec(f"{prefix}-v0", family, kind, steps, float(sigma), None if expert is None else str(expert))


_Episode = tuple[dict[str, np.ndarray], int]  # OGBench arrays, goals reached


def _episodes(spec: _Spec, seqs: Sequence[np.random.SeedSequence], workers: int) -> Iterator[_Episode]:
    """Yield episodes in order, in this process or in a worker Pool over chunks of episodes.

    Workers are forked where possible (no re-import of `__main__`, fast start; they never touch torch:
    the ant expert runs in numpy).
    """
    job = functools.partial(_run_episode, spec)
    if workers == 1:
        yield from map(job, seqs)
        return
    chunksize = max(1, len(seqs) // (workers * 16))
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(min(workers, len(seqs))) as pool:
        yield from pool.imap(job, seqs, chunksize=chunksize)


@functools.lru_cache(maxsize=1)
def _make_env(env_id: str, family: str, max_episode_steps: int) -> gymnasium.Env:
    """Build (once per process) the env exactly as OGBench's generation scripts do."""
    extra = {"mode": "data_collection"} if family in _MANIPULATION else {}
    return gymnasium.make(env_id, terminate_at_goal=False, max_episode_steps=max_episode_steps, **extra)


@functools.lru_cache(maxsize=1)
def _load_expert(path: str) -> AntExpert:
    """The expert (once per process)."""
    return AntExpert.load(path)


def _run_episode(spec: _Spec, seq: np.random.SeedSequence) -> _Episode:
    """Roll out one seeded episode; returns its OGBench arrays and the number of goals it reached."""
    env = _make_env(spec.env_id, spec.family, spec.max_episode_steps)
    env_seed, space_seed, global_seed, rng_seed = (int(s) for s in seq.generate_state(4))
    env.unwrapped.action_space.seed(space_seed)
    rng = np.random.default_rng(rng_seed)
    saved_state = np.random.get_state()
    np.random.seed(global_seed)  # OGBench's envs and oracles draw from the global numpy RNG.
    try:
        rollout = _play_episode if spec.family in _MANIPULATION else _maze_episode
        return rollout(env, spec, rng, env_seed)
    finally:
        np.random.set_state(saved_state)


class _Recorder:
    """Accumulates (observation, action, terminal, qpos, qvel[, button_states]) rows in OGBench's raw
    layout; `button_states` (int64) only when `buttons`."""

    def __init__(self, buttons: bool = False) -> None:
        self.rows: dict[str, list] = {k: [] for k in ("observations", "actions", "terminals", "qpos", "qvel")}
        if buttons:
            self.rows["button_states"] = []

    def add(self, ob: np.ndarray, action: np.ndarray, done: bool, info: dict) -> None:
        values = (ob, action, done, info["prev_qpos"], info["prev_qvel"], info.get("prev_button_states"))
        for key, value in zip(self.rows, values):
            self.rows[key].append(value)

    def arrays(self) -> dict[str, np.ndarray]:
        return {key: np.asarray(values, dtype=np.int64 if key == "button_states" else np.float32)
                for key, values in self.rows.items()}


def _maze_cells(maze_map: np.ndarray) -> tuple[list[Cell], list[Cell]]:
    """All free cells, and the free cells that are not straight hallway segments (goal candidates)."""
    free, vertices = [], []
    for i, j in zip(*np.nonzero(maze_map == 0)):
        cell = (int(i), int(j))
        free.append(cell)
        up_down = maze_map[i - 1, j] == 0 and maze_map[i + 1, j] == 0
        left_right = maze_map[i, j - 1] == 0 and maze_map[i, j + 1] == 0
        walls_up_down = maze_map[i - 1, j] == 1 and maze_map[i + 1, j] == 1
        walls_left_right = maze_map[i, j - 1] == 1 and maze_map[i, j + 1] == 1
        if not ((up_down and walls_left_right) or (left_right and walls_up_down)):
            vertices.append(cell)
    return free, vertices


def _cells_at_distance(maze_map: np.ndarray, start: Cell, distance: int) -> list[Cell]:
    """Free cells exactly `distance` BFS steps from `start`, in BFS discovery order."""
    dist = {start: 0}
    queue = deque([start])
    while queue:
        i, j = queue.popleft()
        for di, dj in _NEIGHBOURS:
            cell = (i + di, j + dj)
            inside = 0 <= cell[0] < maze_map.shape[0] and 0 <= cell[1] < maze_map.shape[1]
            if inside and maze_map[cell] == 0 and cell not in dist:
                dist[cell] = dist[(i, j)] + 1
                queue.append(cell)
    return [cell for cell, d in dist.items() if d == distance]


def _maze_episode(env: gymnasium.Env, spec: _Spec, rng: np.random.Generator, env_seed: int) -> _Episode:
    """Maze episode driven by the BFS-direction oracle (point) or the expert walking that way (ant),
    plus Gaussian action noise."""
    maze = env.unwrapped
    if spec.family == "ant":
        expert = _load_expert(spec.expert)

        def act() -> np.ndarray:
            return ant_oracle_action(maze, expert, spec.noise, rng)
    else:
        def act() -> np.ndarray:
            return maze_oracle_action(maze, maze.get_xy(), maze.cur_goal_xy, spec.noise, rng)
    free, vertices = _maze_cells(maze.maze_map)
    init_ij = free[rng.integers(len(free))]
    if spec.dataset_type == "navigate":
        goal_ij = vertices[rng.integers(len(vertices))]
    else:
        ring = _cells_at_distance(maze.maze_map, init_ij, _STITCH_DISTANCE)
        goal_ij = ring[rng.integers(len(ring))] if ring else init_ij
    ob, _ = env.reset(seed=env_seed, options=dict(task_info=dict(init_ij=init_ij, goal_ij=goal_ij)))
    recorder, done, goals = _Recorder(), False, 0
    while not done:
        action = act()
        next_ob, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        goals += int(info["success"])
        if info["success"] and spec.dataset_type == "navigate":
            maze.set_goal(goal_ij=vertices[rng.integers(len(vertices))])
        recorder.add(ob, action, done, info)
        ob = next_ob
    return recorder.arrays(), goals


def _plan_oracles(env: gymnasium.Env, family: str, noise: float) -> dict[str, PlanOracle]:
    """OGBench's plan oracle for each target task the env can set (`privileged/target_task`)."""
    kwargs = {"env": env, "noise": noise, "noise_smoothing": PLAN_NOISE_SMOOTHING}
    if family == "cube":
        return {"cube": CubePlanOracle(**kwargs)}
    if family == "puzzle":
        return {"button": ButtonPlanOracle(gripper_always_closed=True, **kwargs)}
    return {"cube": CubePlanOracle(**kwargs), "button": ButtonPlanOracle(**kwargs),
            "drawer": DrawerPlanOracle(**kwargs), "window": WindowPlanOracle(**kwargs)}


def _scene_cube_stayed_visible(qpos: np.ndarray) -> bool:
    """OGBench's scene health test: the cube never left the table, except into the drawer."""
    x_y_z = qpos[:, _SCENE_QPOS_CUBE]
    y, z = x_y_z[:, 1], x_y_z[:, 2]
    off_left = (y <= _SCENE_MIN_Y) & ((z < _SCENE_DRAWER_Z[0]) | (z > _SCENE_DRAWER_Z[1]))
    return not ((y >= _SCENE_MAX_Y).any() or off_left.any())


def _play_episode(env: gymnasium.Env, spec: _Spec, rng: np.random.Generator, env_seed: int) -> _Episode:
    """Manipulation play episode: the current target task's plan oracle, a new target after each task.

    Scene episodes failing the health test are rolled out again, the env continuing its seeded stream.
    """
    oracles = _plan_oracles(env, spec.family, spec.noise)
    buttons = hasattr(env.unwrapped, "_cur_button_states")
    for attempt in range(_MAX_SCENE_ATTEMPTS):
        ob, info = env.reset(seed=env_seed if attempt == 0 else None)
        p_stack = rng.uniform(*_P_STACK_RANGE[spec.env_id]) if spec.env_id in _P_STACK_RANGE else 0.5
        oracle = oracles[info["privileged/target_task"]]
        oracle.reset(ob, info)
        recorder, done, goals = _Recorder(buttons), False, 0
        while not done:
            action = np.clip(np.asarray(oracle.select_action(ob, info)), -1.0, 1.0)
            next_ob, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            if oracle.done:
                goals += 1
                target_ob, target_info = env.unwrapped.set_new_target(p_stack=p_stack)
                oracle = oracles[target_info["privileged/target_task"]]
                oracle.reset(target_ob, target_info)
            recorder.add(ob, action, done, info)
            ob = next_ob
        arrays = recorder.arrays()
        if spec.family != "scene" or _scene_cube_stayed_visible(arrays["qpos"]):
            return arrays, goals
    raise RuntimeError(f"datagen {spec.env_id}: {_MAX_SCENE_ATTEMPTS} scene episodes in a row failed the health test")
