"""Experiment grids, the multimodality study and plots."""
