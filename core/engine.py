"""The one entry point: two rasters and a model in, from-to change rasters out.

The plugin, the training CLI and scripts all call :func:`run_change_detection`.
The walk of one tile: :class:`~.tiling.TileGrid` gives a window, a reader thread
has :class:`~.io.RasterPair` fill it with two aligned arrays and a validity mask and
:mod:`.preprocess` normalise it, batches go to the network, the per-head
probabilities are blended into a :class:`~.tiling.RowBandAccumulator`, finished
rows are decoded by :mod:`.encode` and written by :class:`~.io.RasterWriter`. When
every row is written the legends are added and the files are moved into place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import encode, legend, memory, pathguard
from .devices import inference_context, select_device, select_precision
from .errors import Cancelled, ChangeDetectionError, InputError
from .io import (
    RasterPair,
    RasterWriter,
    check_output_path,
    discard,
    outputs_folders,
    publish,
    read_rows,
    temporary_path,
    terminate_cleanly,
    writing_outputs,
)
from .models.base import CHANGE_PROB, CHANGE_THRESHOLD, SEM_LOGITS_T1, SEM_LOGITS_T2
from .models.card import ModelCard
from .preprocess import BandScaling, plan_scaling
from .tiling import RowBandAccumulator, TileGrid, TileWindow, pad_to

log = logging.getLogger(__name__)

ModelSource = str | os.PathLike[str] | tuple[nn.Module, ModelCard]


@dataclass(frozen=True)
class RunOptions:
    """How to run; ``None`` means "what the model card says".

    Attributes:
        bands_t1, bands_t2: 1-based bands per date, in the model's band order.
        tile_size: Tile side in pixels.
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
        overwrite: Replace existing files at the output paths even when this tool did
            not write them. Without it only its own earlier outputs are replaced; an
            output that is an input, the model or another output is refused either way.
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
    overwrite: bool = False


@dataclass(frozen=True)
class OutputPaths:
    """Which products to write, and where. Leave a field ``None`` to skip it.

    Attributes:
        fromto: From-to codes (0 = no change), semantic models only.
        t1_classes, t2_classes: Per-date land-cover class, inside change only (0 elsewhere).
        change_prob: Blended change probability, float32.
        change_mask: 0/1 change mask (any model).
        transitions_csv: Transition matrix with pixel counts and areas.
    """

    fromto: str | os.PathLike[str] | None = None
    t1_classes: str | os.PathLike[str] | None = None
    t2_classes: str | os.PathLike[str] | None = None
    change_prob: str | os.PathLike[str] | None = None
    change_mask: str | os.PathLike[str] | None = None
    transitions_csv: str | os.PathLike[str] | None = None

    def rasters(self) -> dict[str, Path]:
        names = ("fromto", "t1_classes", "t2_classes", "change_prob", "change_mask")
        return {name: Path(getattr(self, name)) for name in names if getattr(self, name) is not None}


class Progress:
    """Receives progress and messages and tells the engine whether to stop.

    The default does nothing and never cancels; the plugin adapts QGIS's feedback.
    """

    def set_progress(self, fraction: float) -> None:
        """Called with 0..1 at least once per batch."""

    def info(self, message: str) -> None:
        """A line for the run's log."""

    def is_cancelled(self) -> bool:
        return False


@dataclass
class RunSummary:
    """What a run did, for the log, the report and the benchmark."""

    outputs: dict[str, str] = field(default_factory=dict)
    device: str = ""
    device_reason: str = ""
    precision: str = ""
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
    transitions: list[dict[str, Any]] = field(default_factory=list)

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
) -> RunSummary:
    """Detect change between two dates of one area and write the requested products.

    Args:
        path_t1: The earlier image; its grid (CRS, pixel size, alignment) is the master.
        path_t2: The later image, in any CRS, resolution or extent overlapping T1.
        model: A checkpoint path, or an in-memory ``(network, card)`` pair.
        outputs: The products to write.
        options: Run options; defaults come from the model card.
        progress: Progress, log and cancel hooks.

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
    rasters = _check_outputs(outputs, card, {"T1": path_t1, "T2": path_t2},
                             None if isinstance(model, tuple) else model, options.overwrite)
    tile_size = int(options.tile_size or card.tile_size)
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
    with RasterPair(path_t1, path_t2, bands_t1, bands_t2, needed_bands=len(card.bands_t1)) as pair:
        grid = TileGrid(pair.height, pair.width, tile_size, overlap)
        summary.width, summary.height = pair.width, pair.height
        summary.tiles_total = len(grid)
        scalings = _plan_scalings(pair, card)
        summary.scaling_t1, summary.scaling_t2 = scalings[0].description, scalings[1].description
        heads = _Heads(card)
        run_bytes = estimate_memory(grid, card, options.batch_size, network, heads.channels,
                                    options.prefetch_batches)
        memory.refuse_if_short(run_bytes, device_choice.device.type, tile_size, options.batch_size)
        summary.memory_estimate_bytes = memory.process_rss_bytes() + run_bytes
        progress.info(f"device: {summary.device} ({summary.device_reason}); precision: {precision_reason}")
        progress.info(f"processing area: {pair.width} x {pair.height} px on T1's grid ({pair.crs}); "
                      f"{len(grid)} tiles of {tile_size} px, overlap {overlap} px, batch {options.batch_size}")
        progress.info(f"estimated memory: {summary.memory_estimate_bytes / 2**20:.0f} MiB")
        progress.info(f"input scaling: T1 {scalings[0].description}; T2 {scalings[1].description}")

        network = network.to(device_choice.device).eval()
        if device_choice.device.type != "mps":
            network = network.to(memory_format=torch.channels_last)
        csv = Path(outputs.transitions_csv) if outputs.transitions_csv is not None else None
        run = _Run(pair, grid, card, heads, scalings, rasters, network, device_choice.device, autocast_dtype,
                   options, progress, summary, csv)
        try:
            with writing_outputs(outputs_folders(rasters, csv)), terminate_cleanly(run.discard):
                run.execute()
                run.finish(outputs)
        except BaseException:
            run.discard()
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
    rasters = outputs.rasters()
    if not rasters and outputs.transitions_csv is None:
        raise InputError("no output was requested; choose at least one output file")
    if card.task != "semantic":
        semantic_only = [n for n in ("fromto", "t1_classes", "t2_classes") if n in rasters]
        if semantic_only or outputs.transitions_csv is not None:
            names = ", ".join(semantic_only + (["transitions_csv"] if outputs.transitions_csv else []))
            raise InputError(f"the model '{card.model}' detects binary change only, so it cannot write {names}; "
                             "use a semantic model (GAPL-SCD, LSAFNet) or ask for the change mask/probability")
    guarded = [pathguard.Output(name, path, "raster", overwrite) for name, path in rasters.items()]
    if outputs.transitions_csv is not None:
        guarded.append(pathguard.Output("transitions_csv", outputs.transitions_csv, "table", overwrite))
    pathguard.check_outputs(guarded, inputs=inputs, model=model)
    for output in guarded:
        check_output_path(output.path)
    return rasters


def _plan_scalings(pair: RasterPair, card: ModelCard) -> tuple[BandScaling, BandScaling]:
    """Scaling of both dates, from valid pixels only (see :meth:`.io.RasterPair.valid_sample`)."""
    dtypes1, dtypes2 = pair.dtypes()
    values1, values2 = pair.valid_sample()
    if not values1.shape[1]:
        raise InputError("T1 and T2 have no valid pixel in common (all nodata, masked or NaN where they "
                         "overlap); check the nodata values and that both images cover the same area")
    valid = np.ones((1, values1.shape[1]), dtype=bool)
    s1 = plan_scaling(dtypes1, values1[:, None, :], valid, card.scaling, card.mean_t1, card.std_t1)
    s2 = plan_scaling(dtypes2, values2[:, None, :], valid, card.scaling, card.mean_t2, card.std_t2)
    return s1, s2


class _Heads:
    """Where each network output lives in the accumulator's channels."""

    def __init__(self, card: ModelCard) -> None:
        self.semantic = card.task == "semantic"
        self.num_classes = card.num_classes
        self.threshold: int | None = None
        self.channels = 2  # valid fraction, change probability
        if self.semantic:
            self.t1 = slice(2, 2 + card.num_classes)
            self.t2 = slice(2 + card.num_classes, 2 + 2 * card.num_classes)
            self.channels += 2 * card.num_classes

    def stack(self, outputs: dict[str, torch.Tensor], valid: torch.Tensor) -> torch.Tensor:
        """Per-head probabilities as one ``[B, channels, H, W]`` float32 tensor."""
        if CHANGE_THRESHOLD in outputs and self.threshold is None:
            self.threshold = self.channels
            self.channels += 1
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


def estimate_memory(grid: TileGrid, card: ModelCard, batch_size: int, network: nn.Module, channels: int,
                    prefetch: int) -> int:
    """Bytes the run adds at its peak: accumulators, tile batches, outputs and the network.

    What the process already holds comes on top (:mod:`.memory`).
    """
    size = grid.model_size
    accumulators = (channels + 2) * min(grid.tile_size, grid.height) * grid.width * 4
    batches = (prefetch + 2) * batch_size * 2 * len(card.bands_t1) * size * size * 4
    outputs = 6 * 256 * grid.width * 4
    params = sum(p.numel() * p.element_size() for p in network.parameters())
    # activations: a ResNet-50-sized siamese network holds roughly 2 x 60 floats per input pixel at peak
    activations = batch_size * size * size * 4 * 120
    return int(accumulators + batches + outputs + params + activations)


# --- the run itself ----------------------------------------------------------------------------


@dataclass
class _Batch:
    windows: list[TileWindow]  # in grid order, including skipped ones
    run: list[bool]  # False where the tile had no valid pixel
    x1: np.ndarray | None  # [n_run, C, S, S]
    x2: np.ndarray | None
    valid: np.ndarray | None  # [n_run, 1, S, S] float32


_DONE = object()


class _Run:
    def __init__(self, pair: RasterPair, grid: TileGrid, card: ModelCard, heads: _Heads,
                 scalings: tuple[BandScaling, BandScaling], rasters: dict[str, Path], network: nn.Module,
                 device: torch.device, autocast_dtype: torch.dtype | None, options: RunOptions,
                 progress: Progress, summary: RunSummary, transitions_csv: Path | None = None) -> None:
        self.pair, self.grid, self.card, self.heads = pair, grid, card, heads
        self.scalings = scalings
        self.network, self.device, self.autocast_dtype = network, device, autocast_dtype
        self.options, self.progress, self.summary = options, progress, summary
        self.finals = rasters
        self.temporaries = {name: temporary_path(path) for name, path in rasters.items()}
        reference = "fromto" if heads.semantic else "change_mask"
        if options.min_patch_pixels > 1 and reference not in rasters:
            # The sieve works on this raster and every count is taken from it afterwards: write it
            # beside the outputs even when it was not asked for, and never publish it.
            beside = next(iter(rasters.values()), None) or Path(str(transitions_csv)).with_suffix(".tif")
            self.temporaries[reference] = temporary_path(beside)
        self.writers: dict[str, RasterWriter] = {}
        self.code_dtype = encode.code_dtype(card.num_classes) if heads.semantic else np.dtype(np.uint8)
        self.counter = encode.TransitionCounter(max(card.num_classes, 1))
        self.class_counters = (encode.CodeCounter(card.num_classes + 1), encode.CodeCounter(card.num_classes + 1))
        self.mask_counter = encode.CodeCounter(2)
        self.accumulator: RowBandAccumulator | None = None
        self._stop = threading.Event()

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
            img1, img2, valid = self.pair.read(window.row, window.col, window.height, window.width)
            pending.append(window)
            has_data = bool(valid.any())
            run_flags.append(has_data)
            if has_data:
                x1s.append(pad_to(self.scalings[0].apply(img1), size))
                x2s.append(pad_to(self.scalings[1].apply(img2), size))
                valids.append(pad_to(valid[None].astype(np.float32), size))
            if len(x1s) == self.options.batch_size:
                yield _Batch(pending, run_flags, np.stack(x1s), np.stack(x2s), np.stack(valids))
                pending, run_flags, x1s, x2s, valids = [], [], [], [], []
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
        self._open_writers()
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
            self.accumulator.add(window, values, self.grid.weights(window))
            self.summary.tiles_run += 1
            index += 1

    def _infer(self, batch: _Batch) -> np.ndarray:
        assert batch.x1 is not None and batch.x2 is not None and batch.valid is not None
        to_device = {"device": self.device, "non_blocking": True}
        x1 = torch.from_numpy(batch.x1).to(**to_device).contiguous(memory_format=torch.channels_last)
        x2 = torch.from_numpy(batch.x2).to(**to_device).contiguous(memory_format=torch.channels_last)
        valid = torch.from_numpy(batch.valid).to(**to_device)
        started = time.perf_counter()
        with inference_context(self.device, self.autocast_dtype):
            outputs = self.network(x1, x2)
            stacked = self.heads.stack(outputs, valid)
        result = stacked.float().cpu().numpy()
        self.summary.model_seconds += time.perf_counter() - started
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
        heads = self.heads
        width = self.grid.width
        if values is None:
            valid = np.zeros((count, width), dtype=bool)
            prob = np.zeros((count, width), dtype=np.float32)
            threshold = None
        else:
            valid = values[0] > 0.5  # pixels no tile covered hold 0: invalid
            prob = values[1]
            threshold = None if heads.threshold is None else values[heads.threshold]
        changed = encode.decode_change(prob, threshold) & valid
        area = self.pair.pixel_area_m2(np.arange(start, start + count))
        products: dict[str, np.ndarray] = {}
        if heads.semantic:
            if values is None:
                c1 = c2 = np.ones((count, width), dtype=np.uint8)
            else:
                c1 = encode.decode_classes(values[heads.t1])
                c2 = encode.decode_classes(values[heads.t2])
            codes = encode.fromto_codes(c1, c2, changed, heads.num_classes)
            self.counter.add(codes, valid, area)
            products["fromto"] = _with_nodata(codes, valid)
            products["t1_classes"] = _with_nodata(encode.mask_classes(c1, changed), valid)
            products["t2_classes"] = _with_nodata(encode.mask_classes(c2, changed), valid)
            self.class_counters[0].add(products["t1_classes"], valid, area)
            self.class_counters[1].add(products["t2_classes"], valid, area)
        products["change_mask"] = _with_nodata(changed.astype(np.uint8), valid)
        self.mask_counter.add(products["change_mask"], valid, area)
        products["change_prob"] = np.where(valid, prob, encode.NODATA_FLOAT32).astype(np.float32)
        self.summary.valid_pixels += int(valid.sum())
        self.summary.changed_pixels += int(changed.sum())
        self.summary.changed_area_m2 += float((changed * area[:, None]).sum())
        for name, writer in self.writers.items():
            writer.write_rows(start, products[name])

    # -- outputs --------------------------------------------------------------------------------
    def _open_writers(self) -> None:
        for name, temporary in self.temporaries.items():
            if name == "change_prob":
                dtype, nodata = "float32", encode.NODATA_FLOAT32
            elif name == "change_mask":
                dtype, nodata = "uint8", encode.nodata_for(np.dtype(np.uint8))
            else:
                dtype, nodata = self.code_dtype.name, encode.nodata_for(self.code_dtype)
            self.writers[name] = RasterWriter(temporary, width=self.grid.width, height=self.grid.height,
                                              dtype=dtype, nodata=nodata, crs=self.pair.crs,
                                              transform=self.pair.transform)

    def finish(self, outputs: OutputPaths) -> None:
        """Close the rasters, sieve, add their legends, then move everything into place."""
        for writer in self.writers.values():
            writer.close()
        if self.options.min_patch_pixels > 1:
            self._sieve()
        classes = self.card.classes
        written: list[legend.LegendFiles] = []
        for name, temporary in self.temporaries.items():
            if name not in self.finals:
                continue  # an internal raster, discarded below
            if name == "fromto":
                written.append(legend.write_legend(temporary, legend.fromto_legend(classes),
                                                   stats=self.counter.stats()))
            elif name in ("t1_classes", "t2_classes"):
                counter = self.class_counters[0 if name == "t1_classes" else 1]
                written.append(legend.write_legend(temporary, legend.class_legend(classes), stats=counter.stats()))
            elif name == "change_mask":
                written.append(legend.write_legend(temporary, legend.binary_legend(self.card.change_color),
                                                   stats=self.mask_counter.stats()))
            elif name == "change_prob":
                legend.write_probability_style(temporary)
        for files in written:
            for warning in files.warnings:
                self.progress.info(f"warning: {warning}")
        if self.heads.semantic:
            self.summary.transitions = legend.transition_table_rows(classes, self.counter)
        if outputs.transitions_csv is not None:
            final_csv = Path(outputs.transitions_csv)
            legend.write_transition_matrix(final_csv, classes, self.counter)
            self.summary.outputs["transitions_csv"] = str(final_csv)
        for name, temporary in self.temporaries.items():
            if name in self.finals:
                publish(temporary, self.finals[name])
                self.summary.outputs[name] = str(self.finals[name])
            else:
                discard(temporary)

    def _sieve(self) -> None:
        """Remove change patches below the minimum mapping unit, then count again."""
        from .postprocess import sieve_small_changes

        reference = self.temporaries["fromto" if self.heads.semantic else "change_mask"]
        dependents = [path for name, path in self.temporaries.items()
                      if path != reference and name != "change_prob"]
        removed = sieve_small_changes(reference, self.options.min_patch_pixels, dependents=dependents,
                                      progress=_CancelOnly(self.progress))
        self.progress.info(f"minimum mapping unit {self.options.min_patch_pixels} px: "
                           f"{removed} changed pixels in smaller patches set to no change")
        self._recount()

    def _recount(self) -> None:
        """Rebuild the counters and the summary from the finished (sieved) rasters."""
        counters: dict[str, encode.CodeCounter] = {"change_mask": encode.CodeCounter(2)}
        if self.heads.semantic:
            counters |= {"fromto": encode.TransitionCounter(self.card.num_classes),
                         "t1_classes": encode.CodeCounter(self.card.num_classes + 1),
                         "t2_classes": encode.CodeCounter(self.card.num_classes + 1)}
        counters = {name: c for name, c in counters.items() if name in self.temporaries}
        for name, counter in counters.items():
            for start, values in read_rows(self.temporaries[name]):
                valid = values != encode.nodata_for(values.dtype)
                counter.add(values, valid, self.pair.pixel_area_m2(np.arange(start, start + values.shape[0])))
        reference = counters["fromto" if self.heads.semantic else "change_mask"]
        self.summary.changed_pixels = int(reference.total_pixels - reference.count(0))
        self.summary.changed_area_m2 = float(reference.total_area_m2 - reference.area_m2(0))
        self.counter = counters.get("fromto", self.counter)  # type: ignore[assignment]
        self.class_counters = (counters.get("t1_classes", self.class_counters[0]),
                               counters.get("t2_classes", self.class_counters[1]))
        self.mask_counter = counters.get("change_mask", self.mask_counter)

    def discard(self) -> None:
        for writer in self.writers.values():
            try:
                writer.abort()
            except Exception:  # noqa: BLE001 - cleaning up after another error
                log.debug("could not close %s", writer.path, exc_info=True)
        for temporary in self.temporaries.values():
            discard(temporary)


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


class _CancelOnly(Progress):
    """Lets a post-processing step check for cancel without moving the finished progress bar."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def is_cancelled(self) -> bool:
        return self._progress.is_cancelled()


def _with_nodata(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    nodata = encode.nodata_for(values.dtype)
    return np.where(valid, values, nodata).astype(values.dtype)


def describe_memory(num_bytes: int) -> str:
    return memory.describe(num_bytes)
