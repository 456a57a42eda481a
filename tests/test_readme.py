"""Every command the README shows, run on tiny generated data or checked against the code that prints it.

The README promises that every command in it is run by a test or by the demo, so none goes
stale. This module keeps the promise. It reads the commands out of README.md itself (each line
of a shell block, the Python block, and each inline code span whose first word is ``make``,
``python``, ``pip``, ``torchrun`` or ``qgis_process.bin``) and

* runs the README's own text where that can be done offline: the training lines and the
  torchrun line on a tiny synthetic ``SECOND/`` set, the ``qgis_process`` lines and the Python
  example on a generated ``t1.tif``/``t2.tif``/``model.pt``, each in a temporary folder that
  holds the file names the README uses (only the training lines get options appended that make
  them tiny: one epoch, 32 px crops, no ImageNet download);
* checks the rest against the code that produces the same command: the install commands must
  be exactly what :func:`plugin.dependencies.pip_install_command` gives (the one source of the
  messages the plugin prints), the ``make`` targets must do what the README says they do;
* fails on a README command that :data:`COVERAGE` names no test for.
"""

from __future__ import annotations

import ast
import importlib
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
import torch
from osgeo import gdal

from core import synthetic
from core.models.card import SECOND_CLASSES
from plugin import dependencies, installer
from training_cli.cli import main as training_cli
from training_cli.commands import COMMANDS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV_BIN = Path(sys.executable).parent
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")
PLUGIN = "semantic_change"

#: Options appended to the README's ``train`` lines so that they finish in seconds on a CPU.
TINY_TRAINING = ("--epochs", "1", "--batch-size", "2", "--crop", "32", "--workers", "0", "--pretrained", "none",
                 "--no-progress", "--set", 'train.precision="fp32"')

#: Which test runs or checks each README command: (a regular expression the command matches, the test).
#: A command in the README that none of them matches fails ``test_every_readme_command_has_a_test``.
COVERAGE: tuple[tuple[str, str], ...] = (
    (r"make (demo|test|setup|bench|package|install-plugin)", "test_make_targets_do_what_the_readme_says"),
    (r"\.venv/bin/python -m training_cli (train|export|evaluate) .*",
     "test_training_lines_run_on_a_tiny_second_dataset"),
    (r"torchrun .*", "test_torchrun_line_trains_with_two_cpu_processes"),
    (r"export PYTHONPATH=.* QGIS_PLUGINPATH=.*", "test_qgis_process_lines_run_from_a_shell"),
    (r"/usr/bin/qgis_process\.bin .*", "test_qgis_process_lines_run_from_a_shell"),
    (r"```python .*", "test_python_example_runs_as_written"),
    (r'("[^"]+"|python) -m pip install .*', "test_install_commands_are_what_the_plugin_prints"),
    (r"python -m training_cli (synthetic|evaluate)", "test_the_demo_runs_the_training_cli_commands_the_readme_names"),
    (r"python -m training_cli", "test_the_training_cli_has_the_commands_the_readme_lists"),
)

COMMAND_WORD = re.compile(r"make|python[\d.]*|pip[\d.]*|torchrun|qgis_process\.bin")


# --- reading the README ----------------------------------------------------------------------


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block."""
    return [(m[1], m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)]


def shell_lines(body: str) -> list[str]:
    """The commands of a shell block, lines continued with a backslash joined."""
    joined = re.sub(r"\\\n\s*", "", body)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def inline_spans(text: str) -> list[str]:
    """Inline code spans outside fenced blocks."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.findall(r"`([^`\n]+)`", prose)


def is_command(span: str) -> bool:
    words = span.split()
    return bool(words) and COMMAND_WORD.fullmatch(Path(words[0].strip('"')).name) is not None


def readme_commands(text: str | None = None) -> list[str]:
    """Every command the README shows: shell block lines, Python blocks (by their first line), command spans."""
    text = readme_text() if text is None else text
    commands = []
    for language, body in fenced_blocks(text):
        if language == "python":
            commands.append(f"```python {body.splitlines()[0]}")
        else:
            commands += shell_lines(body)
    commands += [span for span in inline_spans(text) if is_command(span)]
    return list(dict.fromkeys(commands))


def block_with(word: str) -> str:
    """The one fenced block of the README that contains ``word``."""
    (body,) = [body for _, body in fenced_blocks(readme_text()) if word in body]
    return body


def covering_tests(command: str) -> list[str]:
    return [test for pattern, test in COVERAGE if re.fullmatch(pattern, command)]


def test_every_readme_command_has_a_test() -> None:
    commands = readme_commands()
    assert len(commands) > 15  # the extraction finds the README's commands at all
    uncovered = [command for command in commands if not covering_tests(command)]
    assert not uncovered, (
        "README commands that no test runs or checks: " + "; ".join(f"`{c}`" for c in uncovered)
        + ". Add a test to tests/test_readme.py that runs the README's text (or checks it against the code "
        "that prints it) and list it in COVERAGE.")
    unused = [pattern for pattern, _ in COVERAGE if not any(re.fullmatch(pattern, c) for c in commands)]
    assert not unused, f"COVERAGE entries that match no README command any more (remove them): {unused}"
    missing = {test for _, test in COVERAGE if not callable(globals().get(test))}
    assert not missing, f"COVERAGE names tests this module does not define: {missing}"


def test_an_unknown_command_is_reported_with_what_to_do() -> None:
    text = readme_text() + "\nThen run `make everything` and\n\n```\npip install something\n```\n"
    commands = readme_commands(text)
    assert "make everything" in commands and "pip install something" in commands
    assert not covering_tests("make everything") and not covering_tests("pip install something")
    assert covering_tests("make demo") and covering_tests("torchrun --nproc-per-node 2 -m training_cli train")


# --- run: the model trainer's lines ----------------------------------------------------------


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder where ``.venv`` is this venv, as in a checkout, and the repository is importable."""
    (tmp_path / ".venv").symlink_to(VENV_BIN.parent, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def shell_env(**values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "QGIS_OPTIONS_PATH")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", **values)
    return env


def run_line(line: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, f"`{line}` failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def tiny(line: str) -> str:
    """The README's ``train`` line with the options that make it tiny; other lines as they are."""
    return f"{line} {shlex.join(TINY_TRAINING)}" if " train " in line else line


@pytest.fixture
def second_set(in_tmp: Path) -> Path:
    """``SECOND/``: 4 synthetic pairs of 64 px in the SECOND layout (2 train, 1 val, 1 test)."""
    assert training_cli(["synthetic", "--out", "SECOND", "--format", "second", "--pairs", "4", "--size", "64",
                         "--scene-size", "0"]) == 0
    return in_tmp / "SECOND"


def test_training_lines_run_on_a_tiny_second_dataset(second_set: Path, in_tmp: Path) -> None:
    lines = shell_lines(block_with(".venv/bin/python -m training_cli train"))
    assert [line.split()[3] for line in lines] == ["train", "export", "evaluate"]
    outputs = [run_line(tiny(line), in_tmp, shell_env()) for line in lines]
    assert (in_tmp / "runs" / "lsafnet" / "best.pt").is_file()
    from core.models.checkpoint import read_card

    card = read_card(in_tmp / "lsafnet-second.pt")
    assert card.model == "lsafnet" and card.task == "semantic" and "miou" in card.metrics
    assert "SeK" in outputs[2] and "test" in outputs[2]


def test_torchrun_line_trains_with_two_cpu_processes(second_set: Path, in_tmp: Path) -> None:
    (line,) = shell_lines(block_with("torchrun"))
    with socket.socket() as probe:  # torchrun's --master-port, through its environment: the line stays the README's
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    output = run_line(tiny(line) + " --set 'options.backbone=\"resnet18\"'", in_tmp,
                      shell_env(PET_MASTER_PORT=str(port)))
    assert "2 process(es)" in output
    assert (in_tmp / "runs" / "gapl" / "best.pt").is_file()


# --- run: the analyst's lines ----------------------------------------------------------------


@pytest.fixture
def scene_files(in_tmp: Path) -> Path:
    """``t1.tif``, ``t2.tif`` (96 px) and ``model.pt`` (an untrained GAPL-SCD, 128 px tiles: the example's overlap
    of 64 px needs tiles larger than that) in the working folder."""
    synthetic.write_pair(in_tmp, [c.color for c in SECOND_CLASSES], height=96, width=96, seed=5)
    torch.manual_seed(0)
    assert training_cli(["init", "--model", "gapl_scd", "--preset", "second", "--tile-size", "128",
                         "--out", "model.pt"]) == 0
    return in_tmp


@pytest.mark.qgis
@pytest.mark.skipif(not QGIS_PROCESS.exists(), reason=f"{QGIS_PROCESS} is not installed")
def test_qgis_process_lines_run_from_a_shell(scene_files: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    plugins = tmp_path_factory.mktemp("plugins")
    (plugins / PLUGIN).symlink_to(REPO, target_is_directory=True)
    body = block_with("qgis_process.bin")
    assert "<folder holding semantic_change/>" in body
    script = body.replace("<folder holding semantic_change/>", shlex.quote(str(plugins)))
    env = shell_env(QT_QPA_PLATFORM="offscreen",
                    QGIS_CUSTOM_CONFIG_PATH=str(tmp_path_factory.mktemp("qgis-profile")))
    del env["PYTHONPATH"]  # the README's export sets it
    run_line(script, scene_files, env)
    for name in ("fromto.tif", "t1_classes.tif", "t2_classes.tif", "change_polygons.gpkg", "report.html"):
        assert (scene_files / name).stat().st_size > 0, name
    fromto = gdal.Open(str(scene_files / "fromto.tif"))
    band = fromto.GetRasterBand(1)
    band.GetDefaultRAT()  # GDAL 3.6 reads the .aux.xml lazily
    assert "Low vegetation -> Building" in band.GetCategoryNames()


def test_python_example_runs_as_written(scene_files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (code,) = [body for language, body in fenced_blocks(readme_text()) if language == "python"]
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})  # the README's own code
    printed = capsys.readouterr().out
    assert printed.startswith("cpu ")
    with rasterio.open(scene_files / "fromto.tif") as fromto, rasterio.open(scene_files / "prob.tif") as prob:
        assert fromto.shape == prob.shape == (96, 96)
    assert (scene_files / "transitions.csv").read_text(encoding="utf-8").strip()


# --- check: the install commands -------------------------------------------------------------

#: The interpreter of a default QGIS install, which the README's table shows (the plugin's message fills in the
#: real one): OSGeo4W's shell calls QGIS's Python ``python``; QGIS.app and Debian's qgis have these.
README_PYTHON = {"Windows": "python", "Darwin": "/Applications/QGIS.app/Contents/MacOS/bin/python3",
                 "Linux": "/usr/bin/python3"}
ROWS = {"Windows": "Windows", "Darwin": "macOS", "Linux": "Linux"}


def install_table() -> dict[str, tuple[list[str], list[str]]]:
    """``{system: (pip commands of the CPU column, pip commands of the CUDA column)}`` from the README's table."""
    table = {}
    for line in readme_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        system = next((s for s, row in ROWS.items() if cells[0].startswith(row)), None)
        if system and len(cells) == 3 and "pip install" in line:
            cpu, cuda = ([span for span in re.findall(r"`([^`]+)`", cell) if "-m pip install" in span]
                         for cell in cells[1:])
            table[system] = (cpu, cuda)
    return table


def test_install_commands_are_what_the_plugin_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    table = install_table()
    assert set(table) == set(ROWS)
    packages = ["torch", "torchvision"]
    default = installer.CUDA_BUILDS[1]  # what a message names when no NVIDIA driver answers

    def command(system: str, build: str) -> str:
        return dependencies.pip_install_command(system, build, README_PYTHON[system], packages)

    expected = {"Windows": ([command("Windows", "cpu")], [command("Windows", default)]),
                "Darwin": ([command("Darwin", "cpu")], []),
                "Linux": ([command("Linux", "cpu")], [command("Linux", installer.PYPI_LINUX_CUDA),
                                                      command("Linux", default)])}
    assert table == expected
    # every pip command anywhere in the README is one of the table's
    in_table = {c for cpu, cuda in table.values() for c in cpu + cuda}
    assert {c for c in readme_commands() if "-m pip install" in c} == in_table
    # the pins are runtime-requirements.txt's, the file `make setup` and the installer read
    pins = dependencies.runtime_requirements()
    assert f'"torch{pins["torch"]}" "torchvision{pins["torchvision"]}"' in command("Linux", "cpu")

    # the plugin's own message, on each system without an NVIDIA driver, prints these commands
    monkeypatch.setattr(installer, "detect_gpu", lambda: installer.GpuInfo(problem="no driver"))
    for system in ROWS:
        monkeypatch.setattr(dependencies.platform, "system", lambda system=system: system)
        monkeypatch.setattr(dependencies, "python_executable", lambda system=system: README_PYTHON[system])
        message = dependencies.install_instructions(packages)
        for listed in table[system][0] + table[system][1]:
            assert f"  {listed}  " in f"{message}  ", (system, listed)


def test_the_readme_pythons_are_where_the_plugin_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interpreters the table shows are the ones the plugin finds for a default install of QGIS."""
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(sys, "executable", "/Applications/QGIS.app/Contents/MacOS/QGIS")
    assert Path(README_PYTHON["Darwin"]) in installer.python_candidates()
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(sys, "executable", "/usr/bin/qgis")
    for name in ("prefix", "exec_prefix", "base_exec_prefix"):
        monkeypatch.setattr(sys, name, "/usr")
    assert Path(README_PYTHON["Linux"]) in installer.python_candidates()


# --- check: make -----------------------------------------------------------------------------

#: What each target the README names runs (``make -n``), besides ``setup`` which every target but
#: install-plugin runs first.
MAKE_RECIPES = {
    "setup": ["bash scripts/setup.sh"],
    "test": [".venv/bin/python -m ruff check .", ".venv/bin/python -m pytest"],
    "demo": [".venv/bin/python scripts/demo.py"],  # tests/scripts/test_demo.py runs it (--smoke)
    "bench": [".venv/bin/python scripts/bench.py"],
    "package": [".venv/bin/python scripts/package.py --out dist"],  # tests/plugin/test_qgis_process.py runs it
}


def make_row(target: str) -> str:
    (row,) = [line for line in readme_text().splitlines() if line.startswith(f"| `make {target}` |")]
    return row


def test_make_targets_do_what_the_readme_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    targets = {c.split()[1] for c in readme_commands() if c.startswith("make ")}
    assert targets == {*MAKE_RECIPES, "install-plugin"}, "a make target the README names is not checked here"
    # as from a shell, also when the suite itself runs under `make test` (a sub-make prints its directory)
    shell = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    for target, recipe in MAKE_RECIPES.items():
        dry = subprocess.run(["make", "-n", target], cwd=REPO, env=shell, capture_output=True, text=True, check=True)
        lines = dry.stdout.splitlines()
        expected = recipe if target == "setup" else ["bash scripts/setup.sh", *recipe]
        assert lines == expected, (target, lines)

    # setup: the Debian packages the README lists, requirements.txt with the runtime pins
    setup_sh = (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")
    debian = re.search(r"debian_packages=\(([^)]*)\)", setup_sh)[1].split()
    listed = re.findall(r"`([a-z0-9.-]+)`", make_row("setup").split("when run as root")[0])
    assert listed == debian
    assert "-r plugin/runtime-requirements.txt" in (REPO / "requirements.txt").read_text(encoding="utf-8")
    assert "-r requirements.txt" in setup_sh
    # bench: the sections the README names are choices of scripts/bench.py's --only
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    bench = importlib.import_module("bench")
    monkeypatch.setattr(sys, "argv", ["bench.py", "--help"])
    with pytest.raises(SystemExit):
        bench.main()
    choices = re.search(r"--only \{([^}]*)\}", capsys.readouterr().out)[1].split(",")
    sections = re.search(r"\(`--only ([^;]*);", make_row("bench"))[1]
    named = re.findall(r"(\w+)`", sections)
    assert len(named) == 5 and set(named) <= set(choices)

    # install-plugin: run, with a home folder of the test's own
    profile = tmp_path / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default"
    done = subprocess.run(["make", "install-plugin"], cwd=REPO, env={**shell, "HOME": str(tmp_path)},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (profile / "python" / "plugins" / PLUGIN).resolve() == REPO.resolve()


# --- check: the training CLI as the README names it ------------------------------------------


def test_the_demo_runs_the_training_cli_commands_the_readme_names() -> None:
    """``make demo`` runs these (tests/scripts/test_demo.py runs the demo): the demo's source calls each."""
    tree = ast.parse((REPO / "scripts" / "demo.py").read_text(encoding="utf-8"))
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.List) and len(node.elts) > 3:
            words = [e.value if isinstance(e, ast.Constant) else None for e in node.elts[1:4]]
            if words[:2] == ["-m", "training_cli"]:
                called.add(words[2])
    named = {c.split()[3] for c in readme_commands() if re.fullmatch(r"python -m training_cli \w+", c)}
    assert named and named <= called
    assert {"synthetic", "train", "export", "evaluate"} <= called  # the README's "Try it" steps


def test_the_training_cli_has_the_commands_the_readme_lists() -> None:
    (row,) = [line for line in readme_text().splitlines() if line.startswith("| `training_cli/` |")]
    listed = row.split("`python -m training_cli`:")[1].strip(" |").split(", ")
    assert listed == [command.NAME for command in COMMANDS]
