"""`make bench` sections on CPU inference speed (issue: CPU inference at the hardware's pace).

7. ``--only backends``: every network's forward pass on each installed backend (PyTorch fp32,
   PyTorch bf16 autocast where the CPU has it, ONNX Runtime fp32, OpenVINO fp32, ONNX Runtime
   int8), timed in interleaved rounds in one process (A B C A B C ...), so a machine shared with
   other work slows every backend alike; prints median ms per tile, Mpx/s, the ratio to today's
   PyTorch path and label agreement with PyTorch fp32 on tiles of a synthetic scene.
8. ``--only e2e``: whole engine runs on one scene, interleaved: backend ``torch`` (today's path,
   precision ``auto``), ``torch`` fp32, ``auto`` fp32 and ``auto`` int8; wall-time ratios, the
   time breakdown (read+prepare, network, blend+decode+write) and from-to agreement.
9. ``--only tiles``: the tile-size/overlap table on a synthetic scene with ground truth, for a
   trained model (``--trained FILE``): agreement with the truth, agreement with whole-image
   inference, seam strength and Mpx/s. Without a trained model it says how to get one and skips.

Timings on a shared machine are noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from core import synthetic
from core.backends import BackendRace, runtime_available, select_backend
from core.devices import cpu_has_fast_bf16
from core.engine import OutputPaths, RunOptions, run_change_detection
from core.errors import InputError
from core.models.card import SECOND_CLASSES
from core.models.checkpoint import load_checkpoint, make_card
from core.models.registry import build_model, get_spec, model_names

PALETTE = [c.color for c in SECOND_CLASSES]


def _scene_tiles(folder: Path, count: int, size: int, bands: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Normalised tile pairs cut from a synthetic scene (realistic inputs for label agreement)."""
    import rasterio

    side = size * int(np.ceil(np.sqrt(count)))
    t1, t2, _ = synthetic.write_pair(folder, PALETTE, height=side, width=side, seed=11)
    with rasterio.open(t1) as a, rasterio.open(t2) as b:
        img1 = (a.read(out_dtype="float32")[:bands] - 128.0) / 64.0
        img2 = (b.read(out_dtype="float32")[:bands] - 128.0) / 64.0
    tiles = []
    for row in range(0, side, size):
        for col in range(0, side, size):
            tiles.append((img1[:, row:row + size, col:col + size], img2[:, row:row + size, col:col + size]))
    return tiles[:count]


def _labels(outputs: dict[str, torch.Tensor]) -> np.ndarray:
    """Per pixel: changed flag, and for semantic networks the two classes, as one integer code."""
    prob = outputs["change_prob"].float()
    changed = prob > 0.5
    if "change_threshold" in outputs:
        changed &= prob > outputs["change_threshold"].float()
    code = changed.long()
    if "sem_logits_t1" in outputs:
        c1 = outputs["sem_logits_t1"][:, 1:].argmax(1, keepdim=True)
        c2 = outputs["sem_logits_t2"][:, 1:].argmax(1, keepdim=True)
        code = code + 2 * (c1 * 64 + c2) * changed.long()
    return code.numpy()


def bench_backends(names: list[str], tile: int | None, batch: int, rounds: int) -> None:
    print(f"\n== 7. backends: forward pass per network, interleaved rounds (batch {batch}, {rounds} rounds, "
          f"{torch.get_num_threads()} threads); ratio = time / today's PyTorch path "
          f"({'bf16 autocast' if cpu_has_fast_bf16() else 'fp32'} on this CPU)")
    with tempfile.TemporaryDirectory(prefix="scd-bench-backends-") as folder:
        work = Path(folder)
        for name in names:
            spec = get_spec(name)
            size = tile or spec.default_tile_size
            network = build_model(name).eval()
            card = make_card(name, "second" if spec.task == "semantic" else "binary", tile_size=size,
                             options=dict(network.build_options))
            tiles = _scene_tiles(work / f"scene_{size}", batch * 2, size)
            x1 = torch.from_numpy(np.stack([t[0] for t in tiles[:batch]]))
            x2 = torch.from_numpy(np.stack([t[1] for t in tiles[:batch]]))
            runs = _forwards(network, card, size, batch, work / "cache", tiles)
            times: dict[str, list[float]] = {label: [] for label in runs}
            labels: dict[str, np.ndarray] = {}
            for index in range(rounds + 1):  # round 0 warms every backend up
                for label, forward in runs.items():
                    started = time.perf_counter()
                    outputs = forward(x1, x2)
                    elapsed = time.perf_counter() - started
                    if index:
                        times[label].append(elapsed)
                    else:
                        labels[label] = _labels(outputs)
            reference = "torch bf16" if "torch bf16" in times else "torch fp32"
            base = statistics.median(times[reference])
            print(f"  {name} at {size} px:")
            for label, values in times.items():
                seconds = statistics.median(values)
                agreement = float((labels[label] == labels["torch fp32"]).mean()) * 100
                rate = size * size * batch / 1e6 / seconds
                print(f"    {label:18s} {seconds * 1000 / batch:8.0f} ms/tile {rate:6.3f} Mpx/s  "
                      f"x{seconds / base:5.2f} of {reference}  labels {agreement:6.2f} % = torch fp32")


def _forwards(network: torch.nn.Module, card, size: int, batch: int, cache: Path,
              tiles: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Callable]:
    channels_last = network.to(memory_format=torch.channels_last)

    def torch_forward(dtype: torch.dtype | None) -> Callable:
        def forward(x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
            a = x1.contiguous(memory_format=torch.channels_last)
            b = x2.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                if dtype is None:
                    return channels_last(a, b)
                with torch.autocast("cpu", dtype=dtype):
                    return {k: v.float() for k, v in channels_last(a, b).items()}
        return forward

    runs: dict[str, Callable] = {"torch fp32": torch_forward(None)}
    bf16 = cpu_has_fast_bf16()
    if bf16:
        runs["torch bf16"] = torch_forward(torch.bfloat16)
    variants = [("onnxruntime fp32", "onnxruntime", None, False), ("openvino fp32", "openvino", None, False)]
    if bf16:
        variants.append(("openvino bf16", "openvino", torch.bfloat16, False))
    variants += [("onnxruntime int8", "onnxruntime", None, True), ("openvino int8", "openvino", None, True)]
    for label, runtime, autocast, int8 in variants:
        if not runtime_available(runtime) or (int8 and not runtime_available("onnxruntime")):
            print(f"    ({label}: {runtime} not installed: python -m pip install {runtime})")
            continue
        try:
            runs[label] = select_backend(network, card, requested=runtime, model_size=size, batch_size=batch,
                                         autocast_dtype=autocast, int8=int8, calibration=lambda: tiles,
                                         cache_dir=cache)
        except InputError as error:
            print(f"    ({label}: cannot run: {error})")
    return runs


def bench_e2e(checkpoint: Path, size: int, tile: int, batch: int, rounds: int) -> None:
    """Whole engine runs per backend; ``tile`` 0 is the engine's default (the card's tile, at least 256 px)."""
    import rasterio

    from core.models.checkpoint import read_card
    from core.tiling import TileGrid, default_tile_size

    card = read_card(checkpoint)
    tile_used = tile or default_tile_size(card.tile_size)
    print(f"\n== 8. engine end to end per backend ({checkpoint.stem}, {size} x {size}, tile {tile_used}"
          f"{' (default)' if not tile else ''}, batch {batch}, {rounds} interleaved rounds)")
    with tempfile.TemporaryDirectory(prefix="scd-bench-e2e-") as folder:
        work = Path(folder)
        semantic = card.task == "semantic"
        # a scene like the training CLI's synthetic data, so that a model trained on those shows real agreement
        t1, t2, _, _ = _landscape_scene(work / "scene", card, size, seed=7)
        variants = {
            "torch (today)": RunOptions(backend="torch"),
            "torch fp32": RunOptions(backend="torch", precision="fp32"),
            "auto": RunOptions(backend="auto"),
            "auto fp32": RunOptions(backend="auto", precision="fp32"),
            "auto int8": RunOptions(backend="auto", int8=True),
        }
        grid = TileGrid(size, size, tile_used, tile_used // 4)
        _measure_ahead(checkpoint, grid.model_size, batch, work / "cache")
        walls: dict[str, list[float]] = {label: [] for label in variants}
        parts: dict[str, list[tuple[float, float]]] = {label: [] for label in variants}
        steps: dict[str, tuple[dict[str, float], float]] = {}
        codes: dict[str, np.ndarray] = {}
        chosen: dict[str, str] = {}
        for index in range(rounds + 1):  # round 0 exports, warms up and checks agreement
            for label, options in variants.items():
                out = work / f"{label.replace(' ', '_')}_{index}.tif"
                options = RunOptions(**{**options.__dict__, "tile_size": tile, "batch_size": batch, "device": "cpu",
                                        "backend_cache_dir": work / "cache"})
                started = time.perf_counter()
                products = OutputPaths(fromto=out) if semantic else OutputPaths(change_mask=out)
                summary = run_change_detection(t1, t2, checkpoint, products, options)
                wall = time.perf_counter() - started
                if index:
                    walls[label].append(wall)
                    parts[label].append((summary.model_seconds, wall - summary.model_seconds))
                    steps[label] = (summary.timings, wall)
                else:
                    chosen[label] = summary.backend + (f"; {summary.int8_check}" if summary.int8_check else "")
                    with rasterio.open(out) as src:
                        codes[label] = src.read(1)
        base = statistics.median(walls["torch (today)"])
        fp32 = statistics.median(walls["torch fp32"])
        for label in variants:
            wall = statistics.median(walls[label])
            network = statistics.median(p[0] for p in parts[label])
            agreement = float((codes[label] == codes["torch fp32"]).mean()) * 100
            print(f"  {label:14s} wall {wall:7.2f} s  x{base / wall:4.2f} faster than today  x{fp32 / wall:4.2f} than "
                  f"torch fp32  network {network:6.2f} s"
                  f"  rest {wall - network:5.2f} s  labels {agreement:6.2f} % = torch fp32  [{chosen[label]}]")
            print(f"    last run: {breakdown(*steps[label])}")


def _measure_ahead(checkpoint: Path, model_size: int, batch: int, cache: Path) -> None:
    """Rank the backends as the first long run of this model would, so a short bench scene uses the ranking.

    ``auto`` measures only on runs of :data:`~core.backends.select.AUTO_MEASURE_BATCHES` batches or more;
    this runs the same race ahead on batches of a synthetic scene, at the run's own precision (bf16 where
    the CPU has it) and at fp32, into the cache the bench's runs use.
    """
    network, card = load_checkpoint(checkpoint)
    network = network.eval().to(memory_format=torch.channels_last)
    pairs = _scene_tiles(cache.parent / "race-tiles", batch, model_size, len(card.bands_t1))
    x1, x2 = (torch.from_numpy(np.stack([pair[i] for pair in pairs])) for i in (0, 1))
    for autocast, named in ((torch.bfloat16 if cpu_has_fast_bf16() else None, False), (None, True)):
        chosen = select_backend(network, card, requested="auto", model_size=model_size, batch_size=batch,
                                autocast_dtype=autocast, precision_named=named, cache_dir=cache)
        while isinstance(chosen, BackendRace) and chosen.measuring:
            chosen(x1, x2)
        print(f"  ranking, {'fp32' if autocast is None else 'bf16'}: {chosen.describe()}")


def breakdown(timings: dict[str, float], wall: float) -> str:
    """The engine's time per step, and what is left (Python per-tile work, flushing, set-up)."""
    steps = ("read", "prepare", "network", "blend", "decode", "write", "finish")
    parts = [f"{step} {timings.get(step, 0.0):.2f}" for step in steps]
    other = wall - sum(timings.get(step, 0.0) for step in steps)
    return "  ".join(parts) + f"  other {other:.2f} s"


SEAM_BAND = 2


def _landscape_scene(folder: Path, card, size: int, seed: int) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A scene like the training CLI's ``synthetic`` ones (what a model trained on them knows), on one grid.

    Returns both dates and the truth: the change mask and the engine's from-to codes.
    """
    import rasterio

    classes = card.classes if card.task == "semantic" and card.classes else SECOND_CLASSES
    paths = synthetic.write_scene(folder, classes, size=size, seed=seed, t2_crs=None, nodata_border=0.0)
    with rasterio.open(paths.truth_change) as change, rasterio.open(paths.truth_fromto) as fromto:
        return paths.t1, paths.t2, change.read(1).astype(bool), fromto.read(1)


def bench_tiles(trained: Path | None, size: int = 1024, tiles: str = "256,512,1024") -> None:
    print(f"\n== 10. tile size and overlap from data ({size} x {size} synthetic scene with ground truth)")
    if trained is None:
        print("  skipped: needs a trained model. Train one with the training CLI (python -m training_cli train ...,"
              " see docs/training.md; `make demo` leaves one under build/demo/model/) and pass it with "
              "--trained FILE; an untrained network's probabilities carry no signal to judge seams or accuracy by.")
        return
    import rasterio

    from core.encode import fromto_pairs
    from core.metrics import SemanticConfusion

    network, card = load_checkpoint(trained)
    semantic = card.task == "semantic"
    with tempfile.TemporaryDirectory(prefix="scd-bench-tiles-") as folder:
        work = Path(folder)
        t1, t2, truth, truth_codes = _landscape_scene(work / "scene", card, size, seed=21)

        def run(tile: int, overlap: int) -> tuple[np.ndarray, np.ndarray | None, float]:
            out = work / f"{tile}_{overlap}"
            products = OutputPaths(change_prob=out.with_suffix(".prob.tif"),
                                   fromto=out.with_suffix(".fromto.tif") if semantic else None)
            started = time.perf_counter()
            run_change_detection(t1, t2, (network, card), products,
                                 RunOptions(tile_size=tile, overlap=overlap, device="cpu", precision="fp32",
                                            backend="auto", backend_cache_dir=work / "cache"))
            seconds = time.perf_counter() - started
            with rasterio.open(products.change_prob) as src:
                prob = src.read(1)
            codes = None
            if semantic:
                with rasterio.open(products.fromto) as src:
                    codes = np.where(src.read_masks(1) > 0, src.read(1), 0)  # nodata (none expected): unchanged
            return prob, codes, seconds

        def f_scd(codes: np.ndarray) -> float:
            confusion = SemanticConfusion(card.num_classes)
            for ours, theirs in zip(fromto_pairs(codes, card.num_classes),
                                    fromto_pairs(truth_codes, card.num_classes), strict=True):
                confusion.update(ours[None], theirs[None])
            return confusion.compute()["f_scd"]

        whole, whole_codes, _ = run(size, 0)
        print(f"  (the model card's tile size is {card.tile_size} px; the engine's default overlap is a quarter "
              "tile; Mpx/s after a warm-up run per tile size, so without the one-off export)")
        print(f"  {'tile':>5s} {'overlap':>7s} {'change = truth %':>16s} {'F_scd':>6s} {'= whole image %':>15s} "
              f"{'seam ratio':>10s} {'Mpx/s':>6s}")
        print(f"  {'whole':>5s} {0:7d} {100 * ((whole > 0.5) == truth).mean():16.2f} "
              f"{f_scd(whole_codes) if semantic else float('nan'):6.3f} {100.0:15.2f} {'':>10s} {'':>6s}")
        for tile in sorted({int(tile) for tile in tiles.split(",")} | {card.tile_size}):
            if tile > size:
                continue
            run(tile, 0)  # warm-up: exports this tile size into the cache
            for overlap in sorted({0, 32, 64, 128, tile // 4}):
                if overlap >= tile // 2:
                    continue
                prob, codes, seconds = run(tile, overlap)
                changed = prob > 0.5
                print(f"  {tile:5d} {overlap:7d} {100 * (changed == truth).mean():16.2f} "
                      f"{f_scd(codes) if codes is not None else float('nan'):6.3f} "
                      f"{100 * (changed == (whole > 0.5)).mean():15.2f} {_seam_ratio(prob, tile, overlap):10.2f} "
                      f"{size * size / 1e6 / seconds:6.3f}")


def _seam_ratio(prob: np.ndarray, tile: int, overlap: int) -> float:
    """Mean |step| of the probability across tile borders over the same statistic inside tiles (1 = no seam)."""
    stride = tile - overlap
    steps = np.abs(np.diff(prob.astype(np.float64), axis=1))
    columns = np.arange(steps.shape[1])
    # borders: where a tile's blend weight changes fastest, the middle of each overlap (or the cut itself)
    border = np.zeros(steps.shape[1], dtype=bool)
    for start in range(stride, prob.shape[1], stride):
        middle = start + overlap // 2 - 1
        border[max(0, middle - SEAM_BAND // 2):middle + SEAM_BAND // 2 + 1] = True
    inside = ~border & (columns % stride > overlap + 8)
    if not border.any() or not inside.any():
        return float("nan")
    return float(steps[:, border].mean() / max(steps[:, inside].mean(), 1e-9))


SECTIONS = ("backends", "e2e", "tiles")

__all__ = ["SECTIONS", "bench_backends", "bench_e2e", "bench_tiles", "model_names"]
