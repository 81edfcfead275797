"""The ROS stack of each scenario (nodes, parameter files, launch arguments), described once for
`launch/*.launch.py` and `nfhiql-bringup`; `plan()` turns launch arguments into processes to start.
Design: docs/design/stack.md. Imports neither rclpy nor launch."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from nfhiql_ros.contract import EXECUTORS, INTERFACES, MODES, OUTPUTS, SIM_FORWARD_TOPIC, TRIGGER

PACKAGE = "nfhiql_ros"


@dataclass(frozen=True)
class NodeSpec:
    """One node of a stack: `executable` is both the console script and the module nfhiql_ros.<executable>."""

    executable: str
    name: str
    param_files: tuple[str, ...]  # relative to the base directory, applied in order (later wins)
    sim_only: bool = False  # started only with sim:=true

    @property
    def module(self) -> str:
        return f"{PACKAGE}.{self.executable}"


@dataclass(frozen=True)
class Stack:
    name: str
    config: str  # the stack's parameter file (relative to the base directory)
    scenario: str  # mujoco_sim's scenario file (sim/*.yaml)

    @property
    def nodes(self) -> tuple[NodeSpec, ...]:
        return (
            NodeSpec("mujoco_sim", "mujoco_sim", (self.scenario, self.config), sim_only=True),
            NodeSpec("subgoal_planner", "subgoal_planner", (self.config,)),
            NodeSpec("flow_controller", "flow_controller", (self.config,)),
        )


STACKS: dict[str, Stack] = {
    "manipulation": Stack("manipulation", "config/manipulation.yaml", "sim/cube-single.yaml"),
    "navigation": Stack("navigation", "config/navigation.yaml", "sim/pointmaze-medium.yaml"),
}


@dataclass(frozen=True)
class Argument:
    """A launch argument (`name:=value`); bringup's `--name-with-dashes` option mirrors it."""

    name: str
    default: str
    description: str
    choices: tuple[str, ...] = ()  # allowed values besides '' (empty: any)
    type: type = str  # of bringup's option value (each value when `many`)
    many: bool = False  # a list: comma-separated here, space-separated values in bringup

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


ARGUMENTS: tuple[Argument, ...] = (
    Argument("bundle", "", "policy bundle directory; '' = the parameter file's `bundle` (relative to the "
             "package share dir / repository root)"),
    Argument("scenario", "", "mujoco_sim's scenario file (relative to the package share dir / repository root), "
             "e.g. sim/antmaze-medium.yaml for the ant on the navigation stack; '' = the stack's own"),
    Argument("sim", "true", "true: start mujoco_sim as the robot; false: hardware (observation/goal come "
             "from elsewhere, mujoco_sim is not started)", ("true", "false")),
    Argument("mode", "", "lockstep (one sim step per command, policy nodes' trigger `observation`) or realtime "
             "(wall-clock sim, trigger `timer`); '' = the parameter file (lockstep)", MODES),
    Argument("replan_every", "", "observations per subgoal, shared by planner and controller; 0 = the "
             "bundle's subgoal_steps; '' = the parameter file", type=int),
    Argument("rate_hz", "", "planner rate in Hz (realtime only; sets replan_every from the control period "
             "in the planner); '' = the parameter file (0: use replan_every)", type=float),
    Argument("control_period_s", "", "controller (and realtime sim) period in s; 0 = the bundle's / env's; "
             "'' = the parameter file", type=float),
    Argument("executor", "", "rclpy executor of the policy nodes; '' = the parameter file", EXECUTORS),
    Argument("interface", "", "robot: the robot's own topics (mujoco_sim's robot mode; the policy nodes "
             "assemble observations and send commands by the bundle's interface spec) or vector (the "
             "observation/command vectors); '' = the parameter files", INTERFACES),
    Argument("command_output", "", "vector interface: sim (JointState `command`) or forward (ros2_control "
             "forward controller); '' = the parameter file", OUTPUTS),
    Argument("providers", "", "ONNX Runtime providers in priority order, comma-separated (e.g. CUDA,CPU); "
             "'' = the parameter file", many=True),
    Argument("tasks", "", "evaluation task ids, e.g. 1,2,3 or [1, 2, 3]; '' = the scenario file (1..5)",
             type=int, many=True),
    Argument("episodes_per_task", "", "episodes per task; '' = the parameter file", type=int),
    Argument("max_episode_steps", "", "episode step cap; 0 = the env's limit; '' = the parameter file", type=int),
    Argument("seed", "", "evaluation seed (the same per-episode seeds as `nfhiql eval`); '' = the parameter "
             "file", type=int),
    Argument("record_path", "", "mujoco_sim's per-step trajectory log (npz, written on exit; relative to the "
             "current directory); '' = the parameter file (default: off)"),
    Argument("video", "", "render the sim's first episode from its camera to this .gif/.mp4 (headless EGL; "
             "relative to the current directory); '' = off"),
    Argument("activate", "true", "true: bring the managed planner and controller to active (configure, then "
             "activate); false: configure them and leave them inactive for an operator (`ros2 lifecycle set "
             "/flow_controller activate`)", ("true", "false")),
)
MANAGED = ("subgoal_planner", "flow_controller")  # lifecycle nodes: the launcher drives their transitions
ARGUMENT_DEFAULTS: dict[str, str] = {a.name: a.default for a in ARGUMENTS}


@dataclass(frozen=True)
class NodeLaunch:
    """One process to start: what launch_ros' Node(...) and bringup both get."""

    executable: str
    name: str
    param_files: tuple[str, ...]  # absolute
    overrides: dict[str, Any] = field(default_factory=dict)  # typed ROS parameter values
    remappings: tuple[tuple[str, str], ...] = ()

    @property
    def module(self) -> str:
        return f"{PACKAGE}.{self.executable}"

    def override_blocks(self) -> dict[str, Any]:
        """The overrides as parameter-file content, under the key the parameter files use for this node."""
        return {f"/**/{self.name}": {"ros__parameters": dict(self.overrides)}}

    def ros_args(self, override_file: str | None = None) -> list[str]:
        """`--ros-args ...` for a direct start: the launch file's parameter files and remappings."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        for path in (*self.param_files, *([override_file] if override_file else [])):
            args += ["--params-file", path]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        return args


def write_override_file(launch: NodeLaunch, directory: str | os.PathLike) -> str | None:
    """Write `launch`'s overrides to `<directory>/<node>.overrides.yaml` (None when it has none)."""
    if not launch.overrides:
        return None
    path = Path(directory) / f"{launch.name}.overrides.yaml"
    path.write_text(yaml.safe_dump(launch.override_blocks(), sort_keys=False))
    return str(path)


class StackError(ValueError):
    """Arguments that do not make a runnable stack."""


# ---- the base directory and parameter files ---------------------------------------------------

def _has_stack_files(base: Path) -> bool:
    return all((base / s.config).is_file() and (base / s.scenario).is_file() for s in STACKS.values())


def find_base_dir() -> Path:
    """The directory holding config/ and sim/: the source checkout this module runs from, else an
    installed share directory (`<prefix>/share/nfhiql_ros`, also every AMENT_PREFIX_PATH entry)."""
    candidates = [Path(__file__).resolve().parents[1], Path(sys.prefix) / "share" / PACKAGE]
    candidates += [Path(p) / "share" / PACKAGE for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for base in candidates:
        if _has_stack_files(base):
            return base
    raise StackError("cannot find the nfhiql_ros parameter files (config/, sim/): looked in "
                     + ", ".join(str(c) for c in candidates))


def parameter_table(sources: Sequence[str | os.PathLike | Mapping]) -> dict[str, dict[str, Any]]:
    """Parameter files (paths, or their content as a dict) merged as rcl does: one entry per node key,
    in order of first appearance, later files updating the entry of the same key."""
    table: dict[str, dict[str, Any]] = {}
    for source in sources:
        blocks = source if isinstance(source, Mapping) else yaml.safe_load(Path(source).read_text())
        for key, block in (blocks or {}).items():
            table.setdefault(key, {}).update(((block or {}).get("ros__parameters") or {}))
    return table


def _matches(key: str, node: str) -> bool:
    return key in ("/**", f"/**/{node}", node, f"/{node}")


def node_parameters(sources: Sequence[str | os.PathLike | Mapping], node: str) -> dict[str, Any]:
    """The parameters these files give node `/<node>`: its matching entries applied in table order."""
    merged: dict[str, Any] = {}
    for key, params in parameter_table(sources).items():
        if _matches(key, node):
            merged.update(params)
    return merged


def file_parameters(base: Path, spec: NodeSpec) -> dict[str, Any]:
    return node_parameters([base / rel for rel in spec.param_files], spec.name)


# ---- arguments → processes ---------------------------------------------------------------------

def parse_bool(name: str, value: str) -> bool:
    low = value.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise StackError(f"{name} must be true or false, got {value!r}")


def _parse_number(name: str, value: str, kind: type) -> int | float:
    try:
        number = kind(float(value)) if kind is float else int(value)
    except ValueError:
        raise StackError(f"{name} must be a{'n integer' if kind is int else ' number'}, got {value!r}") from None
    if number < 0:
        raise StackError(f"{name} must be >= 0, got {value!r}")
    return number


def _parse_list(value: str) -> list[str]:
    text = value.strip()
    if text.startswith("["):
        text = text[1:-1] if text.endswith("]") else text[1:]
    return [part.strip().strip("'\"") for part in text.split(",") if part.strip()]


def _parse_tasks(value: str) -> list[int]:
    try:
        tasks = [int(t) for t in _parse_list(value)]
    except ValueError:
        raise StackError(f"tasks must be task ids such as 1,2,3, got {value!r}") from None
    if not tasks or min(tasks) < 1:
        raise StackError(f"tasks must be task ids >= 1, got {value!r}")
    return tasks


def _robot_interface(argument: str, policy_files: dict, sim_files: dict | None, with_sim: bool, stack: str) -> bool:
    """Whether the stack runs through the robot interface (argument, else the parameter files)."""
    robot = argument == "robot" if argument else bool(policy_files.get("interface"))
    if robot and with_sim and not (sim_files or {}).get("robot_spec"):
        raise StackError(f"interface robot: the {stack} scenario file sets no robot_spec for mujoco_sim")
    return robot


def resolve_path(value: str, base: Path) -> str:
    """An absolute path: `value` as is if absolute, else relative to `base`."""
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else (base / path).resolve())


def plan(stack: str, arguments: Mapping[str, str] | None = None, base_dir: str | os.PathLike | None = None,
         cwd: str | os.PathLike | None = None) -> list[NodeLaunch]:
    """The processes of `stack` for these launch arguments (missing ones take their defaults).

    `base_dir`: where config/ and sim/ are (the share dir for launch; default `find_base_dir()`);
    `cwd`: what a relative `bundle` argument is relative to (default: the current directory).
    """
    if stack not in STACKS:
        raise StackError(f"unknown stack {stack!r} (choose from {', '.join(STACKS)})")
    unknown = set(arguments or {}) - set(ARGUMENT_DEFAULTS)
    if unknown:
        raise StackError(f"unknown launch argument(s): {', '.join(sorted(unknown))}")
    args = {**ARGUMENT_DEFAULTS, **{k: str(v) for k, v in (arguments or {}).items()}}
    for a in ARGUMENTS:
        if a.choices and args[a.name] and args[a.name] not in a.choices:
            raise StackError(f"{a.name} must be one of {', '.join(a.choices)}, got {args[a.name]!r}")
    base = Path(base_dir) if base_dir is not None else find_base_dir()
    here = Path(cwd) if cwd is not None else Path.cwd()
    spec = STACKS[stack]
    with_sim = parse_bool("sim", args["sim"])
    if args["scenario"]:
        if not with_sim:
            raise StackError("scenario configures the sim: it needs sim:=true")
        scenario = Path(resolve_path(args["scenario"], base))
        if not scenario.is_file():
            raise StackError(f"scenario: no such file {scenario}")
        spec = replace(spec, scenario=str(scenario))
    nodes = {n.name: n for n in spec.nodes if with_sim or not n.sim_only}
    files = {name: file_parameters(base, n) for name, n in nodes.items()}
    policy_files = files["flow_controller"]
    over: dict[str, dict[str, Any]] = {name: {} for name in nodes}
    def set_policy(key: str, value: Any) -> None:
        for name in MANAGED:
            over[name][key] = value

    # bundle: always passed, always absolute (the file's value resolved against the base directory)
    if args["bundle"]:
        bundle = resolve_path(args["bundle"], here)
    elif policy_files.get("bundle"):
        bundle = resolve_path(str(policy_files["bundle"]), base)
    else:
        raise StackError(f"no bundle: set `bundle` in {spec.config} or pass the bundle argument")
    set_policy("bundle", bundle)
    set_policy("autostart", False)  # managed: configured and activated by the launcher (`activate`)
    parse_bool("activate", args["activate"])  # (validated here; the launcher reads it)

    # mode: the sim's stepping and the policy nodes' trigger always agree
    mode = args["mode"] or str(files.get("mujoco_sim", {}).get("mode") or "")
    if mode:
        if mode not in MODES:
            raise StackError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        set_policy("trigger", TRIGGER[mode])
        if with_sim:
            over["mujoco_sim"]["mode"] = mode
    trigger = over["flow_controller"].get("trigger", policy_files.get("trigger", "timer"))

    if args["replan_every"]:
        set_policy("replan_every", _parse_number("replan_every", args["replan_every"], int))
    if args["rate_hz"]:
        over["subgoal_planner"]["rate_hz"] = _parse_number("rate_hz", args["rate_hz"], float)
    rate_hz = over["subgoal_planner"].get("rate_hz", files["subgoal_planner"].get("rate_hz", 0.0))
    if rate_hz and trigger == "observation":
        raise StackError("rate_hz applies to realtime runs: in lockstep (controller trigger `observation`) the "
                         "planner and controller must share replan_every; set replan_every instead")
    if args["control_period_s"]:
        period = _parse_number("control_period_s", args["control_period_s"], float)
        over["flow_controller"]["control_period_s"] = period
        if with_sim:
            over["mujoco_sim"]["control_period_s"] = period
    if args["executor"]:
        set_policy("executor", args["executor"])
    if args["providers"]:
        providers = _parse_list(args["providers"])
        if not providers:
            raise StackError(f"providers must name at least one provider, got {args['providers']!r}")
        set_policy("providers", providers)

    if not with_sim:  # hardware: no policy command without the operator's enable (deadman)
        over["flow_controller"]["require_enable"] = True
    robot = _robot_interface(args["interface"], policy_files, files.get("mujoco_sim"), with_sim, stack)
    set_policy("interface", "bundle" if robot else "")
    sim_spec = str(files.get("mujoco_sim", {}).get("robot_spec") or "")
    if with_sim and (robot or sim_spec):  # robot mode: the scenario's spec; vector: none
        over["mujoco_sim"]["robot_spec"] = resolve_path(sim_spec, base) if robot else ""

    output = args["command_output"] or str(policy_files.get("command_output", "sim"))
    if args["command_output"]:
        if robot:
            raise StackError("command_output applies to the vector interface: with interface robot the bundle's "
                             "interface spec names the command topics")
        over["flow_controller"]["command_output"] = output
    remaps: dict[str, tuple[tuple[str, str], ...]] = {}
    if with_sim and output == "forward" and not robot:  # the sim takes forward-controller arrays on its own input
        controller = str(policy_files.get("forward_controller", "forward_position_controller")).rstrip("/")
        remaps["mujoco_sim"] = ((SIM_FORWARD_TOPIC, f"{controller}/commands"),)

    if with_sim:
        over["mujoco_sim"]["wait_for_controller"] = True  # realtime too: nothing runs before activation
        if args["tasks"]:
            over["mujoco_sim"]["tasks"] = _parse_tasks(args["tasks"])
        for key in ("episodes_per_task", "max_episode_steps", "seed"):
            if args[key]:
                over["mujoco_sim"][key] = _parse_number(key, args[key], int)
        if args["episodes_per_task"] and over["mujoco_sim"]["episodes_per_task"] < 1:
            raise StackError("episodes_per_task must be >= 1")
        if args["record_path"]:
            over["mujoco_sim"]["record_path"] = resolve_path(args["record_path"], here)
        if args["video"]:
            over["mujoco_sim"]["video_path"] = resolve_path(args["video"], here)
    else:
        ignored = [k for k in ("tasks", "episodes_per_task", "max_episode_steps", "seed", "record_path", "video")
                   if args[k]]
        if ignored:
            raise StackError(f"{', '.join(ignored)} configure the sim: they need sim:=true")

    return [NodeLaunch(n.executable, n.name, tuple(str(base / f) for f in n.param_files), over[name],
                       remaps.get(name, ())) for name, n in nodes.items()]


def effective_parameters(launch: NodeLaunch) -> dict[str, Any]:
    """What the node will see: its parameter files, then the override file (for reports and tests)."""
    return node_parameters([*launch.param_files, launch.override_blocks()], launch.name)
