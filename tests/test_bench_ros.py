"""`nfhiql bench ros` end to end: the real flow_controller process against the synthetic sim, one low rate."""
import math
import subprocess

import pytest

pytest.importorskip("rclpy")

from bundle_helpers import exported  # noqa: E402

from nfhiql_core.cli import main  # noqa: E402


def _controller_pids() -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return {int(line.split()[0]) for line in out.splitlines()[1:] if "nfhiql_ros.flow_controller" in line}


def test_bench_ros_one_rate(capsys):
    bundle = exported("flow", "rep")[1]
    before = _controller_pids()
    assert main(["bench", "ros", "--bundle", str(bundle), "--rates", "50", "--seconds", "1.5"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["50"] and len(line.split()) == 7]
    assert len(rows) == 1, out
    rate, achieved, pct, p50, p99, worst, safe = rows[0]
    assert float(achieved) > 0
    assert all(math.isfinite(float(x)) for x in (p50, p99, worst))
    assert not _controller_pids() - before  # no controller process left behind
