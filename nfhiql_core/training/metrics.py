"""Metrics sinks for long jobs: one CSV per stream, plus TensorBoard when it is installed."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping


class MetricsLogger:
    """Appends rows to `<run_dir>/<stream>.csv` and mirrors scalars to TensorBoard.

    On resume, rows logged after `resume_step` (work lost with the crash) are dropped first,
    so a resumed run's CSV reads as if the run had never stopped.
    """

    def __init__(self, run_dir: str | Path, resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.resume_step = resume_step
        self._truncated: set[str] = set()
        self._tb = _tensorboard_writer(self.run_dir / "tensorboard", resume_step)

    def log(self, stream: str, step: int, values: Mapping[str, float]) -> None:
        """Write one row `step, *values` to `stream.csv` (and `stream/<key>` to TensorBoard)."""
        path = self.run_dir / f"{stream}.csv"
        if self.resume_step is not None and stream not in self._truncated:
            _drop_rows_after(path, self.resume_step)
            self._truncated.add(stream)
        row = {"step": step, **{k: float(v) for k, v in values.items()}}
        new_file = not path.exists() or path.stat().st_size == 0
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"{stream}/{key}", float(value), step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of a metrics CSV as floats."""
    with Path(path).open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _drop_rows_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    # A line without its newline was torn by the crash: drop it with the rows after the checkpoint.
    kept = lines[:1] + [line for line in lines[1:]
                        if line.endswith("\n") and int(float(line.split(",", 1)[0])) <= step]
    path.write_text("".join(kept))


def _tensorboard_writer(log_dir: Path, resume_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(str(log_dir), purge_step=None if resume_step is None else resume_step + 1)
