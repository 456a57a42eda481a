"""int8 post-training static quantisation of an exported network with ONNX Runtime's quantiser.

Weights are quantised per output channel (signed int8) and activations per tensor
(unsigned int8) in QDQ form: QuantizeLinear/DequantizeLinear pairs around each
quantised operator, which ONNX Runtime fuses into int8 kernels and OpenVINO reads
as well. Activation ranges come from MinMax calibration over tiles of the scene
being processed (the engine passes a spread-out sample), so the ranges match the
imagery the model is run on. On CPUs with AVX-512 VNNI or AMX the int8 kernels are
markedly faster than fp32; elsewhere they may not be (see docs/performance.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .export import INPUT_NAMES

log = logging.getLogger(__name__)

CalibrationSample = Sequence[tuple[np.ndarray, np.ndarray]]


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
        quantize_static(str(prepared), str(quantised), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        return quantised.read_bytes()
