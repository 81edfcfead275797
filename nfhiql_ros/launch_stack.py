"""launch_ros description of an nfhiql stack, shared by launch/*.launch.py: arguments from
`stack.ARGUMENTS`, nodes from `stack.plan` (docs/design/stack.md); the launch ends when the sim
exits after its last episode. Needs `launch`, `launch_ros` and `ament_index_python`."""
import tempfile

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from nfhiql_ros import stack


def launch_nodes(context, stack_name: str):
    """The stack's nodes for the launch arguments as given (evaluated at launch time)."""
    share = get_package_share_directory(stack.PACKAGE)
    arguments = {a.name: LaunchConfiguration(a.name).perform(context) for a in stack.ARGUMENTS}
    overrides_dir = tempfile.mkdtemp(prefix="nfhiql_launch_")
    actions = []
    for node in stack.plan(stack_name, arguments, base_dir=share):
        override_file = stack.write_override_file(node, overrides_dir)
        action = Node(
            package=stack.PACKAGE,
            executable=node.executable,
            name=node.name,
            parameters=[*node.param_files, *([override_file] if override_file else [])],
            remappings=list(node.remappings),
            output="screen",
            emulate_tty=True,
        )
        actions.append(action)
        if node.name == "mujoco_sim":  # the run is over when the sim has run every episode
            actions.append(RegisterEventHandler(OnProcessExit(target_action=action, on_exit=[
                LogInfo(msg="mujoco_sim finished: shutting the stack down"),
                EmitEvent(event=Shutdown(reason="mujoco_sim finished")),
            ])))
    return actions


def stack_launch_description(stack_name: str) -> LaunchDescription:
    """Launch arguments from `stack.ARGUMENTS` and the stack's nodes from `stack.plan`."""
    return LaunchDescription([
        *[DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
          for a in stack.ARGUMENTS],
        OpaqueFunction(function=launch_nodes, args=[stack_name]),
    ])
