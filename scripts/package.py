"""Build the plugin zip for the QGIS plugin repository: ``python scripts/package.py --out dist``.

The zip holds one folder, ``semantic_change``, with what QGIS needs to run the
plugin (``metadata.txt``, ``__init__.py``, ``plugin/``, ``core/``, ``resources/``,
the README and the LICENSE if there is one) and nothing else: no tests, training
CLI, scripts, developer docs, virtual environment, caches, build output, model
weights or data. plugins.qgis.org refuses uploads over 25 MB and folders such as
``__MACOSX``, ``.git`` and ``__pycache__``, so both are checked here before the
file is written. The archive is reproducible: entries are sorted and carry a
fixed date, so the same tree always gives the same bytes.
"""

from __future__ import annotations

import argparse
import configparser
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_FOLDER = "semantic_change"
MAX_BYTES = 25 * 1024 * 1024

#: Top-level entries that are development-only.
EXCLUDED_TOP = {"tests", "training_cli", "scripts", "build", "dist", ".venv", ".ci", "Makefile", "pyproject.toml",
                "requirements.txt"}
#: Paths (relative, POSIX) excluded wherever they are.
EXCLUDED_PATHS = {"docs/dev"}
#: Folder names excluded at any depth.
EXCLUDED_DIRS = {"__pycache__", "__MACOSX", ".git", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".qgis-settings"}
#: Weights, data and compiled files never ship.
EXCLUDED_SUFFIXES = {".pyc", ".pyo", ".pt", ".pth", ".ckpt", ".onnx", ".safetensors", ".tif", ".tiff", ".npy",
                     ".npz", ".zip"}
#: Keys plugins.qgis.org requires in metadata.txt.
REQUIRED_METADATA = ("name", "description", "version", "qgisMinimumVersion", "author", "email", "about",
                     "tracker", "repository")
#: The date stamped on every entry (zip cannot store dates before 1980).
FIXED_DATE = (2024, 1, 1, 0, 0, 0)


def plugin_files(root: Path = ROOT) -> Iterator[Path]:
    """Files that go into the zip, relative to ``root``, in sorted order."""
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        parts = relative.parts
        if parts[0] in EXCLUDED_TOP or any(p in EXCLUDED_DIRS or p.startswith(".") for p in parts):
            continue
        if any(relative.as_posix() == p or relative.as_posix().startswith(p + "/") for p in EXCLUDED_PATHS):
            continue
        if path.is_file() and not path.is_symlink() and path.suffix.lower() not in EXCLUDED_SUFFIXES:
            yield relative


def read_metadata(root: Path = ROOT) -> dict[str, str]:
    """``metadata.txt`` as a dict, checked for the keys the plugin repository requires."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(root / "metadata.txt", encoding="utf-8")
    metadata = dict(parser["general"]) if parser.has_section("general") else {}
    missing = [key for key in REQUIRED_METADATA if not metadata.get(key, "").strip()]
    if missing:
        raise SystemExit(f"metadata.txt lacks {', '.join(missing)}; the plugin repository requires them")
    return metadata


def build(out_dir: Path, root: Path = ROOT) -> Path:
    """Write ``<out_dir>/semantic_change-<version>.zip`` and return its path."""
    metadata = read_metadata(root)
    icon = metadata.get("icon")
    if icon and not (root / icon).is_file():
        raise SystemExit(f"metadata.txt names icon {icon}, which does not exist")
    files = list(plugin_files(root))
    if Path("__init__.py") not in files or Path("metadata.txt") not in files:
        raise SystemExit("the plugin needs __init__.py and metadata.txt at its root")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PLUGIN_FOLDER}-{metadata['version']}.zip"
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for relative in files:
            info = zipfile.ZipInfo(f"{PLUGIN_FOLDER}/{relative.as_posix()}", date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, (root / relative).read_bytes())
    size = partial.stat().st_size
    if size > MAX_BYTES:
        partial.unlink()
        raise SystemExit(f"the zip would be {size / 2**20:.1f} MB; the plugin repository accepts at most 25 MB")
    partial.replace(target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="folder for the zip (default: dist)")
    args = parser.parse_args(argv)
    target = build(args.out)
    with zipfile.ZipFile(target) as archive:
        count = len(archive.namelist())
    print(f"{target} ({count} files, {target.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
