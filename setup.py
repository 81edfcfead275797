"""One setup.py for both Python packages, in the ament_python layout.

`pip install -e .` gives the `nfhiql` CLI; `colcon build` on a ROS 2 install uses the same file
(the data_files put package.xml, the resource marker, launch/ and config/ under share/).
"""
import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "nfhiql_ros"
# What the ROS 2 nodes need: rclpy and the message packages, from PyPI's ROS 2 wheels.
ROS = ["ros-rclpy", "ros-rmw-fastrtps-cpp", "ros-std-msgs", "ros-sensor-msgs", "ros-geometry-msgs",
       "ros-diagnostic-msgs", "ros-trajectory-msgs", "ros-std-srvs", "ros-lifecycle-msgs", "ros-action-msgs"]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Offline goal-conditioned RL with normalizing-flow hierarchical policies (NF-HIQL), "
    "deployed through ROS 2.",
    packages=find_packages(include=["nfhiql_core", "nfhiql_core.*", "nfhiql_ros", "nfhiql_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (os.path.join("share", PACKAGE, "launch"), glob("launch/*launch.[pxy][yma]*")),
        (os.path.join("share", PACKAGE, "config"), glob("config/*.yaml")),
        (os.path.join("share", PACKAGE, "config", "bags"), glob("config/bags/*.yaml")),
        (os.path.join("share", PACKAGE, "config", "robots"), glob("config/robots/*.yaml")),
        (os.path.join("share", PACKAGE, "config", "train"), glob("config/train/*.yaml")),
        (os.path.join("share", PACKAGE, "sim"), glob("sim/*.yaml")),
        *[(os.path.join("share", PACKAGE, os.path.dirname(path)), glob(os.path.join(os.path.dirname(path), "*")))
          for path in sorted(glob("bundles/*/bundle.json"))],
    ],
    python_requires=">=3.10",
    # The base install is what every part needs; each extra fits one place where nfhiql runs.
    install_requires=["numpy>=1.24", "pyyaml>=6", "tqdm>=4.60"],
    extras_require={
        # The robot: ONNX Runtime policies and the ROS 2 nodes that run them (no torch, no MuJoCo).
        "deploy": ["onnxruntime>=1.18", *ROS],
        # The robot with a CUDA GPU: the same with onnxruntime-gpu. Install deploy or deploy-gpu, never both.
        "deploy-gpu": ["onnxruntime-gpu>=1.19", *ROS],
        # The workstation: training, OGBench data and evaluation (MuJoCo comes with ogbench), ONNX export.
        # Any torch >= 2.4 works; the Makefile installs 2.13.0 (CPU) first through constraints.txt.
        "train": ["torch>=2.4", "ogbench>=1.1", "onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"],
        # rosbag2 files to datasets (`nfhiql bag2data`) without ROS; `nfhiql record` needs deploy too.
        "bags": ["rosbags>=0.11"],
        # Tests and plots; osrf-pycommon and lark are what the real `launch` (../shared/vendor/ros2_launch,
        # not on PyPI) needs for tests/test_launch.py.
        "dev": ["pytest>=8", "matplotlib>=3.7", "tensorboard>=2.14", "ruff==0.17.6", "import-linter==2.17",
                "osrf-pycommon>=2", "lark>=1.1"],
    },
    zip_safe=True,
    maintainer="nfhiql developers",
    maintainer_email="nfhiql@example.com",
    license="Apache-2.0",
    entry_points={"console_scripts": [
        "nfhiql = nfhiql_core.cli:main",
        "subgoal_planner = nfhiql_ros.subgoal_planner:main",
        "flow_controller = nfhiql_ros.flow_controller:main",
        "mujoco_sim = nfhiql_ros.mujoco_sim:main",
        "nfhiql-bringup = nfhiql_ros.bringup:main",
        "recorder = nfhiql_ros.recorder:main",
        "teleop = nfhiql_ros.teleop:main",
    ], "nfhiql.bench": [
        "ros = nfhiql_ros.bench_ros:register",
    ], "nfhiql.commands": [
        "record = nfhiql_ros.recording:register",
    ]},
)
