"""Turning the user's backend choice into a forward callable, with the reason for the log."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..models.card import ModelCard
from ..version import __version__
from . import measure
from .cache import CacheEntry, OnnxCache, default_cache_dir
from .export import OPSET, export_onnx
from .quantize import CalibrationSample, calibration_digest, quantize_int8
from .runtimes import RUNTIMES, OnnxRuntimeForward, OpenVinoForward, runtime_available, runtime_version

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "torch", "onnxruntime", "openvino")

#: CPU runtimes ``auto`` tries, fastest first (``make bench`` section 7, docs/performance.md): on a
#: 2-core AVX-512 CPU under load OpenVINO took 0.33-0.60 x the time of today's PyTorch path and
#: ONNX Runtime 0.45-0.62 x; OpenVINO was faster on three networks of four (level on GAPL-SCD) and
#: also ran the int8 graph faster. ONNX Runtime is the fall-back (and always makes the int8 graph).
AUTO_ORDER = ("openvino", "onnxruntime")

#: ``auto`` exports only for runs of at least this many batches (or when the export is cached):
#: a first export costs about as much as a few forward passes, more than a tiny scene gains.
AUTO_MIN_BATCHES = 8

#: With several runtimes installed, ``auto`` times each (:mod:`.measure`, three forward passes
#: apiece) only on a run of at least this many batches, so that measuring costs at most a quarter
#: of the run; shorter runs take ``AUTO_ORDER``'s first until a longer one has measured.
AUTO_MEASURE_BATCHES = 24

INSTALL_HINT = ("for faster CPU inference install ONNX Runtime (or OpenVINO) into the Python that runs this: "
                "python -m pip install onnxruntime")

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
        stand_in: True when ``auto`` fell back to torch where a CPU runtime would have run
            (a short run, a failed export): the run then stays at fp32, so that its labels
            are the runtime's and do not depend on whether an export happened to be cached.
    """

    name: str
    reason: str
    forward: Forward
    int8: bool = False
    model_path: Path | None = None
    stand_in: bool = False

    @property
    def channels_last(self) -> bool:
        """PyTorch's CPU kernels prefer NHWC tensors; the runtimes take plain NCHW arrays."""
        return self.name == "torch"

    def __call__(self, x1: Any, x2: Any) -> dict[str, torch.Tensor]:
        return self.forward(x1, x2)

    def describe(self) -> str:
        return f"{self.name}{' int8' if self.int8 else ''} ({self.reason})"


def select_backend(network: nn.Module, card: ModelCard, *, requested: str = "auto",
                   device: torch.device | None = None, model_size: int, batch_size: int,
                   autocast_dtype: torch.dtype | None = None, int8: bool = False,
                   calibration: Callable[[], CalibrationSample] | None = None,
                   cache_dir: str | os.PathLike[str] | None = None,
                   expected_batches: int | None = None) -> InferenceBackend:
    """Resolve ``requested`` to a backend for ``network`` at ``model_size`` px tiles.

    Args:
        network: The loaded network (on the CPU while exporting).
        card: Its model card.
        requested: ``auto``, ``torch``, ``onnxruntime`` or ``openvino``.
        device: The run's device; runtimes other than torch are CPU only.
        model_size: Tile side after padding, as the network sees it.
        batch_size: Tiles per forward pass.
        autocast_dtype: The run's reduced precision, if any (``auto`` then keeps torch).
        int8: Quantise to int8 (ONNX Runtime's quantiser; needs ``calibration``).
        calibration: Gives the calibration tiles, called only when no int8 file is cached.
        cache_dir: Cache folder (default: :func:`~.cache.default_cache_dir`).
        expected_batches: Batches the run will need; small runs stay on torch under ``auto``.

    Returns:
        The backend; its ``reason`` says why it was chosen (or why the others were not).

    Raises:
        InputError: for an unknown choice, a runtime that is not installed or cannot run
            here, or a network that cannot be exported, when the user asked for it by name.
    """
    requested = (requested or "auto").strip().lower()
    if requested not in BACKEND_CHOICES:
        raise InputError(f"unknown backend '{requested}'; choose one of {', '.join(BACKEND_CHOICES)}")
    device = device or torch.device("cpu")
    if requested == "torch":
        if int8:
            raise InputError("int8 runs on ONNX Runtime or OpenVINO; choose backend 'auto', 'onnxruntime' "
                             "or 'openvino', or turn int8 off")
        return InferenceBackend("torch", "requested", network)
    if requested != "auto":
        return _runtime_backend(requested, network, card, device, model_size, batch_size, int8, calibration,
                                cache_dir, reason="requested")
    return _auto(network, card, device, model_size, batch_size, autocast_dtype, int8, calibration, cache_dir,
                 expected_batches)


def _auto(network: nn.Module, card: ModelCard, device: torch.device, model_size: int, batch_size: int,
          autocast_dtype: torch.dtype | None, int8: bool, calibration: Callable[[], CalibrationSample] | None,
          cache_dir: str | os.PathLike[str] | None, expected_batches: int | None) -> InferenceBackend:
    if device.type != "cpu":
        if int8:
            raise InputError(f"int8 runs on the CPU only; choose device 'cpu' or turn int8 off (device: {device})")
        return InferenceBackend("torch", f"auto: PyTorch on {device.type}", network)
    if autocast_dtype is not None:
        short = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(autocast_dtype, str(autocast_dtype))
        return InferenceBackend("torch", f"auto: PyTorch for {short} autocast", network)
    installed = [name for name in AUTO_ORDER if runtime_available(name)]
    if int8 and "onnxruntime" not in installed:
        raise InputError("int8 needs ONNX Runtime's quantiser: python -m pip install onnxruntime")
    if not installed:
        return InferenceBackend("torch", f"auto: no ONNX runtime installed; {INSTALL_HINT}", network)
    name = installed[0]
    if (not int8 and expected_batches is not None and expected_batches < AUTO_MIN_BATCHES
            and not _cached(network, card, model_size, cache_dir)):
        return InferenceBackend("torch", f"auto: {expected_batches} batch(es) only, exporting to {name} would cost "
                                         "more than it saves; fp32 as on the runtime", network, stand_in=True)
    calibration = _once(calibration)
    reason = f"auto: {name}, the installed CPU runtime"
    if len(installed) > 1:
        record = measure.record_path(OnnxCache(cache_dir).folder, _key(network, card, model_size), batch_size, int8)
        known = measure.remembered(record, installed)
        if known is not None:
            name = known[0]
            reason = f"auto: {name}, measured fastest here earlier ({measure.describe(known[1], batch_size)})"
        elif expected_batches is None or expected_batches >= AUTO_MEASURE_BATCHES:
            return _measured(installed, record, network, card, device, model_size, batch_size, int8, calibration,
                             cache_dir)
        else:
            reason = (f"auto: {name} ({', '.join(installed)} installed; {expected_batches} batches are too few to "
                      "measure which is fastest here)")
    try:
        return _runtime_backend(name, network, card, device, model_size, batch_size, int8, calibration, cache_dir,
                                reason=reason)
    except InputError as error:
        log.warning("%s", error)
        return InferenceBackend("torch", f"auto: {name} could not be used ({error}); fp32 as on the runtime", network,
                                stand_in=True)


def _measured(installed: list[str], record: Path, network: nn.Module, card: ModelCard, device: torch.device,
              model_size: int, batch_size: int, int8: bool, calibration: Callable[[], CalibrationSample] | None,
              cache_dir: str | os.PathLike[str] | None) -> InferenceBackend:
    """Every installed runtime timed on one batch of the run's shape; the fastest runs, and is remembered.

    One session is alive at a time (each holds hundreds of MiB for a large network), so measuring
    does not raise the run's peak memory; the winner is loaded again from the cache afterwards.
    """
    seconds: dict[str, float] = {}
    for name in installed:
        try:
            candidate = _runtime_backend(name, network, card, device, model_size, batch_size, int8, calibration,
                                         cache_dir, reason="measuring")
        except InputError as error:
            log.warning("%s", error)
            continue
        seconds[name] = measure.seconds_per_batch(candidate, batch_size, len(card.bands_t1), model_size)
        del candidate
        gc.collect()
    if not seconds:
        return InferenceBackend("torch", f"auto: {' and '.join(installed)} could not be used (see the warnings); "
                                         "fp32 as on the runtime", network, stand_in=True)
    best = min(seconds, key=seconds.__getitem__)
    if len(seconds) == len(installed):  # a runtime that failed here is not ranked for next time
        measure.remember(record, best, seconds)
    return _runtime_backend(best, network, card, device, model_size, batch_size, int8, calibration, cache_dir,
                            reason=f"auto: {best}, measured fastest here just now "
                                   f"({measure.describe(seconds, batch_size)})")


def _once(make: Callable[[], CalibrationSample] | None) -> Callable[[], CalibrationSample] | None:
    """``make`` called at most once: the calibration tiles are read from the scene, for every runtime alike."""
    if make is None:
        return None
    made: list[CalibrationSample] = []

    def sample() -> CalibrationSample:
        if not made:
            made.append(make())
        return made[0]

    return sample


#: Largest difference from PyTorch an fp32 export may show on the probe batch, relative to the
#: output's largest magnitude (at least 1). Untrained deep networks are ill-conditioned (LSAFNet's
#: logits reach hundreds and PyTorch itself differs by 4e-3 in change probability between batch 1
#: and batch 2 of the same tile), so only gross errors are caught here: a traced constant or a wrong
#: operator differs by tenths. The tests hold the runtimes to PyTorch far more tightly.
EXPORT_TOLERANCE = 5e-2


def _check_reproduces(network: nn.Module, forward: Forward, bands: int, size: int, batch_size: int, model: str,
                      runtime: str) -> None:
    """Refuse a fresh export whose outputs differ from PyTorch's on a random probe batch.

    Tracing records one execution: a network that leaves the graph (numpy, Python
    values taken from tensors) exports without error but computes something else.
    """
    generator = torch.Generator().manual_seed(20260)
    count = min(batch_size, 2)
    x1 = torch.randn(count, bands, size, size, generator=generator)
    x2 = torch.randn(count, bands, size, size, generator=generator)
    with torch.inference_mode():
        expected = network(x1, x2)
    got = forward(x1, x2)
    for key, value in expected.items():
        difference = float((got[key].float() - value.float()).abs().max()) if key in got else float("inf")
        if difference > EXPORT_TOLERANCE * max(1.0, float(value.abs().max())):
            raise InputError(f"the network '{model}' exported to ONNX does not reproduce PyTorch under {runtime} "
                             f"('{key}' differs by {difference:.3g}); choose backend 'torch'")


def _key(network: nn.Module, card: ModelCard, model_size: int) -> str:
    from ..models.checkpoint import state_dict_sha256

    weights = state_dict_sha256(network.state_dict())
    return (f"{card.model}-{weights[:20]}-{model_size}px-v{__version__}-torch{torch.__version__.split('+')[0]}"
            f"-opset{OPSET}")


def _cached(network: nn.Module, card: ModelCard, model_size: int, cache_dir: str | os.PathLike[str] | None) -> bool:
    return OnnxCache(cache_dir).lookup(_key(network, card, model_size)) is not None


def _runtime_backend(name: str, network: nn.Module, card: ModelCard, device: torch.device, model_size: int,
                     batch_size: int, int8: bool, calibration: Callable[[], CalibrationSample] | None,
                     cache_dir: str | os.PathLike[str] | None, *, reason: str) -> InferenceBackend:
    if name not in RUNTIMES:
        raise InputError(f"unknown backend '{name}'; choose one of {', '.join(BACKEND_CHOICES)}")
    if device.type != "cpu":
        raise InputError(f"backend '{name}' runs on the CPU; choose device 'cpu' or backend 'torch' or 'auto' "
                         f"(device: {device})")
    if not runtime_available(name):
        raise InputError(f"backend '{name}' is not installed: python -m pip install {name}")
    if int8 and not runtime_available("onnxruntime"):
        raise InputError("int8 needs ONNX Runtime's quantiser: python -m pip install onnxruntime")
    bands = len(card.bands_t1)
    cache = OnnxCache(cache_dir)
    key = _key(network, card, model_size)

    def build() -> tuple[bytes, tuple[str, ...]]:
        log.info("exporting %s to ONNX at %d px into %s", card.model, model_size, cache.folder)
        try:
            return export_onnx(network, bands, model_size)
        except Exception as error:  # the exporter raises many types; the message says which
            raise InputError(f"the network '{card.model}' could not be exported to ONNX ({error}); "
                             "choose backend 'torch'") from error

    def load(path: Path, names: tuple[str, ...]) -> Forward:
        if name == "onnxruntime":
            return OnnxRuntimeForward(path, names)
        return OpenVinoForward(path, names, batch_size, bands, model_size)

    def load_fp32(entry: CacheEntry) -> Forward:
        forward = load(entry.path, entry.output_names)
        if entry.rebuilt:
            _check_reproduces(network, forward, bands, model_size, batch_size, card.model, name)
        return forward

    try:
        entry, forward = cache.get_or_build(key, build, load_fp32)
    except InputError:
        cache.remove(key)
        raise
    if int8:
        if calibration is None:
            raise InputError("int8 needs calibration tiles")
        sample = calibration()
        fp32 = entry
        int8_key = f"{key}-int8-{calibration_digest(sample)[:16]}"
        entry, forward = cache.get_or_build(int8_key, lambda: (quantize_int8(fp32.path, sample), fp32.output_names),
                                            lambda cached: load(cached.path, cached.output_names))
    built = " (exported now)" if entry.rebuilt else " (cached export)"
    return InferenceBackend(name, f"{reason}; {name} {runtime_version(name)}{built}", forward, int8=int8,
                            model_path=entry.path)


__all__ = ["AUTO_ORDER", "BACKEND_CHOICES", "INSTALL_HINT", "InferenceBackend", "default_cache_dir",
           "runtime_available", "select_backend"]
