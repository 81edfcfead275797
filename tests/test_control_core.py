"""The control core in-process with a fake clock: every safety branch, in milliseconds.

The policy is a plain function of (observation, subgoal) here, so each test can make it misbehave;
the DDS tests in test_policy_nodes.py run the same core inside the real node processes.
"""
from __future__ import annotations

import numpy as np
import pytest

from nfhiql_core.control.controller import ControllerCore, Names, Timing
from nfhiql_core.control.intake import Rejected, Stream, check_vector
from nfhiql_core.control.planner import PlannerCore
from nfhiql_core.control.replan import ReplanSchedule
from nfhiql_core.control.safety import CommandFilter, OodMonitor

MS = 1_000_000
PERIOD = 50 * MS
T0 = 1_000_000 * MS  # the fake node clock starts here
NAMES = Names(("x", "y"), ("x", "y"), ("subgoal_0", "subgoal_1"))


def timing(**overrides) -> Timing:
    base = dict(period=PERIOD, observation_timeout=75 * MS, subgoal_timeout=75 * MS, subgoal_wait=1000 * MS,
                max_skew=100 * MS, replan=PERIOD)
    return Timing(**{**base, **overrides})


def make(lockstep: bool = False, policy=None, every: int = 1, safe: str = "zero", max_delta: float = 0.0,
         ood: OodMonitor | None = None, ood_stop: bool = False, **timing_overrides) -> ControllerCore:
    policy = policy or (lambda obs, subgoal: (np.clip(subgoal - obs, -1, 1), 0.0))
    return ControllerCore(policy, (2, 2, 2), NAMES, timing(**timing_overrides),
                          CommandFilter(np.full(2, -1.0), np.full(2, 1.0), safe, max_delta), every, lockstep, ood,
                          ood_stop)


def feed(core: ControllerCore, now: int, obs=(0.0, 0.0), subgoal=(0.5, 0.5), names=()) -> list:
    """An observation stamped `now` and (timer mode) a subgoal planned from it, both arriving at `now`."""
    out = core.on_observation(obs, now, names, now)
    return out + core.on_subgoal(subgoal, now, (), now)


# ---- intake

def test_vectors_are_checked_for_length_finiteness_stamp_and_names() -> None:
    assert check_vector("o", [1, 2], 5, [], 2, ("a", "b")).tolist() == [1.0, 2.0]
    assert check_vector("o", [1, 2], 5, ["a", "b"], 2, ("a", "b")).tolist() == [1.0, 2.0]
    for values, stamp, names, reason in (([1], 5, [], "length"), ([1, np.nan], 5, [], "non_finite"),
                                         ([1, 2], 0, [], "zero_stamp"), ([1, 2], 5, ["b", "a"], "names"),
                                         ([1, 2], 5, ["a"], "names")):
        with pytest.raises(Rejected) as e:
            check_vector("o", values, stamp, names, 2, ("a", "b"))
        assert e.value.reason == reason


def test_a_future_stamp_is_refused_and_cannot_poison_the_order() -> None:
    stream = Stream("observation", max_skew_ns=100 * MS)
    stream.admit(T0, T0)
    with pytest.raises(Rejected, match="ahead of this node's clock") as e:
        stream.admit(T0 + 3600 * 10**9, T0 + PERIOD)  # an hour ahead
    assert e.value.reason == "future_stamp"
    stream.admit(T0 + 2 * PERIOD, T0 + 2 * PERIOD)  # the next correct one is accepted
    assert stream.age_ns(T0 + 2 * PERIOD) == 0
    with pytest.raises(Rejected) as e:
        stream.admit(T0 + PERIOD, T0 + 3 * PERIOD)
    assert e.value.reason == "not_newer"


def test_age_is_never_negative_and_old_stamps_count() -> None:
    stream = Stream("observation", max_skew_ns=100 * MS)
    stream.admit(T0 + 90 * MS, T0)  # within the skew: accepted, 90 ms "ahead"
    assert stream.age_ns(T0) == 0 and stream.age_ns(T0 + 80 * MS) == 80 * MS  # by arrival, not by stamp
    old = Stream("observation", max_skew_ns=100 * MS)
    old.admit(T0 - 10**9, T0)  # stamped a second before it arrived: old on arrival
    assert old.age_ns(T0) == 10**9 - 100 * MS


# ---- timer trigger

def test_timer_trigger_branches() -> None:
    core = make()
    assert core.on_tick(T0)[0].reason == "no_observation"
    core.on_observation([0.0, 0.0], T0, (), T0)
    assert core.on_tick(T0 + 1)[0].reason == "no_subgoal"
    core.on_subgoal([0.5, 0.5], T0, (), T0)
    (command,) = core.on_tick(T0 + 2)
    assert command.reason is None and np.allclose(command.values, [0.5, 0.5]) and core.state == "ok"


def test_lost_observations_give_the_safe_command_at_the_deadline_not_the_next_tick() -> None:
    core = make()
    feed(core, T0)
    assert core.on_tick(T0 + 10 * MS)[0].reason is None
    deadline = core.next_deadline()
    assert deadline == T0 + 75 * MS + 1  # 1.5 periods after the last valid observation: <= 2 periods
    assert core.on_deadline(deadline - 2) == []
    (safe,) = core.on_deadline(deadline)
    assert safe.reason == "stale_observation" and not safe.values.any()
    assert core.on_deadline(deadline + 1) == []  # already in that state: the ticks carry on
    assert core.on_tick(T0 + 100 * MS)[0].reason == "stale_observation"


def test_future_stamped_observation_does_not_freeze_the_controller() -> None:
    """The fault-test scenario: one observation stamped far ahead, then correct ones, then silence."""
    core = make()
    feed(core, T0)
    with pytest.raises(Rejected):
        core.on_observation([0.1, 0.1], T0 + 10**12, (), T0 + 10 * MS)
    assert core.drop_reasons["observation_future_stamp"] == 1
    for k in range(1, 5):  # later correct observations are used: commands follow them
        now = T0 + k * PERIOD
        feed(core, now, obs=(0.1 * k, 0.0))
        (command,) = core.on_tick(now + 1)
        assert command.reason is None and command.stamp == now
    assert core.on_deadline(core.next_deadline())[0].reason == "stale_observation"  # and silence is noticed


def test_future_stamped_subgoal_with_a_dead_planner_stops_the_robot() -> None:
    core = make()
    feed(core, T0)
    with pytest.raises(Rejected):
        core.on_subgoal([0.5, 0.5], T0 + 10**12, (), T0 + 10 * MS)
    now = T0
    while core.on_tick(now)[0].reason is None:  # observations keep coming; the planner is dead
        now += PERIOD
        core.on_observation([0.0, 0.0], now, (), now)
    assert core.state == "stale_subgoal" and now - T0 <= PERIOD + 75 * MS + PERIOD  # due + timeout, on a tick


def test_subgoal_deadline_is_its_due_time_plus_the_timeout() -> None:
    core = make(every=5, replan=5 * PERIOD)
    feed(core, T0)
    core.on_observation([0.0, 0.0], T0 + 6 * PERIOD, (), T0 + 6 * PERIOD)  # observations go on
    assert core.next_deadline() == T0 + 5 * PERIOD + 75 * MS + 1  # the subgoal's deadline comes first
    assert core.on_deadline(core.next_deadline())[0].reason == "stale_subgoal"


def test_non_finite_output_and_ood_stop() -> None:
    def broken(obs, subgoal):
        raise FloatingPointError("low-level policy produced a non-finite action")
    core = make(policy=broken)
    feed(core, T0)
    assert core.on_tick(T0)[0].reason == "non_finite_output"
    core = make(policy=lambda o, s: (np.array([np.inf, 0.0]), 0.0))
    feed(core, T0)
    assert core.on_tick(T0)[0].reason == "non_finite_output"
    ood = OodMonitor(low_threshold=1.0, high_threshold=-5.0)
    core = make(ood=ood, ood_stop=True)  # the default policy's log-likelihood 0.0 is below 1.0
    feed(core, T0)
    command = core.on_tick(T0)[0]
    assert command.reason == "ood" and command.alarm.action and ood.alarms == 1
    core = make(ood=OodMonitor(1.0, -5.0))  # warn only: the policy's command goes out with the alarm
    feed(core, T0)
    command = core.on_tick(T0)[0]
    assert command.reason is None and command.alarm


def test_ood_alarm_is_sustained_with_hysteresis_and_only_then_stops() -> None:
    likelihood = {"value": 0.0}
    ood = OodMonitor(low_threshold=1.0, high_threshold=-5.0, raise_after=3, clear_after=2)
    core = make(policy=lambda o, s: (np.clip(s - o, -1, 1), likelihood["value"]), ood=ood, ood_stop=True)
    reasons = []
    for k, value in enumerate([0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0, 5.0, 5.0, 0.0]):
        likelihood["value"] = value
        feed(core, T0 + k * PERIOD)
        reasons.append(core.on_tick(T0 + k * PERIOD)[0].reason)
    # two alarms then a clean one: not sustained; three in a row: safe stops until two clean in a row
    assert reasons == [None, None, None, None, None, "ood", "ood", "ood", "ood", "ood", None, None]
    assert ood.alarms == 8 and ood.episodes == 1 and not ood.sustained
    with pytest.raises(ValueError):
        OodMonitor(1.0, 1.0, raise_after=0)


def test_names_that_differ_from_the_bundle_are_rejected_and_counted() -> None:
    core = make(lockstep=True)
    core.on_goal([1.0, 1.0], T0, ("x", "y"), T0)
    with pytest.raises(Rejected):
        core.on_observation([0.0, 0.0], T0 + 1, ("y", "x"), T0 + 1)
    assert core.drop_reasons["observation_names"] == 1 and core.dropped["observation"] == 1
    assert core.pending is None


# ---- lockstep

def test_lockstep_pairs_each_observation_with_its_planned_subgoal() -> None:
    core = make(lockstep=True, every=3)
    core.on_goal([1.0, 1.0], T0, (), T0)
    answered = []
    for k in range(7):
        stamp = T0 + (k + 1) * MS
        out = core.on_observation([0.0, 0.1 * k], stamp, (), stamp)
        if k % 3 == 0:
            assert out == [] and core.pending.plan_stamp == stamp  # waits for its own subgoal
            out = core.on_subgoal([0.5, 0.2 * k], stamp, (), stamp)
        assert len(out) == 1 and out[0].stamp == stamp
        answered.append(out[0].values)
    planned_from = [0, 0, 0, 3, 3, 3, 6]
    assert all(np.allclose(v, np.clip(np.array([0.5, 0.2 * p]) - [0.0, 0.1 * k], -1, 1))
               for k, (v, p) in enumerate(zip(answered, planned_from)))


def test_lockstep_subgoal_wait_timeout_and_idle_end_of_run() -> None:
    core = make(lockstep=True)
    core.on_goal([1.0, 1.0], T0, (), T0)
    assert core.on_observation([0.0, 0.0], T0 + 1, (), T0 + 1) == []
    assert core.next_deadline() == T0 + 1 + 1000 * MS + 1
    (safe,) = core.on_deadline(T0 + 1 + 1000 * MS + 1)
    assert safe.reason == "no_subgoal" and safe.stamp == T0 + 1
    # Observations stop after the last one was answered: idle, one safe command, not an error.
    now = T0 + 2000 * MS
    core.on_observation([0.0, 0.0], now, (), now)
    core.on_subgoal([0.5, 0.5], now, (), now)
    (idle,) = core.on_deadline(core.next_deadline())
    assert idle.reason == "idle" and core.state == "idle" and core.next_deadline() is None
    assert core.on_tick(now + 10**10) == []


def test_lockstep_drops_the_previous_episode_and_a_future_goal_is_refused() -> None:
    core = make(lockstep=True)
    core.on_goal([1.0, 1.0], T0, (), T0)
    with pytest.raises(Rejected):
        core.on_goal([1.0, 1.0], T0 + 10**12, (), T0 + 1)  # far ahead: the current goal stays
    stamp = T0 + 2 * MS
    core.on_observation([0.0, 0.0], stamp, (), stamp)
    assert core.on_subgoal([0.5, 0.5], stamp, (), stamp)[0].reason is None  # not dead
    core.on_goal([1.0, 1.0], T0 + 10 * MS, (), T0 + 10 * MS)
    with pytest.raises(Rejected) as e:
        core.on_observation([0.0, 0.0], T0 + 5 * MS, (), T0 + 11 * MS)
    assert e.value.reason in ("previous_goal", "not_newer")


# ---- commands

def test_rate_limit_bounds_and_hold() -> None:
    commands = CommandFilter(np.full(2, -1.0), np.full(2, 1.0), "hold", max_delta=0.25)
    commands.safe_command()  # policy commands ramp from the last command sent
    sent = [commands.policy_command(np.array([1.0, -3.0])) for _ in range(6)]
    steps = np.diff(np.vstack([np.zeros(2), *sent]), axis=0)
    assert np.all(np.abs(steps) <= 0.25 + 1e-12) and np.allclose(sent[-1], [1.0, -1.0])
    assert np.array_equal(commands.safe_command(), sent[-1])  # hold: the last policy command
    assert commands.policy_command(np.array([np.nan, 0.0])) is None


def test_safe_command_is_finite_and_in_bounds_by_construction() -> None:
    commands = CommandFilter(np.array([0.5, -2.0]), np.array([1.0, -1.0]), "zero")
    assert commands.safe_command().tolist() == [0.5, -1.0]  # zero clipped into [low, high]
    for low, high in (([np.nan, 0.0], [1.0, 1.0]), ([0.0, 0.0], [np.inf, 1.0]), ([2.0, 0.0], [1.0, 1.0])):
        with pytest.raises(ValueError):
            CommandFilter(np.array(low), np.array(high))


# ---- the one re-plan rule

@pytest.mark.parametrize("every", [1, 3, 5])
def test_planner_controller_and_bundle_policy_replan_on_the_same_steps(every: int) -> None:
    from nfhiql_core.deploy.runtime import BundlePolicy

    class Recorder:  # stands in for the ONNX runtime: records which rows are planned on
        planned: list[int] = []

        def plan(self, obs, goals):
            self.planned.extend(obs[:, 0].astype(int).tolist())
            return type("P", (), {"subgoal": obs.copy()})

        def act(self, obs, subgoals):
            return type("A", (), {"action": subgoals})

    runtime = Recorder()
    policy = BundlePolicy(runtime, replan_every=every)
    policy.reset(np.array([0]))
    for k in range(11):
        policy(np.array([[k, 0.0]]), np.zeros((1, 2)), np.array([0]))
    planner = PlannerCore(2, 2, ("x", "y"), ("x", "y"), every, lockstep=True, max_skew_ns=100 * MS)
    planner.on_goal([0.0, 0.0], T0, (), T0)
    planned = [k for k in range(11) if planner.on_observation([k, 0.0], T0 + k + 1, (), T0 + k + 1)]
    schedule = ReplanSchedule(every)
    schedule.reset(T0)
    assert runtime.planned == planned == [k for k in range(11) if schedule.observe(k)[0]]


def test_an_unusable_stream_is_one_safe_command_naming_it_until_a_usable_observation() -> None:
    """Realtime with the robot interface: the assembler's verdict. A stale stream is the safe command
    at once (named in its detail), the same one every tick after (not a new one per verdict), and
    the policy resumes with the next assembled observation."""
    from nfhiql_core.control.assembly import Assembled, Unusable

    core = make()
    feed(core, T0)
    assert core.on_tick(T0 + PERIOD)[0].reason is None
    stale = Unusable("/cube/pose", "stale", "/cube/pose: last message 260 ms old (max age 250 ms)")
    (first,) = core.on_assembly(stale, T0 + 2 * PERIOD)
    assert first.reason == "stale_observation" and "/cube/pose" in first.detail and not first.values.any()
    again = stale._replace(detail="/cube/pose: last message 270 ms old (max age 250 ms)")
    assert core.on_assembly(again, T0 + 2 * PERIOD + MS) == []  # already the state: no extra command
    tick = core.on_tick(T0 + 3 * PERIOD)
    assert tick[0].reason == "stale_observation" and "270 ms" in tick[0].detail
    core.on_assembly(Assembled(np.zeros(2), T0 + 3 * PERIOD), T0 + 3 * PERIOD)
    core.on_subgoal((0.5, 0.5), T0 + 3 * PERIOD, (), T0 + 3 * PERIOD)
    assert core.on_tick(T0 + 3 * PERIOD + MS)[0].reason is None
    assert core.on_assembly(Assembled(np.zeros(2), T0 + 3 * PERIOD), T0 + 4 * PERIOD) == []  # same sample again


# ---- safety supervisor

def _supervised(**kwargs):
    from nfhiql_core.control.supervisor import SafetySupervisor, workspace_from_spec

    supervisor = SafetySupervisor(kwargs.pop("require_enable", True), kwargs.pop("deadman", 200 * MS),
                                  workspace_from_spec(["x", "y"], kwargs.pop("workspace", {})))
    core = ControllerCore(lambda obs, subgoal: (np.clip(subgoal - obs, -1, 1), 0.0), (2, 2, 2), NAMES, timing(),
                          CommandFilter(np.full(2, -1.0), np.full(2, 1.0)), 1, False, supervisor=supervisor)
    return core, supervisor


def test_no_policy_command_without_an_enable_and_the_deadman_stops_within_its_timeout() -> None:
    core, supervisor = _supervised()
    feed(core, T0)
    assert core.on_tick(T0 + MS)[0].reason == "disabled"
    supervisor.on_enable(True, T0 + 2 * MS)
    assert core.on_tick(T0 + 3 * MS)[0].reason is None
    assert core.next_deadline() == min(T0 + 75 * MS + 1, T0 + 2 * MS + 200 * MS + 1)
    feed(core, T0 + 190 * MS)  # inputs stay fresh; only the deadman runs out
    due = supervisor.next_deadline()
    assert due == T0 + 202 * MS + 1 and core.on_deadline(due - 2) == []
    (stop,) = core.on_deadline(due)
    assert stop.reason == "deadman" and not stop.values.any()
    assert core.on_tick(due + PERIOD)[0].reason == "deadman"
    supervisor.on_enable(True, due + PERIOD)  # renewed: policy again
    feed(core, due + PERIOD)
    assert core.on_tick(due + PERIOD + MS)[0].reason is None
    supervisor.on_enable(False, due + 2 * PERIOD)  # revoked: at once
    assert core.on_supervisor_change(due + 2 * PERIOD)[0].reason == "disabled"


def test_the_estop_latches_until_a_reset_after_release() -> None:
    core, supervisor = _supervised(require_enable=False)
    feed(core, T0)
    assert core.on_tick(T0 + MS)[0].reason is None
    supervisor.on_estop(True)
    assert core.on_supervisor_change(T0 + 2 * MS)[0].reason == "estop"
    assert supervisor.reset() == (False, "e-stop still pressed: release it first")
    supervisor.on_estop(False)
    feed(core, T0 + 3 * MS)
    assert core.on_tick(T0 + 4 * MS)[0].reason == "estop"  # released, still latched
    assert supervisor.reset() == (True, "e-stop reset") and supervisor.estops == 1
    assert core.on_tick(T0 + 5 * MS)[0].reason is None


def test_an_observation_outside_the_workspace_is_a_stop_naming_it() -> None:
    core, _ = _supervised(require_enable=False, workspace={"y": (-1.0, 1.0)})
    feed(core, T0, obs=(0.0, 0.5))
    assert core.on_tick(T0 + MS)[0].reason is None
    feed(core, T0 + 2 * MS, obs=(0.0, 1.5))
    (stop,) = core.on_tick(T0 + 3 * MS)
    assert stop.reason == "workspace" and stop.detail == "y = 1.5 outside [-1, 1]"
    with pytest.raises(ValueError, match="'z' is not an observation element"):
        _supervised(workspace={"z": (0.0, 1.0)})


@pytest.mark.parametrize("lockstep", [False, True])
def test_a_withdrawn_goal_is_the_safe_command_at_once_and_until_a_new_goal(lockstep: bool) -> None:
    core = make(lockstep=lockstep)

    def step(now: int) -> list:  # an observation and its subgoal; the timer's tick in realtime
        out = feed(core, now)
        return out if lockstep else out + core.on_tick(now)

    core.on_goal([1.0, 1.0], T0, (), T0)
    assert [c.reason for c in step(T0 + PERIOD)] == [None]
    (safe,) = core.on_goal_cleared(T0 + PERIOD + MS, T0 + PERIOD + MS)
    assert safe.reason == "no_goal" and np.array_equal(safe.values, [0.0, 0.0]) and core.state == "no_goal"
    assert [c.reason for c in step(T0 + 2 * PERIOD)] == ["no_goal"]  # a fresh subgoal does not resume
    core.on_goal([1.0, 1.0], T0 + 2 * PERIOD + MS, (), T0 + 2 * PERIOD + MS)
    assert [c.reason for c in step(T0 + 3 * PERIOD)] == [None]


def test_a_future_stamped_goal_withdrawal_is_refused_and_the_goal_stays() -> None:
    planner = PlannerCore(2, 2, ("x", "y"), ("x", "y"), 1, False, 100 * MS)
    planner.on_goal([1.0, 1.0], T0, (), T0)
    with pytest.raises(Rejected):
        planner.on_goal_cleared(T0 + 10**12, T0 + 1)
    assert planner.goal is not None and planner.on_observation([0.0, 0.0], T0 + 2, (), T0 + 2) is not None
    core = make()
    core.on_goal([1.0, 1.0], T0, (), T0)
    with pytest.raises(Rejected):
        core.on_goal_cleared(T0 + 10**12, T0 + 1)
    assert not core.cleared
