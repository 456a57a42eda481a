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
import os
import warnings
from pathlib import Path

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


def onnx_beside(checkpoint: str | os.PathLike[str], tile_size: int) -> Path:
    """Where :func:`export_checkpoint` writes by default: ``<checkpoint stem>.<size>px.onnx`` beside it,
    the size rounded up to a multiple of 32 as the network is exported."""
    from ..models.base import SIZE_MULTIPLE

    size = -(-int(tile_size) // SIZE_MULTIPLE) * SIZE_MULTIPLE
    source = Path(checkpoint)
    return source.with_name(f"{source.stem}.{size}px.onnx")


def export_checkpoint(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                      tile_size: int | None = None) -> Path:
    """Write a checkpoint's network as ONNX beside it, for ``training_cli export --format onnx``.

    The file is ``<checkpoint stem>.<size>px.onnx`` unless ``out`` names one; it is written
    atomically and never replaces an existing file. The engine does not need it (it keeps its
    own verified cache); it is for other tools and for checking the export ahead of a run.

    Args:
        checkpoint: The model file.
        out: Where to write (default: beside the checkpoint).
        tile_size: Tile side (default: the card's), rounded up to a multiple of 32.

    Returns:
        The path written.

    Raises:
        InputError: when ``out`` exists already.
    """
    from ..errors import InputError
    from ..files import atomic_write_with
    from ..models.base import SIZE_MULTIPLE
    from ..models.checkpoint import load_checkpoint

    network, card = load_checkpoint(checkpoint)
    size = int(tile_size or card.tile_size)
    size = -(-size // SIZE_MULTIPLE) * SIZE_MULTIPLE
    target = Path(out) if out is not None else onnx_beside(checkpoint, size)
    if target.exists():
        raise InputError(f"{target} already exists; choose another output file (nothing is overwritten)")
    model, _ = export_onnx(network, len(card.bands_t1), size)
    return atomic_write_with(target, lambda stream: stream.write(model))
