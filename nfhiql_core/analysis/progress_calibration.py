"""`nfhiql calibrate-progress`: how well a bundle's value model tells the steps to the goal, and how the
stall detector would have done, on the OGBench evaluation episodes.

The bundle's policy runs the evaluation protocol in-process (the `evaluate_bundle` path) while V(s, g)
of every observation it acts on is recorded. In a successful episode of length L the observation
before step t (t = 0 … L − 1) is L − t steps from success; in a failed one the actual remaining
steps are unknown (more than the L − t it had left). Written to the output directory:

- calibration.png: estimated vs actual remaining steps (failed episodes against the steps they had
  left, a lower bound), and the estimate over each episode;
- calibration.json: the per-episode values, calibration statistics over the successful episodes, the
  stall detector's alarm rates (`ProgressMonitor` replayed on each episode at the bundle's control
  period, the stall rule alone) for the given `ProgressConfig` and a sweep of `stall_time_s`, and
  the value threshold that best separates successful from failed episodes.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nfhiql_core.analysis.plots import pyplot, save_figure
from nfhiql_core.atomic_io import ensure_writable, save_json
from nfhiql_core.config import to_dict
from nfhiql_core.control.progress import ProgressConfig, ProgressMonitor, steps_to_go
from nfhiql_core.deploy.bundle import BundleError
from nfhiql_core.deploy.runtime import BundlePolicy, PolicyRuntime
from nfhiql_core.deploy.value_runtime import ValueRuntime
from nfhiql_core.errors import NfhiqlError
from nfhiql_core.evaluation.bundle_eval import bundle_env
from nfhiql_core.evaluation.protocol import EvalResult, evaluate

FIGURE, REPORT = "calibration.png", "calibration.json"
STALL_TIMES_S = (1.0, 2.0, 5.0, 10.0, 20.0)  # the default sweep of stall_time_s


@dataclass(frozen=True)
class Trace:
    """One evaluation episode and V(s, g) of each observation the policy acted on (one per step)."""

    task_id: int
    episode: int
    success: bool
    length: int
    values: tuple[float, ...]

    def estimated_steps(self, discount: float) -> np.ndarray:
        return np.array([steps_to_go(v, discount) for v in self.values])

    def actual_steps(self) -> np.ndarray:
        """Steps to success before each step (failed episodes: the steps left, a lower bound)."""
        return self.length - np.arange(self.length, dtype=float)


class ValueRecorder:
    """`evaluate()` policy: runs a `BundlePolicy` and records V(s, g) of every row it is asked about.

    `traces` holds one list per episode in the order episodes start, the order of
    `EvalResult.episodes` (see `evaluation.protocol.StatefulPolicy`).
    """

    def __init__(self, policy: BundlePolicy, value: ValueRuntime):
        self.policy, self.value = policy, value
        self.traces: list[list[float]] = []
        self.current: dict[int, list[float]] = {}

    def reset(self, env_indices: np.ndarray) -> None:
        self.policy.reset(env_indices)
        for slot in env_indices.tolist():
            self.current[slot] = []
            self.traces.append(self.current[slot])

    def __call__(self, observations: np.ndarray, goals: np.ndarray, env_indices: np.ndarray) -> np.ndarray:
        for slot, v in zip(env_indices.tolist(), self.value.values(observations, goals).tolist()):
            self.current[slot].append(v)
        return self.policy(observations, goals, env_indices)


def record_traces(runtime: PolicyRuntime, value: ValueRuntime, env: str | None = None, replan_every: int = 1,
                  **evaluate_kwargs: Any) -> tuple[EvalResult, list[Trace]]:
    """Evaluate the bundle's policy as `evaluate_bundle` does; the result and every episode's values."""
    recorder = ValueRecorder(BundlePolicy(runtime, replan_every), value)
    result = evaluate(recorder, bundle_env(runtime, env), **evaluate_kwargs)
    traces = [Trace(r.task_id, r.episode, r.success, r.length, tuple(v))
              for r, v in zip(result.episodes, recorder.traces)]
    if len(recorder.traces) != len(result.episodes) or any(len(t.values) != t.length for t in traces):
        raise NfhiqlError("calibrate-progress: the recorded values do not line up with the evaluated episodes")
    return result, traces


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of `x`, ties sharing their mean rank (for Spearman's ρ)."""
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    r = float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 else math.nan
    return None if math.isnan(r) else round(r, 4)


def calibration_stats(traces: Sequence[Trace], discount: float) -> dict[str, Any]:
    """Estimated vs actual remaining steps over the successful episodes' observations (finite estimates)."""
    successful = [t for t in traces if t.success]
    est = np.concatenate([t.estimated_steps(discount) for t in successful] or [np.zeros(0)])
    actual = np.concatenate([t.actual_steps() for t in successful] or [np.zeros(0)])
    finite = np.isfinite(est)
    e, a = est[finite], actual[finite]
    ratio = e / a
    start = [t.estimated_steps(discount)[0] / t.length for t in successful]
    stats = {"successful_episodes": len(successful), "observations": len(est),
             "infinite_estimates": int((~finite).sum())}
    if not len(e):
        return stats
    return {**stats, "median_ratio": round(float(np.median(ratio)), 4),
            "ratio_p25": round(float(np.percentile(ratio, 25)), 4),
            "ratio_p75": round(float(np.percentile(ratio, 75)), 4),
            "median_abs_error_steps": round(float(np.median(np.abs(e - a))), 2),
            "pearson": _correlation(e, a), "spearman": _correlation(_ranks(e), _ranks(a)),
            "median_ratio_at_start": round(float(np.median(start)), 4)}


def first_stall(trace: Trace, config: ProgressConfig, discount: float, period_s: float) -> int | None:
    """The step at which the stall rule alone (no budget, no value threshold) would abort, or None."""
    monitor = ProgressMonitor(dataclasses.replace(config, step_budget=None, success_value=None), discount)
    monitor.start(0.0)
    for k, value in enumerate(trace.values):
        if monitor.update(k * period_s, value, k).verdict == "stalled":
            return k
    return None


def alarm_rates(traces: Sequence[Trace], config: ProgressConfig, discount: float, period_s: float
                ) -> dict[str, Any]:
    """True alarms: failed episodes the stall rule aborts; false alarms: successful ones it aborts
    before their success. None where there is no episode of that kind."""
    alarms = [(t, first_stall(t, config, discount, period_s)) for t in traces]
    failed = [k for t, k in alarms if not t.success]
    successful = [k for t, k in alarms if t.success]
    caught = [k for k in failed if k is not None]

    def rate(steps: list[int | None]) -> float | None:
        return round(sum(k is not None for k in steps) / len(steps), 4) if steps else None

    return {"stall_time_s": config.stall_time_s, "min_progress_steps": config.min_progress_steps,
            "true_alarm_rate": rate(failed), "false_alarm_rate": rate(successful),
            "failed_episodes": len(failed), "successful_episodes": len(successful),
            "median_alarm_step_in_failed": float(np.median(caught)) if caught else None}


def success_threshold(traces: Sequence[Trace]) -> dict[str, Any] | None:
    """The `success_value` τ that best separates the episodes by their highest V (max over τ of the
    fraction of successful episodes reaching V ≥ τ minus that of failed ones), with how many steps
    before the success V first reaches it. None unless there are episodes of both kinds."""
    peak = np.array([max(t.values) for t in traces])
    success = np.array([t.success for t in traces])
    if success.all() or not success.any():
        return None
    levels = np.unique(peak)
    candidates = np.concatenate([levels[:1], (levels[1:] + levels[:-1]) / 2])
    scores = [np.mean(peak[success] >= c) - np.mean(peak[~success] >= c) for c in candidates]
    tau = float(candidates[int(np.argmax(scores))])
    early = [t.length - next(k for k, v in enumerate(t.values) if v >= tau) for t in traces
             if t.success and max(t.values) >= tau]
    return {"success_value": round(tau, 4), "successful_reaching_it": round(float(np.mean(peak[success] >= tau)), 4),
            "failed_reaching_it": round(float(np.mean(peak[~success] >= tau)), 4),
            "median_steps_before_success": float(np.median(early))}


def plot_calibration(path: Path, traces: Sequence[Trace], discount: float, title: str) -> None:
    """Estimated vs actual remaining steps (log-log), and the estimate over each episode."""
    plt = pyplot()
    fig, (scatter, over_time) = plt.subplots(1, 2, figsize=(11.5, 4.6))
    labelled: set[str] = set()
    for t in traces:
        est, actual = t.estimated_steps(discount), t.actual_steps()
        label = f"task {t.task_id}: succeeded" if t.success else "failed (x: steps it had left)"
        style = dict(color=f"C{t.task_id - 1}", marker="o", s=5, alpha=0.5) if t.success else \
            dict(color="0.55", marker="x", s=6, alpha=0.35)
        scatter.scatter(actual, est, label=None if label in labelled else label, **style)
        labelled.add(label)
        over_time.plot(np.arange(t.length), np.where(np.isfinite(est), est, np.nan), lw=0.9, alpha=0.7,
                       color="C0" if t.success else "C3")
    top = max([t.length for t in traces] + [1])
    scatter.plot([1, top], [1, top], "k--", lw=0.8, label="estimate = actual")
    scatter.set(xscale="log", yscale="log", xlabel="actual remaining steps", ylabel="estimated steps to go",
                title="estimated vs actual (each observation)")
    handles, labels = scatter.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("failed"))  # successes, then the rest
    scatter.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7, markerscale=2)
    over_time.plot([], [], color="C0", label="succeeded")
    over_time.plot([], [], color="C3", label="failed")
    over_time.set(yscale="log", xlabel="step of the episode", ylabel="estimated steps to go",
                  title="estimate over each episode (inf not drawn)")
    over_time.legend(fontsize=7)
    for ax in (scatter, over_time):
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def _finite(x: float, digits: int = 4) -> float | None:
    """JSON-safe: None for inf (beyond the value's horizon)."""
    return round(float(x), digits) if math.isfinite(x) else None


def calibrate_progress(bundle_dir: str | os.PathLike, output_dir: str | os.PathLike, episodes_per_task: int = 4,
                       seed: int = 0, stall_times: Sequence[float] | None = None,
                       config: ProgressConfig = ProgressConfig(), env: str | None = None, replan_every: int = 1,
                       providers: Sequence[Any] = ("CPUExecutionProvider",), force: bool = False,
                       **evaluate_kwargs: Any) -> dict[str, Any]:
    """Run the calibration (see the module docstring), write calibration.png and calibration.json into
    `output_dir`, and return the report. `stall_times` (default STALL_TIMES_S) is the sweep of
    `config.stall_time_s`; `evaluate_kwargs` go to `evaluate` (task_ids, num_envs, max_steps, ...)."""
    out = Path(output_dir)
    figure, report_path = (ensure_writable(out / name, force) for name in (FIGURE, REPORT))
    runtime = PolicyRuntime(bundle_dir, providers)
    value = ValueRuntime.from_bundle(bundle_dir, providers)
    if value is None:
        raise BundleError(f"{bundle_dir}: the bundle has no value model (value.onnx): re-export it with "
                          "`nfhiql export` to calibrate progress")
    period = runtime.metadata.control_period_s
    if period is None:
        raise BundleError(f"{bundle_dir}: the bundle has no control_period_s: the stall rule needs time per step")
    result, traces = record_traces(runtime, value, env, replan_every, episodes_per_task=episodes_per_task,
                                   seed=seed, **evaluate_kwargs)
    discount = value.discount
    report = {
        "bundle": str(bundle_dir), "env": result.env_name, "step": runtime.metadata.step, "discount": discount,
        "control_period_s": period, "episodes_per_task": episodes_per_task, "seed": seed,
        "replan_every": replan_every, "success": result.success,
        "calibration": calibration_stats(traces, discount),
        "stall_detector": {"config": to_dict(config), **alarm_rates(traces, config, discount, period),
                           "sweep": [alarm_rates(traces, dataclasses.replace(config, stall_time_s=s), discount,
                                                 period) for s in stall_times or STALL_TIMES_S]},
        "success_threshold": success_threshold(traces),
        "figure": FIGURE,
        "episodes": [{"task_id": t.task_id, "episode": t.episode, "success": t.success, "length": t.length,
                      "estimated_steps_at_start": _finite(t.estimated_steps(discount)[0], 2),
                      "values": [round(v, 4) for v in t.values]} for t in traces],
    }
    out.mkdir(parents=True, exist_ok=True)
    plot_calibration(figure, traces, discount, f"{result.env_name}, bundle step {runtime.metadata.step}: "
                     f"success {result.success:.2f} over {len(traces)} episodes, γ = {discount:g}")
    save_json(report_path, report)
    return report


def format_report(report: dict[str, Any]) -> str:
    """A few lines for the terminal: calibration, alarm rates, threshold."""
    c, s = report["calibration"], report["stall_detector"]
    lines = [f"{report['env']} (step {report['step']}): success {report['success']:.3f} over "
             f"{len(report['episodes'])} episodes",
             f"estimated/actual remaining steps (successful): median {c.get('median_ratio')} "
             f"[IQR {c.get('ratio_p25')}, {c.get('ratio_p75')}], Spearman {c.get('spearman')}, "
             f"{c['infinite_estimates']} of {c['observations']} estimates infinite"]
    for row in [s, *s["sweep"]]:
        lines.append(f"stall {row['stall_time_s']:g} s / {row['min_progress_steps']:g} steps: true alarms "
                     f"{row['true_alarm_rate']} of {row['failed_episodes']} failed, false alarms "
                     f"{row['false_alarm_rate']} of {row['successful_episodes']} successful"
                     + (" (ProgressConfig)" if row is s else ""))
    if report["success_threshold"] is not None:
        t = report["success_threshold"]
        lines.append(f"success_value {t['success_value']}: reached in {t['successful_reaching_it']} of successful, "
                     f"{t['failed_reaching_it']} of failed episodes ({t['median_steps_before_success']:g} steps "
                     "before success, median)")
    return "\n".join(lines)
