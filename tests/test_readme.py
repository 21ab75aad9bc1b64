"""The README's Python and shell examples are executed, so they cannot rot."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_has_examples() -> None:
    assert len(blocks("python")) >= 2 and len(blocks("bash")) >= 1
    assert "make demo" in README and "make test" in README


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_example_runs(index: int, tmp_path: Path) -> None:
    code = blocks("python")[index]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_shell_example_runs(tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    outputs = []
    for line in blocks("bash")[0].strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == "polytask"
        argv = [sys.executable, "-m", "polytask.cli"] + [
            str(ROOT / a) if a.startswith("examples/") else a for a in argv[1:]
        ]
        proc = subprocess.run(
            argv + ["--set", "trainer.threads=1"] if argv[3] in ("train", "compare") else argv,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    metrics = json.loads(outputs[1])
    assert set(metrics) == {"sentiment", "ner"}
    assert all(0.0 <= v <= 1.0 for v in metrics["sentiment"].values())
    predictions = [json.loads(line) for line in outputs[2].splitlines()]
    assert len(predictions) == 3 and all({"sentiment", "ner"} <= set(p) for p in predictions)
    summary = json.loads(outputs[3])
    assert {"stl", "mtl", "delta_m"} <= set(summary)
