"""Every sharing architecture with the LeNet encoder overfits a fixed batch of 32 real
Fashion-MNIST pairs to near-zero training loss (issue 5, "Done when"), and one that cannot
read images says so as a config error.

Each step is the Trainer's own step (collated batch -> ``Trainer.forward_losses`` ->
``balancing.backward`` with the model's shared features, shared parameters and penalty ->
Adam) without ``fit``'s per-epoch validation, which would dominate the time on one batch.
"""

from __future__ import annotations

import pytest
import torch
from overfit import overfit
from shared_data import require_data

from polytask.data.collate import Collator
from polytask.data.images import FASHION_CLASSES, fashion_pairs
from polytask.errors import OptionError
from polytask.nn import ClassifierHead, LeNet
from polytask.sharing import ARCHITECTURES
from polytask.tasks import Classification, Task

TASKS = {t: Task(t, Classification(list(FASHION_CLASSES))) for t in ("left", "right")}
#: Adam steps at lr 3e-3; every architecture is below 0.05 per task after 41–87 steps
#: (PLE slowest and least smooth), so the budget leaves a margin
STEPS = {
    "hard": 100,
    "mtan": 100,
    "cross_stitch": 100,
    "soft": 100,
    "mmoe": 100,
    "cgc": 100,
    "ple": 150,
}


@pytest.fixture(scope="module")
def batch():
    require_data("fashion-mnist/README.md")
    examples = fashion_pairs(seed=0, n_train=32, n_val=2, n_test=2)["train"]
    return Collator(TASKS, input_kind="image")(examples)


def _heads(dims):
    return {t: ClassifierHead(dims[t], len(FASHION_CLASSES), hidden=50) for t in dims}


def _model(name: str):
    torch.manual_seed(0)
    arch = ARCHITECTURES[name]
    if name == "hard":
        return arch(LeNet(), _heads({"left": 50, "right": 50}))
    return arch.from_parts(encoder=LeNet, heads=_heads, tasks=list(TASKS))


@pytest.mark.parametrize("name", list(STEPS))
def test_architecture_overfits_a_fixed_batch_of_pairs(name, batch) -> None:
    first, last = overfit(_model(name), TASKS, batch, STEPS[name], lr=3e-3)
    for t in TASKS:
        assert first[t] > 2.0  # ≈ ln 10 at the start
        assert last[t].item() < 0.05, (name, t, last[t].item())


def test_gates_on_raw_inputs_are_a_config_error_for_images() -> None:
    with pytest.raises(OptionError) as err:
        ARCHITECTURES["mmoe"].from_parts(
            encoder=LeNet, heads=_heads, tasks=list(TASKS), gate_input="x"
        )
    assert (err.value.option, err.value.fix) == ("gate_input", "gate_input: encoder")
