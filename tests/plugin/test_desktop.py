"""The plugin in the real QGIS desktop (Xvfb, Mesa's OpenGL driver, a fresh profile).

The desktop loads Mesa's GL driver, and with it the system's LLVM, before any plugin
runs; the offscreen QGIS of the other tests does not. Loading PyTorch's Triton (and its
own LLVM) on top of that killed QGIS on the first run of an algorithm. These tests
start the real desktop and run the algorithms as an analyst would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis_desktop import requires_desktop, run_in_desktop

pytestmark = [pytest.mark.qgis, requires_desktop]


def test_first_run_in_the_desktop_does_not_crash_qgis(semantic_model, image_pair, tmp_path: Path):
    target = tmp_path / "fromto.tif"
    script = f'''
    def work():
        import processing
        result = processing.run("scd:semanticchange", {{
            "INPUT_T1": {str(image_pair[0])!r}, "INPUT_T2": {str(image_pair[1])!r},
            "MODEL": {str(semantic_model)!r}, "OUTPUT_FROMTO": {str(target)!r}}})
        import sys
        finish({{"result": result, "triton": repr(sys.modules.get("triton", "absent"))}})
    QTimer.singleShot(0, guarded(work))
    '''
    run = run_in_desktop(script, tmp_path / "desktop")

    assert run.answer is not None, f"QGIS died (exit status {run.returncode}):\n{run.log[-3000:]}"
    assert "error" not in run.answer, run.answer["error"]
    # The crash condition was there: Mesa's GL driver and the system's LLVM were loaded in QGIS.
    libraries = run.answer["libraries"]
    assert any("/dri/" in name for name in libraries), libraries
    assert any("libLLVM" in name for name in libraries), libraries
    assert not any("libtriton" in name for name in libraries)
    assert run.answer["result"]["OUTPUT_FROMTO"] == str(target)
    assert target.exists()
