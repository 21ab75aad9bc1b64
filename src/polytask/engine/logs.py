"""Run logs: CSV (and the diagnostics' JSON lines) always, TensorBoard when installed.

A log holds one run: a fresh start removes the old rows (:meth:`RunLogger.reset`), a resume
drops the rows written after its checkpoint (:meth:`RunLogger.truncate`, an atomic rewrite).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping

TRAIN_LOG = "train_log.csv"
METRICS_LOG = "metrics.csv"
#: training diagnostics, one JSON object per sample (:mod:`polytask.engine.diagnostics`)
DIAGNOSTICS_LOG = "diagnostics.jsonl"


class RunLogger:
    """Appends step losses to ``train_log.csv`` and epoch metrics to ``metrics.csv``."""

    def __init__(self, run: Path | None, tasks: list[str], tensorboard: bool = True) -> None:
        self.run, self.tasks = run, tasks
        self.tb = None
        if run is None:
            return
        run.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run / "tensorboard"))
            except Exception:  # tensorboard not installed: CSV only
                self.tb = None

    def _append(self, name: str, header: list[str], row: list[Any]) -> None:
        if self.run is None:
            return
        path = self.run / name
        buffer = io.StringIO(newline="")
        w = csv.writer(buffer)
        if not path.exists():
            w.writerow(header)
        w.writerow(row)
        self._write(name, buffer.getvalue())

    def _write(self, name: str, text: str) -> None:
        assert self.run is not None
        # one write() of whole rows: a kill never leaves half a row
        fd = os.open(self.run / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            f.write(text)

    def log_step(self, step: int, epoch: int, losses: Mapping[str, float], lr: float) -> None:
        self._append(
            TRAIN_LOG,
            ["step", "epoch", "lr"] + [f"loss_{t}" for t in self.tasks],
            [step, epoch, lr] + [losses.get(t, "") for t in self.tasks],
        )
        if self.tb is not None:
            for t, v in losses.items():
                self.tb.add_scalar(f"loss/{t}", v, step)

    def log_diagnostics(self, entry: Mapping[str, Any]) -> None:
        """One diagnostics sample: a line of ``diagnostics.jsonl`` and TensorBoard scalars."""
        if self.run is None:
            return
        self._write(DIAGNOSTICS_LOG, json.dumps(entry, ensure_ascii=False) + "\n")
        if self.tb is not None:
            step = int(entry["step"])
            for key in ("losses", "grad_norms", "cosines", "weights"):
                for name, v in (entry.get(key) or {}).items():
                    if v is not None:
                        self.tb.add_scalar(f"diag/{key}/{name}", v, step)
            if entry.get("conflict_share") is not None:
                self.tb.add_scalar("diag/conflict_share", entry["conflict_share"], step)
            for task, row in (entry.get("gates") or {}).items():
                for e, v in enumerate(row):
                    self.tb.add_scalar(f"diag/gates/{task}/{e}", v, step)

    def log_epoch(
        self, epoch: int, step: int, metrics: Mapping[str, Mapping[str, float]], score: float
    ) -> None:
        for t, ms in metrics.items():
            for m, v in ms.items():
                self._append(
                    METRICS_LOG,
                    ["epoch", "step", "task", "metric", "value"],
                    [epoch, step, t, m, v],
                )
                if self.tb is not None:
                    self.tb.add_scalar(f"val/{t}/{m}", v, step)
        self._append(
            METRICS_LOG,
            ["epoch", "step", "task", "metric", "value"],
            [epoch, step, "*", "criterion", score],
        )

    def reset(self) -> None:
        """A fresh start: remove the rows of an earlier run, so that a log holds one run."""
        if self.run is None:
            return
        for name in (TRAIN_LOG, METRICS_LOG, DIAGNOSTICS_LOG):
            (self.run / name).unlink(missing_ok=True)

    def truncate(self, step: int, epoch: int) -> None:
        """After a resume, drop log rows written after the checkpoint (they will be rewritten);
        each log is rewritten atomically."""
        from .checkpoint import atomic_write_text

        if self.run is None:
            return
        for name, key, limit in ((TRAIN_LOG, "step", step), (METRICS_LOG, "epoch", epoch - 1)):
            path = self.run / name
            if not path.exists():
                continue
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
                fields = list(rows[0].keys()) if rows else None
            if fields is None:
                continue
            kept = [r for r in rows if float(r[key]) <= limit]
            buffer = io.StringIO(newline="")
            w = csv.DictWriter(buffer, fieldnames=fields)
            w.writeheader()
            w.writerows(kept)
            atomic_write_text(path, buffer.getvalue())
        path = self.run / DIAGNOSTICS_LOG
        if path.exists():
            lines = path.read_text(encoding="utf-8").splitlines()
            atomic_write_text(path, "".join(f"{x}\n" for x in lines if _line_step(x) <= step))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _line_step(line: str) -> float:
    """The step of a diagnostics line; infinite for a line cut by a kill (dropped)."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


def json_text(obj: Any) -> str:
    """The text :func:`write_json` writes for ``obj`` (digests of run files are taken of it)."""
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str)


def write_json(path: Path, obj: Any) -> None:
    from .checkpoint import atomic_write_text

    atomic_write_text(path, json_text(obj))
