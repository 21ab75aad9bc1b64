"""Run logs: CSV always, TensorBoard when installed."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping

TRAIN_LOG = "train_log.csv"
METRICS_LOG = "metrics.csv"


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
        new = not path.exists()
        with open(path, "a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if new:
                w.writerow(header)
            w.writerow(row)

    def log_step(self, step: int, epoch: int, losses: Mapping[str, float], lr: float) -> None:
        self._append(
            TRAIN_LOG,
            ["step", "epoch", "lr"] + [f"loss_{t}" for t in self.tasks],
            [step, epoch, lr] + [losses.get(t, "") for t in self.tasks],
        )
        if self.tb is not None:
            for t, v in losses.items():
                self.tb.add_scalar(f"loss/{t}", v, step)

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

    def truncate(self, step: int, epoch: int) -> None:
        """After a resume, drop log rows written after the checkpoint (they will be rewritten)."""
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
            with open(path, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(kept)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def write_json(path: Path, obj: Any) -> None:
    from .checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str))
