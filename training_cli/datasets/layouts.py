"""Where the files of each dataset layout are, which pairs form a split, and which layout a folder has.

Layouts (folder names as the datasets release them):

* ``second``: ``im1/ im2/ label1/ label2/`` (SECOND; labels are RGB colour maps or index maps).
* ``landsat-scd``: ``A/ B/`` with per-date maps ``labelA/ labelB/`` (or ``labelA_rgb/ labelB_rgb/``) or the
  released single from-to map ``label/``.
* ``binary``: ``A/ B/ label/`` with 0/255 labels (LEVIR-CD, WHU); ``time1/ time2/`` (SYSU-CD) and ``OUT/`` (CDD)
  are recognised too.

A split is, in this order: a sub-folder ``<root>/<split>/`` holding the layout; a list file (``--split FILE``, or
``<split>.txt``, ``<split>_list.txt``, ``<split>_info.txt``, ``list/<split>.txt`` in the root) with one file
name per line; or, for the semantic sets only, a fixed seeded split of the pairs in the proportions the papers
use (SECOND: 2,375 train / 593 val of 2,968, as in Bi-SRNet, with ``test`` = ``val`` since SECOND's test labels
were never released; Landsat-SCD: 3:1:1 train/val/test after leaving out the augmented copies of its original
release, whose names contain "rotate", "Crop" or "ZheDang"). ``all`` (or no split) takes every pair.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import InputError

from .reading import IMAGE_SUFFIXES, read_image

FORMATS = ("second", "landsat-scd", "binary")

_T1 = {"second": ("im1",), "landsat-scd": ("A",), "binary": ("A", "time1", "im1", "T1")}
_T2 = {"second": ("im2",), "landsat-scd": ("B",), "binary": ("B", "time2", "im2", "T2")}
#: Label folders per format, as alternatives in order of preference; each alternative is (folders, kind).
_LABELS: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    "second": ((("label1", "label2"), "palette"), (("label1_rgb", "label2_rgb"), "palette")),
    "landsat-scd": ((("labelA", "labelB"), "palette"), (("labelA_rgb", "labelB_rgb"), "palette"),
                    (("label",), "fromto")),
    "binary": ((("label",), "binary"), (("OUT",), "binary"), (("gt",), "binary"), (("mask",), "binary")),
}

#: SECOND's usual train share (Bi-SRNet: 2,375 of 2,968 pairs) and Landsat-SCD's 3:1:1.
_RATIO_SPLITS = {"second": {"train": (0.0, 2375 / 2968), "val": (2375 / 2968, 1.0), "test": (2375 / 2968, 1.0)},
                 "landsat-scd": {"train": (0.0, 0.6), "val": (0.6, 0.8), "test": (0.8, 1.0)}}


@dataclass(frozen=True)
class Sample:
    """One pair and its label files; ``label_kind`` is ``palette``, ``fromto``, ``binary`` or ``none``."""

    name: str
    t1: Path
    t2: Path
    labels: tuple[Path, ...]
    label_kind: str


def _folder(base: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (base / name).is_dir():
            return base / name
    return None


def _images(folder: Path) -> dict[str, Path]:
    """Image files by stem (``a.png`` -> ``a``)."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            files.setdefault(path.stem, path)
    return files


def _has_layout(base: Path, format: str) -> bool:
    return _folder(base, _T1[format]) is not None and _folder(base, _T2[format]) is not None


def detect_format(root: str | os.PathLike[str]) -> str:
    """The layout of ``root`` (or of its ``train``/``val``/``test`` sub-folders).

    Raises:
        InputError: No known layout is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found")
    for base in (root, *(root / s for s in ("train", "val", "test"))):
        if not base.is_dir():
            continue
        if _has_layout(base, "second") and _folder(base, ("label1", "label1_rgb")):
            return "second"
        if _folder(base, ("A",)) and _folder(base, ("labelA", "labelA_rgb")):
            return "landsat-scd"
        if _has_layout(base, "binary"):
            label_folder = _folder(base, ("label", "OUT", "gt", "mask"))
            if label_folder is not None and _folder(base, ("A",)) and _looks_like_fromto(label_folder):
                return "landsat-scd"
            return "binary"
    raise InputError(f"{root}: no dataset layout found; expected im1/ im2/ label1/ label2/ (SECOND), A/ B/ labelA/ "
                     "labelB/ or A/ B/ label/ with from-to codes (Landsat-SCD), or A/ B/ label/ with 0/255 labels "
                     "(binary), directly or under train/ val/ test/")


def _looks_like_fromto(folder: Path) -> bool:
    """A label with codes 1..9 and no 255 is a Landsat-SCD from-to map, not a 0/255 binary label."""
    files = list(_images(folder).values())[:1]
    if not files:
        return False
    label = read_image(files[0])
    values = set(label[0].ravel().tolist()) if label.shape[0] == 1 else {255}
    return 255 not in values and bool(values - {0, 1}) and max(values) <= 9


def list_samples(root: str | os.PathLike[str], format: str, split: str | os.PathLike[str] | None = None,
                 *, labels: bool = True) -> list[Sample]:
    """The pairs of ``split``, sorted by name.

    Args:
        root: Dataset folder.
        format: One of :data:`FORMATS`.
        split: ``train``/``val``/``test``/``all``/``None`` or a list file.
        labels: ``False`` accepts a folder without labels (prediction only).

    Raises:
        InputError: A folder or partner file is missing, or the split is unknown; the message names it.
    """
    if format not in FORMATS:
        raise InputError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found")
    base, wanted = _resolve_split(root, format, split)
    t1_dir, t2_dir = _folder(base, _T1[format]), _folder(base, _T2[format])
    if t1_dir is None or t2_dir is None:
        raise InputError(f"{base}: expected folders {'/'.join(_T1[format])} and {'/'.join(_T2[format])} "
                         f"of the {format} layout")
    label_dirs, kind = _label_folders(base, format, labels)
    t1_files, t2_files = _images(t1_dir), _images(t2_dir)
    label_files = [_images(folder) for folder in label_dirs]
    names = sorted(t1_files) if wanted is None else wanted
    if wanted is None:
        orphans = sorted(set(t2_files) - set(t1_files))
        if orphans:
            raise InputError(f"{t2_files[orphans[0]]}: no partner image in {t1_dir} "
                             f"({len(orphans)} such file(s)); every pair needs both dates")
    if split is not None and wanted is None and base == root and format in _RATIO_SPLITS and str(split) != "all":
        if format == "landsat-scd":
            names = [n for n in names if not is_augmented_copy(n)]
        names = _ratio_split(names, format, str(split))
    samples = []
    for name in names:
        if name not in t1_files:
            raise InputError(f"{name}: listed in the split but not found in {t1_dir}")
        if name not in t2_files:
            raise InputError(f"{t1_files[name]}: no partner image named {name}.* in {t2_dir}")
        paths = []
        for folder, files in zip(label_dirs, label_files, strict=True):
            if name not in files:
                raise InputError(f"{t1_files[name]}: no label named {name}.* in {folder}")
            paths.append(files[name])
        samples.append(Sample(name, t1_files[name], t2_files[name], tuple(paths), kind))
    if not samples:
        raise InputError(f"{base}: the split {split or 'all'} holds no image pairs")
    return samples


def _label_folders(base: Path, format: str, required: bool) -> tuple[list[Path], str]:
    for folders, kind in _LABELS[format]:
        if all((base / f).is_dir() for f in folders):
            return [base / f for f in folders], kind
    if not required:
        return [], "none"
    expected = " or ".join("/ ".join(folders) + "/" for folders, _ in _LABELS[format])
    raise InputError(f"{base}: no label folders of the {format} layout (expected {expected})")


def _resolve_split(root: Path, format: str, split: str | os.PathLike[str] | None) -> tuple[Path, list[str] | None]:
    """The folder holding the split's layout, and the listed names (``None``: every pair there)."""
    if split is None or str(split) == "all":
        return root, None
    as_path = Path(split)
    if as_path.suffix and as_path.is_file():
        return root, _read_list(as_path)
    name = str(split)
    if (root / name).is_dir() and _has_layout(root / name, format):
        return root / name, None
    for candidate in (f"{name}.txt", f"{name}_list.txt", f"{name}_info.txt", f"list/{name}.txt"):
        if (root / candidate).is_file():
            return root, _read_list(root / candidate)
    if format in _RATIO_SPLITS and name in _RATIO_SPLITS[format] and _has_layout(root, format):
        return root, None
    raise InputError(f"{root}: no split {name!r}: expected a folder {root / name}/ with the {format} layout or a "
                     f"list file {root / (name + '.txt')}, or give --split FILE")


#: Name parts of the augmented copies in Landsat-SCD's original release (8,468 pairs; 2,425 without them).
_AUGMENTED_MARKERS = ("rotate", "crop", "zhedang")


def is_augmented_copy(name: str) -> bool:
    """Whether a Landsat-SCD file name marks one of the release's rotated, cropped or occluded copies."""
    lowered = name.lower()
    return any(marker in lowered for marker in _AUGMENTED_MARKERS)


def _read_list(path: Path) -> list[str]:
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(Path(line.split()[0]).stem)
    if not names:
        raise InputError(f"{path}: the split list is empty")
    return names


def _ratio_split(names: list[str], format: str, split: str) -> list[str]:
    """A split that never changes with file-system order: pairs ordered by a hash of their name, then cut."""
    shares = _RATIO_SPLITS[format]
    if split not in shares:
        raise InputError(f"no split {split!r} for {format}; choose {', '.join(shares)} or give a list file")
    ordered = sorted(names, key=lambda n: hashlib.sha1(n.encode("utf-8")).hexdigest())
    start, stop = shares[split]
    return sorted(ordered[round(start * len(ordered)):round(stop * len(ordered))])
