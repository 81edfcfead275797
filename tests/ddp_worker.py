"""A torchrun worker for test_ddp: `nfhiql train` (argv) with two test hooks set by environment variables.

NFHIQL_TEST_KILL=RANK:UPDATE  that rank SIGKILLs itself just before its UPDATE-th update (1-based).
NFHIQL_TEST_SAME_STATE=1      after the last step every rank's full agent state (model, target value,
                              optimizer) is gathered, and rank 0 exits with status 3 unless they are identical.
"""
import os
import signal
import sys

import torch
import torch.distributed as dist

import nfhiql_core.training.train as train_module
from nfhiql_core.algo.agent import HIQLAgent
from nfhiql_core.cli import main

RANK = int(os.environ["RANK"])

if "NFHIQL_TEST_KILL" in os.environ:
    kill_rank, kill_at = map(int, os.environ["NFHIQL_TEST_KILL"].split(":"))
    if RANK == kill_rank:
        update, calls = HIQLAgent.update, [0]

        def update_or_die(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return update(self, *args, **kwargs)

        HIQLAgent.update = update_or_die

if os.environ.get("NFHIQL_TEST_SAME_STATE"):
    loop = train_module._train_loop

    def loop_then_compare(agent, *args, **kwargs):
        loop(agent, *args, **kwargs)
        state = {"model": agent.state_dict(), "optimizer": agent.optimizer.state_dict()["state"]}
        states = [None] * dist.get_world_size()
        dist.all_gather_object(states, state)
        flat = [torch.cat([t.float().flatten() for t in _tensors(s)]) for s in states]
        if RANK == 0 and not all(torch.equal(flat[0], f) for f in flat[1:]):
            sys.exit(3)

    def _tensors(tree):
        if isinstance(tree, torch.Tensor):
            return [tree]
        return [t for key in sorted(tree) for t in _tensors(tree[key])] if isinstance(tree, dict) else []

    train_module._train_loop = loop_then_compare

sys.exit(main(sys.argv[1:]))
