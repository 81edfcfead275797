"""Names of an OGBench env's observation and action components: what bundles record and the sim publishes."""
from __future__ import annotations

# Names of OGBench observation/action components, by env family (others get obs_0.., action_0..).
KNOWN_NAMES = {"pointmaze": (("x", "y"), ("dx", "dy"))}


def component_names(env_name: str | None, obs_dim: int, action_dim: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(observation names, action names) of an env: what bundles record and the sim publishes."""
    obs_names, action_names = KNOWN_NAMES.get((env_name or "").split("-")[0], (None, None))
    return (obs_names or tuple(f"obs_{i}" for i in range(obs_dim)),
            action_names or tuple(f"action_{i}" for i in range(action_dim)))
