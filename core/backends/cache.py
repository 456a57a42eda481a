"""A folder of exported networks, keyed so that a stale or damaged file is never used.

Each entry is ``<key>.onnx`` plus ``<key>.json``; the key holds the network's name,
the SHA-256 of its weights (the digest checkpoints store, see
:func:`~core.models.checkpoint.state_dict_sha256`), the tile size, the software and
PyTorch versions, the digest of the network's code
(:func:`~core.backends.select.network_code_digest`) and the ONNX opset, and for int8
files the digest of the calibration sample. New weights, a new tile size, a new
release or edited network code therefore get a new entry instead of an old graph.
The JSON records the SHA-256 of the ONNX bytes: an entry is used only when its file
hashes to it and the runtime then loads it; anything else (a truncated copy, a
half-finished write from a killed process, an edit) is rebuilt. Both files are
written atomically (:mod:`core.files`), the ONNX file first, so a reader never sees
a JSON whose model is missing or partial.

OpenVINO keeps its own files in ``openvino/`` beside the entries: the graph reshaped to
a run's batch, saved as IR under the ONNX file's recorded digest, and its compiled
kernels (see :mod:`core.backends.runtimes`), each about the size of the ONNX file.

The folder is the user's cache (``SCD_CACHE_DIR``, else the platform's cache
folder): nothing in it is precious, deleting it only costs one export per model.
The folders this module creates there are private to the user (mode 0700): a graph
in the cache is run as the model. A hash that matches its record only proves the
file is whole, not that it is the model's graph (anyone who can write the folder
can write both), so every run from a graph first proves it reproduces the model
(:class:`~.check.ProvenGraph`). A cache that cannot be written (read-only, full, a
file where the folder should be) raises :class:`BackendCacheError`, and the run goes
on with PyTorch, saying why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..files import atomic_write_text, atomic_write_with

log = logging.getLogger(__name__)

#: Environment variable naming the cache folder (the engine option wins over it).
CACHE_ENV = "SCD_CACHE_DIR"

#: Mode of the folders the cache creates: readable and writable by the user alone.
PRIVATE_FOLDER_MODE = 0o700


class BackendCacheError(InputError):
    """The backend cache cannot be written: read-only, full, or a file where its folder should be."""


def private_folder(folder: Path, *, root: Path | None = None) -> Path:
    """Create ``folder`` (and ``root`` above it, the cache folder itself) with mode 0700 where missing.

    Folders that exist keep their permissions (a cache folder the user shares on purpose stays shared).

    Raises:
        OSError: the folder cannot be created (a file stands in its way, a read-only disk ...).
    """
    for path in (root, folder):
        if path is not None and not path.is_dir():
            path.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
    return folder


def unavailable(folder: Path, error: OSError) -> BackendCacheError:
    """The message for a cache folder that cannot be written, with what to do about it."""
    said = error.strerror or str(error)
    return BackendCacheError(
        f"the backend cache {folder} cannot be written ({said}); free some space there, make it writable, or point "
        f"{CACHE_ENV} at a folder of your own")


def default_cache_dir() -> Path:
    """``$SCD_CACHE_DIR``, else the platform's per-user cache folder plus ``semantic_change``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "semantic_change"


@dataclass(frozen=True)
class CacheEntry:
    """A verified file in the cache and what was recorded with it."""

    path: Path
    output_names: tuple[str, ...]
    rebuilt: bool


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_sha256(model_path: Path) -> str | None:
    """The SHA-256 the cache recorded for the file at ``model_path`` (None: no readable record).

    :meth:`OnnxCache.lookup` uses a file only when it hashes to this, so whatever was
    derived from one version of a cached file can name that version by it.
    """
    try:
        return str(json.loads(model_path.with_suffix(".json").read_text(encoding="utf-8"))["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class OnnxCache:
    """Exported graphs under ``folder/onnx``; see the module docstring for the rules."""

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(folder).expanduser() if folder is not None else default_cache_dir()
        self.folder = self.root / "onnx"

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.onnx", self.folder / f"{key}.json"

    def lookup(self, key: str) -> CacheEntry | None:
        """The entry for ``key`` if its file is whole and matches its record, else ``None``."""
        model_path, record_path = self.paths(key)
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if record.get("key") != key or file_sha256(model_path) != record.get("sha256"):
                log.info("cache entry %s does not match its record; rebuilding it", model_path)
                return None
            return CacheEntry(model_path, tuple(record["output_names"]), rebuilt=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.info("cache entry %s is unreadable (%s); rebuilding it", record_path, error)
            return None

    def store(self, key: str, model: bytes, output_names: tuple[str, ...]) -> CacheEntry:
        """Write ``model`` and its record for ``key`` atomically and return the entry.

        Raises:
            BackendCacheError: the folder cannot be created or written (nothing half-written is left).
        """
        model_path, record_path = self.paths(key)
        try:
            private_folder(self.folder, root=self.root)
            atomic_write_with(model_path, lambda stream: stream.write(model))
            record = {"key": key, "sha256": hashlib.sha256(model).hexdigest(), "output_names": list(output_names)}
            atomic_write_text(record_path, json.dumps(record, indent=1))
        except OSError as error:
            with contextlib.suppress(OSError):  # a graph without its record would never be used: no litter
                model_path.unlink(missing_ok=True)
            raise unavailable(self.folder, error) from error
        return CacheEntry(model_path, output_names, rebuilt=True)

    def remove(self, key: str) -> None:
        """Forget ``key`` (both files), e.g. when its graph turned out not to reproduce the network."""
        for path in self.paths(key):
            try:
                path.unlink(missing_ok=True)
            except OSError as error:  # a read-only cache: the next run proves the graph again
                log.info("could not remove %s (%s)", path, error)

    def get_or_build(self, key: str, build: Callable[[], tuple[bytes, tuple[str, ...]]],
                     load_check: Callable[[CacheEntry], object]) -> tuple[CacheEntry, object]:
        """A verified, loadable entry for ``key``, built (again) when missing, stale or corrupt.

        Args:
            key: The entry's key.
            build: Makes the ONNX bytes and output names.
            load_check: Loads an entry in the runtime (raising if it cannot); its result
                is returned so the caller does not load the file twice.

        Returns:
            The entry and what ``load_check`` returned for it.
        """
        entry = self.lookup(key)
        if entry is not None:
            try:
                return entry, load_check(entry)
            except Exception as error:  # noqa: BLE001 - any failure to load means: rebuild
                log.info("cached %s does not load (%s); rebuilding it", entry.path, error)
        model, names = build()
        entry = self.store(key, model, names)
        return entry, load_check(entry)
