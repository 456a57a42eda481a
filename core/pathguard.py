"""Output paths checked against everything a run must never overwrite, before any work is done.

A run writes several files (rasters with their ``.aux.xml``/``.qml``/``.ovr``
sidecars, a transitions CSV, polygons, a report) and the user types or picks each
name. A slip (the from-to map named like T1, the report named like the model file)
must not destroy the user's data, so every output is resolved to the file it really
is and compared with every input and with every other output:

* GDAL connection strings (``GPKG:file.gpkg:table``, ``file.gpkg|layername=x``,
  ``/vsizip/archive.zip/inner.tif``) stand for the file that holds them;
* relative paths and symbolic links are resolved; two names of one existing file
  (a hard link, or another case on a case-insensitive file system) are the same
  file because they share a device and inode; names of files that do not exist yet
  are compared without regard to case, so a name that would collide on Windows or
  macOS is refused everywhere;
* sidecars are named the way GDAL and QGIS read them: ``<file>.aux.xml``,
  ``<file>.ovr`` and ``<base name>.qml`` (QGIS loads ``<base name>.qml`` as a
  raster's default style, so ``a.tif`` and ``a.tiff`` would share one style: such
  names are refused rather than given a style QGIS would never read).

An output may be refused for three reasons: it is (or its sidecar is) an input, an
input's sidecar or the model file; it collides with another output or its sidecar;
or it exists, is not one of this tool's own earlier outputs, and the caller did not
say that overwriting is wanted. A raster is recognised as one of ours by a metadata
tag :class:`~.io.RasterWriter` writes (:data:`PRODUCT_TAG`), a transitions CSV by
its header. The QGIS plugin counts a Processing destination parameter as the user's
explicit choice (QGIS asks before it lets a user pick an existing file, and its own
algorithms overwrite their destinations); files the plugin derives itself, such as
the CSV beside the report, get no such permission.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .files import sidecars

#: GeoTIFF metadata tag that marks a raster as written by this tool (its value: the product name).
PRODUCT_TAG = "SEMANTIC_CHANGE_PRODUCT"
#: The first characters of a transitions CSV this tool wrote.
CSV_HEADER = "unit,from,"
#: The only raster format the engine writes.
RASTER_SUFFIXES = (".tif", ".tiff")
#: Files a Shapefile consists of besides the ``.shp``.
SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")

#: ``DRIVER:path:subdataset`` connection strings whose middle part is a file.
_PREFIXED = re.compile(r"^(?P<driver>[A-Za-z][A-Za-z0-9_]+):(?P<rest>.+)$")
_VSI_ARCHIVE = re.compile(r"^/vsi(?:zip|tar|gzip|7z|rar)/(?P<rest>.+)$")
_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".gz", ".7z", ".rar")


def source_file(source: str | os.PathLike[str]) -> str | None:
    """The local file a GDAL/QGIS data source reads, or ``None`` for remote and in-memory sources.

    ``GPKG:/data/a.gpkg:table``, ``/data/a.gpkg|layername=table`` and
    ``/vsizip//data/a.zip/b.tif`` all give the file that holds the data, so an
    output can be compared with it and an input's existence can be checked.
    """
    text = os.fspath(source).strip()
    if os.path.exists(text):
        return text
    text = text.split("|", 1)[0]  # QGIS's "path|layername=..." form
    if "://" in text or text.startswith(("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsimem", "/vsihttp")):
        return None
    archive = _VSI_ARCHIVE.match(text)
    if archive:
        rest = archive.group("rest")
        if rest.startswith("{"):
            return rest[1:rest.find("}")] if "}" in rest else rest[1:]
        lowered = rest.lower()
        for suffix in _ARCHIVE_SUFFIXES:
            index = lowered.find(suffix + "/")
            if index >= 0:
                return rest[: index + len(suffix)]
        return rest
    prefixed = _PREFIXED.match(text)
    if prefixed and len(prefixed.group("driver")) > 1:  # "C:\..." is a drive letter, not a driver
        rest = prefixed.group("rest")
        if rest.startswith('"'):
            end = rest.find('"', 1)
            return rest[1:end] if end > 0 else rest[1:]
        if os.path.exists(rest):
            return rest
        head = rest.rsplit(":", 1)[0] if ":" in rest else rest
        return head
    return text


@dataclass(frozen=True)
class _File:
    """One file a run reads or writes, with what identifies it on disk."""

    path: Path
    role: str  # how the message names it: "T1", "the model file", "OUTPUT_FROMTO's style (.qml)"
    owner: str = ""  # the output it belongs to ("" for inputs)
    sidecar: bool = False
    identity: tuple[int, int] | None = field(default=None, compare=False)
    key: str = field(default="", compare=False)

    @classmethod
    def of(cls, path: str | os.PathLike[str], role: str, owner: str = "", *, sidecar: bool = False) -> _File:
        resolved = Path(os.path.realpath(os.path.abspath(os.fspath(path))))
        try:
            stat = resolved.stat()
            identity: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
        except OSError:
            identity = None
        return cls(resolved, role, owner, sidecar, identity, os.path.normcase(str(resolved)).casefold())

    def same_as(self, other: _File) -> bool:
        if self.identity is not None and other.identity is not None:
            return self.identity == other.identity
        return self.key == other.key


@dataclass(frozen=True)
class Output:
    """One file a run will write.

    Attributes:
        name: How the user knows this output (``OUTPUT_FROMTO``, ``fromto``, ``the report``).
        path: The file, or a connection string naming it.
        kind: ``raster`` (a GeoTIFF with sidecars), ``table`` (the transitions CSV),
            ``vector`` (polygons) or ``document`` (a report).
        overwrite: The caller allows replacing an existing file here.
    """

    name: str
    path: str | os.PathLike[str]
    kind: str = "raster"
    overwrite: bool = False


def raster_sidecars(path: str | os.PathLike[str]) -> list[Path]:
    """The files GDAL and QGIS read beside a raster: ``.aux.xml``, the default style ``.qml``, overviews ``.ovr``."""
    return [*sidecars(path), Path(f"{path}.ovr")]


def vector_sidecars(path: str | os.PathLike[str]) -> list[Path]:
    """The other files of a Shapefile (polygons are styled in the project, so no ``.qml`` is written)."""
    path = Path(path)
    return [path.with_suffix(s) for s in SHAPEFILE_PARTS] if path.suffix.lower() == ".shp" else []


def check_outputs(
    outputs: Sequence[Output],
    *,
    inputs: Mapping[str, str | os.PathLike[str]],
    model: str | os.PathLike[str] | None = None,
    extra_protected: Iterable[tuple[str, str | os.PathLike[str]]] = (),
) -> None:
    """Refuse any output that would overwrite an input, the model, another output or a user's file.

    Args:
        outputs: The files the run will write.
        inputs: The rasters the run reads, by label (``T1``, ``T2``); connection strings allowed.
        model: The model file, when the run reads one.
        extra_protected: Further ``(role, path)`` files no output may touch.

    Raises:
        InputError: Naming the output at fault, the file it would destroy and what to do.
    """
    protected: list[_File] = []
    for label, source in inputs.items():
        file = source_file(source)
        if file is None:
            continue
        protected.append(_File.of(file, f"the input {label} ({source})"))
        protected.extend(_File.of(p, f"a sidecar of the input {label} ({p.name})") for p in raster_sidecars(file))
    if model is not None:
        protected.append(_File.of(model, f"the model file ({model})"))
    protected.extend(_File.of(path, role) for role, path in extra_protected)

    written: list[_File] = []
    for output in outputs:
        main = _output_file(output)
        files = [main, *(_File.of(p, f"{output.name}'s sidecar {p.name}", output.name, sidecar=True)
                         for p in _sidecars_of(output, main.path))]
        for file in files:
            for other in protected:
                if file.same_as(other):
                    what = "" if not file.sidecar else f" (through its sidecar {file.path.name})"
                    raise InputError(
                        f"{output.name} ({output.path}) would overwrite {other.role}{what}; nothing was written "
                        "and that file is untouched. Choose another file name for this output.")
            for other in written:
                if file.same_as(other):
                    raise InputError(_collision_message(output, file, other))
        for index, file in enumerate(files):
            for other in files[:index]:
                if file.same_as(other):
                    raise InputError(
                        f"{output.name} ({output.path}) is named like its own sidecar {file.path.name}; "
                        f"choose a name ending in {'.tif' if output.kind == 'raster' else 'another suffix'}")
        written.extend(files)
        _check_may_replace(output, main, files[1:])


def _output_file(output: Output) -> _File:
    file = source_file(output.path)
    if file is None:
        raise InputError(f"{output.name} ({output.path}) is not a local file; choose a file on this computer")
    if output.kind == "raster" and Path(file).suffix.lower() not in RASTER_SUFFIXES:
        raise InputError(
            f"{output.name}: the engine writes GeoTIFF files, so the name must end in .tif or .tiff, not "
            f"'{Path(file).name}'; choose a name such as {Path(file).with_suffix('.tif').name}")
    return _File.of(file, output.name, output.name)


def _sidecars_of(output: Output, path: Path) -> list[Path]:
    if output.kind == "raster":
        return raster_sidecars(path)
    if output.kind == "vector":
        return vector_sidecars(path)
    return []


def _collision_message(output: Output, file: _File, other: _File) -> str:
    if not file.sidecar and not other.sidecar:
        return (f"{output.name} and {other.owner} are the same file ({file.path}); give each output its own "
                "file name")
    if file.sidecar and other.sidecar:
        return (f"{output.name} ({output.path}) and {other.owner} would share one sidecar {file.path.name} "
                "(QGIS reads a raster's style from <base name>.qml, so a.tif and a.tiff share one); give them "
                "different base names")
    sidecar_owner, plain = (output.name, other.owner) if file.sidecar else (other.owner, output.name)
    return (f"{plain} ({file.path.name}) is the sidecar QGIS or GDAL reads for {sidecar_owner}; writing both "
            "would overwrite one with the other. Choose another file name.")


def _check_may_replace(output: Output, main: _File, sidecars: Sequence[_File]) -> None:
    """An existing file may be replaced only when it is ours or the caller allowed it."""
    if main.path.is_dir():
        raise InputError(f"{output.name} ({output.path}) is a folder; give a file name such as change.tif")
    if output.overwrite:
        return
    if main.path.exists():
        if not is_own_output(main.path, output.kind):
            raise InputError(
                f"{output.name}: {main.path} already exists and was not written by this tool, so it is left "
                "untouched; choose another file name, delete the file yourself, or ask for overwriting "
                "explicitly (overwrite=True)")
        return  # its sidecars belong to our own earlier output
    for sidecar in sidecars:
        if sidecar.path.exists() and sidecar.path.suffix.lower() != ".ovr":
            raise InputError(
                f"{output.name}: {sidecar.path} already exists (a style or metadata file of another dataset) and "
                "this output would replace it; choose another file name or ask for overwriting explicitly "
                "(overwrite=True)")


def is_own_output(path: str | os.PathLike[str], kind: str = "raster") -> bool:
    """Whether ``path`` is a file this tool wrote earlier (and so may be replaced by a new run)."""
    path = Path(path)
    try:
        if kind == "raster":
            from .io import raster_tags  # core.io imports this module

            return PRODUCT_TAG in raster_tags(path, sidecar=False)
        if kind == "table":
            with path.open("r", encoding="utf-8", errors="replace") as stream:
                return stream.read(len(CSV_HEADER) + 1).lstrip("\ufeff").startswith(CSV_HEADER)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False
    return False


def allowed(outputs: Iterable[Output], overwrite: bool | Collection[str]) -> list[Output]:
    """The outputs with ``overwrite`` set where the caller allowed it (all, or by name)."""
    result = []
    for output in outputs:
        allow = overwrite if isinstance(overwrite, bool) else output.name in overwrite
        result.append(Output(output.name, output.path, output.kind, output.overwrite or allow))
    return result
