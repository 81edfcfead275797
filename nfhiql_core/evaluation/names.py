"""Names of an OGBench env's observation and action components: what bundles record and the sim publishes."""
from __future__ import annotations

from nfhiql_core.interface.robots import env_spec


def component_names(env_name: str | None, obs_dim: int, action_dim: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(observation names, action names) of an env: its shipped robot interface spec's (config/robots/),
    else obs_0.., action_0.."""
    spec = env_spec(env_name)
    if spec is not None and len(spec.observation_names) == obs_dim and len(spec.action_names) == action_dim:
        return tuple(spec.observation_names), tuple(spec.action_names)
    return tuple(f"obs_{i}" for i in range(obs_dim)), tuple(f"action_{i}" for i in range(action_dim))
