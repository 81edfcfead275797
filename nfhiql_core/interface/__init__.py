"""The robot interface: which topics make up the observation and which commands carry the action;
one spec, offline (bag2data) and live (the policy nodes)."""
