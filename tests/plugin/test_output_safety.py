"""Through ``processing.run`` in a real QGIS (the path the dialog, batch mode and models take): outputs that
would overwrite an input, the model file or each other are refused before anything is read, and the user's
files stay byte-identical. ``qgis_process`` is covered in test_qgis_process.py."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import processing
import pytest
from helpers import write_worldcover_pair
from qgis.core import QgsProcessingException, QgsProcessingFeedback

from core import synthetic

pytestmark = pytest.mark.qgis


@pytest.fixture
def user_files(image_pair, semantic_model, tmp_path) -> dict[str, Path]:
    folder = tmp_path / "user"
    folder.mkdir()
    files = {"t1": Path(shutil.copy(image_pair[0], folder / "t1.tif")),
             "t2": Path(shutil.copy(image_pair[1], folder / "t2.tif")),
             "model": Path(shutil.copy(semantic_model, folder / "model.tif"))}
    files["notes"] = folder / "report.csv"
    files["notes"].write_text("my own notes, not a transitions table\n")
    return files


def _digest(files: dict[str, Path]) -> dict[str, str]:
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}


@pytest.mark.parametrize(("outputs", "said"), [
    ({"OUTPUT_FROMTO": "t1"}, "would overwrite the input T1"),
    ({"OUTPUT_FROMTO": "out.tif", "OUTPUT_T1_CLASSES": "t2"}, "would overwrite the input T2"),
    ({"OUTPUT_FROMTO": "out.tif", "OUTPUT_CHANGE_PROB": "model"}, "would overwrite the model file"),
    ({"OUTPUT_FROMTO": "out.tif", "OUTPUT_CHANGE_PROB": "out.tiff"}, "share one sidecar out.qml"),
    ({"OUTPUT_FROMTO": "out.tif", "OUTPUT_REPORT": "out.qml"}, "sidecar"),
    ({"OUTPUT_FROMTO": "out.tif", "OUTPUT_REPORT": "report.html"}, "was not written by this tool"),
])
def test_processing_refuses_outputs_that_would_destroy_the_users_files(scd_provider, user_files, project, outputs,
                                                                      said):
    folder = user_files["t1"].parent
    before = _digest(user_files)
    parameters = {"INPUT_T1": str(user_files["t1"]), "INPUT_T2": str(user_files["t2"]),
                  "MODEL": str(user_files["model"]),
                  **{name: str(user_files.get(value, folder / value)) for name, value in outputs.items()}}
    with pytest.raises(QgsProcessingException) as caught:
        processing.run("scd:semanticchange", parameters)
    assert said in str(caught.value)
    assert _digest(user_files) == before
    assert not (folder / "out.tif").exists()


def test_a_destination_the_user_chose_may_replace_a_file_of_another_tool(scd_provider, image_pair, semantic_model,
                                                                        project, tmp_path):
    chosen = tmp_path / "chosen.tif"
    synthetic.write_geotiff(chosen, synthetic.render(synthetic.make_scene(8, 8, 2).labels_t1, [(1, 2, 3)] * 2))
    results = processing.run("scd:semanticchange", {"INPUT_T1": str(image_pair[0]), "INPUT_T2": str(image_pair[1]),
                                                    "MODEL": str(semantic_model), "OUTPUT_FROMTO": str(chosen)})
    assert results["OUTPUT_FROMTO"] == str(chosen)
    from core.pathguard import is_own_output

    assert is_own_output(chosen)


def _state(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file of ``folder`` (hidden ones too) with its inode, modification time and bytes."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


class _CancelOnLog(QgsProcessingFeedback):
    """Presses cancel once the run logs a line starting with ``step``."""

    def __init__(self, step: str) -> None:
        super().__init__()
        self.step, self.lines = step, []

    def pushInfo(self, info: str) -> None:
        self.lines.append(info)
        if info.startswith(self.step):
            self.cancel()
        super().pushInfo(info)


def test_a_run_cancelled_while_polygons_are_written_leaves_the_earlier_run_exactly(scd_provider, image_pair,
                                                                                   semantic_model, project, tmp_path):
    # the CSV beside the report was published before the polygons, under its final name: a cancel there left a
    # complete report.csv (of the cancelled run) beside the earlier run's maps, and the log said nothing was written
    folder = tmp_path / "run"
    folder.mkdir()
    parameters = {"INPUT_T1": str(image_pair[0]), "INPUT_T2": str(image_pair[1]), "MODEL": str(semantic_model),
                  "TILE_SIZE": 64, "MIN_AREA": 0, "OUTPUT_FROMTO": str(folder / "fromto.tif"),
                  "OUTPUT_POLYGONS": str(folder / "changes.gpkg"), "OUTPUT_REPORT": str(folder / "report.html")}
    processing.run("scd:semanticchange", parameters)
    before = _state(folder)
    assert {"fromto.tif", "changes.gpkg", "report.html", "report.csv"} <= set(before)
    feedback = _CancelOnLog("vectorising change patches")
    rerun = {**parameters, "MIN_AREA": 4}  # another result: a replaced file could not pass for the earlier one
    assert processing.run("scd:semanticchange", rerun, feedback=feedback) == {}
    assert "cancelled by the user; no output was written" in feedback.lines
    assert _state(folder) == before


def test_a_comparison_cancelled_at_its_very_end_publishes_nothing(scd_provider, project, tmp_path):
    # a cancel after the last step that looks for one used to leave the maps, the CSV and the report
    t1, t2 = write_worldcover_pair(tmp_path / "in")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "report.html").write_text("the earlier report")
    before = _state(folder)
    parameters = {"INPUT_T1": str(t1), "INPUT_T2": str(t2), "OUTPUT_FROMTO": str(folder / "fromto.tif"),
                  "OUTPUT_POLYGONS": str(folder / "changes.gpkg"), "OUTPUT_REPORT": str(folder / "report.html")}
    feedback = _CancelOnLog("done:")  # the comparison's last line, before the plugin writes the report
    assert processing.run("scd:compareclassifications", parameters, feedback=feedback) == {}
    assert _state(folder) == before
