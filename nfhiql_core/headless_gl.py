"""Imported before MuJoCo (through ogbench): headless EGL rendering unless MUJOCO_GL says otherwise.

MuJoCo picks its OpenGL backend when it is first imported. EGL works on CPU-only machines and
servers; export MUJOCO_GL=glfw for a display. Only the modules that build MuJoCo envs import this,
so importing `nfhiql_core` (a robot does) leaves the environment alone.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")
