"""The robot interface specs shipped in config/robots/, and which OGBench env each stands for."""
from __future__ import annotations

from pathlib import Path

from nfhiql_core.interface.spec import InterfaceSpec, load_spec

ROBOTS_DIR = Path(__file__).resolve().parents[2] / "config" / "robots"
# env name prefix → the spec whose observation is that env's own (tests/test_interface.py checks it)
ENV_SPECS = {"cube-single": "ur5e-robotiq-cube.yaml", "pointmaze": "pointmaze.yaml"}


def env_spec_path(env_name: str | None) -> Path | None:
    """The shipped spec of an env (None: the env has none, or this install has no config/robots)."""
    for prefix, file in ENV_SPECS.items():
        if (env_name or "").startswith(prefix) and (ROBOTS_DIR / file).is_file():
            return ROBOTS_DIR / file
    return None


def env_spec(env_name: str | None) -> InterfaceSpec | None:
    path = env_spec_path(env_name)
    return None if path is None else load_spec(path)
