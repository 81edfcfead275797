"""Progress from the value function: steps_to_go by hand, and every verdict of ProgressMonitor on a
hand-made clock (exact binary fractions, so "exactly when the window passes" is exact)."""
from __future__ import annotations

import math

import pytest

from nfhiql_core.config import from_dict
from nfhiql_core.control.progress import ProgressConfig, ProgressMonitor, steps_to_go, value_of_steps
from nfhiql_core.errors import ConfigError

GAMMA = 0.99


def value_of(steps: float, discount: float = GAMMA) -> float:
    """V of a goal `steps` away under the −1 per step reward: −(1 − γⁿ)/(1 − γ)."""
    return -(1.0 - discount ** steps) / (1.0 - discount)


def test_steps_to_go_by_hand() -> None:
    assert steps_to_go(-1.0, GAMMA) == pytest.approx(1.0)  # one −1 reward, then the goal
    assert steps_to_go(-1.5, 0.5) == pytest.approx(2.0)  # −1 − 0.5
    assert steps_to_go(-1.75, 0.5) == pytest.approx(3.0)  # −1 − 0.5 − 0.25
    assert steps_to_go(-50.0, GAMMA) == pytest.approx(math.log(0.5) / math.log(0.99))  # 68.97: half the horizon
    assert steps_to_go(value_of(37.0), GAMMA) == pytest.approx(37.0)
    assert steps_to_go(0.0, GAMMA) == 0.0 and steps_to_go(0.3, GAMMA) == 0.0  # at (or "beyond") the goal
    assert steps_to_go(-100.0, GAMMA) == math.inf and steps_to_go(-250.0, GAMMA) == math.inf  # V <= −1/(1 − γ)
    assert steps_to_go(-math.inf, GAMMA) == math.inf
    for bad in ((-1.0, 1.0), (-1.0, 0.0), (math.nan, GAMMA)):
        with pytest.raises(ValueError):
            steps_to_go(*bad)


def monitor(**config) -> ProgressMonitor:
    return ProgressMonitor(ProgressConfig(**{"stall_time_s": 2.0, "min_progress_steps": 5.0, **config}), GAMMA)


def first_verdict(m: ProgressMonitor, estimates: list[float], dt: float = 0.25, t0: float = 10.0
                  ) -> tuple[float, str, str] | None:
    """Start at t0, feed the estimated steps every dt: (time, verdict, reason) of the first verdict."""
    m.start(t0)
    for k, steps in enumerate(estimates):
        report = m.update(t0 + k * dt, value_of(steps), k)
        assert report.estimated_steps == pytest.approx(steps, abs=1e-6)
        if report.verdict is not None:
            return t0 + k * dt, report.verdict, report.reason
    return None


def test_stall_fires_exactly_when_the_window_passes_without_progress() -> None:
    flat = [100.0, 97.0, 96.0, 101.0, 98.0, 99.0, 97.0, 96.5, 96.0, 95.5]  # never 5 below 100
    t, verdict, reason = first_verdict(monitor(), flat)
    assert (t, verdict) == (12.0, "stalled")  # 10.0 + 2.0 s: the 9th update, not the 8th (11.75)
    assert "have not fallen by 5 in 2 s" in reason and "best 100.0" in reason
    assert first_verdict(monitor(), flat[:8]) is None  # up to 11.75: not yet


def test_progress_is_measured_from_the_best_estimate_and_restarts_the_clock() -> None:
    # 100 → 96 → 94.5: 5.5 below the best (100) at t = 10.5, though never 5 below the previous estimate
    steps = [100.0, 96.0, 94.5, 94.0, 93.0, 92.0, 91.0, 90.0, 89.6, 89.9, 90.0]
    t, verdict, _ = first_verdict(monitor(), steps)
    assert (t, verdict) == (12.5, "stalled")  # 10.5 + 2.0 (89.6 at 12.0 is 4.9 below 94.5: not progress)
    steadily = [100.0 - 2.0 * k for k in range(40)]  # 8 steps per second: progress every 0.75 s
    assert first_verdict(monitor(), steadily) is None


def test_no_finite_estimate_stalls_from_the_start() -> None:
    m = monitor()
    m.start(0.0)
    reports = [m.update(t, -150.0, k) for k, t in enumerate((0.0, 1.0, 1.5, 2.0))]
    assert all(r.estimated_steps == math.inf and r.progress_per_s == 0.0 for r in reports)
    assert [r.verdict for r in reports] == [None, None, None, "stalled"]
    assert "no finite estimate yet" in reports[-1].reason


def test_budget_and_value_threshold() -> None:
    m = monitor(step_budget=3)
    m.start(0.0)
    assert m.update(0.0, value_of(50), 2).verdict is None
    report = m.update(0.25, value_of(49), 3)
    assert report.verdict == "budget" and report.reason == "step budget of 3 spent"

    m = monitor(success_value=-2.0, step_budget=3)
    m.start(0.0)
    assert m.update(0.0, -2.5, 0).verdict is None
    report = m.update(5.0, -1.9, 7)  # also stalled and over budget: reaching the goal wins
    assert report.verdict == "value_reached" and "-1.900 >= success_value -2" in report.reason
    assert m.update(5.25, -2.0, 8).verdict == "value_reached"  # at the threshold counts


def test_progress_per_second_is_smoothed() -> None:
    m = monitor(smoothing=0.5, stall_time_s=100.0)
    m.start(0.0)
    rates = [m.update(t, value_of(s), k).progress_per_s
             for k, (t, s) in enumerate([(0.0, 100.0), (1.0, 90.0), (2.0, 90.0), (2.0, 80.0), (4.0, 84.0)])]
    # 0 until measured; 10/s; EMA with 0/s → 5; same time: no rate; (80 − 84)/2 = −2/s → 1.5
    assert rates == pytest.approx([0.0, 10.0, 5.0, 5.0, 1.5])


def test_restart_forgets_the_previous_goal() -> None:
    m = monitor()
    assert first_verdict(m, [50.0] * 9)[:2] == (12.0, "stalled")
    m.start(20.0)  # a new goal, later on the same clock
    report = m.update(20.0, value_of(80.0), 0)
    assert report.verdict is None and report.progress_per_s == 0.0
    assert m.update(21.75, value_of(80.0), 1).verdict is None and m.update(22.0, value_of(80.0), 2).verdict == "stalled"
    m.start(0.0)  # a clock that was reset (sim time of a new episode)
    assert m.update(0.0, value_of(10.0), 0).verdict is None


def test_misuse_is_refused() -> None:
    m = monitor()
    with pytest.raises(RuntimeError, match="before start"):
        m.update(0.0, -1.0, 0)
    m.start(1.0)
    m.update(1.0, -1.0, 0)
    with pytest.raises(ValueError, match="time went backwards"):
        m.update(0.5, -1.0, 1)
    with pytest.raises(ValueError, match="finite"):
        m.update(2.0, math.nan, 1)
    with pytest.raises(ValueError, match="discount"):
        ProgressMonitor(ProgressConfig(), 1.0)


@pytest.mark.parametrize("field, value, message", [
    ("stall_time_s", 0.0, "stall_time_s must be a finite number > 0, got 0.0"),
    ("min_progress_steps", -1.0, "min_progress_steps must be a finite number > 0"),
    ("step_budget", 0, "step_budget must be an integer >= 1 or null, got 0"),
    ("success_value", 0.5, "success_value must be a finite number <= 0"),
    ("smoothing", 0.0, "smoothing must be in (0, 1], got 0.0"),
    ("stall_s", 1.0, "unknown key stall_s"),
])
def test_config_errors_name_the_file_and_field(field: str, value: float, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(ProgressConfig, {field: value}, "progress.yaml")
    assert str(e.value).startswith("progress.yaml: ") and message in str(e.value) and "\n" not in str(e.value)


def test_value_of_steps_is_the_inverse_of_steps_to_go() -> None:
    for n in (0.0, 1.0, 25.0, 137.5):
        assert steps_to_go(value_of_steps(n, 0.99), 0.99) == pytest.approx(n, abs=1e-9)
