"""Training runs: the loop, checkpoints, metrics, and export of a checkpoint to a policy bundle."""
