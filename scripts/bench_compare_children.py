"""Section 6 of ``make bench`` in a fresh interpreter without torch: comparing two land-cover maps.

``python scripts/bench_compare_children.py compare|baseline T1 T2 WORKDIR`` prints one JSON line
with the time and the peak resident memory of the run; ``scripts/bench.py --only compare``
makes the inputs and calls it.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_land_cover_pair(folder: Path, size: int) -> tuple[Path, Path]:
    """Two ``size`` x ``size`` uint8 maps of 10 classes in 40 px fields, 10 % of the fields changed."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    codes = np.array([10, 20, 30, 40, 50, 60, 70, 80, 90, 95], dtype=np.uint8)
    rng = np.random.default_rng(0)
    field = 40
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8", "nodata": 0,
               "crs": "EPSG:32633", "transform": from_origin(500000, 5000000, 10, 10), "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    paths = folder / "lc_t1.tif", folder / "lc_t2.tif"
    with rasterio.open(paths[0], "w", **profile) as d1, rasterio.open(paths[1], "w", **profile) as d2:
        band = 1024
        for row in range(0, size, band):
            rows = min(band, size - row)
            blocks = codes[rng.integers(0, len(codes), (-(-rows // field), -(-size // field)))]
            later = np.where(rng.random(blocks.shape) < 0.1, codes[rng.integers(0, len(codes), blocks.shape)],
                             blocks)
            ones = np.ones((field, field), dtype=np.uint8)
            window = Window(0, row, size, rows)
            d1.write(np.kron(blocks, ones)[:rows, :size], 1, window=window)
            d2.write(np.kron(later, ones)[:rows, :size], 1, window=window)
    return paths


def child_compare(t1: str, t2: str, workdir: str) -> dict[str, float]:
    from core.compare import compare_classifications
    from core.products import OutputPaths as Products

    out = Path(workdir) / "compare"
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary = compare_classifications(t1, t2, Products(fromto=out / "fromto.tif",
                                                                 transitions_csv=out / "matrix.csv"))
    return {"seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib(),
            "changed": summary.changed_pixels}


def child_baseline(t1: str, t2: str, workdir: str) -> dict[str, float]:
    """What an analyst would write: both maps in memory, one bincount of from * K + to."""
    import rasterio

    started = time.perf_counter()
    with rasterio.open(t1) as a, rasterio.open(t2) as b:
        first = a.read(1)
        second = b.read(1)
    k = 256
    matrix = np.bincount((first.astype(np.int32) * k + second).ravel(), minlength=k * k).reshape(k, k)
    return {"seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib(),
            "changed": int(matrix.sum() - np.trace(matrix))}



if __name__ == "__main__":
    kind, path_t1, path_t2, folder = sys.argv[1:5]
    print(json.dumps({"compare": child_compare, "baseline": child_baseline}[kind](path_t1, path_t2, folder)))
