"""What `nfhiql record` and the `recorder` node share, importable without ROS: the recorder's
parameters, the output check, and the `record` verb (registered through the `nfhiql.commands`
entry points, so the `nfhiql` CLI works where rclpy is not installed; the node starts only when
the verb runs)."""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from nfhiql_core.errors import ConfigError, NfhiqlError, OutputExistsError

STORAGES = ("mcap", "sqlite3")
COMPRESSIONS = ("none", "message", "file")  # zstd, as `ros2 bag record --compression-mode`


@dataclass(frozen=True)
class RecorderParams:
    """Parameters of `recorder`."""

    output: str = ""  # the bag directory to create
    topics: tuple[str, ...] = ("/observation", "/command", "/teleop/episode")  # default: the sim demos
    storage: str = "mcap"  # mcap | sqlite3
    compression: str = "none"  # none | message | file (zstd)
    force: bool = False  # replace an existing bag at `output`
    duration_s: float = 0.0  # record this long once every topic is subscribed (0: until SIGINT/SIGTERM)
    discovery_timeout_s: float = 10.0  # a requested topic with no publisher by then fails the recording

    def __post_init__(self) -> None:
        problems = []
        if not self.output:
            problems.append("output must be set (the bag directory to create)")
        bad = [t for t in self.topics if not t.startswith("/") or " " in t]
        if not self.topics or bad:
            problems.append(f"topics must be absolute topic names (got {list(self.topics)})")
        if self.storage not in STORAGES:
            problems.append(f"storage must be one of {STORAGES} (got {self.storage!r})")
        if self.compression not in COMPRESSIONS:
            problems.append(f"compression must be one of {COMPRESSIONS} (got {self.compression!r})")
        if self.duration_s < 0:
            problems.append(f"duration_s must be >= 0 (got {self.duration_s})")
        if not self.discovery_timeout_s > 0:
            problems.append(f"discovery_timeout_s must be > 0 (got {self.discovery_timeout_s})")
        if problems:
            raise ConfigError("recorder parameters: " + "; ".join(problems))


def check_output(params: RecorderParams) -> Path:
    """The output path, if it may be written: new, or (with force) an existing bag directory."""
    path = Path(params.output)
    if path.exists():
        if not params.force:
            raise OutputExistsError(f"{path}: already exists (pass --force to overwrite)")
        if not (path / "metadata.yaml").is_file():
            raise NfhiqlError(f"{path}: exists and is not a rosbag2 directory; not replacing it")
    return path


def register(subparsers) -> None:
    """Entry point of group `nfhiql.commands`: adds `nfhiql record`."""
    p = subparsers.add_parser("record", help="record ROS 2 topics to a rosbag2 bag (no ROS install needed)")
    p.add_argument("topics", nargs="+", help="absolute topic names")
    p.add_argument("-o", "--output", required=True, help="bag directory to create")
    p.add_argument("--storage", choices=STORAGES, default="mcap")
    p.add_argument("--compression", choices=COMPRESSIONS, default="none", help="zstd per message or per file")
    p.add_argument("--duration", type=float, default=0.0,
                   help="seconds, counted from when every topic is subscribed (default: until Ctrl-C)")
    p.add_argument("--discovery-timeout", type=float, default=10.0,
                   help="fail when a topic has no publisher after this many seconds (default 10)")
    p.add_argument("--force", action="store_true", help="replace an existing bag directory")
    p.set_defaults(func=_record_command)


def _record_command(args: argparse.Namespace) -> None:
    params = RecorderParams(output=str(Path(args.output).absolute()), topics=tuple(args.topics), storage=args.storage,
                            compression=args.compression, force=args.force, duration_s=args.duration,
                            discovery_timeout_s=args.discovery_timeout)
    check_output(params)  # a refused output is a one-line CLI error, before ROS starts
    from nfhiql_ros.recorder import main

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="nfhiql-record-") as f:
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}
        yaml.safe_dump({"/**": {"ros__parameters": values}}, f)
        f.flush()
        code = main(["--ros-args", "--params-file", f.name])
    if code:
        raise NfhiqlError(f"recorder failed (exit status {code}); see its log above")
