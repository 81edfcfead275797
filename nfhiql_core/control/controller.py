"""The controller's decisions: what each command answers, and when the safe command goes out.

Triggers. `timer` (realtime): every control period, the latest observation with the latest
subgoal. `observation` (lockstep): one command per observation k, with the subgoal planned from
observation k − k % every (`ReplanSchedule`), waiting for it up to `subgoal_wait_ns`.

The safe command replaces the policy's when there is no observation or subgoal, the observation
is older than `observation_timeout_ns` (receive clock, `intake.Stream.age_ns`), the next subgoal is
overdue by more than `subgoal_timeout_ns`, the policy output is not finite, an OOD alarm asks
for a stop, or the safety supervisor says stop (`supervisor.py`: no enable, deadman, e-stop,
workspace). `next_deadline()` says when, without new input, the state turns unsafe: the node arms
a timer for it, so a lost stream is answered at its deadline, not at the next tick. In lockstep,
observations that stop after all were answered mean the run is idle (a finished episode, a paused
sim): one safe command, reported as `idle`, not as an error. Every method takes the node clock
(`now`, ns) as an argument: the class reads no clock and is tested with a fake one.
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

from nfhiql_core.control.assembly import Assembled, Unusable
from nfhiql_core.control.intake import Rejected, Stream, check_vector
from nfhiql_core.control.replan import ReplanSchedule
from nfhiql_core.control.safety import CommandFilter, OodAlarm, OodMonitor
from nfhiql_core.control.supervisor import SafetySupervisor

SUBGOALS_KEPT = 32
NO_GOAL = "the goal was withdrawn (reached, aborted or canceled)"  # the detail of the `no_goal` safe command
ERROR_REASONS = ("no_observation", "stale_observation", "invalid_observation", "non_finite_output", "estop",
                 "workspace")  # the other safe reasons are WARN
UNUSABLE_REASONS = {"missing": "no_observation", "stale": "stale_observation", "invalid": "invalid_observation"}
Policy = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, float]]  # (obs, subgoal) -> (action, log-lik)


@dataclass(frozen=True)
class Timing:
    """The controller's time limits, in ns."""

    period: int
    observation_timeout: int
    subgoal_timeout: int
    subgoal_wait: int
    max_skew: int
    replan: int  # period · replan_every: how often a new subgoal is due


@dataclass(frozen=True)
class Names:
    """The bundle's element names of each input vector (messages with names must match)."""

    observation: tuple[str, ...]
    goal: tuple[str, ...]
    subgoal: tuple[str, ...]


class Command(NamedTuple):
    """One command to publish: `reason` None for the policy's, else why it is the safe command."""

    values: np.ndarray
    stamp: int  # the stamp of the observation it answers (the node clock when it answers none)
    reason: str | None = None
    detail: str = ""
    compute_s: float | None = None
    alarm: OodAlarm | None = None


class Pending(NamedTuple):
    """An observation waiting for its subgoal (lockstep)."""

    values: np.ndarray
    stamp: int
    plan_stamp: int | None  # stamp of the observation its subgoal is planned from; None before a goal
    arrival: int


class ControllerCore:
    """Intake, pairing and safety decisions of `flow_controller` (see the module docstring)."""

    def __init__(self, policy: Policy, dims: tuple[int, int, int], names: Names, timing: Timing,
                 commands: CommandFilter, every: int, lockstep: bool, ood: OodMonitor | None = None,
                 ood_stop: bool = False, clock: Callable[[], float] | None = None,
                 supervisor: SafetySupervisor | None = None):
        self.policy, self.names, self.timing, self.commands = policy, names, timing, commands
        self.supervisor = supervisor
        self.obs_dim, self.goal_dim, self.subgoal_dim = dims
        self.lockstep, self.ood, self.ood_stop = lockstep, ood, ood_stop
        self.compute_clock = clock  # perf_counter-like, for compute time; None: not measured
        self.schedule = ReplanSchedule(every)
        self.observation = Stream("observation", timing.max_skew)
        self.goal = Stream("goal", timing.max_skew)
        self.subgoal = Stream("subgoal", timing.max_skew)
        self.latest_obs: np.ndarray | None = None
        self.pending: Pending | None = None
        self.subgoals: OrderedDict[int, np.ndarray] = OrderedDict()
        self.idle_sent = False
        self.cleared = False  # the goal was withdrawn: safe commands until a new one
        self.fault: tuple[str, str, str] | None = None  # a stream that cannot be used: (reason, detail, topic)
        self.state, self.detail = "starting", ""
        self.safe: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()  # by topic
        self.drop_reasons: Counter[str] = Counter()  # by "topic_reason"

    # ---- intake

    def _reject(self, exc: Rejected) -> Rejected:
        self.dropped[exc.topic] += 1
        self.drop_reasons[f"{exc.topic}_{exc.reason}"] += 1
        return exc

    def on_goal(self, values: Sequence[float], stamp: int, names: Sequence[str], now: int) -> None:
        """A new goal: restarts the observation count and retires the previous goal's subgoals."""
        try:
            check_vector("goal", values, stamp, names, self.goal_dim, self.names.goal)
            self.goal.admit(stamp, now, ordered=False)
        except Rejected as exc:
            raise self._reject(exc) from None
        self.schedule.reset(stamp)
        self.cleared = False
        for old in [s for s in self.subgoals if s < stamp]:
            del self.subgoals[old]

    def on_goal_cleared(self, stamp: int, now: int) -> list[Command]:
        """The goal was withdrawn (cancelled, reached or aborted): the safe command now, and for every
        observation until a new goal comes."""
        try:
            self.goal.admit(stamp, now, ordered=False)
        except Rejected as exc:
            raise self._reject(exc) from None
        self.cleared = True
        self.subgoals.clear()
        pending, self.pending = self.pending, None
        return [self._safe("no_goal", pending.stamp if pending else (self.observation.stamp or now), NO_GOAL)]

    def on_subgoal(self, values: Sequence[float], stamp: int, names: Sequence[str], now: int) -> list[Command]:
        """A planned subgoal (stamped with its planning observation); may answer a waiting observation."""
        try:
            subgoal = check_vector("subgoal", values, stamp, names, self.subgoal_dim, self.names.subgoal)
            if self.schedule.before_goal(stamp):
                raise Rejected("subgoal", "previous_goal", "planned for the previous goal")
            self.subgoal.admit(stamp, now, ordered=False)
        except Rejected as exc:
            raise self._reject(exc) from None
        self.subgoals[stamp] = subgoal
        self.subgoals.move_to_end(stamp)
        while len(self.subgoals) > SUBGOALS_KEPT:
            self.subgoals.popitem(last=False)
        if self.pending is not None and self.pending.plan_stamp == stamp:
            return self._answer_pending(now)
        return []

    def on_subgoal_log_likelihood(self, value: float) -> None:
        if not np.isfinite(value):
            raise self._reject(Rejected("subgoal/log_likelihood", "non_finite", "non-finite value"))
        if self.ood is not None:
            self.ood.subgoal_log_likelihood = float(value)

    def on_observation(self, values: Sequence[float], stamp: int, names: Sequence[str], now: int) -> list[Command]:
        """An observation: kept as the latest (timer), or answered once its subgoal is here (lockstep)."""
        try:
            obs = check_vector("observation", values, stamp, names, self.obs_dim, self.names.observation)
            if self.lockstep and self.schedule.before_goal(stamp):
                raise Rejected("observation", "previous_goal", "stamped before the latest goal (lockstep)")
            self.observation.admit(stamp, now)
        except Rejected as exc:
            raise self._reject(exc) from None
        self.latest_obs = obs
        self.idle_sent = False
        self.fault = None
        if self.cleared and self.lockstep:
            return [self._safe("no_goal", stamp, NO_GOAL)]
        if not self.lockstep:
            return []
        plan_stamp = self.schedule.observe(stamp)[1] if self.schedule.goal_stamp is not None else None
        if self.pending is not None:
            self.dropped["superseded_observation"] += 1
        self.pending = Pending(obs, stamp, plan_stamp, now)
        return self._answer_pending(now)

    def on_assembly(self, result: Assembled | Unusable, now: int, stamp: int | None = None) -> list[Command]:
        """The observation assembler's verdict (robot interface; `control.assembly`).

        Assembled: an observation like `on_observation`'s (timer trigger: one not newer than the
        last is the same sample again, not a drop). Unusable: the safe command right away, naming
        the stream, and until a usable observation arrives; in lockstep it answers the message
        stamped `stamp` (an invalid message), so the run goes on.
        """
        if isinstance(result, Assembled):
            if not self.lockstep and self.observation.stamp is not None and result.stamp <= self.observation.stamp:
                return []
            return self.on_observation(result.values, result.stamp, (), now)
        reason = UNUSABLE_REASONS[result.reason]
        known = self.fault is not None and self.fault[::2] == (reason, result.topic) and self.state == reason
        self.fault = (reason, result.detail, result.topic)
        if self.lockstep:
            if stamp is None:
                return []
            self.pending = None
            return [self._safe(reason, stamp, result.detail)]
        if known:
            return []  # that safe command is already going out every tick
        return [self._safe(reason, self.observation.stamp or now, result.detail)]

    # ---- decisions

    def on_tick(self, now: int) -> list[Command]:
        """The control timer: a command (timer trigger), or the lockstep watchdog."""
        return [self._timer_step(now)] if not self.lockstep else self._watchdog(now)

    def on_deadline(self, now: int) -> list[Command]:
        """A deadline from `next_deadline` passed: the safe command now if the inputs stopped being enough."""
        if self.lockstep:
            return self._watchdog(now)
        verdict = self._verdict(now)
        if verdict is None or (verdict[0] == self.state):
            return []  # still fine, or that safe command is already going out every tick
        return [self._safe(*verdict)]

    def on_supervisor_change(self, now: int) -> list[Command]:
        """An enable, e-stop or reset just arrived: a safe command at once if the supervisor now says stop."""
        stop = self.supervisor.verdict(self.latest_obs, now) if self.supervisor else None
        if stop is None or stop.reason == self.state:
            return []
        return [self._safe(stop.reason, self.observation.stamp or now, stop.detail)]

    def next_deadline(self) -> int | None:
        """When (node clock) the current inputs stop being enough; None if nothing is pending."""
        t = self.timing
        if self.lockstep:  # waiting for a subgoal, or for the next observation (else idle)
            if self.pending is not None:
                return self.pending.arrival + t.subgoal_wait + 1
            if self.observation.arrival is None or self.idle_sent:
                return None
            return self.observation.arrival + t.observation_timeout + 1
        deadlines = [s.arrival + timeout + 1 for s, timeout in ((self.observation, t.observation_timeout),
                                                                (self.subgoal, t.replan + t.subgoal_timeout))
                     if s.arrival is not None]
        deadman = self.supervisor.next_deadline() if self.supervisor else None
        deadlines += [deadman] if deadman is not None else []
        return min(deadlines) if deadlines else None

    def _verdict(self, now: int) -> tuple[str, int, str] | None:
        """Timer trigger: why the safe command is due now (reason, stamp, detail), or None."""
        if self.fault is not None:
            return self.fault[0], self.observation.stamp or now, self.fault[1]
        age = self.observation.age_ns(now)
        if age is None:
            return "no_observation", now, ""
        stamp = self.observation.stamp
        if age > self.timing.observation_timeout:
            return "stale_observation", stamp, f"age {age / 1e9:.3f} s"
        if not self.subgoals:
            return "no_subgoal", stamp, ""
        overdue = now - (self.subgoal.arrival + self.timing.replan)
        if overdue > self.timing.subgoal_timeout:
            return "stale_subgoal", stamp, f"next subgoal overdue by {overdue / 1e9:.3f} s"
        stop = self.supervisor.verdict(self.latest_obs, now) if self.supervisor else None
        return None if stop is None else (stop.reason, stamp, stop.detail)

    def _timer_step(self, now: int) -> Command:
        """Timer trigger: the latest observation with the latest subgoal, or the safe command."""
        verdict = self._verdict(now)
        if verdict is not None:
            return self._safe(*verdict)
        return self._act(self.latest_obs, self.observation.stamp, next(reversed(self.subgoals.values())), now)

    def _answer_pending(self, now: int) -> list[Command]:
        pending = self.pending
        subgoal = self.subgoals.get(pending.plan_stamp) if pending.plan_stamp is not None else None
        if subgoal is None:
            return []
        self.pending = None
        return [self._act(pending.values, pending.stamp, subgoal, now)]

    def _watchdog(self, now: int) -> list[Command]:
        """Lockstep: the subgoal wait timeout, and one `idle` safe command when observations stop."""
        if self.pending is not None:
            if now - self.pending.arrival > self.timing.subgoal_wait:
                stamp, self.pending = self.pending.stamp, None
                return [self._safe("stale_subgoal" if self.subgoals else "no_subgoal", stamp,
                                   "no subgoal for this observation in time")]
            return []
        age = self.observation.age_ns(now)
        if age is not None and not self.idle_sent and age > self.timing.observation_timeout:
            self.idle_sent = True
            return [self._safe("idle", self.observation.stamp, "observations stopped after the last was answered")]
        return []

    def _act(self, obs: np.ndarray, stamp: int, subgoal: np.ndarray, now: int) -> Command:
        """The policy's command for (obs, subgoal), supervised, OOD-checked, rate-limited and clamped; or the
        safe one."""
        if self.cleared:
            return self._safe("no_goal", stamp, NO_GOAL)
        stop = self.supervisor.verdict(obs, now) if self.supervisor else None
        if stop is not None:
            return self._safe(stop.reason, stamp, stop.detail)
        start = self.compute_clock() if self.compute_clock else None
        try:
            action, log_prob = self.policy(obs, subgoal)
        except FloatingPointError as exc:  # the runtime's NonFiniteOutputError
            return self._safe("non_finite_output", stamp, str(exc))
        alarm = self.ood.check(float(log_prob)) if self.ood is not None else None
        if alarm is not None and self.ood.sustained and self.ood_stop:
            return self._safe("ood", stamp, "log-likelihood below the training-data threshold")._replace(alarm=alarm)
        command = self.commands.policy_command(action)
        if command is None:
            return self._safe("non_finite_output", stamp, "non-finite command")
        compute = None if start is None else self.compute_clock() - start
        self._set_state("ok", "")
        return Command(command, stamp, None, "", compute, alarm)

    def _safe(self, reason: str, stamp: int, detail: str = "") -> Command:
        self.safe[reason] += 1
        self._set_state(reason, detail)
        return Command(self.commands.safe_command(), stamp, reason, detail)

    def shutdown_command(self, now: int, reason: str = "shutdown") -> Command:
        """The safe command sent on shutdown (or deactivation), answering whatever was waiting."""
        stamp = self.pending.stamp if self.pending else self.observation.stamp or now
        self.pending = None
        self.safe[reason] += 1
        return Command(self.commands.safe_command(), stamp, reason)

    def _set_state(self, state: str, detail: str) -> None:
        self.state, self.detail = state, detail
