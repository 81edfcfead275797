"""ament_python packaging: package.xml, setup.cfg, setup.py data_files and console scripts, and the
parameter files loading into the nodes' parameter dataclasses through rclpy's own YAML parsing.

What `colcon build` + `ros2 launch nfhiql_ros <stack>.launch.py` needs, checked without ROS tooling
(colcon, launch and ament_index are not installable here).
"""
from __future__ import annotations

import configparser
import dataclasses
import importlib
import os
import runpy
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import setuptools

from nfhiql_ros import stack

ROOT = Path(__file__).resolve().parents[1]
PKG = "nfhiql_ros"
ROS_DEPS = {"rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "diagnostic_msgs", "trajectory_msgs"}
NODE_SCRIPTS = {"mujoco_sim", "subgoal_planner", "flow_controller"}


@pytest.fixture(scope="module")
def setup_kwargs() -> dict:
    """What setup.py passes to setuptools.setup (run in the repository root, as colcon does)."""
    captured: dict = {}
    original, cwd = setuptools.setup, os.getcwd()
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        os.chdir(ROOT)
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = original
        os.chdir(cwd)
    return captured


def console_scripts(kwargs: dict) -> dict[str, str]:
    return dict(tuple(s.strip() for s in entry.split("=", 1)) for entry in kwargs["entry_points"]["console_scripts"])


def test_package_xml_is_format_3_ament_python_with_ros_deps() -> None:
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == PKG
    for tag in ("version", "description", "maintainer", "license"):
        assert (root.findtext(tag) or "").strip(), tag
    assert root.find("maintainer").get("email")
    assert root.findtext("export/build_type") == "ament_python"
    run_deps = {e.text for tag in ("depend", "exec_depend") for e in root.findall(tag)}
    assert ROS_DEPS <= run_deps, ROS_DEPS - run_deps
    test_deps = {e.text for tag in ("depend", "test_depend") for e in root.findall(tag)}
    assert "python3-pytest" in test_deps


def test_resource_marker_and_setup_cfg_script_dirs() -> None:
    marker = ROOT / "resource" / PKG
    assert marker.is_file()  # ament index marker (empty by convention)
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    # Without these, `ros2 run` / launch_ros Node(executable=...) do not find the scripts.
    assert cfg.get("develop", "script_dir") == f"$base/lib/{PKG}"
    assert cfg.get("install", "install_scripts") == f"$base/lib/{PKG}"


def test_setup_installs_marker_manifest_launch_config_and_sim_files(setup_kwargs) -> None:
    assert setup_kwargs["name"] == PKG
    installed = {(dest, Path(f).as_posix()) for dest, files in setup_kwargs["data_files"] for f in files}
    assert ("share/ament_index/resource_index/packages", f"resource/{PKG}") in installed
    assert (f"share/{PKG}", "package.xml") in installed
    expected = {(f"share/{PKG}/{sub}", f"{sub}/{p.name}")
                for sub, pattern in (("launch", "*.launch.py"), ("config", "*.yaml"), ("sim", "*.yaml"))
                for p in (ROOT / sub).glob(pattern)}
    assert {f"launch/{s}.launch.py" for s in stack.STACKS} <= {f for _, f in expected}
    missing = {(Path(d).as_posix(), f) for d, f in expected} - {(Path(d).as_posix(), f) for d, f in installed}
    assert not missing, f"not installed by setup.py data_files: {sorted(missing)}"
    # Every parameter file the stacks use is installed where the launch file looks (share dir).
    for s in stack.STACKS.values():
        for node in s.nodes:
            for rel in node.param_files:
                assert (f"share/{PKG}/{Path(rel).parent.as_posix()}", rel) in installed, rel


def test_console_scripts_resolve_to_callables(setup_kwargs) -> None:
    scripts = console_scripts(setup_kwargs)
    assert NODE_SCRIPTS | {"nfhiql-bringup", "nfhiql"} <= set(scripts)
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name
    for name in NODE_SCRIPTS:  # launch_ros starts the script, bringup `python -m` the module: the same main
        assert scripts[name] == f"{PKG}.{name}:main"
        assert 'if __name__ == "__main__":' in (ROOT / PKG / f"{name}.py").read_text()


# ---- parameter files → parameter dataclasses -------------------------------------------------------

def _dataclasses() -> dict:
    from nfhiql_ros.contract import ControllerParams, PlannerParams, SimParams

    return {"mujoco_sim": SimParams, "subgoal_planner": PlannerParams, "flow_controller": ControllerParams}


@pytest.mark.parametrize("name", sorted(stack.STACKS))
def test_parameter_file_keys_are_declared_parameters(name: str) -> None:
    """Every key of every block is a field of the dataclass of each node it applies to (no silent typos)."""
    import yaml

    classes = _dataclasses()
    fields = {node: {f.name for f in dataclasses.fields(cls)} for node, cls in classes.items()}
    policy = fields["subgoal_planner"] & fields["flow_controller"]
    blocks = yaml.safe_load((ROOT / stack.STACKS[name].config).read_text())
    assert set(blocks) == {"/**", "/**/mujoco_sim", "/**/subgoal_planner", "/**/flow_controller"}
    for key, block in blocks.items():
        params = set(block["ros__parameters"])
        allowed = policy if key == "/**" else fields[key.rsplit("/", 1)[1]]
        assert params <= allowed, f"{name} {key}: not parameters of that node: {sorted(params - allowed)}"


ALL_ARGUMENTS = {"mode": "realtime", "replan_every": "5", "rate_hz": "2", "control_period_s": "0.05",
                 "executor": "events", "command_output": "forward", "providers": "CPU", "tasks": "1,3",
                 "episodes_per_task": "2", "max_episode_steps": "10", "seed": "3", "interface": "vector"}


@pytest.mark.parametrize("name", sorted(stack.STACKS))
@pytest.mark.parametrize("arguments", [{}, ALL_ARGUMENTS], ids=["defaults", "all-arguments"])
def test_parameter_files_and_overrides_load_into_the_node_dataclasses(name: str, arguments: dict, tmp_path) -> None:
    """rclpy parses each node's `--ros-args` (files + `-p` overrides) exactly as at start-up; declaring
    the dataclass' parameters from them must work (ROS types match) and validate."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.node import Node

    from nfhiql_ros.params import declare_parameters

    classes = _dataclasses()
    bundle = tmp_path / "bundle"  # parameters only: the bundle is never opened here
    for launch in stack.plan(name, {**arguments, "bundle": str(bundle)}):
        context = rclpy.Context()
        rclpy.init(args=launch.ros_args(stack.write_override_file(launch, tmp_path)), context=context)
        try:
            node = Node(launch.name, context=context)
            values = declare_parameters(node, classes[launch.name])
            node.destroy_node()
        finally:
            rclpy.shutdown(context=context)
        got = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(values).items()}
        for key, value in launch.overrides.items():  # every override reaches the node...
            assert got[key] == value, (launch.name, key)
        for key, value in stack.effective_parameters(launch).items():  # ...and the files' values as predicted
            if key in got:
                assert got[key] == value, (launch.name, key)
        if launch.name == "flow_controller":
            assert values.trigger == ("timer" if arguments.get("mode") == "realtime" else "observation")
        if launch.name != "mujoco_sim":
            assert values.bundle == str(bundle)
        else:
            assert values.mode == (arguments.get("mode") or "lockstep") and values.exit_when_done
            assert values.env.startswith("cube-single" if name == "manipulation" else "pointmaze-medium")


def test_launch_files_use_no_other_runtime_imports() -> None:
    """Launch files (and the launch description they share) import only launch/launch_ros/
    ament_index (and lifecycle_msgs, for the managed nodes' transitions), the launch-free stack
    description and that shared description."""
    import ast

    allowed = {"launch", "launch_ros", "ament_index_python", "nfhiql_ros", "lifecycle_msgs"}
    for path in [*(ROOT / "launch").glob("*.launch.py"), ROOT / "nfhiql_ros" / "launch_stack.py"]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module.split(".")[0] in allowed, (path.name, node.module)
                if node.module == "nfhiql_ros":
                    assert [a.name for a in node.names] == ["stack"], path.name
                elif node.module.startswith("nfhiql_ros."):
                    assert node.module == "nfhiql_ros.launch_stack", path.name
            elif isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] in allowed | {"os", "tempfile"} for a in node.names), path.name
    # ...and the stack description itself needs neither rclpy nor launch (launch imports it).
    source = (ROOT / PKG / "stack.py").read_text()
    assert "import rclpy" not in source and "from launch" not in source
