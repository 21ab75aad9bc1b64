"""``polytask serve RUN_DIR``: every task of a trained run over HTTP, from one forward pass
per micro-batch (the ``serve`` extra: FastAPI and uvicorn). See :mod:`.app` for the API and
:mod:`.batcher` for the batching."""

from __future__ import annotations

try:
    from .app import Limits, PredictRequest, create_app
except ImportError as err:  # pragma: no cover - the serve extra is part of [all]
    from ..config.errors import ConfigError

    raise ConfigError(
        "serve", f"needs fastapi ({err.name} is missing)", "pip install 'polytask[serve]'"
    ) from None
from .batcher import Batcher, Overloaded

__all__ = ["Batcher", "Limits", "Overloaded", "PredictRequest", "create_app", "serve"]


def serve(
    run_dir: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    device: str = "auto",
) -> None:
    """Load ``run_dir`` and serve it until interrupted."""
    try:
        import uvicorn
    except ImportError:
        from ..config.errors import ConfigError

        raise ConfigError(
            "serve", "needs fastapi and uvicorn", "pip install 'polytask[serve]'"
        ) from None
    from ..runs import load

    app = create_app(load(run_dir, device=device), limits)
    uvicorn.run(app, host=host, port=port, log_level="info")
