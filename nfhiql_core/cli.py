"""`nfhiql` command line: one verb per job (datagen, expert, bag2data, dataset, train, eval, export,
calibrate-progress, experiment, plot, modes, bench; `record` comes from nfhiql_ros through the
`nfhiql.commands` entry points)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from nfhiql_core.errors import NfhiqlError

if TYPE_CHECKING:
    from nfhiql_core.evaluation.protocol import EvalResult
    from nfhiql_core.training.train import TrainConfig


def _datagen(args: argparse.Namespace) -> None:
    from nfhiql_core.data.datagen import generate_dataset

    check = {"min_goal_rate": None} if args.allow_weak_expert else (
        {} if args.min_goal_rate is None else {"min_goal_rate": args.min_goal_rate})
    path = generate_dataset(args.env, args.episodes, args.seed, args.output, workers=args.workers,
                            max_episode_steps=args.max_episode_steps, noise=args.noise,
                            dataset_type=args.dataset_type, expert=args.expert, force=args.force,
                            progress=not args.quiet, **check)
    print(f"wrote {path}")


def _expert_ant(args: argparse.Namespace) -> None:
    from nfhiql_core.training.expert import load_expert_config, train_expert

    config = load_expert_config(args.config, args.overrides)
    print(f"expert: {train_expert(config, resume=args.resume, force=args.force, progress=not args.quiet)}")


def _bag2data(args: argparse.Namespace) -> None:
    from nfhiql_core.bags.bag2data import bag2data

    print(bag2data(args.bags, args.spec, args.output, overrides=args.set, force=args.force,
                   progress=not args.quiet).report())


def _train(args: argparse.Namespace) -> None:
    from nfhiql_core.training.distributed import World
    from nfhiql_core.training.train import load_train_config, train

    config = load_train_config(args.config, args.overrides)
    if args.nproc is not None:
        return _torchrun_train(args, config)
    path = train(config, resume=args.resume, force=args.force, progress=not args.quiet)
    if World.from_env().is_main:
        print(f"checkpoint: {path}")


def _torchrun_train(args: argparse.Namespace, config: "TrainConfig") -> None:
    """`nfhiql train --nproc N`: this same command, without --nproc, in N processes under torchrun."""
    from nfhiql_core.training.distributed import World

    if args.nproc >= 1:  # else _torchrun refuses it
        World(size=args.nproc).shard_size(config.train.batch_size)  # an uneven split, before launching
    flags = [flag for flag, on in (("--resume", args.resume), ("--force", args.force), ("--quiet", args.quiet)) if on]
    _torchrun(args.nproc, ["train", "--config", args.config, *flags, *args.overrides])


def _torchrun(nproc: int, command: Sequence[str]) -> None:
    """`nfhiql COMMAND` in `nproc` processes on this machine: `python -m torch.distributed.run --standalone`."""
    import subprocess

    if nproc < 1:
        raise NfhiqlError(f"--nproc must be >= 1, got {nproc}")
    status = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc-per-node={nproc}", "-m", "nfhiql_core.cli", *command]).returncode
    if status:
        raise NfhiqlError(f"torchrun: nfhiql {command[0]} failed (exit status {status}); the failing rank's error "
                          "is above")


def _dataset_convert(args: argparse.Namespace) -> None:
    from nfhiql_core.data.convert import convert_npz

    dataset = convert_npz(args.npz, args.output, force=args.force, progress=not args.quiet)
    print(json.dumps({"dataset": args.output, "rows": len(dataset), "trajectories": dataset.num_trajectories,
                      "obs_dim": dataset.obs_dim, "action_dim": dataset.action_dim}))


def _eval(args: argparse.Namespace) -> None:
    import torch

    from nfhiql_core.algo.agent import TorchPolicy
    from nfhiql_core.evaluation.protocol import evaluate
    from nfhiql_core.interface.spec import load_spec
    from nfhiql_core.training.checkpoint import load_checkpoint
    from nfhiql_core.training.train import resolve_device

    if Path(args.checkpoint).is_dir():
        if args.subgoal_candidates is not None:
            raise NfhiqlError("--subgoal-candidates: checkpoints only (value-guided subgoals are not in bundles)")
        return _eval_bundle(args)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.checkpoint, device)
    env = args.env or ckpt.config.get("env")
    if not env:
        raise NfhiqlError(f"{args.checkpoint}: no env recorded in the checkpoint; pass --env")
    agent = ckpt.build_agent(device).eval()
    candidates = (ckpt.config.get("train", {}).get("eval_subgoal_candidates", 1) if args.subgoal_candidates is None
                  else args.subgoal_candidates)
    interface = load_spec(args.interface) if args.interface else None
    result = evaluate(TorchPolicy(agent, args.temperature, args.seed, candidates), env,
                      episodes_per_task=args.episodes, seed=args.seed, num_envs=args.num_envs, video_path=args.video,
                      progress=not args.quiet, interface=interface)
    _report_eval(args, result, ckpt.step, subgoal_candidates=candidates)


def _eval_bundle(args: argparse.Namespace) -> None:
    from nfhiql_core.deploy.runtime import DEFAULT_PROVIDERS, PolicyRuntime
    from nfhiql_core.evaluation.bundle_eval import evaluate_bundle
    from nfhiql_core.interface.spec import load_spec

    runtime = PolicyRuntime(args.checkpoint, args.providers or DEFAULT_PROVIDERS, args.require_provider,
                            intra_op_threads=args.threads, temperature=args.temperature, seed=args.seed)
    if args.interface == "bundle":
        interface = runtime.metadata.interface_spec()
        if interface is None:
            raise NfhiqlError(f"{args.checkpoint}: --interface bundle: the bundle carries no robot interface")
    else:
        interface = load_spec(args.interface) if args.interface else None
    extra: dict[str, object] = {}
    partial = None
    if args.goal_fields:
        from nfhiql_core.control.goals import GoalBook, data_range_from

        meta = runtime.metadata
        if meta.interface_spec() is None:
            raise NfhiqlError(f"{args.checkpoint}: --goal-fields: the bundle carries no robot interface")
        book = GoalBook(meta.goal_names, meta.interface_spec(), data_range_from(meta.data_range, meta.goal_dim),
                        range_margin=args.goal_range_margin)
        partial = (book, args.goal_fields)
        extra = {"goal_fields": args.goal_fields, "goal_fill": meta.interface_spec().goal_fill}
    result = evaluate_bundle(runtime, args.env, args.replan_every, episodes_per_task=args.episodes, seed=args.seed,
                             num_envs=args.num_envs, video_path=args.video, progress=not args.quiet,
                             interface=interface, goal_fields=partial)
    _report_eval(args, result, runtime.metadata.step, replan_every=args.replan_every, providers=runtime.providers,
                 **extra)


def _report_eval(args: argparse.Namespace, result: "EvalResult", step: int, **extra: object) -> None:
    from nfhiql_core.evaluation.protocol import write_result

    if args.json:
        write_result(result, args.json)
    summary = {"env": result.env_name, "step": step, **extra, "success": round(result.success, 4),
               "ci95": round(result.ci95, 4), "per_task": result.per_task_success,
               "episodes_per_task": result.episodes_per_task, "wall_time_s": round(result.wall_time_s, 1)}
    if result.interface_max_action_error is not None:
        summary["interface_max_action_error"] = result.interface_max_action_error
    print(json.dumps(summary))


def _export(args: argparse.Namespace) -> None:
    from nfhiql_core.training.export import export_bundle

    tolerances = {name: value for name, value in (("atol", args.atol), ("rtol", args.rtol)) if value is not None}
    meta = export_bundle(args.checkpoint, args.output, env=args.env, control_period_s=args.control_period,
                         force=args.force, interface=args.interface, **tolerances)
    print(json.dumps({"bundle": args.output, "env": meta.env, "step": meta.step, "policy": meta.policy,
                      "subgoal_space": meta.subgoal_space, "control_period_s": meta.control_period_s,
                      "parity_max_abs_diff": meta.parity.max_abs_diff,
                      "interface": "none" if meta.interface is None else "embedded",
                      "value": "none" if meta.value is None else meta.value.file}))


def _calibrate_progress(args: argparse.Namespace) -> None:
    from nfhiql_core.analysis.progress_calibration import calibrate_progress, format_report
    from nfhiql_core.config import from_dict, load_yaml
    from nfhiql_core.control.progress import ProgressConfig

    config = from_dict(ProgressConfig, load_yaml(args.config), args.config) if args.config else ProgressConfig()
    report = calibrate_progress(args.bundle, args.output, args.episodes, args.seed, args.stall_times, config,
                                env=args.env, replan_every=args.replan_every, providers=args.providers,
                                force=args.force, task_ids=args.tasks, num_envs=args.num_envs,
                                max_steps=args.max_steps, progress=not args.quiet)
    print(format_report(report))
    print(f"wrote {Path(args.output) / report['figure']} and {Path(args.output) / 'calibration.json'}")


def _bundle_interface(args: argparse.Namespace) -> None:
    from nfhiql_core.deploy.bundle import attach_interface
    from nfhiql_core.interface.spec import load_spec

    meta = attach_interface(args.bundle, load_spec(args.spec))
    print(json.dumps({"bundle": args.bundle, "interface": args.spec, "observation": len(meta.observation_names),
                      "action": list(meta.action_names)}))


def _bench_inference(args: argparse.Namespace) -> None:
    from nfhiql_core.bench.inference import bench_inference

    bench_inference(args.bundle, calls=args.calls, warmup=args.warmup, checkpoint=args.checkpoint,
                    providers=args.providers, threads=args.threads)


def _bench_assembly(args: argparse.Namespace) -> None:
    from nfhiql_core.bench.assembly import bench_assembly, format_rows

    print(format_rows(bench_assembly(args.bundle, calls=args.calls, warmup=args.warmup)))


def _bench_replan(args: argparse.Namespace) -> None:
    from nfhiql_core.deploy.runtime import PolicyRuntime
    from nfhiql_core.evaluation.bundle_eval import replan_table

    replan_table(PolicyRuntime(args.bundle, args.providers), args.env, args.intervals, episodes_per_task=args.episodes,
                 seed=args.seed, num_envs=args.num_envs, progress=not args.quiet)


def _bench_train(args: argparse.Namespace) -> None:
    from nfhiql_core.bench.train import bench_train

    if args.nproc is not None:
        return _torchrun(args.nproc, ["bench", "train", "--configs", *args.configs, "--steps", str(args.steps),
                                      "--warmup", str(args.warmup), "--threads", str(args.threads), "--device",
                                      args.device, "--compute-dtypes", *args.compute_dtypes])
    bench_train(args.configs, steps=args.steps, warmup=args.warmup, threads=args.threads, device=args.device,
                compute_dtypes=args.compute_dtypes)


def _bench_bag2data(args: argparse.Namespace) -> None:
    from nfhiql_core.bench.bag2data import bench_bag2data

    bench_bag2data(args.messages, storage=args.storage, compression=args.compression, workdir=args.workdir,
                   progress=not args.quiet)


def _experiment(args: argparse.Namespace) -> None:
    from nfhiql_core.analysis.experiment import adopt_results, load_experiment_config, run_experiment, write_report

    config = load_experiment_config(args.config)
    for report_path in args.adopt:
        adopted = adopt_results(config, report_path)
        print(f"adopted {len(adopted)} finished run(s) from {report_path}")
    report = (write_report(config) if args.report_only
              else run_experiment(config, args.jobs, not args.quiet, tasks=args.tasks))
    out = Path(config.output_dir)
    print((out / "results.md").read_text())
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'curves.png'}, {out / 'data_fraction.png'} "
          f"({len(report['runs'])} finished runs)")


def _plot(args: argparse.Namespace) -> None:
    from nfhiql_core.analysis.plots import is_expert_run, plot_expert_run, plot_runs

    if any(map(is_expert_run, args.run_dirs)):
        if len(args.run_dirs) != 1:
            raise NfhiqlError("nfhiql plot: an expert run directory is plotted alone (one per call)")
        print(f"wrote {plot_expert_run(args.run_dirs[0], args.output)}")
        return
    print(f"wrote {plot_runs(args.run_dirs, args.output)}")


def _modes(args: argparse.Namespace) -> None:
    import torch

    from nfhiql_core.analysis.multimodality import FinderConfig, format_report, multimodality_report

    torch.set_num_threads(args.threads)
    report = multimodality_report(args.flow_checkpoint, args.gaussian_checkpoint, args.dataset, args.output,
                                  args.json, samples=args.samples, states=args.states, seed=args.seed,
                                  dims=args.dims, config=FinderConfig(candidates=args.candidates), force=args.force)
    print(format_report(report))
    print(f"wrote {args.output}" + (f" and {args.json}" if args.json else ""))


def build_parser() -> argparse.ArgumentParser:
    """The full `nfhiql` argument parser."""
    parser = argparse.ArgumentParser(prog="nfhiql", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("datagen", help="generate an OGBench-format dataset with ogbench's envs and oracles")
    p.add_argument("env", help="dataset name, e.g. pointmaze-medium-navigate, cube-single-play or scene-play")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--max-episode-steps", type=int, default=None, help="default: OGBench's for the dataset")
    p.add_argument("--noise", type=float, default=None, help="default: OGBench's for the dataset")
    p.add_argument("--dataset-type", default=None, help="default: from the name (navigate/stitch/play)")
    p.add_argument("--expert", default=None, help="antmaze: the directional ant expert (from `nfhiql expert ant`)")
    p.add_argument("--min-goal-rate", type=float, default=None,
                   help="antmaze: refuse the expert if fewer of the first episodes reach a goal "
                        "(default: datagen.DEFAULT_MIN_GOAL_RATE; see docs/design/ant-expert.md)")
    p.add_argument("--allow-weak-expert", action="store_true", help="antmaze: skip that check (tests, debugging)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_datagen)

    p = sub.add_parser("expert", help="train the scripted experts some datasets are generated with")
    experts = p.add_subparsers(dest="expert", required=True)
    e = experts.add_parser("ant", help="SAC on OGBench's directional ant (online-ant-xy-v0), for the antmaze datasets")
    e.add_argument("--config", required=True, help="e.g. config/expert/ant-xy.yaml")
    e.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.steps=1000")
    e.add_argument("--resume", action="store_true", help="continue from run_dir/checkpoint.pt")
    e.add_argument("--force", action="store_true", help="delete a non-empty run_dir and start over")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_expert_ant)

    p = sub.add_parser("bag2data", help="rosbag2 recordings → an OGBench-format dataset (see config/bags/)")
    p.add_argument("bags", nargs="+", help="rosbag2 directories or .mcap/.db3 files (mcap, sqlite3, zstd or not)")
    p.add_argument("--spec", required=True, help="YAML spec: topics → observation/action, rate, episodes")
    p.add_argument("-o", "--output", required=True, help="dataset .npz; the sidecar is written to OUTPUT + .json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, e.g. --set rate_hz=20 (repeatable)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output and sidecar")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_bag2data)

    p = sub.add_parser("train", help="train an agent from a YAML recipe")
    p.add_argument("--config", required=True)
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. agent.policy=gaussian")
    p.add_argument("--resume", action="store_true", help="continue from run_dir/checkpoint.pt")
    p.add_argument("--force", action="store_true", help="delete a non-empty run_dir and start over")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train with DDP in N processes on this machine (launches torchrun; one per GPU, or "
                        "CPU processes under gloo); multi-node: run torchrun yourself (docs/design/scaling.md)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_train)

    p = sub.add_parser("dataset", help="dataset layouts")
    verbs = p.add_subparsers(dest="verb", required=True)
    d = verbs.add_parser("convert", help="OGBench .npz → the memory-mapped .npy layout that training reads without "
                         "loading it (for datasets larger than RAM); dataset.path may then name the directory")
    d.add_argument("npz", help="an OGBench-format .npz (raw or compact layout)")
    d.add_argument("-o", "--output", required=True, help="the dataset directory to write")
    d.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_dataset_convert)

    p = sub.add_parser("eval", help="evaluate a checkpoint or a bundle directory with the OGBench protocol")
    p.add_argument("checkpoint", help="checkpoint file, or bundle directory (run through ONNX Runtime)")
    p.add_argument("--env", default=None, help="default: the env in the checkpoint's recipe")
    p.add_argument("--episodes", type=int, default=50, help="episodes per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-envs", type=int, default=None, help="envs stepped in lockstep (default: episodes)")
    p.add_argument("--temperature", type=float, default=0.0, help="policy noise scale (0 = deterministic)")
    p.add_argument("--subgoal-candidates", type=int, default=None,
                   help="checkpoints: subgoal = the best by V of z = 0 and N-1 samples (state subgoals only; "
                        "default: the recipe's train.eval_subgoal_candidates)")
    p.add_argument("--json", default=None, help="write the full result (per episode) here")
    p.add_argument("--video", default=None, help="render one extra task-1 episode to this .gif/.mp4")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (small batched nets: 1 is fastest)")
    p.add_argument("--replan-every", type=int, default=1, help="bundles: re-plan every N steps")
    p.add_argument("--providers", nargs="+", default=None,
                   help="bundles: ONNX Runtime providers in priority order (default: CUDA, CPU)")
    p.add_argument("--require-provider", action="append", default=[],
                   help="bundles: fail unless this provider actually runs (repeatable)")
    p.add_argument("--interface", default=None, help="observe and act through a robot interface spec (YAML, or "
                   "'bundle' for the bundle's own), as the ROS stack does with mujoco_sim's robot mode")
    p.add_argument("--goal-fields", nargs="+", default=None, metavar="FIELD",
                   help="bundles: give each episode's goal as these robot interface fields only (e.g. cube_xyz "
                        "cube_yaw), the rest filled by the spec's goal_fill rule, as an operator's partial goal")
    p.add_argument("--goal-range-margin", type=float, default=0.1,
                   help="with --goal-fields: the data-range margin a goal must be within (the planner's default)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_eval)

    p = sub.add_parser("export", help="export a checkpoint to a self-verified ONNX policy bundle")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True, help="bundle directory")
    p.add_argument("--env", default=None, help="default: the env in the checkpoint's recipe")
    p.add_argument("--control-period", type=float, default=None, help="seconds (default: the env's)")
    p.add_argument("--atol", type=float, default=None, help="ORT vs torch parity tolerance, absolute (default: "
                   "training.export.PARITY_ATOL)")
    p.add_argument("--rtol", type=float, default=None, help="ORT vs torch parity tolerance, times the output's "
                   "largest magnitude (default: training.export.PARITY_RTOL)")
    p.add_argument("--force", action="store_true", help="replace a non-empty bundle directory")
    p.add_argument("--interface", default=None, help="robot interface spec to embed (default: the training data's "
                   "bag2data spec, else the env's in config/robots/)")
    p.set_defaults(func=_export)

    p = sub.add_parser("calibrate-progress", help="value-estimated vs actual steps to the goal and the stall "
                       "detector's alarm rates over a bundle's evaluation episodes (figure + JSON)")
    p.add_argument("bundle", help="bundle directory with a value model (value.onnx)")
    p.add_argument("--episodes", type=int, default=4, help="episodes per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, help="directory for calibration.png and calibration.json")
    p.add_argument("--config", default=None, help="ProgressConfig YAML (default: its defaults)")
    p.add_argument("--stall-times", type=float, nargs="+", default=None,
                   help="stall_time_s values (seconds) to sweep (default: progress_calibration.STALL_TIMES_S)")
    p.add_argument("--env", default=None, help="default: the bundle's env")
    p.add_argument("--tasks", type=int, nargs="+", default=None, help="task ids (default: all)")
    p.add_argument("--num-envs", type=int, default=None, help="envs stepped in lockstep (default: episodes)")
    p.add_argument("--max-steps", type=int, default=None, help="cap episode length (a test knob, not the protocol)")
    p.add_argument("--replan-every", type=int, default=1)
    p.add_argument("--providers", nargs="+", default=["CPUExecutionProvider"])
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_calibrate_progress)

    p = sub.add_parser("bundle", help="inspect or amend an exported bundle")
    verbs = p.add_subparsers(dest="verb", required=True)
    b = verbs.add_parser("interface", help="embed or replace a bundle's robot interface spec (names must fit)")
    b.add_argument("bundle")
    b.add_argument("spec", help="robot interface spec YAML (config/robots/)")
    b.set_defaults(func=_bundle_interface)

    p = sub.add_parser("experiment", help="train and evaluate a grid (task × policy × data fraction × seed); resumable")
    p.add_argument("config", help="grid YAML, e.g. config/experiments/cpu-grid.yaml")
    p.add_argument("--jobs", type=int, default=None, help="runs trained at once (default: the config's)")
    p.add_argument("--tasks", nargs="+", default=(), metavar="TASK",
                   help="train only these tasks' runs, in this order (default: the whole grid)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the table and plots from finished runs")
    p.add_argument("--adopt", action="append", default=[], metavar="RESULTS_JSON",
                   help="count the runs of an earlier report (e.g. a committed snapshot) as finished where "
                        "their budget matches; repeatable")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_experiment)

    p = sub.add_parser("plot", help="learning curves (eval success, losses) of one or more runs, or of "
                                        "one `nfhiql expert ant` run (directional velocity)")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("-o", "--output", default="curves.png")
    p.set_defaults(func=_plot)

    p = sub.add_parser("modes", help="multimodality figure: flow vs Gaussian samples where the data goes two ways")
    p.add_argument("flow_checkpoint")
    p.add_argument("gaussian_checkpoint")
    p.add_argument("--dataset", required=True, help="the .npz both were trained on")
    p.add_argument("-o", "--output", required=True, help="figure (.png)")
    p.add_argument("--json", default=None, help="write the numbers here")
    p.add_argument("--samples", type=int, default=1000, help="samples per policy, level and situation")
    p.add_argument("--states", type=int, default=4, help="situations (figure rows)")
    p.add_argument("--candidates", type=int, default=2000, help="(state, goal) candidates scored")
    p.add_argument("--dims", type=int, nargs="+", default=None,
                   help="observation dims for neighbourhoods, modes and plots (default: all; first two plotted)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.set_defaults(func=_modes)

    p = sub.add_parser("bench", help="benchmarks that print numbers")
    bench = p.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("train", help="training throughput (grad steps/s), flow vs Gaussian")
    b.add_argument("--configs", nargs="+", default=["config/train/pointmaze-medium-navigate-full.yaml",
                                                    "config/train/pointmaze-medium-navigate-cpu.yaml"])
    b.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    b.add_argument("--device", default="auto")
    b.add_argument("--compute-dtypes", nargs="+", default=["float32", "bfloat16"],
                   help="AgentConfig.compute_dtype values to time")
    b.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="time the DDP step of N processes sharing each global batch (launches torchrun)")
    b.set_defaults(func=_bench_train)
    b = bench.add_parser("inference", help="batch-1 latency of plan/act through ONNX Runtime (and torch eager)")
    b.add_argument("bundle")
    b.add_argument("--calls", type=int, default=10_000)
    b.add_argument("--warmup", type=int, default=500)
    b.add_argument("--checkpoint", default=None, help="the bundle's source checkpoint: adds torch eager rows")
    b.add_argument("--providers", nargs="+", default=["CPUExecutionProvider"])
    b.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op (and torch) threads")
    b.set_defaults(func=_bench_inference)
    b = bench.add_parser("assembly", help="per-tick cost of the robot interface: observation assembly from the "
                         "robot's topics, and the whole tick (assemble + plan + act + encode)")
    b.add_argument("bundle", nargs="?", default="bundles/cube-single-play")
    b.add_argument("--calls", type=int, default=2000)
    b.add_argument("--warmup", type=int, default=200)
    b.set_defaults(func=_bench_assembly)
    b = bench.add_parser("replan", help="success vs re-plan interval, through a bundle")
    b.add_argument("bundle")
    b.add_argument("--env", default=None, help="default: the bundle's env")
    b.add_argument("--intervals", type=int, nargs="+", default=[1, 5, 10, 25])
    b.add_argument("--episodes", type=int, default=10, help="episodes per task")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--num-envs", type=int, default=None)
    b.add_argument("--providers", nargs="+", default=["CPUExecutionProvider"])
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_bench_replan)
    b = bench.add_parser("bag2data", help="bag2data messages/s and peak memory on generated bags")
    b.add_argument("--messages", type=int, nargs="+", default=[250_000, 1_000_000], help="bag sizes")
    b.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    b.add_argument("--compression", choices=("none", "message", "file"), default="none", help="zstd mode")
    b.add_argument("--workdir", default=None, help="where the bags are written (default: the system temp dir)")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_bench_bag2data)
    from importlib.metadata import entry_points
    for ep in entry_points(group="nfhiql.bench"):  # e.g. `ros` (nfhiql_ros): core never imports ROS itself
        ep.load()(bench)
    for ep in entry_points(group="nfhiql.commands"):  # e.g. `record` (nfhiql_ros)
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nfhiql` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command in ("train", "expert") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra  # key=value overrides placed after later options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.func(args)
    except NfhiqlError as exc:
        print(f"nfhiql: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
