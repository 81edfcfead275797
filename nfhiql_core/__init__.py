"""nfhiql_core: NF-HIQL learning library (flows, agent, datasets, training, evaluation).

Pure Python + torch + numpy; never imports ROS.
"""

import os

# MuJoCo picks its OpenGL backend when it is first imported (by ogbench). Headless EGL works on
# CPU-only machines and servers; export MUJOCO_GL=glfw before importing nfhiql for a display.
os.environ.setdefault("MUJOCO_GL", "egl")

__version__ = "0.1.0"
