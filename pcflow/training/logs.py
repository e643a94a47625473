"""A run's logs: one writer interface, a CSV file and TensorBoard behind it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Protocol

__all__ = ["CsvLog", "LogWriter", "RunLog", "TensorBoardLog"]


class LogWriter(Protocol):
    """Where a run's scalars go: one row of named values per step."""

    def write(self, step: int, row: dict[str, float]) -> None:
        """Record ``row`` at training step ``step``."""
        ...

    def close(self) -> None:
        """Flush and release the log."""
        ...


class CsvLog:
    """A CSV file with a ``step`` column, whose header widens when a new column appears
    (validation, the critic switching on); resuming drops the rows past the checkpoint.

    Arguments:
        path: The CSV file; kept (up to ``resume_step``) when it exists.
        resume_step: The step the run resumes from: rows logged after it (by a killed run,
            after its last checkpoint) are dropped, since they are redone.
    """

    def __init__(self, path: str | Path, resume_step: int = 0) -> None:
        self.path = Path(path)
        self.fields: list[str] = []
        if self.path.exists():
            rows = self._rows()
            if rows:
                self.fields = list(rows[0].keys())
                self._rewrite([r for r in rows if int(r["step"]) <= resume_step])

    def write(self, step: int, row: dict[str, float]) -> None:
        """Append ``{"step": step, **row}``, rewriting the file first if the header widens."""
        row = {"step": step, **row}
        new = [k for k in row if k not in self.fields]
        if new or not self.path.exists():
            rows = self._rows() if self.path.exists() else []
            self.fields = self.fields + new
            self._rewrite(rows)
        with open(self.path, "a", newline="") as file:
            csv.DictWriter(file, self.fields).writerow(row)

    def close(self) -> None:
        """Nothing to release: every row is written when it comes."""

    def _rows(self) -> list[dict[str, str]]:
        with open(self.path, newline="") as file:
            return list(csv.DictReader(file))

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        with open(self.path, "w", newline="") as file:
            writer = csv.DictWriter(file, self.fields)
            writer.writeheader()
            writer.writerows(rows)


class TensorBoardLog:
    """TensorBoard scalars, ``val/<name>`` for names starting with ``val_``, else
    ``train/<name>``.

    Arguments:
        folder: The event files' folder.
        resume_step: Events after this step (of a killed run) are purged.
    """

    def __init__(self, folder: str | Path, resume_step: int = 0) -> None:
        # tensorboard is an optional extra (pcflow[train]): imported only when a run logs.
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder), purge_step=resume_step + 1)

    def write(self, step: int, row: dict[str, float]) -> None:
        """Add each value of ``row`` as a scalar at ``step``."""
        for key, value in row.items():
            group = "val" if key.startswith("val_") else "train"
            self.writer.add_scalar(f"{group}/{key}", value, step)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


class RunLog:
    """A run's ``log.csv`` and ``tensorboard/`` (when tensorboard is installed) behind one
    `write`: the CSV rows hold the epoch and the seconds into it, TensorBoard the learning rate.

    Arguments:
        out_dir: The run's folder.
        resume_step: The step the run resumes from (see `CsvLog`).
    """

    def __init__(self, out_dir: str | Path, resume_step: int = 0) -> None:
        self.csv = CsvLog(Path(out_dir) / "log.csv", resume_step)
        self.tensorboard: TensorBoardLog | None = None
        try:
            self.tensorboard = TensorBoardLog(Path(out_dir) / "tensorboard", resume_step)
        except ImportError:  # tensorboard is an optional extra
            pass

    def write(
        self,
        step: int,
        epoch: int,
        values: dict[str, float],
        *,
        seconds: float | None = None,
        lr: float | None = None,
    ) -> None:
        """Log ``values`` at ``step`` of ``epoch``."""
        if self.tensorboard is not None:
            self.tensorboard.write(step, values if lr is None else {**values, "lr": lr})
        extra = {} if seconds is None else {"seconds_in_epoch": round(seconds, 3)}
        self.csv.write(step, {"epoch": epoch, **values, **extra})

    def close(self) -> None:
        """Close both logs."""
        self.csv.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
