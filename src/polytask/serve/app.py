"""The HTTP API of a trained run: every task from one forward pass (FastAPI).

==============  ====================================================================
``POST``        ``/predict`` with ``{"inputs": ["text", ["pre", "tokenised"], ...],
                "tasks": ["sentiment"]}`` (``tasks`` optional: all by default) ->
                ``{"tasks": [...], "predictions": [{task: output}, ...]}``, one entry
                per input in order (labels, probabilities, spans: as ``predict``)
``GET``         ``/health`` -> ``{"status": "ok", ...}`` with the batcher's counters
``GET``         ``/tasks`` -> each task's kind and labels
``GET``         ``/docs``, ``/openapi.json``: the API's description
==============  ====================================================================

Bad input never reaches the model and never causes a 500: a body that is not JSON, not
UTF-8, too large (413), of another content type (415), nested too deeply, with fields of
the wrong type, empty or over-long texts, too many inputs or an unknown task name is a 4xx
with ``{"error": {"field", "problem", "fix"}}``. A full queue answers 503 with
``Retry-After`` at once.

A run trained on ``format: molecules`` reads each input string as a SMILES, fingerprinted as
in training; one RDKit cannot parse (or a token list) is a 422 naming the input, before
anything is queued.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config.errors import ConfigError
from ..errors import PolytaskError
from .batcher import Batcher, Overloaded

__all__ = ["Limits", "PredictRequest", "create_app"]


@dataclass(frozen=True)
class Limits:
    """What one request may hold, and how requests are batched."""

    max_payload: int = 1_000_000  # bytes of the request body
    max_inputs: int = 256  # inputs per request
    max_chars: int = 20_000  # characters of one text (or of one input's tokens together)
    max_batch: int = 32  # inputs per forward pass
    max_wait_ms: float = 5.0  # how long a request waits for others to share its batch
    queue_size: int = 1024  # inputs waiting at most; beyond: 503


class PredictRequest(BaseModel):
    """The body of ``POST /predict``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    inputs: list[str | list[str]] = Field(
        min_length=1, description="Texts, or token lists, to predict every task for."
    )
    tasks: list[str] | None = Field(
        default=None, description="The tasks to return (default: every task)."
    )


def _error(
    status: int, field: str, problem: str, fix: str, headers: dict[str, str] | None = None
) -> Any:
    body = {"error": {"field": field, "problem": problem, "fix": fix}}
    return JSONResponse(body, status_code=status, headers=headers)


def _depth(value: Any, limit: int, level: int = 0) -> bool:
    """Whether ``value`` nests deeper than ``limit``."""
    if level > limit:
        return True
    if isinstance(value, dict):
        return any(_depth(v, limit, level + 1) for v in value.values())
    if isinstance(value, list):
        return any(_depth(v, limit, level + 1) for v in value)
    return False


def create_app(run: Any, limits: Limits | None = None) -> Any:
    """The FastAPI application serving ``run`` (a :class:`~polytask.runs.LoadedRun`, or
    anything with ``predict(inputs)`` and ``tasks``)."""
    limits = limits or Limits()
    batcher = Batcher(
        run.predict,
        max_batch=limits.max_batch,
        max_wait=limits.max_wait_ms / 1000,
        queue_size=limits.queue_size,
    )
    tasks = {
        name: {"kind": task.kind.kind, "labels": list(getattr(task.kind, "labels", []) or [])}
        for name, task in run.tasks.items()
    }

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="polytask",
        summary="Every task of a multi-task model from one forward pass.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "tasks": list(tasks), **batcher.stats}

    @app.get("/tasks")
    async def list_tasks() -> dict[str, Any]:
        return tasks

    @app.post(
        "/predict",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
            }
        },
    )
    async def predict(request: Request) -> Any:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return _error(
                415, "content-type", f"{kind or 'none'} is not application/json", "send JSON"
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_payload:
            return _error(
                413,
                "body",
                f"{declared} bytes is over {limits.max_payload}",
                "send fewer inputs per request",
            )
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_payload:
                return _error(
                    413, "body", f"over {limits.max_payload} bytes", "send fewer inputs per request"
                )
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as err:
            return _error(
                400,
                "body",
                f"not UTF-8 ({err.reason} at byte {err.start})",
                "encode the body as UTF-8",
            )
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            return _error(
                400, "body", f"not JSON ({err.msg} at line {err.lineno})", 'send {"inputs": [...]}'
            )
        except RecursionError:
            return _error(400, "body", "nested too deeply", 'send {"inputs": [...]}')
        if _depth(data, 4):
            return _error(400, "body", "nested too deeply", 'send {"inputs": [...]}')
        try:
            req = PredictRequest.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            path = [str(p) for p in first["loc"] if p not in ("str", "list[str]")]  # union arms
            where = ".".join(path) or "body"
            return _error(
                422, where, str(first["msg"]), 'send {"inputs": ["text", ...], "tasks": [...]}'
            )
        if len(req.inputs) > limits.max_inputs:
            return _error(
                413,
                "inputs",
                f"{len(req.inputs)} inputs, over {limits.max_inputs}",
                "split the request",
            )
        for i, x in enumerate(req.inputs):
            if isinstance(x, str):
                empty, size = not x.strip(), len(x)
            else:
                empty, size = not x or any(not t.strip() for t in x), sum(len(t) for t in x)
            if empty:
                return _error(422, f"inputs.{i}", "empty", "give some text (tokens non-empty)")
            if size > limits.max_chars:
                return _error(
                    413, f"inputs.{i}", f"{size} characters, over {limits.max_chars}", "split it"
                )
        wanted = req.tasks if req.tasks is not None else list(tasks)
        unknown = [t for t in wanted if t not in tasks]
        if unknown or not wanted:
            return _error(
                422,
                "tasks",
                f"unknown task {unknown[0]!r}" if unknown else "empty",
                f"use some of {list(tasks)}",
            )
        inputs: list[Any] = list(req.inputs)
        if getattr(run, "molecules", False):
            # SMILES become features here, one at a time: a bad one is this request's 422
            # naming it, never the error of a batch shared with other requests
            for i, x in enumerate(req.inputs):
                try:
                    inputs[i] = run.to_examples([x])[0]
                except ConfigError as err:
                    return _error(422, f"inputs.{i}", err.problem, err.fix)
        try:
            outputs = await batcher.submit(inputs)
        except Overloaded as err:
            return _error(
                503,
                "server",
                str(err),
                "retry later",
                headers={"Retry-After": str(err.retry_after)},
            )
        except ConfigError as err:  # e.g. raw text for a run whose sources split it differently
            return _error(422, "inputs", err.problem, "send token lists instead of raw text")
        except PolytaskError as err:  # e.g. non-finite outputs: the model's problem, named
            return _error(500, err.option or "model", err.problem, err.fix)
        return {"tasks": wanted, "predictions": [{t: row[t] for t in wanted} for row in outputs]}

    return app
