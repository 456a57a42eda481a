"""The network as an ONNX graph at one tile size, batch size left free.

PyTorch's TorchScript-based exporter traces the network once at the run's padded
tile size. The tile side is fixed in the graph (the runtimes plan memory and pick
kernels for it), the batch dimension is free so the last, shorter batch of a scene
needs no second export. The exporter warns that it is deprecated and that tracing
turns shape checks into constants; both are expected here (the shape is the one the
graph is used at), so those warnings are silenced for the export only.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

#: ONNX operator set: supported by every runtime version this project allows.
OPSET = 17

INPUT_NAMES = ("x1", "x2")


def output_names(network: nn.Module, bands: int, size: int) -> tuple[str, ...]:
    """The contract keys the network returns in inference, in its own order."""
    probe = torch.zeros(1, bands, size, size)
    with torch.inference_mode():
        outputs = network(probe, probe)
    return tuple(outputs)


def export_onnx(network: nn.Module, bands: int, size: int) -> tuple[bytes, tuple[str, ...]]:
    """Serialise ``network`` (on the CPU, in eval mode) to ONNX for ``size`` x ``size`` tiles.

    Args:
        network: A network following the model contract.
        bands: Input bands per date.
        size: Tile side after padding (a multiple of 32).

    Returns:
        The ONNX model bytes and the output names (the contract keys) in graph order.
    """
    network = network.to("cpu").eval()
    names = output_names(network, bands, size)
    example = (torch.zeros(1, bands, size, size), torch.zeros(1, bands, size, size))
    dynamic = {name: {0: "batch"} for name in (*INPUT_NAMES, *names)}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)
        with torch.no_grad():
            torch.onnx.export(network, example, buffer, input_names=list(INPUT_NAMES), output_names=list(names),
                              dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    return buffer.getvalue(), names
