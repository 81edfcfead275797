"""launch_ros description of an nfhiql stack, shared by launch/*.launch.py: arguments from
`stack.ARGUMENTS`, nodes from `stack.plan` (docs/design/stack.md); the managed planner and controller
are launch_ros LifecycleNodes, configured when their process starts and activated once configured
(unless `activate:=false`); the launch ends when the sim exits after its last episode. Needs
`launch`, `launch_ros` and `ament_index_python`."""
import tempfile

import lifecycle_msgs.msg
from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit, OnProcessStart
from launch.events import Shutdown, matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState

from launch import LaunchDescription
from nfhiql_ros import stack


def launch_nodes(context, stack_name: str):
    """The stack's nodes for the launch arguments as given (evaluated at launch time)."""
    share = get_package_share_directory(stack.PACKAGE)
    arguments = {a.name: LaunchConfiguration(a.name).perform(context) for a in stack.ARGUMENTS}
    overrides_dir = tempfile.mkdtemp(prefix="nfhiql_launch_")
    actions = []
    activate = stack.parse_bool("activate", arguments["activate"])
    for node in stack.plan(stack_name, arguments, base_dir=share):
        override_file = stack.write_override_file(node, overrides_dir)
        managed = node.name in stack.MANAGED
        action = (LifecycleNode if managed else Node)(
            package=stack.PACKAGE,
            executable=node.executable,
            name=node.name,
            **({"namespace": ""} if managed else {}),
            parameters=[*node.param_files, *([override_file] if override_file else [])],
            remappings=list(node.remappings),
            output="screen",
            emulate_tty=True,
        )
        actions.append(action)
        if managed:
            actions += lifecycle_handlers(action, activate)
        if node.name == "mujoco_sim":  # the run is over when the sim has run every episode
            actions.append(RegisterEventHandler(OnProcessExit(target_action=action, on_exit=[
                LogInfo(msg="mujoco_sim finished: shutting the stack down"),
                EmitEvent(event=Shutdown(reason="mujoco_sim finished")),
            ])))
    return actions


def transition(action: LifecycleNode, transition_id: int) -> EmitEvent:
    return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(action), transition_id=transition_id))


def lifecycle_handlers(action: LifecycleNode, activate: bool) -> list:
    """Configure the node when its process starts; activate it when configuring succeeded."""
    handlers = [RegisterEventHandler(OnProcessStart(target_action=action, on_start=[
        transition(action, lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE)]))]
    if activate:
        handlers.append(RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=action, start_state="configuring", goal_state="inactive",
            entities=[transition(action, lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE)])))
    return handlers


def stack_launch_description(stack_name: str) -> LaunchDescription:
    """Launch arguments from `stack.ARGUMENTS` and the stack's nodes from `stack.plan`."""
    return LaunchDescription([
        *[DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
          for a in stack.ARGUMENTS],
        OpaqueFunction(function=launch_nodes, args=[stack_name]),
    ])
