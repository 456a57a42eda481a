"""What the engine calls for the forward pass, whichever runtime computes it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .race import BackendRace

Forward = Callable[[Any, Any], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class InferenceBackend:
    """The forward pass a run uses.

    Attributes:
        name: ``torch``, ``onnxruntime`` or ``openvino``.
        reason: Why this one, for the run's log.
        forward: ``(x1, x2) -> dict`` of output tensors with the model contract's keys.
        int8: True when the graph is int8-quantised.
        model_path: The cached ONNX file in use (None for torch).
        autocast: For torch, the autocast dtype the engine wraps the forward pass in (None: fp32).
        precision: What the arithmetic is: ``fp32``, ``bf16`` or ``int8``.
    """

    name: str
    reason: str
    forward: Forward
    int8: bool = False
    model_path: Path | None = None
    autocast: torch.dtype | None = None
    precision: str = "fp32"

    @property
    def channels_last(self) -> bool:
        """PyTorch's CPU kernels prefer NHWC tensors; the runtimes take plain NCHW arrays."""
        return self.name == "torch"

    def __call__(self, x1: Any, x2: Any) -> dict[str, torch.Tensor]:
        return self.forward(x1, x2)

    def describe(self) -> str:
        return f"{self.name} {self.precision} ({self.reason})"


def engine_forward(backend: InferenceBackend | BackendRace, device: torch.device) -> Forward:
    """``backend`` called as the engine calls it: in its tensor layout and under its autocast.

    The one place that applies a backend's layout and autocast, for the engine's batches and for
    each candidate of a race (which, being already wrapped, asks for neither itself).
    """
    from ..devices import inference_context

    def forward(x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        if backend.channels_last:
            x1, x2 = (x.contiguous(memory_format=torch.channels_last) for x in (x1, x2))
        with inference_context(device, backend.autocast):
            return backend(x1, x2)

    return forward
