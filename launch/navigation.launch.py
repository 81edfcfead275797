"""Navigation stack: mujoco_sim (pointmaze-medium, mobile-base stand-in) + subgoal_planner + flow_controller.

    ros2 launch nfhiql_ros navigation.launch.py                       # lockstep sim, shipped bundle
    ros2 launch nfhiql_ros navigation.launch.py bundle:=/path/to/bundle mode:=realtime
    ros2 launch nfhiql_ros navigation.launch.py sim:=false   # a real robot
    ros2 launch nfhiql_ros navigation.launch.py --show-args

The nodes and arguments come from `nfhiql_ros.stack` via `nfhiql_ros.launch_stack`.
"""
from nfhiql_ros.launch_stack import stack_launch_description

STACK = "navigation"


def generate_launch_description():
    return stack_launch_description(STACK)
