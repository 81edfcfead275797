"""Offline datasets: the OGBench layout, HIQL's goal sampler, dataset generation with OGBench's oracles."""
