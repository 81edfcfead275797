"""Steps/s of OGBench's own JAX HIQL update at its full-size config, for side-by-side comparison with
`nfhiql bench train` in the same run (compare speeds only within one run: the CPU varies).

OGBench's `impls/` is not part of this project: fetch it (github.com/seohongpark/ogbench, `impls/`) into a
directory and install its requirements (jax[cpu], flax, optax, distrax, ml_collections) into a separate
venv. Each timed step is what its `main.py` does per step: `HGCDataset.sample(1024)` + `agent.update`.

    JAXVENV/bin/python benchmarks/jax_hiql_step.py IMPLS_DIR data/pointmaze-medium-navigate-v0.npz [STEPS] [WARMUP]

One thread: XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" taskset -c 0 ...
"""
import sys
import time

import numpy as np

impls, path = sys.argv[1], sys.argv[2]
steps, warmup = (int(sys.argv[3]) if len(sys.argv) > 3 else 15), (int(sys.argv[4]) if len(sys.argv) > 4 else 3)
sys.path.insert(0, impls)
import jax  # noqa: E402
from agents.hiql import HIQLAgent, get_config  # noqa: E402
from utils.datasets import Dataset, HGCDataset  # noqa: E402

with np.load(path) as d:  # OGBench's raw layout, read as ogbench.load_dataset does
    obs, act, term = (d[k].astype(np.float32) for k in ("observations", "actions", "terminals"))
keep = term == 0  # a trajectory's last state has no next state
following = np.concatenate([[False], keep[:-1]])
n = int(keep.sum())
data = dict(observations=obs[keep], next_observations=obs[following], actions=act[keep],
            terminals=np.concatenate([term[1:], [1.0]])[keep], masks=np.ones(n, np.float32),
            rewards=np.zeros(n, np.float32))
config = get_config()
dataset = HGCDataset(Dataset.create(**data), config)
example = dataset.sample(1)
agent = HIQLAgent.create(0, example["observations"], example["actions"], config)
info = None
for k in range(warmup + steps):
    if k == warmup:
        jax.block_until_ready(info)
        start = time.perf_counter()
    agent, info = agent.update(dataset.sample(config["batch_size"]))
jax.block_until_ready(info)
seconds = time.perf_counter() - start
print(f"OGBench JAX HIQL (full size: batch {config['batch_size']}, actor/value {config['actor_hidden_dims']}), "
      f"jax {jax.__version__}: {steps / seconds:.2f} steps/s ({steps} steps, {seconds:.1f} s)")
