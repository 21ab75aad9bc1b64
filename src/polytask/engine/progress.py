"""Progress of a training run on the terminal: a rich progress bar when stderr is a
terminal, and one line per epoch (step, criterion, primary metrics) in any case."""

from __future__ import annotations

import sys
from typing import Any, Mapping


class Progress:
    """``enabled=False`` prints nothing (library use, tests)."""

    def __init__(self, enabled: bool, total_steps: int, done_steps: int = 0) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.console: Any = None
        if not enabled:
            return
        from rich.console import Console

        self.console = Console(stderr=True)
        if sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as Bar,
            )

            self.bar = Bar(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[losses]}"),
                console=self.console,
                transient=True,
            )
            self.task = self.bar.add_task(
                "train", total=total_steps, completed=done_steps, losses=""
            )
            self.bar.start()

    def step(self, step: int, losses: Mapping[str, float] | None = None) -> None:
        if self.bar is not None:
            text = " ".join(f"{t}={v:.3f}" for t, v in (losses or {}).items())
            self.bar.update(self.task, completed=step, **({"losses": text} if losses else {}))

    def epoch(
        self, epoch: int, step: int, score: float, primary: Mapping[str, float], best: bool
    ) -> None:
        if self.console is None:
            return
        metrics = "  ".join(f"{t} {v:.4f}" for t, v in primary.items())
        mark = " (best)" if best else ""
        self.console.print(
            f"epoch {epoch}  step {step}  criterion {score:.4f}{mark}  {metrics}", highlight=False
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
