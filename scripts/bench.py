"""`make bench`: measurements that are too long or too machine-dependent for tests.

Prints, for one model on this machine in one run:
1. engine throughput (megapixels per second) and its overhead on a 2048 x 2048 scene:
   the engine's wall time divided by the network's own time for the same tiles in the
   same batches, measured in the same run;
2. peak memory (RSS) for a 512 px wide raster 4096 and 32768 rows high, each in a fresh
   process, and their ratio (memory must not grow with the height);
3. a plain in-memory sliding-window baseline (whole arrays, mean-blended, as mmseg's
   slide inference does) on the same inputs: its time and peak memory;
4. fp32 against reduced precision (bf16 autocast): speed-up and label agreement;
5. for every network: parameters, GFLOPs at its tile size, CPU forward time per tile at
   batch 1 and at the default batch size;
6. comparing two land-cover maps (``scd:compareclassifications``) on a 20,000 x 20,000
   uint8 pair against an in-memory numpy baseline (read both, ``np.bincount`` of
   ``from * K + to``): megapixels per second and peak memory of each, in fresh processes;
7. training: pairs per second for every network at 256 x 256 through the trainer (with
   DataLoader workers reading a synthetic dataset folder), the share of step time spent
   waiting for data, and one process against two DDP processes (torchrun, gloo on a CPU).

8-10. CPU inference speed: backends per network, the engine end to end per backend, and the
   tile/overlap table (see scripts/bench_backends.py; run with --only backends|e2e|tiles).

Usage: python scripts/bench.py [--model gapl_scd] [--tile 256] [--batch 4] [--skip-models]
       python scripts/bench.py --only compare [--compare-size 20000]
       python scripts/bench.py --only backends [--networks sscfnet,gapl_scd] [--backend-tile 256] [--rounds 3]
       python scripts/bench.py --only e2e [--model gapl_scd] [--e2e-size 1024] [--rounds 2]
       python scripts/bench.py --only tiles --trained model.pt
       python scripts/bench.py --only training
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_backends  # noqa: E402
import bench_compare_children  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from core import synthetic  # noqa: E402
from core.engine import OutputPaths, RunOptions, run_change_detection  # noqa: E402
from core.models.card import PRESETS, SECOND_CLASSES  # noqa: E402
from core.models.checkpoint import load_checkpoint, make_card, save_checkpoint  # noqa: E402
from core.models.complexity import count_flops, count_parameters  # noqa: E402
from core.models.registry import build_model, get_spec, model_names  # noqa: E402
from core.tiling import TileGrid, pad_to  # noqa: E402

PALETTE = [c.color for c in SECOND_CLASSES]
DEFAULT_BATCH = 4


def peak_rss_mib() -> float:
    """Peak resident memory of this process.

    Read from VmHWM, which starts afresh at exec; ``ru_maxrss`` would carry over the
    parent's peak into a child started with fork and exec.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_checkpoint(folder: Path, model: str, tile: int) -> Path:
    spec = get_spec(model)
    preset = "second" if spec.task == "semantic" else "binary"
    network = build_model(model)
    path = folder / f"{model}.pt"
    save_checkpoint(path, network, make_card(model, PRESETS[preset], tile_size=tile,
                                             options=dict(network.build_options)))
    return path


def make_scene_pair(folder: Path, height: int, width: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    t1, t2, _ = synthetic.write_pair(folder, PALETTE, height=height, width=width, seed=7)
    return t1, t2


def time_forward(network: torch.nn.Module, batch: int, size: int, dtype: torch.dtype | None, repeats: int = 3) -> float:
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    network = network.eval().to(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for index in range(repeats + 1):
            started = time.perf_counter()
            if dtype is None:
                network(x, x)
            else:
                with torch.autocast("cpu", dtype=dtype):
                    network(x, x)
            if index:  # the first call warms up
                times.append(time.perf_counter() - started)
    return float(np.median(times))


def time_batches(network: torch.nn.Module, sizes: list[int], size: int) -> float:
    """Total time of one forward per batch size in ``sizes``, each shape warmed up first."""
    network = network.eval().to(memory_format=torch.channels_last)
    inputs = {n: torch.randn(n, 3, size, size).contiguous(memory_format=torch.channels_last) for n in set(sizes)}
    total = 0.0
    with torch.inference_mode():
        for x in inputs.values():
            network(x, x)
        for n in sizes:
            started = time.perf_counter()
            network(inputs[n], inputs[n])
            total += time.perf_counter() - started
    return total


# --- child processes (fresh interpreter, so peak RSS means something) -----------------------


def child_engine(args: argparse.Namespace) -> dict[str, float]:
    """One engine run: ``--backend torch`` at fp32 (the baseline's runtime) or the default ``auto``."""
    out = Path(args.workdir) / f"out_{args.height}_{args.backend}"
    out.mkdir(parents=True, exist_ok=True)
    precision = "fp32" if args.backend == "torch" else "auto"
    started = time.perf_counter()
    summary = run_change_detection(args.t1, args.t2, args.checkpoint, OutputPaths(fromto=out / "fromto.tif"),
                                   RunOptions(tile_size=args.tile, batch_size=args.batch, device="cpu",
                                              precision=precision, backend=args.backend,
                                              backend_cache_dir=Path(args.workdir) / "cache"))
    return {"seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib(),
            "estimate_mib": summary.memory_estimate_bytes / 2**20, "tiles": summary.tiles_total,
            "backend": summary.backend}


def child_baseline(args: argparse.Namespace) -> dict[str, float]:
    """mmseg-style slide inference: whole rasters in memory, logits summed, divided by a count matrix."""
    import rasterio

    network, card = load_checkpoint(args.checkpoint)
    network = network.eval().to(memory_format=torch.channels_last)
    started = time.perf_counter()
    with rasterio.open(args.t1) as a, rasterio.open(args.t2) as b:
        img1 = a.read(out_dtype="float32")
        img2 = b.read(out_dtype="float32")
    def column(values: tuple[float, ...]) -> np.ndarray:
        return np.asarray(values, np.float32)[:, None, None]

    img1 = (img1 - column(card.mean_t1)) / column(card.std_t1)
    img2 = (img2 - column(card.mean_t2)) / column(card.std_t2)
    _, height, width = img1.shape
    channels = 1 + 2 * (card.num_classes + 1) if card.task == "semantic" else 1
    sums = np.zeros((channels, height, width), dtype=np.float32)
    count = np.zeros((height, width), dtype=np.float32)
    grid = TileGrid(height, width, args.tile, args.tile // 4)
    windows = list(grid.windows())
    with torch.inference_mode():
        for start in range(0, len(windows), args.batch):
            chunk = windows[start:start + args.batch]
            x1 = np.stack([pad_to(img1[:, w.row:w.row + w.height, w.col:w.col + w.width], grid.model_size)
                           for w in chunk])
            x2 = np.stack([pad_to(img2[:, w.row:w.row + w.height, w.col:w.col + w.width], grid.model_size)
                           for w in chunk])
            outputs = network(torch.from_numpy(x1).contiguous(memory_format=torch.channels_last),
                              torch.from_numpy(x2).contiguous(memory_format=torch.channels_last))
            parts = [outputs["change_prob"]]
            if card.task == "semantic":
                parts += [outputs["sem_logits_t1"], outputs["sem_logits_t2"]]
            stacked = torch.cat(parts, dim=1).float().numpy()
            for index, w in enumerate(chunk):
                sums[:, w.row:w.row + w.height, w.col:w.col + w.width] += stacked[index, :, :w.height, :w.width]
                count[w.row:w.row + w.height, w.col:w.col + w.width] += 1
    sums /= count
    _ = sums[0] > 0.5
    return {"seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()}


CHILDREN = {"engine": child_engine, "baseline": child_baseline}


def run_child(kind: str, **values: object) -> dict[str, float]:
    argv = [sys.executable, __file__, "--child", kind] + [f"--{k}={v}" for k, v in values.items()]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"child {kind} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- sections -------------------------------------------------------------------------------


def bench_engine(work: Path, checkpoint: Path, tile: int, batch: int, size: int = 2048,
                 prefetch: int | None = None) -> None:
    print(f"\n== 1. engine throughput and overhead ({checkpoint.stem}, tile {tile}, batch {batch}, CPU fp32, "
          f"prefetch {'auto' if prefetch is None else prefetch})")
    t1, t2 = make_scene_pair(work / f"scene_{size}", size, size)
    network, _ = load_checkpoint(checkpoint)
    model_size = TileGrid(size, size, tile, tile // 4).model_size
    time_forward(network, batch, model_size, None, repeats=1)  # warm up before either measurement
    started = time.perf_counter()
    summary = run_change_detection(t1, t2, checkpoint, OutputPaths(fromto=work / "engine_fromto.tif"),
                                   RunOptions(tile_size=tile, batch_size=batch, device="cpu", precision="fp32",
                                              prefetch_batches=prefetch, backend="torch"))
    wall = time.perf_counter() - started
    # The reference: the bare network over the same sequence of batches, right after the run, so that
    # both see the machine in the same state (its speed drifts by +-15 % from minute to minute here).
    full, rest = divmod(summary.tiles_run, batch)
    sizes = [batch] * full + ([rest] if rest else [])
    ideal = time_batches(network, sizes, model_size)
    per_batch = ideal / max(1, len(sizes))
    print(f"  raster {size} x {size}: {summary.tiles_total} tiles in {summary.batches} batches, wall {wall:.2f} s, "
          f"{size * size / 1e6 / wall:.3f} Mpx/s")
    print(f"  network alone over the same batches (same process, warmed up): {ideal:.2f} s, "
          f"{per_batch * 1000:.1f} ms per batch")
    print(f"  overhead ratio (engine wall / the network's own time for the same tiles and batches): "
          f"{wall / ideal:.3f}  (target <= 1.10)")
    print(f"  of the wall time, {summary.model_seconds:.2f} s were spent in the network; "
          f"memory estimate {summary.memory_estimate_bytes / 2**20:.0f} MiB")
    print(f"  breakdown (s): {bench_backends.breakdown(summary.timings, wall)}")


def bench_memory(work: Path, checkpoint: Path, tile: int, batch: int) -> None:
    """Peak memory against raster height, and speed against the in-memory baseline on the same tiles.

    The engine runs twice per height: on PyTorch fp32, the baseline's own runtime (so the ratio is
    the engine's own cost or gain), and with its defaults (``backend="auto"``, ``precision="auto"``:
    the fastest of PyTorch and the installed runtimes at the run's precision, measured once on a
    long enough run), which is what an analyst gets. Each run is a fresh process; an untimed run
    first leaves whatever ``auto`` exports or measures in the bench's cache, as a first run would.
    """
    print("\n== 2./3. peak memory against raster height, engine and in-memory baseline (fresh processes)")
    results: dict[int, dict[str, dict[str, float]]] = {}
    for height in (4096, 32768):
        t1, t2 = make_scene_pair(work / f"tall_{height}", height, 512)
        common = {"t1": t1, "t2": t2, "checkpoint": checkpoint, "tile": tile, "batch": batch, "height": height,
                  "workdir": work}
        if height == 4096:
            run_child("engine", **common, backend="auto")  # exports into the bench's cache, not timed
        runs = {"engine torch fp32": run_child("engine", **common, backend="torch"),
                "baseline (torch fp32)": run_child("baseline", **common),
                "engine auto": run_child("engine", **common, backend="auto")}
        results[height] = runs
        base = runs["baseline (torch fp32)"]["seconds"]
        for label, result in runs.items():
            extra = f"  [{result['backend']}]" if "backend" in result else ""
            print(f"  512 x {height:5d} {label:22s} {result['seconds']:7.1f} s  peak RSS "
                  f"{result['peak_rss_mib']:6.0f} MiB  speed x{base / result['seconds']:4.2f} of the baseline{extra}")
    for label in ("engine torch fp32", "engine auto", "baseline (torch fp32)"):
        ratio = results[32768][label]["peak_rss_mib"] / results[4096][label]["peak_rss_mib"]
        print(f"  {label}: peak RSS ratio 32768 / 4096 rows {ratio:.3f}"
              + ("  (target <= 1.2)" if label.startswith("engine") else ""))
    print("  targets: the engine at least x1.15 the baseline's speed (as run by default), at bounded memory")


def bench_precision(work: Path, checkpoint: Path, tile: int, batch: int) -> None:
    print("\n== 4. fp32 against bf16 autocast (CPU)")
    t1, t2 = make_scene_pair(work / "scene_1024", 1024, 1024)
    timings, codes = {}, {}
    for precision in ("fp32", "bf16"):
        out = work / f"prec_{precision}.tif"
        started = time.perf_counter()
        run_change_detection(t1, t2, checkpoint, OutputPaths(fromto=out),
                             RunOptions(tile_size=tile, batch_size=batch, device="cpu", precision=precision,
                                        backend="torch"))
        timings[precision] = time.perf_counter() - started
        import rasterio

        with rasterio.open(out) as src:
            codes[precision] = src.read(1)
    agreement = float((codes["fp32"] == codes["bf16"]).mean()) * 100
    from core.devices import cpu_has_fast_bf16

    speedup = timings["fp32"] / timings["bf16"]
    print(f"  fp32 {timings['fp32']:.2f} s, bf16 {timings['bf16']:.2f} s, speed-up x{speedup:.2f}; "
          f"from-to label agreement {agreement:.2f} % (default on only where >= 99.5 % and the CPU has fast bf16: "
          f"this CPU {'has' if cpu_has_fast_bf16() else 'has no'} AMX/AVX-512 BF16)")


def bench_models(default_batch: int) -> None:
    print("\n== 5. networks: size and CPU forward time per tile")
    print(f"  {'model':10s} {'backbone':16s} {'params M':>9s} {'tile':>5s} {'GFLOPs':>8s} "
          f"{'ms/tile b=1':>12s} {f'ms/tile b={default_batch}':>12s}")
    for name in model_names():
        spec = get_spec(name)
        network = build_model(name)
        tile = spec.default_tile_size
        params = count_parameters(network) / 1e6
        gflops = count_flops(network, tile) / 1e9
        one = time_forward(network, 1, tile, None, repeats=2) * 1000
        many = time_forward(network, default_batch, tile, None, repeats=1) * 1000 / default_batch
        print(f"  {name:10s} {network.build_options.get('backbone', '-'):16s} {params:9.2f} {tile:5d} "
              f"{gflops:8.2f} {one:12.0f} {many:12.0f}")


def write_training_folder(root: Path, pairs: int, size: int) -> Path:
    """A binary and a SECOND-layout folder (``train/`` and ``val/``) of synthetic pairs, as PNG files."""
    from PIL import Image

    colours = np.asarray([(255, 255, 255), *PALETTE], dtype=np.uint8)
    for layout, folders in (("second", ("im1", "im2")), ("binary", ("A", "B"))):
        for split, count in (("train", pairs), ("val", 1)):
            base = root / layout / split
            for index in range(count):
                scene = synthetic.make_scene(size, size, len(PALETTE), seed=index + (1000 if split == "val" else 0))
                name = f"{index:04d}.png"
                for folder, labels, seed in ((folders[0], scene.labels_t1, 2 * index), (folders[1], scene.labels_t2,
                                                                                        2 * index + 1)):
                    (base / folder).mkdir(parents=True, exist_ok=True)
                    image = synthetic.render(labels, PALETTE, seed=seed)
                    Image.fromarray(image.transpose(1, 2, 0)).save(base / folder / name)
                if layout == "second":
                    for folder, labels in (("label1", scene.labels_t1), ("label2", scene.labels_t2)):
                        (base / folder).mkdir(parents=True, exist_ok=True)
                        Image.fromarray(colours[np.where(scene.changed, labels, 0)]).save(base / folder / name)
                else:
                    (base / "label").mkdir(parents=True, exist_ok=True)
                    Image.fromarray((scene.changed * 255).astype(np.uint8)).save(base / "label" / name)
    return root


def _train_run(work: Path, model: str, data: Path, data_format: str, *, processes: int,
               batch: int, workers: int) -> dict[str, float]:
    """One epoch of ``train`` in fresh process(es); the epoch row of its log."""
    out = work / f"run-{model}-{processes}-processes-{workers}-workers"
    command = ["-m", "training_cli", "train", "--model", model, "--data", str(data), "--format", data_format,
               "--out", str(out), "--epochs", "1", "--batch-size", str(batch), "--crop", "256",
               "--workers", str(workers), "--pretrained", "none", "--no-progress",
               "--set", "stages.1.warmup_epochs=0"]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-port", "29561",
                   *command]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (torch.get_num_threads()) // processes))}
    subprocess.run([sys.executable, *command], cwd=ROOT, env=env, check=True, capture_output=True)
    with (out / "log.csv").open() as stream:
        row = next(iter(csv.DictReader(stream)))
    return {k: float(row[k]) for k in ("pairs_per_second", "data_wait", "train_seconds")}


def bench_training(pairs: int = 4, batch: int = 2, workers: int = 2) -> None:
    print(f"\n== 7. training at 256 x 256 (one epoch of {pairs} pairs, batch {batch}, {workers} DataLoader workers, "
          "random initialisation, fresh processes)")
    print(f"  {'model':10s} {'pairs/s':>8s} {'data wait':>10s}")
    with tempfile.TemporaryDirectory(prefix="scd-bench-train-") as folder:
        work = Path(folder)
        data = write_training_folder(work / "data", pairs, 256)
        for model in model_names():
            data_format = "second" if get_spec(model).task == "semantic" else "binary"
            row = _train_run(work, model, data / data_format, data_format, processes=1, batch=batch,
                             workers=workers)
            print(f"  {model:10s} {row['pairs_per_second']:8.2f} {100 * row['data_wait']:9.1f}%  (target < 5 %)")
        one = _train_run(work, "gapl_scd", data / "second", "second", processes=1, batch=batch,
                         workers=0)
        two = _train_run(work, "gapl_scd", data / "second", "second", processes=2, batch=batch,
                         workers=0)
        print(f"  gapl_scd DDP: 1 process {one['pairs_per_second']:.2f} pairs/s, 2 processes "
              f"{two['pairs_per_second']:.2f} pairs/s (x{two['pairs_per_second'] / one['pairs_per_second']:.2f}; "
              "the threads are split between the processes, so on a CPU this shows the cost of synchronising)")


def bench_compare(work: Path, size: int) -> None:
    print(f"\n== 6. comparing two land-cover maps, {size} x {size} uint8 (fresh processes)")
    t1, t2 = bench_compare_children.make_land_cover_pair(work, size)
    megapixels = size * size / 1e6

    def child(kind: str) -> dict[str, float]:  # without torch, so that peak RSS is the comparison's own
        argv = [sys.executable, str(Path(__file__).with_name("bench_compare_children.py")), kind, str(t1), str(t2),
                str(work)]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode:
            raise RuntimeError(f"child {kind} failed:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    ours = child("compare")
    base = child("baseline")
    assert ours["changed"] == base["changed"], (ours, base)
    for name, result in (("compareclassifications", ours), ("numpy baseline", base)):
        print(f"  {name:24s} {result['seconds']:7.1f} s  {megapixels / result['seconds']:7.1f} Mpx/s  "
              f"peak RSS {result['peak_rss_mib']:7.0f} MiB")
    memory = ours["peak_rss_mib"] / base["peak_rss_mib"]
    print(f"  same changed-pixel count ({ours['changed']}); memory ratio {memory:.2f}, "
          f"speed ratio {base['seconds'] / ours['seconds']:.2f} (the comparison also writes the from-to GeoTIFF, "
          "its legend and the matrix; the baseline writes nothing)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gapl_scd", choices=model_names())
    parser.add_argument("--tile", type=int, default=256,
                        help="tile size; 0 in section 9: the network's default (its card's tile, at least 256 px)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--skip-models", action="store_true", help="leave out section 5")
    parser.add_argument("--prefetch", type=int, help="batches read ahead in section 1 (0: no reader thread; "
                        "default: the engine's choice for the device)")
    parser.add_argument("--only", choices=("engine", "memory", "precision", "models", "compare",
                                           "training", *bench_backends.SECTIONS),
                        help="run one section only")
    parser.add_argument("--compare-size", type=int, default=20_000, help="side of the land-cover pair in section 6")
    parser.add_argument("--networks", default=",".join(model_names()), help="networks of section 8, comma-separated")
    parser.add_argument("--backend-tile", type=int, help="tile of section 8 (default: each network's own)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds in sections 8 and 9")
    parser.add_argument("--e2e-size", type=int, default=1024, help="scene side in section 9")
    parser.add_argument("--trained", type=Path,
                        help="a trained checkpoint for section 10 (and, given with --only e2e, for section 9: "
                             "int8's agreement means something only on a trained model)")
    parser.add_argument("--tiles", default="256,512,1024", help="tile sizes of section 10, comma-separated")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    for key in ("t1", "t2", "checkpoint", "workdir"):
        parser.add_argument(f"--{key}", help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return 0
    torch.manual_seed(0)
    print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"CUDA {'available' if torch.cuda.is_available() else 'not available'}")
    if args.only == "backends":
        bench_backends.bench_backends(args.networks.split(","), args.backend_tile, args.batch, args.rounds)
        return 0
    if args.only == "e2e":
        with tempfile.TemporaryDirectory(prefix="scd-bench-") as folder:
            tile = args.tile or get_spec(args.model).default_tile_size
            checkpoint = args.trained or make_checkpoint(Path(folder), args.model, tile)
            bench_backends.bench_e2e(checkpoint, args.e2e_size, args.tile, args.batch, args.rounds)
        return 0
    if args.only == "tiles":
        bench_backends.bench_tiles(args.trained, tiles=args.tiles)
        return 0
    if args.only == "compare":
        with tempfile.TemporaryDirectory(prefix="scd-bench-") as folder:
            bench_compare(Path(folder), args.compare_size)
        return 0
    if args.only == "training":
        bench_training()
        return 0
    with tempfile.TemporaryDirectory(prefix="scd-bench-") as folder:
        work = Path(folder)
        checkpoint = make_checkpoint(work, args.model, args.tile)
        if args.only in (None, "engine"):
            bench_engine(work, checkpoint, args.tile, args.batch, prefetch=args.prefetch)
        for name, section in (("memory", bench_memory), ("precision", bench_precision)):
            if args.only in (None, name):
                section(work, checkpoint, args.tile, args.batch)
    if args.only in (None, "models") and not args.skip_models:
        bench_models(args.batch)
    if args.only is None:
        with tempfile.TemporaryDirectory(prefix="scd-bench-") as folder:
            bench_compare(Path(folder), args.compare_size)
        bench_training()
        bench_backends.bench_backends(args.networks.split(","), args.backend_tile, args.batch, args.rounds)
        with tempfile.TemporaryDirectory(prefix="scd-bench-") as folder:
            checkpoint = make_checkpoint(Path(folder), args.model, args.tile)
            bench_backends.bench_e2e(checkpoint, args.e2e_size, args.tile, args.batch, args.rounds)
        bench_backends.bench_tiles(args.trained, tiles=args.tiles)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
