"""Node parameters as ROS users expect them: described, read-only, and the command line wins.

`flow_controller` runs as a real process on the shipped cube bundle with the stack's own parameter
file, on an isolated ROS_DOMAIN_ID; the test talks to its standard parameter services over DDS.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters  # noqa: E402

from nfhiql_ros.contract import ControllerParams, PlannerParams, SimParams, TeleopParams  # noqa: E402
from nfhiql_ros.params import command_line_parameters, descriptor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = iter(random.Random(os.getpid()).sample(range(113, 125), 3))
SERVICE_TIMEOUT_S = 60.0  # discovery and start-up of a fresh process on a loaded machine


def test_command_line_parameters_parse_only_ros_args_sections() -> None:
    args = ["prog", "-p", "x:=1", "--ros-args", "-r", "__node:=n", "-p", "command_output:=forward",
            "--param", "tasks:=[0, 1, 2, -1, -1, -1]", "-p", "ratio:=0.5", "-p", "flag:=true", "--",
            "-p", "ignored:=1"]
    got = {p.name: p.value for p in command_line_parameters(args)}
    assert got == {"command_output": "forward", "tasks": [0, 1, 2, -1, -1, -1], "ratio": 0.5, "flag": True}


@pytest.mark.parametrize("params_cls", [ControllerParams, PlannerParams, SimParams, TeleopParams])
def test_every_parameter_has_a_description_and_is_read_only(params_cls: type) -> None:
    import dataclasses
    for field in dataclasses.fields(params_cls):
        d = descriptor(field)
        assert d.description, f"{params_cls.__name__}.{field.name} has no description"
        assert d.read_only, f"{params_cls.__name__}.{field.name}: no node re-reads a parameter after start-up"
    ranges = {f.name: descriptor(f) for f in dataclasses.fields(ControllerParams)}
    assert ranges["subgoal_wait_s"].floating_point_range[0].to_value == 60.0
    assert "one of: sim, forward" in ranges["command_output"].additional_constraints


def _call(node, executor, client, request):
    future = client.call_async(request)
    executor.spin_until_future_complete(future, timeout_sec=SERVICE_TIMEOUT_S)
    assert future.done(), f"{client.srv_name}: no answer"
    return future.result()


def test_command_line_beats_the_parameter_file_and_read_only_is_refused(tmp_path: Path) -> None:
    """`-p command_output:=forward` with `--params-file config/manipulation.yaml` (whose
    `/**/flow_controller` block says `sim`) is what the node runs with; describe explains a
    parameter; setting a read-only one is refused with a reason."""
    domain = next(DOMAINS)
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nfhiql_ros.flow_controller", "--ros-args", "-r", "__ns:=/params_test",
         "--params-file", str(ROOT / "config/manipulation.yaml"), "-p", "command_output:=forward",
         "-p", "interface:=''",
         "-p", f"bundle:={ROOT / 'bundles/cube-single-play'}", "-p", "providers:=[CPUExecutionProvider]"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    try:
        node = rclpy.create_node("param_client", context=context)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        base = "/params_test/flow_controller"
        get = node.create_client(GetParameters, f"{base}/get_parameters")
        describe = node.create_client(DescribeParameters, f"{base}/describe_parameters")
        set_ = node.create_client(SetParameters, f"{base}/set_parameters")
        for client in (get, describe, set_):
            assert client.wait_for_service(timeout_sec=SERVICE_TIMEOUT_S), f"{client.srv_name} never appeared"

        values = _call(node, executor, get, GetParameters.Request(names=["command_output", "trigger"])).values
        assert [v.string_value for v in values] == ["forward", "observation"]

        (d,) = _call(node, executor, describe, DescribeParameters.Request(names=["command_output"])).descriptors
        assert d.read_only and "forward command controller" in d.description and d.additional_constraints

        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="sim")
        (result,) = _call(node, executor, set_, SetParameters.Request(
            parameters=[ParameterMsg(name="command_output", value=value)])).results
        assert not result.successful and "read-only" in result.reason
        values = _call(node, executor, get, GetParameters.Request(names=["command_output"])).values
        assert values[0].string_value == "forward"
    finally:
        rclpy.shutdown(context=context)
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert "output forward" in output, output
