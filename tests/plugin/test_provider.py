"""The provider as QGIS sees it: registration, parameters, help, icon, metadata, and a QGIS without torch."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import processing
import pytest
from qgis.core import QgsApplication, QgsProcessingException

pytestmark = pytest.mark.qgis

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "semantic_change"

ALGORITHMS = {"scd:semanticchange": "Semantic change (from-to)", "scd:binarychange": "Binary change",
              "scd:compareclassifications": "Compare two land-cover maps (from-to)",
              "scd:modelinfo": "Model information"}


def test_provider_and_algorithms_are_registered(scd_provider):
    assert scd_provider.id() == "scd" and scd_provider.name() == "Semantic change detection"
    assert not scd_provider.icon().isNull()
    registry = QgsApplication.processingRegistry()
    for algorithm_id, name in ALGORITHMS.items():
        algorithm = registry.algorithmById(algorithm_id)
        assert algorithm is not None and algorithm.displayName() == name
        assert not algorithm.icon().isNull()
        help_text = algorithm.shortHelpString()
        assert algorithm.helpUrl().startswith("https://")
        # QGIS 3.22 shows each line as a paragraph: every line is a whole paragraph, and the panel stays short.
        paragraphs = help_text.split("\n")
        assert all(p.strip() and p == p.strip() and p.endswith((".", ":", ")")) for p in paragraphs), paragraphs
        assert 200 < len(help_text) < 1600
        for definition in algorithm.parameterDefinitions():
            assert len(definition.help()) > 20, definition.name()
    for algorithm_id in ("scd:semanticchange", "scd:binarychange"):
        help_text = registry.algorithmById(algorithm_id).shortHelpString()
        assert "only meaningful inside" in help_text and "9 pixels" in help_text


def test_parameters_of_the_semantic_algorithm(scd_provider):
    algorithm = QgsApplication.processingRegistry().algorithmById("scd:semanticchange")
    definitions = {p.name(): p for p in algorithm.parameterDefinitions()}
    assert list(definitions) == [
        "INPUT_T1", "INPUT_T2", "MODEL", "BANDS_T1", "BANDS_T2", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "DEVICE",
        "BACKEND", "INT8", "MIN_AREA", "EXTENT", "MASK", "OUTPUT_FROMTO", "OUTPUT_T1_CLASSES", "OUTPUT_T2_CLASSES",
        "OUTPUT_CHANGE_PROB", "OUTPUT_POLYGONS", "OUTPUT_REPORT"]
    assert definitions["OVERLAP"].defaultValue() == 25 and definitions["TILE_SIZE"].defaultValue() == 0
    assert definitions["DEVICE"].options() == ["auto", "cpu", "cuda"]
    assert definitions["BACKEND"].options() == ["auto", "torch", "onnxruntime", "openvino"]
    assert definitions["BACKEND"].defaultValue() == 0 and "ONNX Runtime" in definitions["BACKEND"].help()
    assert definitions["INT8"].defaultValue() is True and "VNNI" in definitions["INT8"].help()
    optional = {name for name, p in definitions.items() if p.flags() & p.FlagOptional}
    assert optional == {"BANDS_T1", "BANDS_T2", "MIN_AREA", "EXTENT", "MASK", "OUTPUT_T1_CLASSES", "OUTPUT_T2_CLASSES",
                        "OUTPUT_CHANGE_PROB", "OUTPUT_POLYGONS", "OUTPUT_REPORT"}
    outputs = {o.name(): o.type() for o in algorithm.outputDefinitions()}
    assert outputs["OUTPUT_FROMTO"] == "outputRaster" and outputs["OUTPUT_POLYGONS"] == "outputVector"
    assert outputs["OUTPUT_REPORT"] == "outputHtml" and outputs["OUTPUT_REPORT_CSV"] == "outputFile"
    binary = QgsApplication.processingRegistry().algorithmById("scd:binarychange")
    assert "OUTPUT_CHANGE" in {p.name() for p in binary.destinationParameterDefinitions()}


def test_algorithm_dialogs_open(scd_provider, qgis_iface, monkeypatch: pytest.MonkeyPatch):
    """The toolbox dialog builds a widget for every parameter (bands, file filter, enum, destinations)."""
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.gui import QgsBrowserGuiModel

    browser = QgsBrowserGuiModel()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: browser, raising=False)  # pytest-qgis stubs it

    for algorithm_id in ALGORITHMS:
        algorithm = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
        dialog = AlgorithmDialog(algorithm, parent=qgis_iface.mainWindow())
        panel = dialog.mainWidget()
        for parameter in algorithm.parameterDefinitions():
            assert parameter.name() in panel.wrappers or parameter.isDestination(), parameter.name()
        dialog.close()


def test_metadata_is_complete_for_the_plugin_repository():
    text = (REPO / "metadata.txt").read_text(encoding="utf-8")
    keys = {line.split("=", 1)[0].strip() for line in text.splitlines() if "=" in line and not line.startswith(" ")}
    required = {"name", "description", "about", "version", "qgisMinimumVersion", "author", "email", "tracker",
                "repository", "homepage", "tags", "category", "icon", "changelog", "hasProcessingProvider"}
    assert required <= keys
    assert "qgisMinimumVersion=3.22" in text and "hasProcessingProvider=yes" in text
    icon = next(line.split("=", 1)[1].strip() for line in text.splitlines() if line.startswith("icon="))
    assert (REPO / icon).is_file()


def test_plugin_imports_qt_only_through_qgis_pyqt():
    """Qt5/Qt6 neutrality: PyQt5/PyQt6 are never imported directly."""
    for path in [*(REPO / "plugin").glob("*.py"), REPO / "__init__.py"]:
        source = path.read_text(encoding="utf-8")
        assert "import PyQt5" not in source and "from PyQt5" not in source and "PyQt6" not in source, path


# --- a QGIS whose Python has no torch -------------------------------------------------------


@pytest.fixture
def without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import torch`` fail as it does where torch is not installed (``None`` in sys.modules)."""
    for name in list(sys.modules):
        if name == "torch" or name.startswith("torch."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)


def test_algorithms_fail_with_install_instructions_without_torch(scd_provider, semantic_model, image_pair,
                                                                 without_torch, feedback, tmp_path):
    parameters = {"INPUT_T1": str(image_pair[0]), "INPUT_T2": str(image_pair[1]), "MODEL": str(semantic_model),
                  "OUTPUT_FROMTO": str(tmp_path / "f.tif")}
    for algorithm, params in (("scd:semanticchange", parameters), ("scd:modelinfo", {"MODEL": str(semantic_model)})):
        with pytest.raises(QgsProcessingException) as error:
            processing.run(algorithm, params, feedback=feedback)
        message = str(error.value)
        assert "cannot import: torch" in message
        assert "Plugins > Semantic change detection > Install or repair dependencies" in message
        assert '-m pip install --user "torch>=' in message and "start QGIS again" in message
        assert "https://pytorch.org/get-started/locally/" in message
    assert "Diagnostics:" in feedback.log and "torch: not installed" in feedback.log
    assert list(tmp_path.iterdir()) == []


def test_plugin_loads_without_torch(scd_provider, plugins_folder, qgis_iface, without_torch,
                                    monkeypatch: pytest.MonkeyPatch):
    """A fresh import of the whole plugin package, with torch unavailable, still gives all three algorithms."""
    for name in list(sys.modules):
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(plugins_folder))
    package = importlib.import_module(PACKAGE)
    plugin = package.classFactory(qgis_iface)
    provider = importlib.import_module(f"{PACKAGE}.plugin.provider").SemanticChangeProvider()
    provider.refreshAlgorithms()
    assert {a.id() for a in provider.algorithms()} == set(ALGORITHMS)
    assert plugin.provider is None  # nothing registered twice: initProcessing was not called
    assert sys.modules["torch"] is None
    assert not any(name.startswith(f"{PACKAGE}.core.engine") for name in sys.modules)


def test_install_instructions_give_cpu_and_cuda_commands_per_platform(plugin_package,
                                                                      monkeypatch: pytest.MonkeyPatch):
    """PyPI's torch is the CPU build on Windows and macOS but the CUDA build on Linux: each gets its own commands."""
    dependencies = importlib.import_module(f"{PACKAGE}.plugin.dependencies")
    pins = dependencies.runtime_requirements()
    packages = f'"torch{pins["torch"]}" "torchvision{pins["torchvision"]}"'
    index = "https://download.pytorch.org/whl"

    monkeypatch.setattr(dependencies.platform, "system", lambda: "Windows")
    windows = dependencies.install_instructions(["torch", "torchvision"])
    assert "OSGeo4W Shell" in windows
    assert f"for the CPU build:  python -m pip install {packages}  or" in windows  # PyPI: CPU on Windows
    assert f"(CUDA build):  python -m pip install {packages} --index-url {index}/cu" in windows

    monkeypatch.setattr(dependencies.platform, "system", lambda: "Darwin")
    mac = dependencies.install_instructions(["torch", "torchvision"])
    assert f"-m pip install --user {packages}" in mac and "no CUDA" in mac and "--index-url" not in mac

    monkeypatch.setattr(dependencies.platform, "system", lambda: "Linux")
    python = dependencies.python_executable()
    assert Path(python).is_file() and Path(python).name.startswith("python")
    linux = dependencies.install_instructions(["torch", "torchvision"])
    assert f'for the CPU build:  "{python}" -m pip install --user {packages}' in linux
    assert f"--index-url {index}/cpu  or, for an NVIDIA GPU" in linux  # plain pip would give the CUDA build
    assert "CPU build of PyTorch" not in linux


def test_a_too_old_python_is_explained(scd_provider, plugin_package, semantic_model, monkeypatch: pytest.MonkeyPatch):
    dependencies = importlib.import_module(f"{PACKAGE}.plugin.dependencies")
    assert dependencies.python_problem() is None
    monkeypatch.setattr(dependencies, "MINIMUM_PYTHON", (99, 0))
    with pytest.raises(QgsProcessingException, match=r"needs Python 99\.0 or newer"):
        processing.run("scd:modelinfo", {"MODEL": str(semantic_model)})


def test_output_parameters_come_from_the_products_table(scd_provider):
    from core.product_table import BY_NAME

    registry = QgsApplication.processingRegistry()
    for algorithm_id, task, offered in (
            ("scd:semanticchange", "semantic", {"fromto", "t1_classes", "t2_classes", "change_prob", "polygons",
                                                "report", "transitions_csv"}),
            ("scd:binarychange", "binary", {"change_mask", "change_prob", "polygons"}),
            ("scd:compareclassifications", "compare", {"fromto", "t1_classes", "t2_classes", "change_mask",
                                                       "polygons", "report", "transitions_csv"})):
        algorithm = registry.algorithmById(algorithm_id)
        names = {p.name(): p.description() for p in algorithm.parameterDefinitions()}
        names.update({o.name(): o.description() for o in algorithm.outputDefinitions()})
        for product in offered:
            entry = BY_NAME[product]
            assert names[entry.parameter] == entry.title(task), (algorithm_id, product)
            assert task in entry.tasks
