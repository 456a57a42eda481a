"""`make demo`: a synthetic two-date scene through the whole engine with a default model.

Writes everything under build/demo/ and prints what the run did. The bundled
default is an untrained LSAFNet checkpoint made by `training_cli init`, so the map
shows the pipeline (alignment, tiling, legend, transition matrix), not real skill.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import synthetic  # noqa: E402
from core.engine import OutputPaths, Progress, RunOptions, run_change_detection  # noqa: E402
from core.models.card import SECOND_CLASSES  # noqa: E402
from training_cli.cli import main as cli  # noqa: E402

OUT = ROOT / "build" / "demo"


class PrintProgress(Progress):
    def __init__(self) -> None:
        self.last = -1

    def set_progress(self, fraction: float) -> None:
        percent = int(fraction * 100)
        if percent // 10 != self.last // 10:
            print(f"  {percent:3d} %", flush=True)
        self.last = percent

    def info(self, message: str) -> None:
        print(f"  {message}", flush=True)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    print("1. a synthetic 768 x 768 px scene of two dates (SECOND classes), T2 delivered in WGS84")
    t1, t2_utm, _ = synthetic.write_pair(OUT / "input", [c.color for c in SECOND_CLASSES], height=768, width=768)
    t2 = synthetic.reproject_geotiff(t2_utm, OUT / "input" / "t2_wgs84.tif", "EPSG:4326")
    model = OUT / "lsafnet_second_untrained.pt"
    if not model.exists():
        print("2. an untrained LSAFNet checkpoint with the SECOND preset (python -m training_cli init)")
        code = cli(["init", "--model", "lsafnet", "--preset", "second", "--tile-size", "256", "--out", str(model)])
        if code:
            return code
    else:
        print(f"2. using {model.relative_to(ROOT)}")
    print("3. running the engine")
    outputs = OutputPaths(
        fromto=OUT / "fromto.tif", t1_classes=OUT / "t1_classes.tif", t2_classes=OUT / "t2_classes.tif",
        change_prob=OUT / "change_prob.tif", transitions_csv=OUT / "transitions.csv",
    )
    # build/demo belongs to the demo: results of earlier versions (not yet tagged as ours) may be replaced
    summary = run_change_detection(t1, t2, model, outputs, RunOptions(batch_size=4, overwrite=True), PrintProgress())
    print("4. written:")
    for name, path in summary.outputs.items():
        print(f"  {name:16s} {Path(path).relative_to(ROOT)}")
    print(f"  changed: {summary.changed_pixels} of {summary.valid_pixels} valid pixels "
          f"({summary.changed_area_m2 / 1e4:.2f} ha)")
    top = sorted(summary.transitions, key=lambda row: -row.pixels)[:5]
    for row in top:
        print(f"  {row.label:40s} {row.pixels:8d} px")
    print("Open build/demo/fromto.tif in QGIS: the legend reads 'from -> to'.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
