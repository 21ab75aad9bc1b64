"""User-defined encoders, heads, task kinds and methods named in config by import path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from polytask.balancing import FixedWeights
from polytask.config import ConfigError, Experiment, validate
from polytask.nn.base import Encoder, EncoderOutput
from polytask.tasks import Classification

ROWS = [
    {"tokens": ["the", "battery", "is", "great"], "sentiment": "pos"},
    {"tokens": ["the", "screen", "is", "dim"], "sentiment": "neg"},
] * 10


class BagOfEmbeddings(Encoder):
    """Mean of word embeddings: one layer, not a sequence."""

    input_kind = "tokens"
    is_sequence = False

    def __init__(self, vocab_size: int, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.layer_dims = [dim]

    def forward(self, inputs: Any) -> EncoderOutput:
        mask = inputs["tokens"].ne(0).float().unsqueeze(-1)
        return EncoderOutput(
            layers=[(self.embed(inputs["tokens"]) * mask).sum(1) / mask.sum(1).clamp(min=1)]
        )


class ScaledHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, scale: float = 1.0) -> None:
        super().__init__()
        self.linear, self.scale = nn.Linear(in_dim, out_dim), scale

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.scale * self.linear(features)


class Sentiment(Classification):
    """A user task kind: classification with a fixed label set."""

    def __init__(self) -> None:
        super().__init__(["neg", "pos"])


class Halved(FixedWeights):
    name = "halved"

    def __init__(self) -> None:
        super().__init__({}, default=0.5)


def _config(tmp_path: Path, **model: Any) -> dict:
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS), encoding="utf-8")
    return {
        "tasks": {"sentiment": {"kind": "test_config_plugins:Sentiment"}},
        "data": {
            "sources": {
                "rows": {
                    "format": "jsonl",
                    "train": "rows.jsonl",
                    "tasks": {"sentiment": "sentiment"},
                }
            }
        },
        "model": {"encoder": {"type": "test_config_plugins:BagOfEmbeddings", "dim": 4}, **model},
        "balancing": {"method": "test_config_plugins:Halved"},
    }


def test_import_paths_build_user_pieces(tmp_path: Path) -> None:
    raw = _config(
        tmp_path,
        heads={"sentiment": {"type": "test_config_plugins:ScaledHead", "options": {"scale": 3.0}}},
    )
    exp = Experiment(validate(raw), tmp_path)
    assert isinstance(exp.tasks["sentiment"].kind, Sentiment)
    model = exp.build_model()
    assert isinstance(model.encoder, BagOfEmbeddings) and model.encoder.embed.num_embeddings == len(
        exp.vocab
    )
    head = model.heads["sentiment"]
    assert isinstance(head, ScaledHead) and head.scale == 3.0 and head.linear.in_features == 4
    assert head.linear.out_features == 2
    method = exp.build_method()
    losses = {"sentiment": torch.tensor(2.0)}
    assert method.combine(losses).item() == 1.0  # the user's weighting, not the built-in one


@pytest.mark.parametrize(
    "heads, where",
    [
        ({"sentiment": {"type": "classifier"}}, "model.heads.sentiment.type"),
        ({"sentiment": {"type": "test_config_plugins:Nope"}}, "model.heads.sentiment.type"),
        (
            {"sentiment": {"type": "test_config_plugins:ScaledHead", "options": {"bogus": 1}}},
            "model.heads.sentiment.bogus",
        ),
        ({"sentiment": {"options": {"scale": 2}}}, "model.heads.sentiment.options"),
    ],
)
def test_bad_custom_heads_name_the_field(tmp_path: Path, heads: dict, where: str) -> None:
    exp = Experiment(validate(_config(tmp_path, heads=copy.deepcopy(heads))), tmp_path)
    with pytest.raises(ConfigError) as err:
        exp.build_model()
    assert err.value.where == where
