"""Import an object named by a ``"package.module:attribute"`` string."""

from __future__ import annotations

import importlib
from typing import Any


def import_object(path: str) -> Any:
    """``"package.module:Name"`` (or ``"package.module:Outer.Inner"``) -> the object.

    Raises ``ValueError`` saying which part of the path could not be resolved.
    """
    module_name, sep, attr = str(path).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"import path {path!r} must look like 'package.module:Name'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"import path {path!r}: cannot import module {module_name!r} ({err})"
        ) from err
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(
                f"import path {path!r}: {module_name!r} has no attribute {attr!r}"
            ) from None
    return obj
