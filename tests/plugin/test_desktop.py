"""The plugin in the real QGIS desktop (Xvfb, Mesa's OpenGL driver, a fresh profile).

The desktop loads Mesa's GL driver, and with it the system's LLVM, before any plugin
runs; the offscreen QGIS of the other tests does not. Loading PyTorch's Triton (and its
own LLVM) on top of that killed QGIS on the first run of an algorithm. These tests
start the real desktop and run the algorithms as an analyst would.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from qgis_desktop import requires_desktop, run_in_desktop

from core.synthetic import write_geotiff

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


#: Set to a folder to keep the screenshots of :func:`test_what_the_analyst_sees_in_the_desktop` (to look at them).
SCREENSHOTS = "SCD_DESKTOP_SCREENSHOTS"


def land_cover_maps(folder: Path) -> list[Path]:
    """Two land-cover maps of 96 x 96 px in 24 px blocks of classes 1-4; a third of the blocks change."""
    rng = np.random.default_rng(7)
    blocks = rng.integers(1, 5, (2, 4, 4), dtype=np.uint8)
    kept = rng.random((4, 4)) > 0.35
    blocks[1][kept] = blocks[0][kept]
    return [write_geotiff(folder / f"landcover-{year}.tif", np.kron(grid, np.ones((24, 24), np.uint8))[None])
            for year, grid in zip((2015, 2020), blocks, strict=True)]


def test_what_the_analyst_sees_in_the_desktop(semantic_model, image_pair, tmp_path: Path):
    """Runs' layer panels, the next dialogs' inputs, and the installer a failed run offers, on the real desktop.

    * each run's hidden layers are collapsed and its polygons are one outline symbol (its map has the legend);
    * the next dialogs preselect two inputs in date order, never a run's outputs: the images for a change
      algorithm, the land-cover maps for the comparison;
    * the installer offered by a run that finds torch missing stays in front of the algorithm dialog (which
      raises itself when the run fails), its reason shows every pip command, and after a failed install its
      package list still shows numpy.
    """
    maps = land_cover_maps(tmp_path)
    requirement = tmp_path / "requirements.txt"
    requirement.write_text("no-such-package-for-this-test==1.0\n", encoding="utf-8")
    shots = tmp_path / "shots"
    shots.mkdir()
    change = {name: str(tmp_path / file) for name, file in (
        ("OUTPUT_FROMTO", "fromto.tif"), ("OUTPUT_T1_CLASSES", "t1.tif"), ("OUTPUT_T2_CLASSES", "t2.tif"),
        ("OUTPUT_CHANGE_PROB", "prob.tif"), ("OUTPUT_POLYGONS", "changes.gpkg"))}
    compare = {name: str(tmp_path / file) for name, file in (
        ("OUTPUT_FROMTO", "lc-fromto.tif"), ("OUTPUT_T1_CLASSES", "lc-t1.tif"), ("OUTPUT_POLYGONS", "lc.gpkg"))}
    script = f'''
    import importlib
    import pathlib
    import processing
    import qgis.utils
    from qgis.core import QgsProject, QgsRasterLayer
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtGui import QGuiApplication, QTextDocument
    from qgis.PyQt.QtWidgets import QApplication, QDockWidget

    SHOTS = {str(shots)!r}
    answer = {{}}
    project = QgsProject.instance()
    plugin = qgis.utils.plugins["semantic_change"]
    window = iface.mainWindow()

    def shot(name):
        QApplication.processEvents()
        QGuiApplication.primaryScreen().grabWindow(0).save(f"{{SHOTS}}/{{name}}.png")

    def in_front(widget):
        """The share of the widget's pixels the screen shows: 1 when nothing covers it."""
        screen = QGuiApplication.primaryScreen().grabWindow(0).toImage()
        own = widget.grab().toImage()
        origin = widget.mapToGlobal(widget.rect().topLeft())
        points = [(x, y) for x in range(5, own.width() - 5, 23) for y in range(5, own.height() - 5, 23)]
        same = sum(own.pixel(x, y) == screen.pixel(origin.x() + x, origin.y() + y) for x, y in points)
        return same / len(points)

    def algorithm_dialog():
        (dialog,) = [w for w in QApplication.topLevelWidgets() if type(w).__name__ == "AlgorithmDialog"
                     and w.isVisible()]
        return dialog

    def runs():
        window.setGeometry(0, 0, 1280, 1024)
        browser = window.findChild(QDockWidget, "Browser")
        if browser is not None:
            browser.hide()  # room for the layer panel
        layers = window.findChild(QDockWidget, "Layers")
        if layers is not None:
            window.resizeDocks([layers], [440], Qt.Horizontal)
        later = QgsRasterLayer({str(image_pair[1])!r}, "scene 2021")
        earlier = QgsRasterLayer({str(image_pair[0])!r}, "scene 2018")
        project.addMapLayers([later, earlier])  # 2018 ends on top
        answer["images"] = [earlier.id(), later.id()]
        processing.runAndLoadResults("scd:semanticchange", {{"INPUT_T1": earlier.id(), "INPUT_T2": later.id(),
                                                            "MODEL": {str(semantic_model)!r}, **{change!r}}})
        maps = [QgsRasterLayer(path, f"land cover {{year}}") for path, year in (({str(maps[0])!r}, 2015),
                                                                               ({str(maps[1])!r}, 2020))]
        project.addMapLayers(maps, False)
        for layer in maps:  # 2020 on top
            project.layerTreeRoot().insertLayer(0, layer)
        answer["maps"] = [maps[0].id(), maps[1].id()]
        processing.runAndLoadResults("scd:compareclassifications", {{
            "INPUT_T1": maps[0].id(), "INPUT_T2": maps[1].id(), **{compare!r}}})
        iface.mapCanvas().setExtent(earlier.extent())
        iface.mapCanvas().refresh()
        answer["tree"] = [(node.parent().name(), node.name(), node.isVisible(), node.isExpanded(),
                           node.layer().renderer().type()) for node in project.layerTreeRoot().findLayers()]
        QTimer.singleShot(2500, guarded(dialogs))

    def dialogs():
        shot("layer-panel-after-two-runs")
        for algorithm in ("scd:semanticchange", "scd:compareclassifications"):
            dialog = processing.createAlgorithmDialog(algorithm, {{}})
            dialog.setGeometry(450, 60, 820, 660)
            dialog.show()
            QApplication.processEvents()
            wrappers = dialog.mainWidget().wrappers
            answer[algorithm] = [wrappers[name].parameterValue() for name in ("INPUT_T1", "INPUT_T2")]
            shot(f"dialog-{{algorithm.split(':')[1]}}-preselected")
            dialog.close()
        installer_offered_by_a_run()

    def installer_offered_by_a_run():
        dependencies = importlib.import_module("semantic_change.plugin.dependencies")
        dependencies.missing_packages = lambda: [dependencies.MissingPackage("torch", "torch",
                                                                             "No module named 'torch'")]
        QTimer.singleShot(1500, guarded(click_run))
        processing.execAlgorithmDialog("scd:semanticchange", {{
            "INPUT_T1": answer["images"][0], "INPUT_T2": answer["images"][1], "MODEL": {str(semantic_model)!r},
            "OUTPUT_FROMTO": {str(tmp_path / "second.tif")!r}}})  # as from the toolbox: show(), then exec_()
        QTimer.singleShot(1000, guarded(failed_install))

    def click_run():
        algorithm_dialog().runAlgorithm()
        QTimer.singleShot(500, guarded(wait_for_the_failed_run))

    def wait_for_the_failed_run():
        if plugin.installer_dialog is None or algorithm_dialog().cancelButton().isEnabled():
            QTimer.singleShot(300, guarded(wait_for_the_failed_run))
            return
        QTimer.singleShot(1500, guarded(installer_in_front))  # after the dialog raised itself to show the error

    def installer_in_front():
        installer = plugin.installer_dialog
        answer["installer_parent"] = type(installer.parentWidget()).__name__
        answer["installer_in_front"] = in_front(installer)
        document = QTextDocument()
        document.setHtml(installer.reason_label.text())
        answer["reason"] = document.toPlainText()
        shot("installer-offered-by-a-failed-run")
        algorithm_dialog().reject()

    def failed_install():
        installer = plugin.installer_dialog
        answer["installer_parent_after"] = type(installer.parentWidget()).__name__
        answer["installer_visible_after"] = installer.isVisible()
        installer.wait()
        options = importlib.import_module("semantic_change.plugin.installer").Options(
            requirements=pathlib.Path({str(requirement)!r}), use_pytorch_index=False, no_index=True)
        installer.options = lambda: options
        installer.start_install()
        QTimer.singleShot(500, guarded(lambda: wait_for_install(installer)))

    def wait_for_install(installer):
        if installer.installer is not None:
            QTimer.singleShot(300, guarded(lambda: wait_for_install(installer)))
            return
        installer.wait()
        QTimer.singleShot(1000, guarded(lambda: after_failed_install(installer)))

    def after_failed_install(installer):
        shot("installer-after-a-failed-install")
        answer["status"] = installer.status.text()
        answer["packages"] = installer.labels["packages"].text()
        answer["squeezed"] = [label.text() for label in (*installer.labels.values(), installer.status)
                              if label.height() < label.heightForWidth(label.width())]
        answer["scrolls"] = installer.body.verticalScrollBar().maximum()
        finish(answer)

    QTimer.singleShot(0, guarded(runs))
    '''
    run = run_in_desktop(script, tmp_path / "desktop", timeout=400)
    if os.environ.get(SCREENSHOTS):
        shutil.copytree(shots, os.environ[SCREENSHOTS], dirs_exist_ok=True)

    assert run.answer is not None, f"QGIS died (exit status {run.returncode}):\n{run.log[-3000:]}"
    assert "error" not in run.answer, run.answer["error"]
    answer = run.answer
    groups: dict[str, dict[str, list]] = {}
    for group, name, *rest in answer["tree"]:
        groups.setdefault(group, {})[name.split(":")[0]] = rest
    assert set(groups) >= {"Change scene 2018 -> scene 2021", "Land-cover change land cover 2015 -> land cover 2020"}
    for layers in (groups["Change scene 2018 -> scene 2021"],
                   groups["Land-cover change land cover 2015 -> land cover 2020"]):
        # The map below the polygons names every colour; hidden layers start collapsed.
        assert layers["Change polygons"] == [True, True, "singleSymbol"]
        assert layers["From-to change"] == [True, True, "paletted"]
        hidden = [rest for name, rest in layers.items() if name not in ("Change polygons", "From-to change")]
        assert hidden and all(rest[:2] == [False, False] for rest in hidden), layers
    assert answer["scd:semanticchange"] == answer["images"]  # 2018 above 2021 in the tree: T1 by its year
    assert answer["scd:compareclassifications"] == answer["maps"]  # not the images, not a run's maps

    assert answer["installer_parent"] == "AlgorithmDialog" and answer["installer_in_front"] > 0.95
    assert '"torch>=2.13,<=' in answer["reason"] and "start QGIS again" in answer["reason"]
    assert answer["installer_parent_after"] == "QMainWindow" and answer["installer_visible_after"]

    assert answer["status"].startswith("Install failed, nothing changed")
    assert answer["packages"].splitlines()[-1].startswith("numpy ")
    assert answer["squeezed"] == [] and answer["scrolls"] == 0  # all of it in view on a 1280 x 1024 screen
