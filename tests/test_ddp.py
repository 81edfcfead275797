"""DDP under torchrun (gloo, 2 CPU processes, tiny nets): losses equal a one-process run on the same global
batch, identical state on every rank, rank-0-only outputs, a killed rank fails the run and --resume
continues it exactly, and a run resumes with another number of processes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from recipes import make_dataset, write_recipe
from test_train import assert_same_checkpoint, assert_same_losses

from nfhiql_core.algo.agent import HIQLAgent
from nfhiql_core.data.dataset import load_dataset
from nfhiql_core.data.goal_sampler import HierarchicalGoalSampler
from nfhiql_core.training.checkpoint import load_checkpoint
from nfhiql_core.training.distributed import seed_rank
from nfhiql_core.training.metrics import read_csv
from nfhiql_core.training.train import load_train_config, train

WORKER = str(Path(__file__).with_name("ddp_worker.py"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
    [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
TIMEOUT = 300  # s, per launch: generous for a loaded 2-core machine; a hung rank fails the test
STEPS, BATCH, RANKS = 40, 16, 2
# No flow target noise: torch's RNG then plays no part in an update, so the one-process reference that
# samples both ranks' shards computes exactly what the two ranks do.
RECIPE = {"log_interval": 5, "batch_size": BATCH}


def torchrun(*args: str, env: dict[str, str] | None = None, nproc: int = RANKS) -> subprocess.CompletedProcess:
    """`nfhiql train ARGS` in `nproc` processes through the test worker."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", WORKER,
               "train", "--quiet", *args]
    return subprocess.run(command, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=TIMEOUT)


def nfhiql_nproc(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "nfhiql_core.cli", "train", "--nproc", str(RANKS), "--quiet", *args]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """Dataset, recipe and reference DDP run A: 40 steps straight on 2 ranks (checkpoint every 10)."""
    root = tmp_path_factory.mktemp("ddp")
    recipe = write_recipe(root / "recipe.yaml", root / "A", make_dataset(root / "walk.npz"), **RECIPE)
    text = recipe.read_text().replace("subgoal_steps: 5", "subgoal_steps: 5\n  flow_noise_std: 0.0")
    recipe.write_text(text)
    result = torchrun("--config", str(recipe), env={"NFHIQL_TEST_SAME_STATE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]  # 3: the ranks' states differ
    return recipe, root / "A"


def test_only_rank_0_writes_the_run(ddp):
    _, run = ddp
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert [f for f in files if not f.startswith("tensorboard/")] == \
        ["checkpoint.pt", "config.yaml", "dataset.json", "train.csv"]
    assert len([f for f in files if f.startswith("tensorboard/")]) == 1
    assert [r["step"] for r in read_csv(run / "train.csv")] == list(range(5, STEPS + 1, 5))  # each row once
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt.step == STEPS and len(ckpt.rank_rngs) == RANKS - 1


def test_losses_equal_one_process_on_the_same_global_batch(ddp):
    recipe, run = ddp
    config = load_train_config(recipe)
    dataset = load_dataset(config.dataset.path)
    sampler = HierarchicalGoalSampler(dataset, config.sampler_config())
    torch.manual_seed(config.seed)
    agent = HIQLAgent(config.agent, dataset.obs_dim, dataset.action_dim, STEPS)
    rngs = [seed_rank(config.seed, rank) for rank in range(RANKS)]
    rows = []
    for step in range(1, STEPS + 1):
        shards = [sampler.sample(BATCH // RANKS, rng) for rng in rngs]
        info = agent.update(agent.batch_to_tensors({k: np.concatenate([s[k] for s in shards]) for k in shards[0]}))
        if step % config.train.log_interval == 0:
            rows.append({"step": float(step), **{k: v.item() for k, v in info.items()}})
    logged = read_csv(run / "train.csv")
    assert len(logged) == len(rows)
    for want, got in zip(rows, logged):
        got.pop("steps_per_s")
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-5), (want["step"], key)
    final = load_checkpoint(run / "checkpoint.pt").model
    for key, value in agent.state_dict().items():
        torch.testing.assert_close(final[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_ddp_of_one_process_equals_training_without_it(ddp, tmp_path):
    recipe, _ = ddp
    alone, ddp_one = tmp_path / "alone", tmp_path / "ddp-one"
    train(load_train_config(recipe, [f"run_dir={alone}"]), progress=False)
    result = torchrun("--config", str(recipe), f"run_dir={ddp_one}", nproc=1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_checkpoint(alone / "checkpoint.pt", ddp_one / "checkpoint.pt", STEPS)
    assert_same_losses(alone / "train.csv", ddp_one / "train.csv")


def test_killed_rank_fails_the_run_and_resume_continues_it_exactly(ddp, tmp_path):
    recipe, run_a = ddp
    run = tmp_path / "B"
    killed = torchrun("--config", str(recipe), f"run_dir={run}", env={"NFHIQL_TEST_KILL": "1:28"})
    assert killed.returncode != 0
    assert load_checkpoint(run / "checkpoint.pt").step == 20  # intact: the last one before the kill
    assert [r["step"] for r in read_csv(run / "train.csv")][-1] == 25  # logged work the kill lost
    shutil.copytree(run, tmp_path / "B-copy")

    resumed = nfhiql_nproc("--config", str(recipe), f"run_dir={run}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.strip() == f"checkpoint: {run / 'checkpoint.pt'}"
    assert_same_checkpoint(run_a / "checkpoint.pt", run / "checkpoint.pt", STEPS)
    assert_same_losses(run_a / "train.csv", run / "train.csv")

    # The same crashed run resumed by one process: rank 0's stream goes on, the run completes once.
    one = tmp_path / "B-copy"
    train(load_train_config(recipe, [f"run_dir={one}"]), resume=True, progress=False)
    assert load_checkpoint(one / "checkpoint.pt").step == STEPS
    assert [r["step"] for r in read_csv(one / "train.csv")] == list(range(5, STEPS + 1, 5))


def test_one_process_run_resumes_on_two(ddp, tmp_path):
    recipe, _ = ddp
    run = tmp_path / "C"
    train(load_train_config(recipe, [f"run_dir={run}", "train.steps=20"]), progress=False)
    resumed = nfhiql_nproc("--config", str(recipe), f"run_dir={run}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt.step == STEPS and len(ckpt.rank_rngs) == RANKS - 1  # rank 1 got a fresh stream at step 20
    assert [r["step"] for r in read_csv(run / "train.csv")] == list(range(5, STEPS + 1, 5))


def test_nproc_refuses_a_batch_the_ranks_cannot_split(ddp, tmp_path):
    recipe, _ = ddp
    result = subprocess.run([sys.executable, "-m", "nfhiql_core.cli", "train", "--config", str(recipe), "--nproc", "3",
                             f"run_dir={tmp_path / 'D'}"], env=ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == "nfhiql: error: train.batch_size (16) must be divisible by the number of training " \
                            "processes (3)\n"
    assert not (tmp_path / "D").exists()
