"""`nfhiql modes`: where the data holds two ways forward, do the flow and the Gaussian policy keep both?

Situations are found from the data alone (no policy is consulted):

1. Candidates: (s, g) = (obs[i], obs[j]) with j uniform in [i + k, end] of the same trajectory, as the
   high-level actor's trajectory goals (k = the agents' subgoal_steps).
2. Neighbours: every trajectory that passes within `state_radius`·D of s and later comes within
   `goal_radius`·D of g contributes its closest approach i' to s, the first later index j' near g, the
   subgoal target obs[min(i' + k, j')] (HIQL's) and the action a_{i'}. D is the median distance
   |obs[i + k] − obs[i]| (one subgoal step), so the radii are scale-free.
3. Only efficient ways count: neighbours that reach g within `efficiency_slack` × the 10th percentile of
   the neighbours' steps-to-goal. AWR weights by exp(α·advantage), so detours are dropped by any good
   policy; the question is whether equally good alternatives survive.
4. Score: 2-means (deterministic farthest-point init) on the neighbours' subgoals; ratio = distance
   between the two centres / within-cluster RMS (a unimodal Gaussian scores ≈ 1.4, a uniform segment
   ≈ 3.5). Bimodal when ratio ≥ `min_ratio`, both clusters hold ≥ `min_fraction` of the trajectories,
   the centres are ≥ `min_separation`·D apart and the clusters' median steps-to-goal are within
   `max_time_ratio` of each other. The top-K by ratio are kept, one per place (states closer than
   `dedupe_radius`·D to a kept one are skipped).

Each policy is then sampled at every (s, g): N high-level samples with z ~ N(0, I) (temperature 1),
and N low-level samples with z ~ N(0, I) conditioned on the deterministic (z = 0) subgoal. With
`subgoal_space: rep` a high-level sample is a length-normalised φ(s, ·); it is shown as the dataset state
c (from a seeded pool) whose φ(s, c) under the same agent is nearest, and `decode_error` (median
distance between data subgoals and the decoding of their own φ) says how faithful that is. With
`subgoal_space: state` the samples are plotted as they are. Mode fractions count samples within half
the data modes' separation of each mode centre (high level) or nearest to each data mode's mean
action (low level).
"""
from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from nfhiql_core.algo.agent import HIQLAgent
from nfhiql_core.analysis.plots import pyplot, save_figure
from nfhiql_core.atomic_io import ensure_writable, save_json
from nfhiql_core.data.dataset import Dataset, load_dataset
from nfhiql_core.errors import NfhiqlError
from nfhiql_core.training.checkpoint import load_checkpoint

POLICIES = ("flow", "gaussian")
DECODE_POOL = 10_000


@dataclass(frozen=True)
class FinderConfig:
    """Situation-finder thresholds; radii and separations are in units of one subgoal step D."""

    candidates: int = 2000
    min_neighbors: int = 20
    state_radius: float = 0.15
    goal_radius: float = 0.3
    efficiency_slack: float = 1.2
    min_ratio: float = 4.0
    min_fraction: float = 0.2
    min_separation: float = 0.5
    max_time_ratio: float = 1.1
    dedupe_radius: float = 1.0


@dataclass(frozen=True)
class TwoMeans:
    """2-means clustering of a point set and its bimodality numbers."""

    labels: np.ndarray
    centres: np.ndarray  # (2, dim)
    fractions: np.ndarray  # (2,)
    separation: float
    ratio: float  # separation / within-cluster RMS

    def bimodal(self, config: FinderConfig, scale: float) -> bool:
        """Both clusters large enough and well separated (absolutely and relative to their width)."""
        return bool(self.ratio >= config.min_ratio and self.fractions.min() >= config.min_fraction
                and self.separation >= config.min_separation * scale)


def two_means(points: np.ndarray, iters: int = 50) -> TwoMeans:
    """Lloyd's 2-means from the farthest-point initialisation (deterministic)."""
    points = np.asarray(points, dtype=np.float64)
    first = points[np.argmax(((points - points.mean(0)) ** 2).sum(1))]
    centres = np.stack([first, points[np.argmax(((points - first) ** 2).sum(1))]])
    labels = np.zeros(len(points), dtype=np.int64)
    for _ in range(iters):
        labels = np.argmin(((points[:, None] - centres[None]) ** 2).sum(-1), axis=1)
        if labels.min() == labels.max():
            break
        new = np.stack([points[labels == c].mean(0) for c in (0, 1)])
        if np.allclose(new, centres):
            break
        centres = new
    fractions = np.bincount(labels, minlength=2) / len(points)
    separation = float(np.linalg.norm(centres[0] - centres[1]))
    within = float(np.sqrt(((points - centres[labels]) ** 2).sum(1).mean()))
    return TwoMeans(labels, centres, fractions, separation, separation / max(within, 1e-9))


@dataclass(frozen=True)
class Situation:
    """A (state, goal) where the data goes two ways, with its neighbours' subgoals, actions and steps."""

    state: np.ndarray
    goal: np.ndarray
    subgoals: np.ndarray  # (n, obs_dim)
    actions: np.ndarray  # (n, action_dim)
    steps: np.ndarray  # (n,) steps from the neighbour's state to its first visit near g
    modes: TwoMeans  # on subgoals[:, dims]

    @property
    def mode_radius(self) -> float:
        return 0.5 * self.modes.separation

    def action_modes(self) -> np.ndarray:
        """Mean data action of each subgoal mode, (2, action_dim)."""
        return np.stack([self.actions[self.modes.labels == c].mean(0) for c in (0, 1)])

    def median_steps(self) -> list[float]:
        return [float(np.median(self.steps[self.modes.labels == c])) for c in (0, 1)]


class _Neighbourhoods:
    """Radius queries over dataset positions (obs[:, dims]), through a window sorted on the first dim."""

    def __init__(self, positions: np.ndarray):
        self.positions = positions
        self.order = np.argsort(positions[:, 0], kind="stable")
        self.first = positions[self.order, 0]

    def within(self, point: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """Indices (ascending) within `radius` of `point`, and their distances."""
        lo, hi = np.searchsorted(self.first, [point[0] - radius, point[0] + radius])
        idx = self.order[lo:hi]
        dist = np.linalg.norm(self.positions[idx] - point, axis=1)
        keep = dist <= radius
        idx, dist = idx[keep], dist[keep]
        sort = np.argsort(idx)
        return idx[sort], dist[sort]


def find_situations(dataset: Dataset, subgoal_steps: int, count: int, seed: int, dims: Sequence[int],
                    config: FinderConfig = FinderConfig()) -> tuple[list[Situation], float]:
    """The top-`count` bimodal situations (see the module docstring) and the subgoal step D."""
    k, obs = subgoal_steps, dataset.observations
    ends, valid = dataset.traj_ends, dataset.valids
    starts = dataset.valid_indices[dataset.valid_indices + k <= ends[dataset.valid_indices]]
    if len(starts) == 0:
        raise NfhiqlError(f"{dataset.source}: no trajectory is longer than subgoal_steps={k}")
    positions = obs[:, list(dims)].astype(np.float64)
    scale = float(np.median(np.linalg.norm(positions[starts + k] - positions[starts], axis=1)))
    traj = np.searchsorted(dataset.final_indices, np.arange(len(obs)))
    search = _Neighbourhoods(positions)
    rng = np.random.default_rng(seed)
    scored = []
    for i in rng.choice(starts, size=min(config.candidates, len(starts)), replace=False):
        j = int(rng.integers(i + k, ends[i] + 1))
        near_s, dist = search.within(positions[i], config.state_radius * scale)
        near_g, _ = search.within(positions[j], config.goal_radius * scale)
        if len(near_g) == 0:
            continue
        pos = np.searchsorted(near_g, near_s + 1)
        reach = near_g[np.minimum(pos, len(near_g) - 1)]
        ok = valid[near_s] & (pos < len(near_g)) & (reach <= ends[near_s])
        idx, dist, reach = near_s[ok], dist[ok], reach[ok]
        by_traj = np.lexsort((dist, traj[idx]))  # closest approach to s of each trajectory
        first = np.unique(traj[idx[by_traj]], return_index=True)[1]
        idx, reach = idx[by_traj][first], reach[by_traj][first]
        if len(idx) < config.min_neighbors:
            continue
        steps = reach - idx
        efficient = steps <= config.efficiency_slack * np.percentile(steps, 10)
        idx, reach, steps = idx[efficient], reach[efficient], steps[efficient]
        if len(idx) < config.min_neighbors:
            continue
        subgoals = obs[np.minimum(idx + k, reach)]
        modes = two_means(subgoals[:, list(dims)])
        situation = Situation(obs[i].copy(), obs[j].copy(), subgoals, dataset.actions[idx], steps, modes)
        times = situation.median_steps()
        if modes.bimodal(config, scale) and max(times) <= config.max_time_ratio * max(min(times), 1.0):
            scored.append(situation)
    chosen: list[Situation] = []
    for situation in sorted(scored, key=lambda s: -s.modes.ratio):
        here = situation.state[list(dims)]
        if all(np.linalg.norm(here - c.state[list(dims)]) >= config.dedupe_radius * scale for c in chosen):
            chosen.append(situation)
        if len(chosen) == count:
            break
    return chosen, scale


@dataclass(frozen=True)
class PolicySamples:
    """One policy's samples at one situation, in plot coordinates (obs[:, dims])."""

    subgoals: np.ndarray  # (N, len(dims)) high-level samples, decoded when in rep space
    subgoal_z0: np.ndarray  # (len(dims),) the deterministic subgoal
    actions: np.ndarray  # (N, action_dim) low-level samples given the deterministic subgoal
    decode_error: float | None  # rep space only: median |decode(φ(s, data subgoal)) − data subgoal|


def _decode(agent: HIQLAgent, state: torch.Tensor, reps: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Index of the pool state c whose φ(s, c) is nearest to each rep."""
    pool_reps = agent.goal_rep(state.expand(len(pool), -1), pool)
    return torch.cat([torch.cdist(chunk, pool_reps).argmin(1) for chunk in reps.split(256)])


@torch.no_grad()
def sample_policy(agent: HIQLAgent, situation: Situation, pool: np.ndarray, n: int, dims: Sequence[int],
                  generator: torch.Generator) -> PolicySamples:
    """N high-level samples (z ~ N(0, I)) and N low-level samples given the z = 0 subgoal."""
    dims = list(dims)
    state = torch.as_tensor(situation.state, dtype=torch.float32)[None]
    goal = torch.as_tensor(situation.goal, dtype=torch.float32)[None]
    states, goals = state.expand(n, -1), goal.expand(n, -1)
    subgoals, _ = agent.plan(states, goals, torch.randn(n, agent.subgoal_dim, generator=generator))
    subgoal_z0, _ = agent.plan(state, goal, torch.zeros(1, agent.subgoal_dim))
    actions, _ = agent.act(states, subgoal_z0.expand(n, -1), torch.randn(n, agent.action_dim, generator=generator))
    if agent.config.subgoal_space == "state":
        return PolicySamples(subgoals[:, dims].numpy(), subgoal_z0[0, dims].numpy(), actions.numpy(), None)
    pool_t = torch.as_tensor(pool, dtype=torch.float32)
    decoded = pool[_decode(agent, state, torch.cat([subgoals, subgoal_z0]), pool_t).numpy()][:, dims]
    data = torch.as_tensor(situation.subgoals, dtype=torch.float32)
    check = pool[_decode(agent, state, agent.goal_rep(state.expand(len(data), -1), data), pool_t).numpy()]
    error = float(np.median(np.linalg.norm(check[:, dims] - situation.subgoals[:, dims], axis=1)))
    return PolicySamples(decoded[:-1], decoded[-1], actions.numpy(), error)


def _fractions(points: np.ndarray, centres: np.ndarray, radius: float | None) -> list[float]:
    """Share of points nearest to each centre (within `radius` if given), then the share elsewhere."""
    dist = np.linalg.norm(points[:, None] - centres[None], axis=-1)
    nearest = dist.argmin(1)
    if radius is not None:
        nearest = np.where(dist.min(1) <= radius, nearest, 2)
    shares = np.bincount(nearest, minlength=3)[:3] / len(points)
    return [round(float(x), 4) for x in (shares if radius is not None else shares[:2])]


def _spread(points: np.ndarray) -> float:
    return float(np.sqrt(((points - points.mean(0)) ** 2).sum(1).mean()))


def summarize(situation: Situation, samples: dict[str, PolicySamples], scale: float,
              config: FinderConfig) -> dict[str, Any]:
    """The numbers of one situation: data modes, and per policy the mode fractions and bimodality."""
    modes, action_modes = situation.modes, situation.action_modes()
    data_actions = two_means(situation.actions)
    out: dict[str, Any] = {
        "state": situation.state.tolist(), "goal": situation.goal.tolist(),
        "data": {"neighbors": len(situation.steps), "modes": modes.centres.round(3).tolist(),
                 "fractions": modes.fractions.round(4).tolist(), "ratio": round(modes.ratio, 3),
                 "separation": round(modes.separation, 3), "mode_radius": round(situation.mode_radius, 3),
                 "median_steps_to_goal": situation.median_steps(),
                 "action_modes": action_modes.round(3).tolist(), "action_spread": round(_spread(situation.actions), 3),
                 "action_ratio": round(data_actions.ratio, 3)}}
    for name, s in samples.items():
        high, low = two_means(s.subgoals), two_means(s.actions)
        z0_mode = int(np.linalg.norm(modes.centres - s.subgoal_z0, axis=1).argmin())
        out[name] = {
            "high": {"mode_fractions": _fractions(s.subgoals, modes.centres, situation.mode_radius),
                     "ratio": round(high.ratio, 3), "min_fraction": round(float(high.fractions.min()), 4),
                     "bimodal": high.bimodal(config, scale), "subgoal_z0": s.subgoal_z0.round(3).tolist(),
                     "subgoal_z0_mode": "AB"[z0_mode],
                     "decode_error": None if s.decode_error is None else round(s.decode_error, 3)},
            "low": {"mode_fractions": _fractions(s.actions, action_modes, None), "spread": round(_spread(s.actions), 3),
                    "ratio": round(low.ratio, 3), "min_fraction": round(float(low.fractions.min()), 4)}}
    return out


CRITERION = ("situations: (s, g) from the data where the trajectories passing near s that reach g efficiently "
             "(≤ {efficiency_slack}× the 10th-percentile steps) split their k-step subgoals into two 2-means "
             "modes A/B: ratio (centre distance / within-cluster RMS) ≥ {min_ratio}, each ≥ {min_fraction:.0%}, "
             "median steps-to-goal within {max_time_ratio}×. Samples at temperature 1: high level decoded to the "
             "dataset state nearest in φ(s, ·), share = samples within the dashed circles; low level given the "
             "z=0 subgoal (◆), share = actions nearest each mode's mean data action (+).")
COLORS = ("tab:blue", "tab:orange")


def plot_modes(path: Path, situations: Sequence[Situation], summaries: Sequence[dict[str, Any]],
               samples: Sequence[dict[str, PolicySamples]], positions: np.ndarray, dims: Sequence[int],
               config: FinderConfig, title: str) -> None:
    """One row per situation: data, flow and Gaussian high-level samples, flow and Gaussian actions.

    Maze panels show the first two of `dims` (a projection when there are more); `positions` (all
    dataset states in those two coordinates) are drawn as a light occupancy image.
    """
    plt = pyplot()
    xy = list(dims)[:2]
    rows = len(situations)
    height = 3.8 * rows + 1.3
    fig, axes = plt.subplots(rows, 5, figsize=(17, height), squeeze=False)
    lo, hi = positions.min(0), positions.max(0)
    pad = 0.05 * (hi - lo)
    occupied, xedges, yedges = np.histogram2d(*positions.T, bins=150)
    extent = (xedges[0], xedges[-1], yedges[0], yedges[-1])
    for r, (situation, summary, row) in enumerate(zip(situations, summaries, samples)):
        s, g, modes = situation.state[xy], situation.goal[xy], situation.modes
        data = summary["data"]
        for c, ax in enumerate(axes[r, :3]):
            ax.imshow(occupied.T > 0, origin="lower", extent=extent, cmap="Greys", vmin=0, vmax=5,
                      interpolation="nearest")
            for m in (0, 1):
                ax.add_patch(plt.Circle(modes.centres[m, :2], situation.mode_radius, fill=False, ls="--",
                                        color=COLORS[m], lw=1))
            if c == 0:
                for m in (0, 1):
                    ax.scatter(*situation.subgoals[modes.labels == m][:, xy].T, s=6, color=COLORS[m],
                               rasterized=True)
                a, b = data["fractions"]
                ta, tb = data["median_steps_to_goal"]
                ax.set_title(f"#{r + 1} data ({data['neighbors']} trajectories): A {a:.0%} B {b:.0%}\n"
                             f"ratio {modes.ratio:.1f}, steps to g A/B {ta:.0f}/{tb:.0f}", fontsize=9)
            else:
                name = POLICIES[c - 1]
                high = summary[name]["high"]
                ax.scatter(*row[name].subgoals[:, :2].T, s=3, c="tab:purple", alpha=0.25, rasterized=True)
                ax.scatter(*row[name].subgoal_z0[:2], marker="D", s=40, c="k", zorder=5)
                a, b, other = high["mode_fractions"]
                ax.set_title(f"{name} high level: A {a:.0%}  B {b:.0%}  other {other:.0%}\n"
                             f"ratio {high['ratio']:.1f}{' (bimodal)' if high['bimodal'] else ''}", fontsize=9)
            ax.scatter(*s, marker="*", s=160, c="k", zorder=6)
            ax.scatter(*g, marker="X", s=90, c="tab:red", zorder=6)
            ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
            ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
            ax.set_aspect("equal")
            ax.tick_params(labelsize=7)
        for c, ax in enumerate(axes[r, 3:]):
            name = POLICIES[c]
            low = summary[name]["low"]
            ax.scatter(*row[name].actions[:, :2].T, s=3, c="tab:purple", alpha=0.25, rasterized=True)
            for m, mean in enumerate(situation.action_modes()):
                ax.scatter(*situation.actions[modes.labels == m][:, :2].T, s=10, facecolors="none",
                           edgecolors=COLORS[m], lw=0.7, rasterized=True)
                ax.scatter(*mean[:2], marker="P", s=90, color=COLORS[m], edgecolors="k", zorder=5)
            a, b = low["mode_fractions"]
            ax.set_title(f"{name} low level (actions | ◆): A {a:.0%} B {b:.0%}\n"
                         f"spread {low['spread']:.2f}, ratio {low['ratio']:.1f}", fontsize=9)
            ax.set_xlim(-1.1, 1.1)
            ax.set_ylim(-1.1, 1.1)
            ax.set_aspect("equal")
            ax.tick_params(labelsize=7)
    caption = CRITERION.format(**asdict(config)) + (" ★ state s, ✕ goal g, purple: policy samples, "
                                                     "blue/orange: the data's neighbour subgoals / actions by mode.")
    fig.suptitle(title, fontsize=11)
    fig.text(0.5, 0.005, "\n".join(textwrap.wrap(caption, 210)), ha="center", va="bottom", fontsize=8)
    fig.tight_layout(rect=(0, 0.9 / height, 1, 1 - 0.4 / height), h_pad=1.5)
    save_figure(fig, path, dpi=72)


def _load_agent(path: str, policy: str, dataset: Dataset) -> tuple[HIQLAgent, dict[str, Any]]:
    ckpt = load_checkpoint(path)
    got = ckpt.config.get("agent", {}).get("policy", "flow")
    if got != policy:
        raise NfhiqlError(f"{path}: expected a {policy}-policy checkpoint, got policy: {got}")
    if (ckpt.obs_dim, ckpt.action_dim) != (dataset.obs_dim, dataset.action_dim):
        raise NfhiqlError(f"{path}: observation/action dims {ckpt.obs_dim}/{ckpt.action_dim} do not match "
                          f"dataset {dataset.source} ({dataset.obs_dim}/{dataset.action_dim})")
    return ckpt.build_agent("cpu").eval(), ckpt.config


def multimodality_report(flow_checkpoint: str, gaussian_checkpoint: str, dataset_path: str, output: str,
                         json_path: str | None = None, samples: int = 1000, states: int = 4, seed: int = 0,
                         dims: Sequence[int] | None = None, config: FinderConfig = FinderConfig(),
                         force: bool = False) -> dict[str, Any]:
    """Find the situations, sample both policies, write the figure (and JSON); returns the JSON dict."""
    if samples < 2 or states < 1:
        raise NfhiqlError(f"--samples must be >= 2 and --states >= 1, got {samples} and {states}")
    output_path = ensure_writable(output, force)
    json_out = ensure_writable(json_path, force) if json_path else None
    dataset = load_dataset(dataset_path)
    agents, configs = {}, {}
    for name, path in zip(POLICIES, (flow_checkpoint, gaussian_checkpoint)):
        agents[name], configs[name] = _load_agent(path, name, dataset)
    if configs["flow"].get("env") != configs["gaussian"].get("env"):
        raise NfhiqlError(f"{flow_checkpoint} and {gaussian_checkpoint} were trained on different envs "
                          f"({configs['flow'].get('env')} vs {configs['gaussian'].get('env')})")
    k = agents["flow"].config.subgoal_steps
    if agents["gaussian"].config.subgoal_steps != k:
        raise NfhiqlError(f"{flow_checkpoint} and {gaussian_checkpoint} use different subgoal_steps")
    dims = list(range(dataset.obs_dim)) if dims is None else list(dims)
    if len(dims) < 2 or not all(0 <= d < dataset.obs_dim for d in dims) or dataset.action_dim < 2:
        raise NfhiqlError(f"--dims must name >= 2 observation dims in [0, {dataset.obs_dim}) (got {dims}) "
                          f"and actions must be >= 2-D (got {dataset.action_dim})")
    situations, scale = find_situations(dataset, k, states, seed, dims, config)
    if not situations:
        raise NfhiqlError(f"{dataset.source}: no (state, goal) with two distinct ways forward among "
                          f"{config.candidates} candidates")
    rng = np.random.default_rng(seed)
    pool = dataset.observations[rng.choice(len(dataset), min(DECODE_POOL, len(dataset)), replace=False)]
    generator = torch.Generator().manual_seed(seed)
    drawn = [{name: sample_policy(agent, s, pool, samples, dims, generator) for name, agent in agents.items()}
             for s in situations]
    summaries = [summarize(s, d, scale, config) for s, d in zip(situations, drawn)]
    env = configs["flow"].get("env") or dataset.source
    plot_modes(output_path, situations, summaries, drawn, dataset.observations[:, dims[:2]], dims, config,
               f"{env}: where the data goes two ways (A/B) — flow vs Gaussian HIQL samples")
    report = {"dataset": dataset.source, "flow_checkpoint": flow_checkpoint,
              "gaussian_checkpoint": gaussian_checkpoint, "env": configs["flow"].get("env"), "seed": seed,
              "samples": samples, "subgoal_steps": k, "subgoal_space": {n: a.config.subgoal_space
                                                                        for n, a in agents.items()},
              "dims": dims, "subgoal_step_distance": round(scale, 4),
              "criterion": CRITERION.format(**asdict(config)), "finder": asdict(config),
              "figure": str(output_path), "situations": summaries}
    if json_out:
        save_json(json_out, report)
    return report


def format_report(report: dict[str, Any]) -> str:
    """One line per situation and policy: data modes vs where each policy's samples land."""
    lines = []
    for r, sit in enumerate(report["situations"], 1):
        data = sit["data"]
        s = ", ".join(f"{x:.2f}" for x in sit["state"][:4])
        g = ", ".join(f"{x:.2f}" for x in sit["goal"][:4])
        lines.append(f"#{r} s=({s}) g=({g}) data: A/B {data['fractions'][0]:.0%}/{data['fractions'][1]:.0%} "
                     f"ratio {data['ratio']:.1f} steps {data['median_steps_to_goal'][0]:.0f}/"
                     f"{data['median_steps_to_goal'][1]:.0f} action spread {data['action_spread']:.2f}")
        for name in POLICIES:
            high, low = sit[name]["high"], sit[name]["low"]
            a, b, other = high["mode_fractions"]
            lines.append(f"   {name:8s} high: A {a:.0%} B {b:.0%} other {other:.0%} ratio {high['ratio']:.1f}"
                         f"{' bimodal' if high['bimodal'] else ''} z0->{high['subgoal_z0_mode']}"
                         f" decode_err {high['decode_error']} | low: toward A/B {low['mode_fractions'][0]:.0%}/"
                         f"{low['mode_fractions'][1]:.0%} spread {low['spread']:.2f} ratio {low['ratio']:.1f}")
    return "\n".join(lines)
