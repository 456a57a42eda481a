"""Where the network's forward pass runs: PyTorch, ONNX Runtime or OpenVINO.

The model file stays the one self-describing checkpoint. For a runtime other than
PyTorch the network is exported to ONNX at the run's tile size on first use and kept
in a cache (:mod:`.cache`), so later runs start at once. :func:`select_backend` turns
the user's choice (``auto``, ``torch``, ``onnxruntime``, ``openvino``) into an
:class:`InferenceBackend`: a callable ``(x1, x2) -> dict`` with the model contract's
keys, plus the name of the runtime in use and why it was chosen, for the run's log.

``auto`` keeps PyTorch on a GPU (the runtimes here are CPU builds) and where the user
named a reduced precision. On a CPU it measures PyTorch against each installed runtime
once per network, tile, batch size, arithmetic and CPU, in turns on the first batches
of a long run (:mod:`.race`), runs the fastest and remembers it (:mod:`.measure`).
OpenVINO follows the run's bf16, ONNX Runtime computes in fp32 (docs/performance.md).
The runtimes are optional: without them everything runs on PyTorch and the reason
says what to install.
"""

from __future__ import annotations

from .select import (
    AUTO_ORDER,
    BACKEND_CHOICES,
    INSTALL_HINT,
    BackendRace,
    InferenceBackend,
    default_cache_dir,
    runtime_available,
    select_backend,
)

__all__ = [
    "AUTO_ORDER",
    "BACKEND_CHOICES",
    "INSTALL_HINT",
    "BackendRace",
    "InferenceBackend",
    "default_cache_dir",
    "runtime_available",
    "select_backend",
]
