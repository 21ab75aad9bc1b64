"""Exporting a trained run for serving outside Python-PyTorch: ``polytask export RUN_DIR``.

:mod:`.onnx` writes the shared encoder and every task's head as one ONNX graph (a tuple of
per-task outputs named after the tasks) and checks it against PyTorch in onnxruntime.
"""

from .onnx import (
    EXPORTERS,
    TOLERANCE,
    ExportError,
    OnnxExport,
    TaskGraph,
    export_onnx,
    export_run,
    input_axes,
    input_names,
    sample_batches,
)

__all__ = [
    "EXPORTERS",
    "TOLERANCE",
    "ExportError",
    "OnnxExport",
    "TaskGraph",
    "export_onnx",
    "export_run",
    "input_axes",
    "input_names",
    "sample_batches",
]
