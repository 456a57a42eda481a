"""Turning the user's backend choice into a forward callable, with the reason for the log."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import logging
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ..models.card import ModelCard
from ..version import __version__
from . import measure
from .backend import Forward, InferenceBackend
from .cache import BackendCacheError, CacheEntry, OnnxCache, default_cache_dir
from .check import ProvenGraph
from .check import record_path as check_record
from .export import OPSET, export_onnx
from .quantize import INT8_RECIPE, CalibrationSample, calibration_digest, quantize_int8
from .race import BackendRace
from .runtimes import RUNTIMES, OnnxRuntimeForward, OpenVinoForward, runtime_available, runtime_version

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "torch", "onnxruntime", "openvino")

#: Runtimes an int8 run tries when it is too short to measure them, fastest first: OpenVINO ran
#: the int8 graph faster than ONNX Runtime on every network measured (docs/performance.md);
#: it cannot compile every quantised graph, and ONNX Runtime then takes over.
AUTO_ORDER = ("openvino", "onnxruntime")

#: ``auto`` measures the candidates (:mod:`.race`: in turns on the run's first batches, about 11 of them
#: with both runtimes installed, plus each runtime's export) only on a run of at least this many
#: batches, so that the winner runs most of it; shorter runs take PyTorch until a longer run has
#: measured, and so never depend on what the cache holds.
AUTO_MEASURE_BATCHES = 24

INSTALL_HINT = ("for faster CPU inference install ONNX Runtime (or OpenVINO) into the Python that runs this: "
                "python -m pip install onnxruntime")

def select_backend(network: nn.Module, card: ModelCard, *, requested: str = "auto",
                   device: torch.device | None = None, model_size: int, batch_size: int,
                   autocast_dtype: torch.dtype | None = None, precision_named: bool = False, int8: bool = False,
                   calibration: Callable[[], CalibrationSample] | None = None,
                   cache_dir: str | os.PathLike[str] | None = None,
                   expected_batches: int | None = None,
                   warn: Callable[[str], None] | None = None) -> InferenceBackend | BackendRace:
    """Resolve ``requested`` to a backend for ``network`` at ``model_size`` px tiles.

    Args:
        network: The loaded network (on the CPU while exporting).
        card: Its model card.
        requested: ``auto``, ``torch``, ``onnxruntime`` or ``openvino``.
        device: The run's device; runtimes other than torch are CPU only.
        model_size: Tile side after padding, as the network sees it.
        batch_size: Tiles per forward pass.
        autocast_dtype: The run's reduced precision (:func:`~core.devices.select_precision`), None for
            fp32. OpenVINO computes in bf16 where this is bf16; ONNX Runtime always in fp32.
        precision_named: The user named the precision; a named reduced precision keeps ``auto`` on
            PyTorch, whose autocast is the one that honours every choice.
        int8: Quantise to int8 (ONNX Runtime's quantiser; needs ``calibration``).
        calibration: Gives the calibration tiles, called only when no int8 file is cached.
        cache_dir: Cache folder (default: :func:`~.cache.default_cache_dir`).
        expected_batches: Batches the run will need; ``auto`` measures only on long runs (None: measure).
        warn: Receives what the user should know for the run's log: a backend cache that cannot be
            written (the run then goes on with PyTorch), a cached graph that failed its proof.

    Returns:
        The backend; its ``reason`` says why it was chosen (or why the others were not). Where ``auto``
        has yet to measure on a long enough run, a :class:`~.race.BackendRace`: the candidates take
        turns on the run's first batches, and the fastest runs the rest.

    Raises:
        InputError: for an unknown choice, a runtime that is not installed or cannot run
            here, or a network that cannot be exported, when the user asked for it by name.
            A backend cache that cannot be written is no reason to stop: PyTorch runs instead,
            with a warning (int8, which PyTorch cannot run, raises :class:`~.cache.BackendCacheError`).
    """
    requested = (requested or "auto").strip().lower()
    if requested not in BACKEND_CHOICES:
        raise InputError(f"unknown backend '{requested}'; choose one of {', '.join(BACKEND_CHOICES)}")
    device = device or torch.device("cpu")
    if requested == "torch":
        if int8:
            raise InputError("int8 runs on ONNX Runtime or OpenVINO; choose backend 'auto', 'onnxruntime' "
                             "or 'openvino', or turn int8 off")
        return _torch(network, "requested", autocast_dtype)
    run = _Run(network, card, device, model_size, batch_size, autocast_dtype, int8, _once(calibration), cache_dir,
               warn or _log_warning)
    if requested != "auto":
        try:
            return run.runtime(requested, reason="requested")
        except BackendCacheError as error:
            if int8:
                raise
            run.warn(f"{error}; running on PyTorch instead of {requested}")
            return run.torch(f"{requested} was requested, but {error}")
    return _auto(run, precision_named, expected_batches)


def _log_warning(message: str) -> None:
    log.warning("%s", message)


def _torch(network: nn.Module, reason: str, autocast: torch.dtype | None) -> InferenceBackend:
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(autocast, str(autocast))
    return InferenceBackend("torch", reason, network, autocast=autocast, precision=precision)


@dataclass(frozen=True)
class _Run:
    """What every candidate backend of one run is built for."""

    network: nn.Module
    card: ModelCard
    device: torch.device
    model_size: int
    batch_size: int
    autocast: torch.dtype | None
    int8: bool
    calibration: Callable[[], CalibrationSample] | None
    cache_dir: str | os.PathLike[str] | None
    warn: Callable[[str], None]

    def torch(self, reason: str) -> InferenceBackend:
        return _torch(self.network, reason, self.autocast)

    def runtime(self, name: str, *, reason: str) -> InferenceBackend:
        return _runtime_backend(name, self, reason=reason)

    @functools.cached_property
    def key(self) -> str:
        """The export key, hashed once per run (the ranking and every candidate runtime use it)."""
        return _key(self.network, self.card, self.model_size)


def _auto(run: _Run, precision_named: bool, expected_batches: int | None) -> InferenceBackend | BackendRace:
    if run.device.type != "cpu":
        if run.int8:
            raise InputError(f"int8 runs on the CPU only; choose device 'cpu' or turn int8 off (device: {run.device})")
        return run.torch(f"auto: PyTorch on {run.device.type}")
    if precision_named and run.autocast is not None:
        return run.torch(f"auto: PyTorch for the {_torch(run.network, '', run.autocast).precision} autocast asked for")
    installed = [name for name in AUTO_ORDER if runtime_available(name)]
    if run.int8 and "onnxruntime" not in installed:
        raise InputError("int8 needs ONNX Runtime's quantiser: python -m pip install onnxruntime")
    if not installed:
        return run.torch(f"auto: no ONNX runtime installed; {INSTALL_HINT}")
    # int8 exists on the runtimes only; otherwise PyTorch competes too (with bf16 autocast on CPUs
    # that have fast bf16 it often wins), so that auto is never slower than PyTorch here.
    candidates = installed if run.int8 else ["torch", *installed]
    record = measure.record_path(OnnxCache(run.cache_dir).folder, run.key,
                                 run.batch_size, _variant(run))
    known = measure.remembered(record, candidates)
    if known is not None:
        name, seconds = known
        reason = f"auto: {name}, measured fastest here earlier ({measure.describe(seconds, run.batch_size)})"
        return _built(run, [name, *(c for c in candidates if c != name)], reason)
    if len(candidates) == 1:  # int8 with one runtime installed: nothing to compare
        return _built(run, candidates, f"auto: {candidates[0]}, the only installed runtime for int8")
    if expected_batches is None or expected_batches >= AUTO_MEASURE_BATCHES:
        return BackendRace(candidates, build=lambda name: _candidate(run, name),
                           fallback=lambda order, reason: _built(run, order, reason), device=run.device,
                           batch_size=run.batch_size, record=record, int8=run.int8, warn=run.warn)
    reason = (f"auto: {candidates[0]} until a run of {AUTO_MEASURE_BATCHES} batches or more has measured which of "
              f"{', '.join(candidates)} is fastest here ({expected_batches} batches now)")
    return _built(run, candidates, reason)


def _candidate(run: _Run, name: str) -> InferenceBackend:
    return run.torch("measuring") if name == "torch" else run.runtime(name, reason="measuring")


def _variant(run: _Run) -> str:
    """What besides the network and tile the measured ranking depends on: the arithmetic compared."""
    if run.int8:
        return "int8"
    return "bf16" if run.autocast is torch.bfloat16 else "fp32"


def _built(run: _Run, order: list[str], reason: str) -> InferenceBackend:
    """The first of ``order`` that can be built; a runtime that fails is logged and the next one tried."""
    failures: list[str] = []
    for name in order:
        if name == "torch":
            return run.torch(reason + "".join(f"; {failure}" for failure in failures))
        try:
            return run.runtime(name, reason=reason + "".join(f"; {failure}" for failure in failures))
        except InputError as error:
            if isinstance(error, BackendCacheError):
                run.warn(f"{error}; running on {_next_after(name, order)} instead of {name}")
            else:
                log.warning("%s", error)
            failures.append(f"{name} could not be used ({error})")
    if run.int8:
        raise InputError("int8: no installed runtime could run the quantised graph (" + "; ".join(failures)
                         + "); turn int8 off")
    return run.torch("auto: " + "; ".join(failures))


def _next_after(name: str, order: list[str]) -> str:
    """What runs when ``name`` cannot: the next in ``order``, PyTorch at the end."""
    rest = order[order.index(name) + 1:]
    return {"torch": "PyTorch"}.get(rest[0], rest[0]) if rest else "PyTorch"


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


#: Weights digests of networks already hashed, with the storage and version of every tensor then.
_DIGESTS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[tuple[str, int, int], ...], str]] = \
    weakref.WeakKeyDictionary()


def _weights_digest(network: nn.Module) -> str:
    """:func:`~core.models.checkpoint.state_dict_sha256` of ``network``, hashed again only when a tensor changed.

    A run asks for the export key several times (its backend, the int8 file and its check):
    hashing a ResNet-34 network's weights takes about 0.1 s each time. A tensor replaced or
    changed in place has another storage or a higher version counter, so it is hashed again.
    """
    from ..models.checkpoint import state_dict_sha256

    state = network.state_dict()
    try:
        stamp = tuple((name, tensor.data_ptr(), tensor._version) for name, tensor in state.items())
    except RuntimeError:  # inference tensors keep no version counter: hash every time
        return state_dict_sha256(state)
    known = _DIGESTS.get(network)
    if known is not None and known[0] == stamp:
        return known[1]
    digest = state_dict_sha256(state)
    _DIGESTS[network] = (stamp, digest)
    return digest


def _key(network: nn.Module, card: ModelCard, model_size: int) -> str:
    weights = _weights_digest(network)
    return (f"{card.model}-{weights[:20]}-{model_size}px-v{__version__}-code{network_code_digest(type(network))}"
            f"-torch{torch.__version__.split('+')[0]}-opset{OPSET}")


@functools.cache
def network_code_digest(network_class: type) -> str:
    """SHA-256 (12 hex digits) of the source the exported graph is traced from.

    The network's own package and the shared model modules (backbones, the contract):
    a change to how a network computes, even within one release, then exports a new graph
    instead of running the one traced from the old code.
    """
    digest = hashlib.sha256(f"{network_class.__module__}.{network_class.__qualname__}\0".encode())
    try:
        package = Path(inspect.getfile(network_class)).parent
    except (TypeError, OSError):  # defined where no file holds it (an interactive session): the name only
        return digest.hexdigest()[:12]
    models = Path(inspect.getfile(ModelCard)).parent
    for folder in sorted({package, models}):
        for source in sorted(folder.glob("*.py")):
            digest.update(f"{folder.name}/{source.name}\0".encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def _int8_key(key: str, sample: CalibrationSample) -> str:
    return f"{key}-int8-{INT8_RECIPE}-{calibration_digest(sample)[:16]}"


def int8_model_path(network: nn.Module, card: ModelCard, *, model_size: int, calibration: CalibrationSample,
                    cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the int8 graph of ``network`` calibrated on ``calibration`` is cached (it may not exist yet)."""
    return OnnxCache(cache_dir).paths(_int8_key(_key(network, card, model_size), calibration))[0]


def _runtime_backend(name: str, run: _Run, *, reason: str) -> InferenceBackend:
    if name not in RUNTIMES:
        raise InputError(f"unknown backend '{name}'; choose one of {', '.join(BACKEND_CHOICES)}")
    if run.device.type != "cpu":
        raise InputError(f"backend '{name}' runs on the CPU; choose device 'cpu' or backend 'torch' or 'auto' "
                         f"(device: {run.device})")
    if not runtime_available(name):
        raise InputError(f"backend '{name}' is not installed: python -m pip install {name}")
    if run.int8 and not runtime_available("onnxruntime"):
        raise InputError("int8 needs ONNX Runtime's quantiser: python -m pip install onnxruntime")
    network, card, model_size, batch_size = run.network, run.card, run.model_size, run.batch_size
    bands = len(card.bands_t1)
    cache = OnnxCache(run.cache_dir)
    key = run.key
    # OpenVINO follows the run's bf16 autocast; ONNX Runtime has no fast bf16 CPU path
    precision = "int8" if run.int8 else ("bf16" if name == "openvino" and run.autocast is torch.bfloat16 else "fp32")

    def build() -> tuple[bytes, tuple[str, ...]]:
        log.info("exporting %s to ONNX at %d px into %s", card.model, model_size, cache.folder)
        try:
            return export_onnx(network, bands, model_size)
        except Exception as error:  # the exporter raises many types; the message says which
            raise InputError(f"the network '{card.model}' could not be exported to ONNX ({error}); "
                             "choose backend 'torch'") from error

    def load(path: Path, names: tuple[str, ...], arithmetic: str) -> Forward:
        try:
            if name == "onnxruntime":
                return OnnxRuntimeForward(path, names)
            return OpenVinoForward(path, names, batch_size, bands, model_size,
                                   precision="bf16" if arithmetic == "bf16" else "f32")
        except Exception as error:  # a runtime's compiler raises its own types
            # OpenVINO's messages open with lines of source locations; the first other line says what failed
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            said = next((line for line in lines if not line.startswith("Exception from")), type(error).__name__)
            said = said if len(said) <= 200 else said[:197] + "..."
            raise InputError(f"{name} could not load the {arithmetic} graph of '{card.model}' ({said}); "
                             "choose another backend" + (" or turn int8 off" if arithmetic == "int8" else "")) \
                from error

    def load_checked(entry: CacheEntry, arithmetic: str | None) -> Forward | None:
        """``entry`` loaded at ``arithmetic`` (None: the hash-checked file is enough, e.g. to quantise it).

        A fresh export first proves itself at fp32; a cached one was proven when it was written,
        so it is loaded once, at the run's arithmetic.
        """
        if entry.rebuilt:
            reference = load(entry.path, entry.output_names, "fp32")
            _check_reproduces(network, reference, bands, model_size, batch_size, card.model, name)
            if arithmetic == "fp32":
                return reference
            del reference
        return None if arithmetic is None else load(entry.path, entry.output_names, arithmetic)

    def fp32_entry(arithmetic: str | None) -> tuple[CacheEntry, Forward | None]:
        try:
            return cache.get_or_build(key, build, lambda entry: load_checked(entry, arithmetic))
        except InputError:
            cache.remove(key)
            raise

    if not run.int8:
        entry, forward = fp32_entry(precision)
        entry_key = key
    else:
        if run.calibration is None:
            raise InputError("int8 needs calibration tiles")
        sample = run.calibration()

        def quantised() -> tuple[bytes, tuple[str, ...]]:
            # the fp32 graph is only the quantiser's input here: it is not loaded in a runtime when cached
            fp32, _ = fp32_entry(None)
            return quantize_int8(fp32.path, sample), fp32.output_names

        entry_key = _int8_key(key, sample)
        entry, forward = cache.get_or_build(entry_key, quantised,
                                            lambda cached: load(cached.path, cached.output_names, "int8"))

    def forget() -> None:
        """Remove a graph that failed its proof, and the int8 check recorded for it."""
        cache.remove(entry_key)
        with contextlib.suppress(OSError):
            check_record(entry.path).unlink(missing_ok=True)

    # whatever the cache holds, every run first proves on its own data that the graph is this model's
    proven = ProvenGraph(forward, network, precision=precision, path=entry.path, forget=forget)
    built = " (exported now)" if entry.rebuilt else " (cached export)"
    return InferenceBackend(name, f"{reason}; {name} {runtime_version(name)}{built}", proven, int8=run.int8,
                            model_path=entry.path, precision=precision)


__all__ = ["AUTO_ORDER", "BACKEND_CHOICES", "INSTALL_HINT", "BackendRace", "InferenceBackend", "default_cache_dir",
           "runtime_available", "select_backend"]
