"""`nfhiql eval`'s output is clean: the JSON summary and no gymnasium precision warnings."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_eval_output_has_no_gymnasium_warnings() -> None:
    command = [sys.executable, "-c", "from nfhiql_core.cli import main; raise SystemExit(main())", "eval",
               str(ROOT / "bundles" / "cube-single-play"), "--episodes", "1", "--providers", "CPUExecutionProvider",
               "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["episodes_per_task"] == 1
    assert "WARN" not in done.stderr and "precision" not in done.stderr, done.stderr
