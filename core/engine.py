"""The network entry point: two rasters and a model in, from-to change products out.

The plugin, the training CLI and scripts all call :func:`run_change_detection`. It
runs in two stages:

1. the inference stage (here): :class:`~.tiling.TileGrid` gives a window,
   :class:`~.io.RasterPair` fills it with two aligned arrays and a validity mask,
   :mod:`.preprocess` normalises it, batches go to the network, the per-head
   probabilities are blended into a :class:`~.tiling.RowBandAccumulator`, and
   finished rows are decoded by :mod:`.encode` into per-date class rows and a
   change row;
2. the products stage (:class:`~.products.ProductsStage`): those rows become every
   output (from-to codes, class maps, change mask, probability, legends, matrix,
   sieve, polygons), moved into place when all are complete.

Comparing two existing land-cover maps (:mod:`.compare`) enters at stage 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import encode, memory
from .area import check_extent, check_mask, grid_bounds
from .backends import BackendRace, InferenceBackend, select_backend
from .backends.backend import Forward, engine_forward
from .backends.cache import BackendCacheError
from .backends.check import CHECK_TILES, GraphMismatch, Labeller, check_int8
from .backends.check import record_path as check_record
from .backends.runtimes import runtime_available
from .backends.select import AUTO_MEASURE_BATCHES, int8_model_path
from .devices import cpu_has_fast_int8, select_device, select_precision
from .errors import Cancelled, ChangeDetectionError, InputError
from .files import Publication
from .io import RasterPair, outputs_folders, terminate_cleanly, writing_outputs
from .matrix import TransitionRow
from .models.base import CHANGE_PROB, CHANGE_THRESHOLD, SEM_LOGITS_T1, SEM_LOGITS_T2
from .models.card import ModelCard
from .preprocess import BandScaling, far_from_training, plan_scaling
from .products import Grid, Legends, OutputPaths, ProductsStage, StageResult, check_outputs
from .progress import Progress, ProgressSpan
from .tiling import RowBandAccumulator, TileGrid, TileWindow, default_tile_size, pad_to

__all__ = ["OutputPaths", "Progress", "RunOptions", "RunSummary", "describe_memory", "estimate_memory",
           "run_change_detection"]

log = logging.getLogger(__name__)

ModelSource = str | os.PathLike[str] | tuple[nn.Module, ModelCard]

#: Share of the progress bar the network gets when polygons follow (they take the rest).
INFERENCE_SHARE_WITH_POLYGONS = 0.85


@dataclass(frozen=True)
class RunOptions:
    """How to run; ``None`` means "what the model card says".

    Attributes:
        bands_t1, bands_t2: 1-based bands per date, in the model's band order.
        tile_size: Tile side in pixels (default: the card's, at least 256; :func:`~.tiling.default_tile_size`).
        overlap: Overlap between neighbouring tiles in pixels (default: a quarter tile).
        batch_size: Tiles per forward pass.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        prefetch_batches: Batches a reader thread may prepare while the network runs;
            0 reads in the calling thread, between forward passes. ``None`` (default):
            2 on a GPU, where reading would otherwise leave it idle, and 0 on a CPU,
            where the network already uses every core and a reader thread measurably
            slows it (``make bench``).
        min_patch_pixels: Minimum mapping unit: connected change patches smaller than
            this many pixels become "no change" in every output (0 keeps all).
        extent: Process only this part of the scene: ``(left, bottom, right, top)`` in
            T1's CRS; the outputs cover it (within the area both dates cover). NaN, an
            inverted or an empty extent is refused (:mod:`.area`).
        mask: Polygons (GeoJSON-like geometry dicts) in T1's CRS; pixels outside all of
            them are nodata in every output. A mask that holds no polygon, holds other
            geometries or lies outside the processing area is refused (:mod:`.area`).
        overwrite: Replace existing files at the output paths even when this tool did
            not write them. Without it only its own earlier outputs are replaced; an
            output that is an input, the model or another output is refused either way.
        backend: Where the forward pass runs: ``auto``, ``torch``, ``onnxruntime`` or
            ``openvino`` (see :mod:`.backends`; ``auto`` uses an installed CPU runtime on a CPU).
        int8: Run an int8-quantised graph calibrated on tiles of this scene (CPU runtimes only),
            where it keeps at least 99.5 % of fp32's labels on other tiles of the scene
            (:mod:`.backends.check`); elsewhere the run goes on without int8 and says so.
            None (the default) does so where int8 pays: on a CPU with AVX-512 VNNI, AVX-VNNI or
            AMX, with ONNX Runtime installed, backend ``auto`` or a runtime, precision ``auto``,
            and a run of at least ``AUTO_MEASURE_BATCHES`` batches. False never uses int8.
        backend_cache_dir: Where exported networks are kept (default: the user's cache folder).
    """

    bands_t1: Sequence[int] | None = None
    bands_t2: Sequence[int] | None = None
    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    device: str = "auto"
    precision: str = "auto"
    prefetch_batches: int | None = None
    min_patch_pixels: int = 0
    extent: tuple[float, float, float, float] | None = None
    mask: Sequence[dict[str, Any]] | None = None
    overwrite: bool = False
    backend: str = "auto"
    int8: bool | None = None
    backend_cache_dir: str | os.PathLike[str] | None = None


@dataclass
class RunSummary:
    """What a run did, for the log, the report and the benchmark."""

    outputs: dict[str, str] = field(default_factory=dict)
    device: str = ""
    device_reason: str = ""
    precision: str = ""
    backend: str = ""
    #: Whether int8 was used and why: the check's result, or why ``int8=None`` did not try it
    #: (empty: int8 was turned off).
    int8_check: str = ""
    model: str = ""
    task: str = ""
    width: int = 0
    height: int = 0
    tile_size: int = 0
    overlap: int = 0
    batch_size: int = 0
    tiles_total: int = 0
    tiles_run: int = 0
    tiles_skipped: int = 0
    batches: int = 0
    memory_estimate_bytes: int = 0
    model_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    valid_pixels: int = 0
    changed_pixels: int = 0
    changed_area_m2: float = 0.0
    scaling_t1: str = ""
    scaling_t2: str = ""
    transitions: list[TransitionRow] = field(default_factory=list)
    polygons: int = 0
    #: Seconds per step of the run: read, prepare, network, blend, decode, write, finish.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def megapixels_per_second(self) -> float:
        return self.width * self.height / 1e6 / self.elapsed_seconds if self.elapsed_seconds else 0.0


# --- entry point ---------------------------------------------------------------------------


def run_change_detection(
    path_t1: str | os.PathLike[str],
    path_t2: str | os.PathLike[str],
    model: ModelSource,
    outputs: OutputPaths,
    options: RunOptions | None = None,
    progress: Progress | None = None,
    *,
    publication: Publication | None = None,
) -> RunSummary:
    """Detect change between two dates of one area and write the requested products.

    Args:
        path_t1: The earlier image; its grid (CRS, pixel size, alignment) is the master.
        path_t2: The later image, in any CRS, resolution or extent overlapping T1.
        model: A checkpoint path, or an in-memory ``(network, card)`` pair.
        outputs: The products to write.
        options: Run options; defaults come from the model card.
        progress: Progress, log and cancel hooks.
        publication: Stage the products here and leave the commit to the caller, who adds
            files of its own (the plugin's report) so that all appear together or none
            (:class:`~.files.Publication`). None: they are published when the run ends.

    Returns:
        A summary of the run, including the paths written.

    Raises:
        ChangeDetectionError: for any problem the user can fix (inputs, options,
            model file, output location), or :class:`~.errors.Cancelled`.
    """
    started = time.perf_counter()
    options = options or RunOptions()
    progress = progress or Progress()
    network, card = _load_model(model)
    requested = _check_outputs(outputs, card, {"T1": path_t1, "T2": path_t2},
                               None if isinstance(model, tuple) else model, options.overwrite)
    tile_size = int(options.tile_size or default_tile_size(card.tile_size))
    overlap = int(options.overlap if options.overlap is not None else tile_size // 4)
    if options.batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {options.batch_size}")
    if options.min_patch_pixels < 0:
        raise InputError(f"the minimum patch size must be 0 or more pixels, got {options.min_patch_pixels}")
    device_choice = select_device(options.device)
    autocast_dtype, precision_reason = select_precision(device_choice.device, options.precision)
    if options.prefetch_batches is None:
        options = dataclasses.replace(options, prefetch_batches=0 if device_choice.device.type == "cpu" else 2)

    summary = RunSummary(model=card.model, task=card.task, device=str(device_choice.device),
                         device_reason=device_choice.reason, precision=precision_reason,
                         tile_size=tile_size, overlap=overlap, batch_size=options.batch_size)
    bands_t1 = tuple(options.bands_t1 or card.bands_t1)
    bands_t2 = tuple(options.bands_t2 or card.bands_t2)
    extent, mask = check_extent(options.extent), check_mask(options.mask)
    with RasterPair(path_t1, path_t2, bands_t1, bands_t2, needed_bands=len(card.bands_t1),
                    extent=extent, mask=mask) as pair:
        check_mask(mask, grid_bounds(pair.transform, pair.width, pair.height), crs=f"T1's CRS ({pair.crs})")
        grid = TileGrid(pair.height, pair.width, tile_size, overlap)
        summary.width, summary.height = pair.width, pair.height
        summary.tiles_total = len(grid)
        scalings = _plan_scalings(pair, card, progress)
        summary.scaling_t1, summary.scaling_t2 = scalings[0].description, scalings[1].description
        heads = _Heads(card, learns_threshold=bool(getattr(network, "learns_threshold", False)))
        progress.info(f"device: {summary.device} ({summary.device_reason}); precision: {precision_reason}")
        progress.info(f"processing area: {pair.width} x {pair.height} px on T1's grid ({pair.crs}); "
                      f"{len(grid)} tiles of {tile_size} px, overlap {overlap} px, batch {options.batch_size}")
        progress.info(f"input scaling: T1 {scalings[0].description}; T2 {scalings[1].description}")
        # read once: the int8 check and the run's backend use the same calibration tiles
        calibration = functools.cache(lambda: _calibration_tiles(pair, grid, scalings))
        batches = -(-len(grid) // options.batch_size)
        declined = _int8_declined(options, device_choice.device, batches)
        checks_int8 = options.int8 is not False and not declined and not _int8_impossible(options,
                                                                                          device_choice.device)
        # the int8 check quantises the network when no int8 graph of it is cached for these calibration tiles:
        # its own peak comes before the run's (estimate_int8_check)
        check_bytes = estimate_int8_check(grid, options.batch_size, network) if checks_int8 and not int8_model_path(
            network, card, model_size=grid.model_size, calibration=calibration(),
            cache_dir=options.backend_cache_dir).exists() else 0
        memory.refuse_if_short(max(check_bytes, estimate_memory(grid, card, options.batch_size, network,
                                                                heads.channels, options.prefetch_batches)),
                               device_choice.device.type, tile_size, options.batch_size)
        memory.release_freed_memory()
        held_bytes = memory.process_rss_bytes()

        network = network.to(device_choice.device).eval()
        if device_choice.device.type != "mps":
            network = network.to(memory_format=torch.channels_last)
        if declined:
            summary.int8_check = f"int8 not used (auto: {declined})"
            progress.info(summary.int8_check)
        int8 = checks_int8 and _int8_keeps_labels(
            network, card, heads, pair, grid, scalings, options, device_choice.device, calibration, summary, progress)
        if checks_int8:  # its sessions and the quantiser's copies are gone: give their memory back before the run's
            memory.release_freed_memory()
        run_held_bytes = memory.process_rss_bytes()
        backend = select_backend(
            network, card, requested=options.backend, device=device_choice.device, model_size=grid.model_size,
            batch_size=options.batch_size, int8=int8, autocast_dtype=autocast_dtype,
            precision_named=(options.precision or "auto").lower() != "auto",
            calibration=calibration, cache_dir=options.backend_cache_dir, expected_batches=batches,
            warn=_warning(progress))
        _describe_backend(summary, backend, precision_reason)
        progress.info(f"backend: {summary.backend}; precision: {summary.precision}")
        # a runtime session (or a race of them) holds weights and activations of its own; the peak is the
        # int8 check's or the run's, whichever is higher
        summary.memory_estimate_bytes = max(held_bytes + check_bytes, run_held_bytes + estimate_memory(
            grid, card, options.batch_size, network, heads.channels, options.prefetch_batches,
            runtime_session=backend.name != "torch"))
        progress.info(f"estimated memory: {summary.memory_estimate_bytes / 2**20:.0f} MiB")
        # Polygons take the last part of the bar; everything else in the products stage is quick.
        share = INFERENCE_SHARE_WITH_POLYGONS if outputs.polygons is not None else 1.0
        stage = ProductsStage(
            Grid(pair.width, pair.height, pair.crs, pair.transform, pair.pixel_area_m2),
            Legends(card.task, tuple(card.classes), card.change_color), requested,
            min_patch_pixels=options.min_patch_pixels, progress=ProgressSpan(progress, share, 1.0 - share))

        def pytorch_instead() -> InferenceBackend:
            """The backend a run falls back to when its graph fails the proof on the first batch."""
            fallback = select_backend(network, card, requested="torch", model_size=grid.model_size,
                                      batch_size=options.batch_size, autocast_dtype=autocast_dtype)
            assert isinstance(fallback, InferenceBackend)
            _describe_backend(summary, fallback, precision_reason)
            return fallback

        run = _Inference(pair, grid, card, heads, scalings, backend, device_choice.device, options,
                         ProgressSpan(progress, 0.0, share), summary, stage, pytorch_instead)
        staged = publication or Publication()
        try:
            with writing_outputs(outputs_folders(requested)), terminate_cleanly(stage.discard):
                run.execute()
                if isinstance(backend, BackendRace) and not run.fell_back:  # it decided during the run
                    _describe_backend(summary, backend, precision_reason)
                    progress.info(f"backend: {summary.backend}; precision: {summary.precision}")
                finishing = time.perf_counter()
                _record(summary, stage.finish(staged))
                if publication is None:
                    staged.commit()
                summary.timings["finish"] = time.perf_counter() - finishing
        except BaseException:
            stage.discard()
            staged.discard()
            raise
    summary.elapsed_seconds = time.perf_counter() - started
    progress.info(f"done: {summary.tiles_run} tiles run, {summary.tiles_skipped} skipped (no valid pixel), "
                  f"{summary.elapsed_seconds:.1f} s ({summary.megapixels_per_second:.2f} Mpx/s)")
    return summary


# --- set-up helpers --------------------------------------------------------------------------


def _load_model(model: ModelSource) -> tuple[nn.Module, ModelCard]:
    if isinstance(model, tuple):
        network, card = model
        if not isinstance(network, nn.Module) or not isinstance(card, ModelCard):
            raise TypeError("an in-memory model must be a (torch.nn.Module, ModelCard) pair")
        return network, card
    from .models.checkpoint import load_checkpoint

    return load_checkpoint(model)


def _check_outputs(outputs: OutputPaths, card: ModelCard, inputs: dict[str, Any], model: Any,
                   overwrite: bool) -> dict[str, Path]:
    from .models.registry import describe_task, title

    def refusal(names: list[str]) -> str:
        return (f"the model '{title(card.model)}' detects binary change only, so it cannot write {', '.join(names)}; "
                f"use {describe_task('semantic')} or ask for the change mask/probability")

    return check_outputs(outputs.requested(), card.task, refusal, inputs=inputs, model=model, overwrite=overwrite)


def _warning(progress: Progress) -> Callable[[str], None]:
    """A warning line in the run's log."""
    return lambda message: progress.info(f"warning: {message}")


def _describe_backend(summary: RunSummary, backend: InferenceBackend | BackendRace, precision_reason: str) -> None:
    summary.backend = backend.describe()
    summary.precision = (precision_reason if backend.name == "torch"
                         else f"{backend.precision} ({backend.name}; {precision_reason})")


def _record(summary: RunSummary, result: StageResult) -> None:
    summary.outputs.update(result.outputs)
    summary.transitions = result.transitions
    summary.valid_pixels = result.valid_pixels
    summary.changed_pixels = result.changed_pixels
    summary.changed_area_m2 = result.changed_area_m2
    summary.polygons = result.polygons


def _plan_scalings(pair: RasterPair, card: ModelCard,
                   progress: Progress | None = None) -> tuple[BandScaling, BandScaling]:
    """Scaling of both dates, from valid pixels only (see :meth:`.io.RasterPair.valid_sample`).

    Bands whose values lie far from what the model was trained on (other units) are logged as warnings.
    """
    dtypes1, dtypes2 = pair.dtypes()
    scales1, scales2 = pair.file_scales()
    values1, values2 = pair.valid_sample()
    if not values1.shape[1]:
        raise InputError("T1 and T2 have no valid pixel in common (all nodata, masked or NaN where they "
                         "overlap); check the nodata values and that both images cover the same area")
    valid = np.ones((1, values1.shape[1]), dtype=bool)
    s1 = plan_scaling(dtypes1, values1[:, None, :], valid, card.scaling, card.mean_t1, card.std_t1, scales1)
    s2 = plan_scaling(dtypes2, values2[:, None, :], valid, card.scaling, card.mean_t2, card.std_t2, scales2)
    if progress is not None:
        for label, plan, values in (("T1", s1, values1), ("T2", s2, values2)):
            for warning in far_from_training(plan, values[:, None, :], valid, label):
                progress.info(f"warning: {warning}")
    return s1, s2


class _Heads:
    """Where each network output lives in the accumulator's channels, fixed before the run.

    Channels: 0 the valid fraction, 1 the change probability, then (semantic models)
    the class probabilities of T1 and T2, then (a network that learns one, see
    ``ChangeModel.learns_threshold``) the change threshold.
    """

    def __init__(self, card: ModelCard, *, learns_threshold: bool = False) -> None:
        self.semantic = card.task == "semantic"
        self.num_classes = card.num_classes
        self.channels = 2  # valid fraction, change probability
        if self.semantic:
            self.t1 = slice(2, 2 + card.num_classes)
            self.t2 = slice(2 + card.num_classes, 2 + 2 * card.num_classes)
            self.channels += 2 * card.num_classes
        self.threshold: int | None = None
        if learns_threshold:
            self.threshold = self.channels
            self.channels += 1

    def stack(self, outputs: dict[str, torch.Tensor], valid: torch.Tensor) -> torch.Tensor:
        """Per-head probabilities as one ``[B, channels, H, W]`` float32 tensor."""
        if (CHANGE_THRESHOLD in outputs) != (self.threshold is not None):
            raise ChangeDetectionError(
                "the network's outputs do not match what it declares: it "
                + ("returned a change threshold without setting learns_threshold" if self.threshold is None
                   else "sets learns_threshold but returned no change threshold")
                + "; see docs/model-contract.md")
        parts = [valid, outputs[CHANGE_PROB].float()]
        if self.semantic:
            for key in (SEM_LOGITS_T1, SEM_LOGITS_T2):
                logits = outputs[key].float()
                if logits.shape[1] != self.num_classes + 1:
                    raise ChangeDetectionError(
                        f"the network returned {logits.shape[1] - 1} classes but the model card lists "
                        f"{self.num_classes}; the checkpoint is inconsistent")
                parts.append(torch.softmax(logits[:, 1:], dim=1))
        if self.threshold is not None:
            parts.append(outputs[CHANGE_THRESHOLD].float())
        return torch.cat(parts, dim=1)

    def decode(self, values: np.ndarray | None, count: int, width: int) -> dict[str, np.ndarray]:
        """Finished accumulator rows as the products stage's rows (None: rows no tile covered)."""
        if values is None:
            rows = {"valid": np.zeros((count, width), dtype=bool), "changed": np.zeros((count, width), dtype=bool),
                    "prob": np.zeros((count, width), dtype=np.float32)}
            if self.semantic:
                rows["c1"] = rows["c2"] = np.ones((count, width), dtype=encode.class_dtype(self.num_classes))
            return rows
        valid = values[0] > 0.5  # pixels no tile covered hold 0: invalid
        prob = values[1]
        threshold = None if self.threshold is None else values[self.threshold]
        rows = {"valid": valid, "changed": encode.decode_change(prob, threshold) & valid, "prob": prob}
        if self.semantic:
            rows["c1"] = encode.decode_classes(values[self.t1])
            rows["c2"] = encode.decode_classes(values[self.t2])
        return rows


def estimate_memory(grid: TileGrid, card: ModelCard, batch_size: int, network: nn.Module, channels: int,
                    prefetch: int, *, runtime_session: bool = False) -> int:
    """Bytes the run adds at its peak: accumulators, tile batches, outputs and the network.

    With ``runtime_session`` (ONNX Runtime or OpenVINO runs the network, or ``auto`` is racing them
    against PyTorch) the runtime's own copies of the weights (as loaded and as repacked for its
    kernels) and its own activations come on top of PyTorch's network, which stays loaded.
    What the process already holds comes on top (:mod:`.memory`).
    """
    size = grid.model_size
    accumulators = (channels + 2) * min(grid.tile_size, grid.height) * grid.width * 4
    batches = (prefetch + 2) * batch_size * 2 * len(card.bands_t1) * size * size * 4
    outputs = 6 * 256 * grid.width * 4
    params = sum(p.numel() * p.element_size() for p in network.parameters())
    # activations: a ResNet-50-sized siamese network holds roughly 2 x 60 floats per input pixel at peak
    activations = batch_size * size * size * 4 * 120
    runtime = 2 * (params + activations) if runtime_session else 0
    return int(accumulators + batches + outputs + params + activations + runtime)


#: The int8 check's peak, in copies of the network's fp32 weights: the exported ONNX graph, ONNX Runtime's
#: quantiser (which loads, pre-processes, augments and rewrites the graph, several copies of it at once, and
#: runs the augmented graph on the calibration tiles) and the sessions the check runs. Measured on a 2-core
#: machine, GAPL-SCD (28 M weights) at 256 px tiles, batch 4: the check peaked 1.1 GB above the run's start,
#: 9 copies of the weights and a batch's activations (counted apart); with 8 the estimate fell 5 % short.
INT8_CHECK_WEIGHT_COPIES = 9


def estimate_int8_check(grid: TileGrid, batch_size: int, network: nn.Module) -> int:
    """Bytes the int8 check adds at its peak when it quantises the network (what the process holds comes on top).

    The check runs before the run and frees what it used (:func:`.memory.release_freed_memory`),
    so a run's peak is this or :func:`estimate_memory`'s, whichever is higher.
    """
    size = grid.model_size
    params = sum(p.numel() * p.element_size() for p in network.parameters())
    activations = batch_size * size * size * 4 * 120
    return int(INT8_CHECK_WEIGHT_COPIES * params + activations)


# --- the run itself ----------------------------------------------------------------------------


@dataclass
class _Batch:
    windows: list[TileWindow]  # in grid order, including skipped ones
    run: list[bool]  # False where the tile had no valid pixel
    x1: np.ndarray | None  # [n_run, C, S, S]
    x2: np.ndarray | None
    valid: np.ndarray | None  # [n_run, 1, S, S] float32


_DONE = object()

#: Where the progress bar stands within a batch's share once it is read, and once the network ran.
BATCH_READ_SHARE, BATCH_NETWORK_SHARE = 0.1, 0.9


class _Inference:
    """Stage 1: tiles through the network, blended, decoded into rows for the products stage."""

    def __init__(self, pair: RasterPair, grid: TileGrid, card: ModelCard, heads: _Heads,
                 scalings: tuple[BandScaling, BandScaling], network: InferenceBackend | BackendRace,
                 device: torch.device, options: RunOptions, progress: Progress, summary: RunSummary,
                 stage: ProductsStage, pytorch_instead: Callable[[], InferenceBackend] | None = None) -> None:
        self.pair, self.grid, self.card, self.heads = pair, grid, card, heads
        self.scalings = scalings
        self.forward, self.device = engine_forward(network, device), device
        self.pytorch_instead = pytorch_instead
        #: The run's graph failed its proof and PyTorch took over.
        self.fell_back = False
        self.options, self.progress, self.summary = options, progress, summary
        self.stage = stage
        self.accumulator: RowBandAccumulator | None = None
        self._stop = threading.Event()
        self._batch_span = (0.0, 0.0)  # progress before the current batch, and the batch's share

    # -- reader thread ------------------------------------------------------------------------
    def _batches(self) -> Iterator[_Batch]:
        """Windows grouped so that each batch holds ``batch_size`` tiles that need the network."""
        pending: list[TileWindow] = []
        run_flags: list[bool] = []
        x1s: list[np.ndarray] = []
        x2s: list[np.ndarray] = []
        valids: list[np.ndarray] = []
        size = self.grid.model_size
        for window in self.grid.windows():
            if self._stop.is_set():
                return
            started = time.perf_counter()
            img1, img2, valid = self.pair.read(window.row, window.col, window.height, window.width)
            read = time.perf_counter()
            self._add_time("read", read - started)
            pending.append(window)
            has_data = bool(valid.any())
            run_flags.append(has_data)
            if has_data:
                x1s.append(pad_to(self.scalings[0].apply(img1), size))
                x2s.append(pad_to(self.scalings[1].apply(img2), size))
                valids.append(pad_to(valid[None].astype(np.float32), size))
            batch = None
            if len(x1s) == self.options.batch_size:
                batch = _Batch(pending, run_flags, np.stack(x1s), np.stack(x2s), np.stack(valids))
                pending, run_flags, x1s, x2s, valids = [], [], [], [], []
            self._add_time("prepare", time.perf_counter() - read)
            if batch is not None:
                yield batch
        if pending:
            if x1s:
                yield _Batch(pending, run_flags, np.stack(x1s), np.stack(x2s), np.stack(valids))
            else:
                yield _Batch(pending, run_flags, None, None, None)

    def _reader(self, out: queue.Queue[Any]) -> None:
        if self.device.type == "cpu":
            _lower_thread_priority()
        try:
            for batch in self._batches():
                if not self._put(out, batch):
                    return
            self._put(out, _DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self._put(out, error)

    def _put(self, out: queue.Queue[Any], item: object) -> bool:
        """Hand ``item`` to the main thread unless it stopped listening."""
        while not self._stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    # -- main loop ----------------------------------------------------------------------------
    def execute(self) -> None:
        reader: threading.Thread | None = None
        if self.options.prefetch_batches > 0:
            prepared: queue.Queue[Any] = queue.Queue(maxsize=self.options.prefetch_batches)
            reader = threading.Thread(target=self._reader, args=(prepared,), name="scd-reader", daemon=True)
            reader.start()
            source: Iterator[_Batch] = self._received(prepared)
        else:
            source = self._batches()
        try:
            done_tiles = 0
            for batch in source:
                if self.progress.is_cancelled():
                    raise Cancelled("cancelled by the user; no output was written")
                # Progress within the batch too (read; network, in _infer; written), so that a scene of
                # one long batch still moves the bar.
                self._batch_span = (done_tiles / max(1, len(self.grid)), len(batch.windows) / max(1, len(self.grid)))
                self.progress.set_progress(self._batch_span[0] + BATCH_READ_SHARE * self._batch_span[1])
                self._process(batch)
                done_tiles += len(batch.windows)
                self.summary.batches += 1
                self.progress.set_progress(done_tiles / max(1, len(self.grid)))
            self._flush(self.grid.height)
        finally:
            self._stop.set()
            if reader is not None:
                reader.join(timeout=30)

    @staticmethod
    def _received(prepared: queue.Queue[Any]) -> Iterator[_Batch]:
        """Batches from the reader thread, re-raising its errors here."""
        while True:
            item = prepared.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _process(self, batch: _Batch) -> None:
        probs = None
        if batch.x1 is not None:
            probs = self._infer(batch)
        index = 0
        for window, ran in zip(batch.windows, batch.run, strict=True):
            self._flush(window.row)
            if not ran:
                self.summary.tiles_skipped += 1
                continue
            assert probs is not None and self.accumulator is not None
            values = probs[index, :, : window.height, : window.width]
            started = time.perf_counter()
            self.accumulator.add(window, values, self.grid.weights(window))
            self._add_time("blend", time.perf_counter() - started)
            self.summary.tiles_run += 1
            index += 1

    def _infer(self, batch: _Batch) -> np.ndarray:
        assert batch.x1 is not None and batch.x2 is not None and batch.valid is not None
        to_device = {"device": self.device, "non_blocking": True}
        x1 = torch.from_numpy(batch.x1).to(**to_device)
        x2 = torch.from_numpy(batch.x2).to(**to_device)
        valid = torch.from_numpy(batch.valid).to(**to_device)
        started = time.perf_counter()
        with torch.inference_mode():
            try:
                outputs = self.forward(x1, x2)  # in the backend's own layout and autocast
            except GraphMismatch as error:  # a graph that is not this model's: never use a pixel of it
                if self.pytorch_instead is None:
                    raise
                self.progress.info(f"warning: {error}; running on PyTorch")
                self.forward = engine_forward(self.pytorch_instead(), self.device)
                self.fell_back = True
                outputs = self.forward(x1, x2)
            stacked = self.heads.stack(outputs, valid)
        result = stacked.float().cpu().numpy()
        elapsed = time.perf_counter() - started
        self.summary.model_seconds += elapsed
        self._add_time("network", elapsed)
        self.progress.set_progress(self._batch_span[0] + BATCH_NETWORK_SHARE * self._batch_span[1])
        if self.accumulator is None:
            band = min(self.grid.tile_size, self.grid.height)
            self.accumulator = RowBandAccumulator(self.heads.channels, band, self.grid.width)
        return result

    def _flush(self, row: int) -> None:
        """Decode and write every row above ``row`` that no later tile can touch."""
        if self.accumulator is None:
            if row >= self.grid.height:  # nothing ever ran: every pixel is nodata
                self._write_rows(0, None, self.grid.height)
            return
        start, values, _ = self.accumulator.finish_before(row)
        if values.shape[1]:
            self._write_rows(start, values, values.shape[1])
        if row >= self.grid.height and self.accumulator.origin < self.grid.height:
            self._flush(self.grid.height)

    def _write_rows(self, start: int, values: np.ndarray | None, count: int) -> None:
        started = time.perf_counter()
        rows = self.heads.decode(values, count, self.grid.width)
        decoded = time.perf_counter()
        self._add_time("decode", decoded - started)
        self.stage.write_rows(start, rows["valid"], rows["changed"], prob=rows["prob"], c1=rows.get("c1"),
                              c2=rows.get("c2"))
        self._add_time("write", time.perf_counter() - decoded)

    def _add_time(self, step: str, seconds: float) -> None:
        timings = self.summary.timings
        timings[step] = timings.get(step, 0.0) + seconds


#: Tiles an int8 graph is calibrated on, spread evenly over the scene.
CALIBRATION_TILES = 16


def _sample_tiles(pair: RasterPair, grid: TileGrid, scalings: tuple[BandScaling, BandScaling], count: int, *,
                  between: bool = False) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Up to ``count`` prepared tile pairs, mostly valid, spread over the scene, with their valid masks.

    ``between`` takes the tiles halfway between those of ``between=False`` (the calibration tiles),
    so that int8 is checked on tiles it was not calibrated on wherever the scene has enough.
    """
    windows = list(grid.windows())
    step = max(1, len(windows) // (count * 2))
    first = min(max(1, step // 2), len(windows) - 1) if between else 0
    sample: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for window in windows[first::step]:
        img1, img2, valid = pair.read(window.row, window.col, window.height, window.width)
        if valid.mean() < 0.5:
            continue
        padding = ((0, grid.model_size - valid.shape[0]), (0, grid.model_size - valid.shape[1]))
        sample.append((pad_to(scalings[0].apply(img1), grid.model_size),
                       pad_to(scalings[1].apply(img2), grid.model_size), np.pad(valid, padding)))
        if len(sample) == count:
            break
    return sample


def _calibration_tiles(pair: RasterPair, grid: TileGrid,
                       scalings: tuple[BandScaling, BandScaling]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The tiles an int8 graph is calibrated on."""
    return [(x1, x2) for x1, x2, _ in _sample_tiles(pair, grid, scalings, CALIBRATION_TILES)]


def _int8_impossible(options: RunOptions, device: torch.device) -> str:
    """Why int8 cannot run at all here ("" where it can)."""
    if device.type != "cpu":
        return f"int8 runs on the CPU, this run on {device.type}"
    if (options.backend or "auto").strip().lower() == "torch":
        return "backend torch computes in floating point"
    if not runtime_available("onnxruntime"):
        return "ONNX Runtime, which quantises, is not installed: python -m pip install onnxruntime"
    return ""


def _int8_declined(options: RunOptions, device: torch.device, batches: int) -> str:
    """Why ``int8=None`` does not try int8 on this run ("" where it does, or where int8 was named)."""
    if options.int8 is not None:
        return ""
    impossible = _int8_impossible(options, device)
    if impossible:
        return impossible
    if (options.precision or "auto").strip().lower() != "auto":
        return f"precision {options.precision} was asked for"
    if not cpu_has_fast_int8():
        return "this CPU has no AVX-512 VNNI, AVX-VNNI or AMX, where int8 is fast"
    if batches < AUTO_MEASURE_BATCHES:
        return (f"a run of {batches} batches is too short to pay for quantising and checking "
                f"({AUTO_MEASURE_BATCHES} or more)")
    return ""


def _int8_keeps_labels(network: nn.Module, card: ModelCard, heads: _Heads, pair: RasterPair, grid: TileGrid,
                       scalings: tuple[BandScaling, BandScaling], options: RunOptions, device: torch.device,
                       calibration: Callable[[], Any], summary: RunSummary, progress: Progress) -> bool:
    """Whether the int8 graph keeps fp32's labels on this scene (:mod:`.backends.check`).

    Where int8 cannot run at all (backend torch, a GPU, no ONNX Runtime) this says yes, and
    :func:`~.backends.select_backend` refuses the run with the reason and what to do.
    """
    if _int8_impossible(options, device):
        return True

    def quantised() -> Forward:
        backend = select_backend(network, card, requested="onnxruntime", int8=True, model_size=grid.model_size,
                                 batch_size=options.batch_size, calibration=calibration,
                                 cache_dir=options.backend_cache_dir, warn=_warning(progress))
        assert isinstance(backend, InferenceBackend)
        return backend.forward

    fp32 = engine_forward(select_backend(network, card, requested="torch", model_size=grid.model_size,
                                         batch_size=options.batch_size), device)
    tiles = _sample_tiles(pair, grid, scalings, CHECK_TILES, between=True)
    model = int8_model_path(network, card, model_size=grid.model_size, calibration=calibration(),
                            cache_dir=options.backend_cache_dir)
    try:
        result = check_int8(quantised, fp32, _labeller(heads), tiles, batch_size=options.batch_size,
                            record=check_record(model), model=model)
    except (BackendCacheError, GraphMismatch) as error:  # no usable int8 graph: the run goes on without int8
        summary.int8_check = f"int8 not used ({error})"
        progress.info(f"warning: {summary.int8_check}")
        return False
    summary.int8_check = result.describe()
    if result.passed:
        progress.info(summary.int8_check)
        return True
    summary.int8_check += "; ran without int8"
    progress.info(f"{result.describe()}: running without int8")
    log.warning("%s", summary.int8_check)
    return False


def _labeller(heads: _Heads) -> Labeller:
    """The label per pixel of a batch's outputs, as the engine decodes them (0: no change)."""

    def labels(outputs: dict[str, torch.Tensor]) -> np.ndarray:
        covered = torch.ones_like(outputs[CHANGE_PROB][:, :1], dtype=torch.float32)
        values = heads.stack(outputs, covered).numpy()
        codes = []
        for tile in values:
            rows = heads.decode(tile, tile.shape[1], tile.shape[2])
            code = rows["changed"].astype(np.int64)
            if heads.semantic:
                pair_code = 1 + rows["c1"].astype(np.int64) * (heads.num_classes + 1) + rows["c2"]
                code = np.where(rows["changed"], pair_code, 0)
            codes.append(code)
        return np.stack(codes)

    return labels


def _lower_thread_priority() -> None:
    """Let the network's threads win the CPU over the reader thread.

    On a CPU the network's OpenMP threads wait for each other at every layer, so a
    reader thread that takes a core from one of them slows the whole forward pass far
    more than its own work costs. Lowered in priority, the reader fills the gaps
    between forward passes instead. Linux applies a nice value per thread; elsewhere
    this does nothing.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def describe_memory(num_bytes: int) -> str:
    return memory.describe(num_bytes)
