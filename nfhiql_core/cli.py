"""`nfhiql` command line: one verb per job (datagen, train, eval, plot, bench)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from nfhiql_core.errors import NfhiqlError


def _datagen(args: argparse.Namespace) -> None:
    from nfhiql_core.datagen import generate_dataset

    path = generate_dataset(args.env, args.episodes, args.seed, args.output, workers=args.workers,
                            max_episode_steps=args.max_episode_steps, noise=args.noise,
                            dataset_type=args.dataset_type, force=args.force, progress=not args.quiet)
    print(f"wrote {path}")


def _train(args: argparse.Namespace) -> None:
    from nfhiql_core.train import load_train_config, train

    config = load_train_config(args.config, args.overrides)
    path = train(config, resume=args.resume, force=args.force, progress=not args.quiet)
    print(f"checkpoint: {path}")


def _eval(args: argparse.Namespace) -> None:
    import torch

    from nfhiql_core.evaluation import evaluate, write_result
    from nfhiql_core.agent import TorchPolicy
    from nfhiql_core.checkpoint import load_checkpoint
    from nfhiql_core.train import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device)
    env = args.env or ckpt.config.get("env")
    if not env:
        raise NfhiqlError(f"{args.checkpoint}: no env recorded in the checkpoint; pass --env")
    agent = ckpt.build_agent(device).eval()
    result = evaluate(TorchPolicy(agent, args.temperature, args.seed), env, episodes_per_task=args.episodes,
                      seed=args.seed, num_envs=args.num_envs, video_path=args.video, progress=not args.quiet)
    if args.json:
        write_result(result, args.json)
    summary = {"env": result.env_name, "step": ckpt.step, "success": round(result.success, 4),
               "ci95": round(result.ci95, 4), "per_task": result.per_task_success,
               "episodes_per_task": result.episodes_per_task, "wall_time_s": round(result.wall_time_s, 1)}
    print(json.dumps(summary))


def _bench_train(args: argparse.Namespace) -> None:
    from nfhiql_core.bench import bench_train

    bench_train(args.configs, steps=args.steps, warmup=args.warmup, threads=args.threads, device=args.device)


def _plot(args: argparse.Namespace) -> None:
    from nfhiql_core.plots import plot_runs

    print(f"wrote {plot_runs(args.run_dirs, args.output)}")


def build_parser() -> argparse.ArgumentParser:
    """The full `nfhiql` argument parser."""
    parser = argparse.ArgumentParser(prog="nfhiql", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("datagen", help="generate an OGBench-format dataset with ogbench's envs and oracles")
    p.add_argument("env", help="dataset name, e.g. pointmaze-medium-navigate or cube-single-play")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--max-episode-steps", type=int, default=None, help="default: OGBench's for the dataset")
    p.add_argument("--noise", type=float, default=None, help="default: OGBench's for the dataset")
    p.add_argument("--dataset-type", default=None, help="default: from the name (navigate/stitch/play)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_datagen)

    p = sub.add_parser("train", help="train an agent from a YAML recipe")
    p.add_argument("--config", required=True)
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. agent.policy=gaussian")
    p.add_argument("--resume", action="store_true", help="continue from run_dir/checkpoint.pt")
    p.add_argument("--force", action="store_true", help="delete a non-empty run_dir and start over")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint with the OGBench protocol")
    p.add_argument("checkpoint")
    p.add_argument("--env", default=None, help="default: the env in the checkpoint's recipe")
    p.add_argument("--episodes", type=int, default=50, help="episodes per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-envs", type=int, default=None, help="envs stepped in lockstep (default: episodes)")
    p.add_argument("--temperature", type=float, default=0.0, help="policy noise scale (0 = deterministic)")
    p.add_argument("--json", default=None, help="write the full result (per episode) here")
    p.add_argument("--video", default=None, help="render one extra task-1 episode to this .gif/.mp4")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (small batched nets: 1 is fastest)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_eval)

    p = sub.add_parser("plot", help="learning curves (eval success, losses) of one or more runs")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("-o", "--output", default="curves.png")
    p.set_defaults(func=_plot)

    p = sub.add_parser("bench", help="benchmarks that print numbers")
    bench = p.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("train", help="training throughput (grad steps/s), flow vs Gaussian")
    b.add_argument("--configs", nargs="+", default=["config/train/pointmaze-medium-navigate-full.yaml",
                                                    "config/train/pointmaze-medium-navigate-cpu.yaml"])
    b.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    b.add_argument("--device", default="auto")
    b.set_defaults(func=_bench_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nfhiql` console script."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except NfhiqlError as exc:
        print(f"nfhiql: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
