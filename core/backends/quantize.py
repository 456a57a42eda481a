"""int8 post-training static quantisation of an exported network with ONNX Runtime's quantiser.

Weights are quantised per output channel (signed int8) and activations per tensor
(unsigned int8) in QDQ form: QuantizeLinear/DequantizeLinear pairs around each
quantised operator, which ONNX Runtime fuses into int8 kernels and OpenVINO reads
as well. Activation ranges come from MinMax calibration over tiles of the scene
being processed (the engine passes a spread-out sample), so the ranges match the
imagery the model is run on.

The shared ResNet encoder is quantised whole (its convolutions, residual additions and
max-pool, so tensors stay int8 from one convolution to the next); after the encoder only
convolutions are, and the last convolution on the way to each output (the heads'
classifiers, whose outputs are the logits) stays fp32. On the trained ``make demo`` model,
quantising every operator the quantiser supports (the additions, products and matrix
products of the attention and fusion blocks as well) kept 99.40 % of the from-to labels;
convolutions only kept 99.69 %, with the last ones in fp32 99.72 %, and with the encoder
whole as well 99.75 %, at 0.92 x the network time (docs/performance.md).

On CPUs with AVX-512 VNNI or AMX the int8 kernels are markedly faster than fp32;
elsewhere they may not be (see docs/performance.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .export import INPUT_NAMES

log = logging.getLogger(__name__)

CalibrationSample = Sequence[tuple[np.ndarray, np.ndarray]]

#: Part of the int8 cache key: a file quantised by an earlier recipe is not reused.
INT8_RECIPE = "encoder-conv-heads-fp32"

#: Scope of the networks' shared ResNet encoder in the exported graph's node names (the
#: exporter names nodes by module path; every network keeps its encoder as ``self.encoder``).
ENCODER_SCOPE = "/encoder/"


def calibration_digest(sample: CalibrationSample) -> str:
    """SHA-256 of the calibration tiles, part of the int8 cache key."""
    digest = hashlib.sha256()
    for x1, x2 in sample:
        for array in (x1, x2):
            contiguous = np.ascontiguousarray(array, dtype=np.float32)
            digest.update(str(contiguous.shape).encode())
            digest.update(contiguous.tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_root_log() -> Iterator[None]:
    """The quantiser logs through the root logger, e.g. that a 1-D weight has no channel axis
    (it is then quantised per tensor, as intended); keep that out of the user's log."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def output_convolutions(model: Any) -> list[str]:
    """Names of the convolutions whose output reaches a graph output without passing another convolution."""
    outputs = {output.name for output in model.graph.output}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = []
    for node in model.graph.node:
        if node.op_type != "Conv" or not node.name:
            continue
        tensors, seen = list(node.output), set()
        while tensors:
            tensor = tensors.pop()
            if tensor in outputs:
                found.append(node.name)
                break
            for consumer in consumers.get(tensor, []):
                if consumer.op_type not in ("Conv", "ConvTranspose", "MatMul", "Gemm") and id(consumer) not in seen:
                    seen.add(id(consumer))
                    tensors.extend(consumer.output)
    return found


def fp32_nodes(model: Any) -> list[str]:
    """Names of the nodes the recipe keeps in fp32: outside the encoder, all but the convolutions,
    and everywhere the convolutions that write an output (:func:`output_convolutions`)."""
    outside = [node.name for node in model.graph.node
               if node.op_type != "Conv" and not node.name.startswith(ENCODER_SCOPE)]
    return outside + output_convolutions(model)


def quantize_int8(fp32_model: Path, sample: CalibrationSample) -> bytes:
    """Quantise the fp32 ONNX file ``fp32_model``, calibrated on ``sample`` ([C, S, S] pairs).

    Returns:
        The int8 (QDQ) ONNX model bytes.
    """
    if not sample:
        raise ValueError("int8 calibration needs at least one tile with valid pixels")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(sample)

        def get_next(self) -> dict[str, np.ndarray] | None:
            pair = next(self._items, None)
            if pair is None:
                return None
            return {INPUT_NAMES[0]: np.ascontiguousarray(pair[0][None], dtype=np.float32),
                    INPUT_NAMES[1]: np.ascontiguousarray(pair[1][None], dtype=np.float32)}

    with tempfile.TemporaryDirectory(prefix="scd-int8-") as folder, warnings.catch_warnings(), _quiet_root_log():
        warnings.simplefilter("ignore")
        prepared = Path(folder) / "prepared.onnx"
        quantised = Path(folder) / "int8.onnx"
        quant_pre_process(str(fp32_model), str(prepared), skip_symbolic_shape=True)
        import onnx

        graph = onnx.load(str(prepared))
        unnamed = [node for node in graph.graph.node if not node.name]
        for number, node in enumerate(unnamed):  # the recipe names the nodes it keeps in fp32
            node.name = f"unnamed_{number}_{node.op_type}"
        if unnamed:
            onnx.save(graph, str(prepared))
        kept_fp32 = fp32_nodes(graph)
        quantize_static(str(prepared), str(quantised), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=kept_fp32)
        return quantised.read_bytes()
