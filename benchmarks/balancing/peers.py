"""The peer libraries the balancing benchmarks compare against: torchjd 0.18 and LibMTL 1.1.5.

Both are optional: they live in ``benchmarks/.venv-peers`` (``setup_peers.sh``), never in
the project's dependencies. Everything here returns ``None`` / an explanation when a peer is
missing, so the scripts still run (polytask only) in the project venv.

LibMTL 1.1.5 needs three work-arounds to run at all on torch 2.13 / CPU, each the smallest
that lets its weighting code run unchanged:

* ``import LibMTL`` imports ``torchvision.models.utils`` (removed from torchvision, and
  torchvision is not installed here: it would pull a CUDA torch). A stand-in module with
  the one name it imports is registered in ``sys.modules`` just for the import and removed
  afterwards.
* Its ``Trainer`` hard-codes ``cuda:0``, so the weighting classes are driven directly: the
  model is LibMTL's own ``HPS`` architecture mixed with a weighting class exactly as
  ``Trainer._prepare_model`` does, on ``device=cpu``, and one training step is the body of
  ``Trainer.train``'s inner loop (forward, K losses, ``zero_grad``, ``model.backward``,
  ``optimizer.step``).
* On torch ≥ 2 ``zero_grad()`` sets gradients to ``None``; its parameter-gradient methods
  then write ``param.grad.data = ...`` into ``None`` and crash. ``zero_grad_share_params``
  is overridden to zero-fill the shared encoder's gradients instead (torch 1.x behaviour).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Callable

import torch
from torch import nn

# polytask name -> (LibMTL weighting class, its backward kwargs); defaults of LibMTL/config.py
LIBMTL_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "sum": ("EW", {}),
    "uw": ("UW", {}),
    "gradnorm": ("GradNorm", {"alpha": 1.5}),
    "dwa": ("DWA", {"T": 2.0}),
    "rlw": ("RLW", {"dist": "Normal"}),
    "gls": ("GLS", {}),
    "mgda": ("MGDA", {"mgda_gn": "none"}),
    "pcgrad": ("PCGrad", {}),
    "graddrop": ("GradDrop", {"leak": 0.0}),
    "gradvac": ("GradVac", {"beta": 0.5}),
    "imtl": ("IMTL", {}),
    "cagrad": ("CAGrad", {"calpha": 0.5, "rescale": 1}),
}


def _torchjd_aggregators(k: int) -> dict[str, Callable[[], Any]]:
    from torchjd import aggregation as A

    return {
        "sum": A.Sum,
        "mean": A.Mean,
        "upgrad": A.UPGrad,
        "dualproj": A.DualProj,
        "mgda": A.MGDA,
        "pcgrad": A.PCGrad,
        "cagrad": lambda: A.CAGrad(c=0.5),
        "imtl_g": A.IMTLG,
        "nash_mtl": lambda: A.NashMTL(n_tasks=k),
        "gradvac": A.GradVac,
        "aligned_mtl": A.AlignedMTL,
        "con_fig": A.ConFIG,
        "fairgrad": lambda: A.FairGrad(alpha=1.0),
        "excess_mtl": A.ExcessMTL,
        "graddrop": A.GradDrop,
    }


def torchjd_version() -> str | None:
    try:
        from importlib.metadata import version

        import torchjd  # noqa: F401

        return version("torchjd")
    except ImportError:
        return None


def torchjd_methods(k: int) -> dict[str, Callable[[], Any]]:
    """polytask name -> factory of the torchjd aggregator for the same method ({} without
    torchjd)."""
    if torchjd_version() is None:
        return {}
    return _torchjd_aggregators(k)


def import_libmtl() -> Any | None:
    """``LibMTL`` imported with the torchvision stand-in, or ``None`` where it is not installed."""
    if "LibMTL" in sys.modules:
        return sys.modules["LibMTL"]
    try:
        importlib.util.find_spec("LibMTL")
    except ValueError:
        return None
    if importlib.util.find_spec("LibMTL") is None:
        return None
    added: list[str] = []
    if importlib.util.find_spec("torchvision") is None:

        def _unavailable(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError("torchvision stand-in: pretrained weights are not available here")

        for name in ("torchvision", "torchvision.models", "torchvision.models.utils"):
            module = types.ModuleType(name)
            module.__path__ = []  # a package, so submodules resolve
            sys.modules[name] = module
            added.append(name)
        sys.modules["torchvision.models.utils"].load_state_dict_from_url = _unavailable  # type: ignore[attr-defined]
        sys.modules["torchvision"].models = sys.modules["torchvision.models"]  # type: ignore[attr-defined]
        sys.modules["torchvision.models"].utils = sys.modules["torchvision.models.utils"]  # type: ignore[attr-defined]
    try:
        return importlib.import_module("LibMTL")
    finally:
        for name in added:
            sys.modules.pop(name, None)


def libmtl_version() -> str | None:
    if import_libmtl() is None:
        return None
    from importlib.metadata import version

    return version("LibMTL")


def libmtl_model(
    method: str, trunk: nn.Module, heads: dict[str, nn.Module], rep_grad: bool
) -> tuple[nn.Module, dict[str, Any]]:
    """LibMTL's HPS model mixed with the weighting class for ``method`` (a polytask name), on CPU,
    in the state its Trainer would give it at epoch 2 (so GradNorm and DWA run their adaptive
    branch: their loss history is filled with ones). Returns (model, backward kwargs)."""
    libmtl = import_libmtl()
    if libmtl is None:
        raise RuntimeError("LibMTL is not installed (run benchmarks/balancing/setup_peers.sh)")
    import numpy as np
    from LibMTL.architecture import HPS

    cls_name, kwargs = LIBMTL_METHODS[method]
    weighting = getattr(libmtl.weighting, cls_name)

    class MTLmodel(HPS, weighting):  # as LibMTL.Trainer._prepare_model builds it
        def __init__(self) -> None:
            super().__init__(
                task_name=list(heads),
                encoder_class=lambda: trunk,
                decoders=nn.ModuleDict(heads),
                rep_grad=rep_grad,
                multi_input=False,
                device=torch.device("cpu"),
            )
            self.init_param()

        def zero_grad_share_params(self) -> None:
            # torch >= 2: zero_grad() sets None, which LibMTL's _reset_grad cannot write into
            self.encoder.zero_grad(set_to_none=False)

    model = MTLmodel()
    model.epoch = 2
    model.train_loss_buffer = np.ones((len(heads), 3))
    return model, kwargs
