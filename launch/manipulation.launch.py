"""Manipulation stack: mujoco_sim (cube-single, UR5e stand-in) + subgoal_planner + flow_controller.

    ros2 launch nfhiql_ros manipulation.launch.py                       # lockstep sim, shipped bundle
    ros2 launch nfhiql_ros manipulation.launch.py bundle:=/path/to/bundle mode:=realtime
    ros2 launch nfhiql_ros manipulation.launch.py sim:=false command_output:=forward   # a real arm
    ros2 launch nfhiql_ros manipulation.launch.py --show-args

The nodes and arguments come from `nfhiql_ros.stack` via `nfhiql_ros.launch_stack`.
"""
from nfhiql_ros.launch_stack import stack_launch_description

STACK = "manipulation"


def generate_launch_description():
    return stack_launch_description(STACK)
