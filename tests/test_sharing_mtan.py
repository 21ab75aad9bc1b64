"""MTAN (attention sharing): hand-computed forward, gradient routing, padding, overfit, options."""

from __future__ import annotations

import math

import pytest
import torch
from routing import (
    IdentityHead as _Identity,
)
from routing import (
    param_names as _names,
)
from routing import (
    reached as _reached,
)
from routing import (
    set_linear as _set,
)
from torch import nn

from polytask.errors import OptionError
from polytask.nn import CNN, MLP, ClassifierHead, Encoder, EncoderOutput, TaggerHead
from polytask.sharing.mtan import MTAN

BIG = 30.0  # sigmoid(±30) is 1 / 0 to float32 precision (within 1e-13)


def _hand_model() -> MTAN:
    encoder = MLP(2, [2, 2], activation="relu")
    _set(encoder.linears[0], [[1, 0], [0, 1]], [0, 0])
    _set(encoder.linears[1], [[1, 1], [0, 1]], [0, 0])
    model = MTAN(encoder, {"a": _Identity(), "b": _Identity()})
    a1, a2 = model.attention["a"]
    b1, b2 = model.attention["b"]
    # task a: masks set to ≈ [1, 0] at depth 1 and ≈ [0, 1] at depth 2 by large biases
    _set(a1.gate[0], [[0, 0], [0, 0]], [BIG, -BIG])
    _set(a2.project, [[1, 0], [0, 1]], [0, 0])
    _set(a2.gate[0], [[0] * 4, [0] * 4], [-BIG, BIG])
    # task b: exact interior masks
    _set(b1.gate[0], [[0, 0], [0, 0]], [0, 0])
    _set(b2.project, [[1, 0], [0, 1]], [0, -2])
    _set(b2.gate[0], [[0, 0, 2, 1], [0, 0, 0, 0]], [0, math.log(3)])
    return model


def test_forward_equals_hand_computation() -> None:
    """x = [1, 2]: f1 = [1, 2], f2 = [3, 2].
    a: a1 = [1, 0] -> â1 = [1, 0]; P = relu(â1) = [1, 0]; a2 = [0, 1] -> â2 = [0, 2].
    b: a1 = [.5, .5] -> â1 = [.5, 1]; P = relu([.5, 1] + [0, -2]) = [.5, 0];
       logits2 = [2 * 0.5 + 1 * 0, ln 3] -> a2 = [σ(1), .75] -> â2 = [3 σ(1), 1.5]
       (without the ReLU in P, logits2[0] would be 1 - 1 = 0)."""
    model = _hand_model()
    out = model({"x": torch.tensor([[1.0, 2.0]])})
    s1 = 1 / (1 + math.exp(-1))
    torch.testing.assert_close(
        out.task_features["a"], torch.tensor([[0.0, 2.0]]), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        out.task_features["b"], torch.tensor([[3 * s1, 1.5]]), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(out.outputs["b"], out.task_features["b"])
    torch.testing.assert_close(out.features["a"], torch.tensor([[3.0, 2.0]]))
    assert out.shared_features is None and out.mask is None
    # the intermediate attended features too
    enc = model.encoder({"x": torch.tensor([[1.0, 2.0]])})
    a_hat = model.attend("b", enc.layers, None)
    torch.testing.assert_close(a_hat[0], torch.tensor([[0.5, 1.0]]))
    # a mask at exactly 0 removes the feature: changing f2[0] leaves task a's output alone
    model.encoder.linears[1].bias.data[0] = 5.0
    out2 = model({"x": torch.tensor([[1.0, 2.0]])})
    torch.testing.assert_close(
        out2.task_features["a"], torch.tensor([[0.0, 2.0]]), atol=1e-6, rtol=0
    )
    assert not torch.allclose(out2.task_features["b"], out.task_features["b"])


def test_depths_option_attends_only_there() -> None:
    encoder = MLP(2, [2, 2], activation="relu")
    model = MTAN(encoder, {"a": _Identity()}, depths=[2])
    assert model.depths == [2] and len(model.attention["a"]) == 1
    assert model.attention["a"][0].project is None  # depth 2 is the first attended: reads f2 only
    x = torch.randn(3, 2)
    enc = encoder({"x": x})
    gate = model.attention["a"][0].gate
    expected = torch.sigmoid(gate(enc.layers[1])) * enc.layers[1]
    torch.testing.assert_close(model({"x": x}).task_features["a"], expected)


def _model(seed: int = 0, hidden: int | None = None) -> MTAN:
    torch.manual_seed(seed)
    return MTAN.from_parts(
        encoder=lambda: MLP(5, [8, 8, 6], activation="tanh"),
        heads=lambda dims: {"a": ClassifierHead(dims["a"], 3), "b": ClassifierHead(dims["b"], 2)},
        tasks=["a", "b"],
        hidden=hidden,
    )


@pytest.mark.parametrize("hidden", [None, 4])
def test_routing_each_loss_reaches_backbone_and_only_its_attention(hidden) -> None:
    model = _model(hidden=hidden)
    model.check_ownership()
    x = torch.randn(16, 5)
    out = model({"x": x})
    losses = {
        "a": nn.functional.cross_entropy(out.outputs["a"], torch.arange(16) % 3),
        "b": nn.functional.cross_entropy(out.outputs["b"], torch.arange(16) % 2),
    }
    shared = _names(model, model.shared_parameters())
    assert shared == {n for n, _ in model.named_parameters() if n.startswith("encoder.")}
    for t, other in (("a", "b"), ("b", "a")):
        own = _names(model, model.task_parameters(t))
        assert {n for n in own if n.startswith(f"attention.{t}.")} and {
            n for n in own if n.startswith(f"heads.{t}.")
        }
        reached = _reached(model, losses[t])
        assert all(reached[n] for n in shared), t
        assert all(reached[n] for n in own), t
        assert not any(reached[n] for n in _names(model, model.task_parameters(other))), t


def test_sequence_encoder_per_token_attention_and_padding_stays_zero() -> None:
    torch.manual_seed(0)
    model = MTAN.from_parts(
        encoder=lambda: CNN(vocab_size=20, embed_dim=4, channels=[5, 6]),
        heads=lambda dims: {
            "tag": TaggerHead(dims["tag"], 3),
            "cls": ClassifierHead(dims["cls"], 2, pooling="mean"),
        },
        tasks=["tag", "cls"],
    ).eval()
    tokens = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]])
    padded = torch.cat([tokens, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    out, out_p = model({"tokens": tokens}), model({"tokens": padded})
    for t in ("tag", "cls"):
        h, hp = out.task_features[t], out_p.task_features[t]
        assert h.shape == (2, 4, 6)
        assert torch.all(h[~out.mask] == 0) and torch.all(hp[~out_p.mask] == 0)
        torch.testing.assert_close(hp[:, :4], h)
        assert (h[out.mask].abs().sum(-1) > 0).all()
    torch.testing.assert_close(out_p.outputs["cls"], out.outputs["cls"])
    torch.testing.assert_close(out_p.outputs["tag"][:, :4], out.outputs["tag"])
    # attention is per token: the mask differs across real tokens of one sentence
    enc = model.encoder({"tokens": tokens})
    a = model.attention["tag"][0].mask(enc.layers[0], None)
    assert not torch.allclose(a[0, 0], a[0, 1])


class _LeakyPadding(Encoder):
    """A sequence encoder whose outputs at padding are NOT zero (embedding + 1)."""

    input_kind = "tokens"
    is_sequence = True

    def __init__(self) -> None:
        super().__init__()
        self.layer_dims = [3, 3]
        self.embedding = nn.Embedding(10, 3)
        self.linear = nn.Linear(3, 3)

    def forward(self, inputs):
        tokens = inputs["tokens"]
        h1 = self.embedding(tokens) + 1
        return EncoderOutput(layers=[h1, torch.tanh(self.linear(h1)) + 2], mask=tokens != 0)


def test_padding_is_zeroed_even_where_the_encoder_leaves_it_nonzero() -> None:
    torch.manual_seed(0)
    model = MTAN(_LeakyPadding(), {"t": TaggerHead(3, 2)})
    tokens = torch.tensor([[1, 2, 0], [3, 0, 0]])
    enc = model.encoder({"tokens": tokens})
    assert (enc.layers[0][~enc.mask] != 0).all()
    out = model({"tokens": tokens})
    assert torch.all(out.task_features["t"][~out.mask] == 0)
    hats = model.attend("t", enc.layers, enc.mask)
    assert all(torch.all(h[~enc.mask] == 0) for h in hats)
    assert (out.task_features["t"][out.mask] != 0).all()


def test_overfits_a_small_batch() -> None:
    model = _model(seed=1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 5, generator=g)
    ya, yb = torch.randint(0, 3, (16,), generator=g), torch.randint(0, 2, (16,), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)

    def loss_fn():
        out = model({"x": x})
        return nn.functional.cross_entropy(out.outputs["a"], ya) + nn.functional.cross_entropy(
            out.outputs["b"], yb
        )

    first = loss_fn().item()
    for _ in range(300):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss_fn().item() < 1e-2 < first


@pytest.mark.parametrize(
    "opts, field",
    [
        ({"depths": [0, 3]}, "depths"),
        ({"depths": [1, 2]}, "depths"),  # omits the top layer
        ({"depths": [3, 3]}, "depths"),
        ({"depths": []}, "depths"),
        ({"depths": 3}, "depths"),
        ({"hidden": 0}, "hidden"),
        ({"hidden": True}, "hidden"),
    ],
)
def test_bad_options_raise_naming_the_field(opts, field) -> None:
    with pytest.raises(OptionError) as err:
        MTAN.from_parts(
            encoder=lambda: MLP(5, [8, 8, 6]),
            heads=lambda dims: {"a": ClassifierHead(dims["a"], 3)},
            tasks=["a"],
            **opts,
        )
    assert err.value.option == field
