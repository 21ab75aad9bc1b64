"""What a config names from a registry, resolved and checked before any data is read.

Every pluggable piece a config names (a task kind, a data format, an encoder, an
architecture, a task layer, a balancing method, a sampler, a custom head) is a registered
name or an import path ``package.module:Class``; :func:`check_registry_names` resolves
them all through their registries (each checks the kind's base class before anything is
called) and reports the first bad one at its config path. Custom heads (import paths
only) are resolved when the model is built.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from torch import nn

from ..errors import OptionError
from ..options import did_you_mean
from ..registry import Registry
from .errors import ConfigError
from .schema import Config, Open

#: custom heads (``model.heads.TASK.type``): import paths only, built with in_dim and out_dim
HEADS: Registry[type[nn.Module]] = Registry(
    "head", base=nn.Module, expects="a torch.nn.Module class taking in_dim and out_dim"
)


def resolve(registry: Registry[Any], name: str, where: str) -> Any:
    """``name`` resolved (and checked) by ``registry``; its error located at config path
    ``where``."""
    try:
        return registry.resolve(name)
    except OptionError as err:
        raise ConfigError(where, err.problem, err.fix) from None


def check_misspelt_keys(section: BaseModel, where: str = "") -> None:
    """Raise :class:`ConfigError` at an option of an open section (``balancing``, ``sampler``,
    ``tasks.T``, ``model.encoder``, ...) that is a misspelling of one of the section's own keys
    left out — ``methd: cagrad`` beside no ``method`` — rather than report the options of the
    default the section falls back to. Walks nested sections."""
    if isinstance(section, Open):
        unset = [f for f in type(section).model_fields if f not in section.model_fields_set]
        for key in section.model_extra or {}:
            hint = did_you_mean(key, unset)
            if hint:
                raise ConfigError(
                    f"{where}.{key}".lstrip("."), "unknown key", f"{hint}correct its spelling"
                )
    for name in type(section).model_fields:
        value = getattr(section, name)
        children: list[tuple[Any, Any]]
        children = list(value.items()) if isinstance(value, dict) else [(None, value)]
        for key, child in children:
            if isinstance(child, BaseModel):
                path = f"{where}.{name}" + (f".{key}" if key is not None else "")
                check_misspelt_keys(child, path.lstrip("."))


def check_registry_names(cfg: Config) -> None:
    """Resolve every registry name in ``cfg``; raise :class:`ConfigError` at the first bad one."""
    check_misspelt_keys(cfg)
    from .. import balancing
    from ..data.formats import FORMATS
    from ..data.samplers import SAMPLERS
    from ..nn import ENCODERS
    from ..sharing import ARCHITECTURES, TASK_LAYERS
    from ..tasks import KINDS

    m = cfg.model
    named: list[tuple[Registry[Any], str, str]]
    named = [(KINDS, tc.kind, f"tasks.{t}.kind") for t, tc in cfg.tasks.items()]
    named += [(FORMATS, s.format, f"data.sources.{n}.format") for n, s in cfg.data.sources.items()]
    named += [
        (ENCODERS, m.encoder.type, "model.encoder.type"),
        (ARCHITECTURES, m.sharing, "model.sharing"),
    ]
    named += [
        (TASK_LAYERS, layer.type, f"model.task_layers.{t}.type")
        for t, layer in m.task_layers.items()
    ]
    named += [
        (balancing.METHODS, cfg.balancing.method, "balancing.method"),
        (SAMPLERS, cfg.sampler.type, "sampler.type"),
    ]
    for registry, name, where in named:
        resolve(registry, name, where)
