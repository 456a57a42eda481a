"""The diagnostics text: everything a bug report about installing the plugin's packages needs, ready to paste.

The dialog's *Copy diagnostics* button and ``python -m ...plugin.installer diagnostics`` give the same
text: QGIS, Python and platform, what QGIS's Python imports (asked of a separate process), the
CUDA build and the GPU, the private folder's state and free space, and the last install's log.
"""

from __future__ import annotations

import platform
from pathlib import Path

from .checks import check_folder, free_space_gb
from .gpu import GpuInfo, detect_gpu
from .layout import active_folder, last_log
from .probe import probe


def diagnostics_text(root: str | Path, python: str | None, qgis_version: str = "unknown",
                     probed: dict | None = None, gpu: GpuInfo | None = None) -> str:
    """Everything a bug report about installation needs, as plain text ready to paste."""
    root = Path(root)
    gpu = gpu or detect_gpu()
    folder = active_folder(root)
    probed = probed if probed is not None else (probe(python, folder) if python else {"error": "no Python found"})
    check = check_folder(root)

    def version(name: str) -> str:
        entry = probed.get(name, {})
        return entry.get("version") or entry.get("error") or probed.get("error", "unknown")

    cuda = probed.get("cuda_build")
    lines = [
        "Semantic change detection: dependency diagnostics",
        f"QGIS: {qgis_version}",
        f"Python: {platform.python_version()} ({python or 'interpreter not found'})",
        f"Platform: {platform.platform()} ({platform.machine()})",
        f"torch: {version('torch')}" + (f" (from {probed['torch']['file']})" if "file" in probed.get("torch", {})
                                        else ""),
        f"torchvision: {version('torchvision')}",
        f"numpy: {version('numpy')}",
        f"CUDA build of torch: {cuda or 'none (CPU build)'}",
        f"CUDA usable: {probed.get('cuda_available', False)}" + (f" ({probed['cuda_error']})"
                                                                 if probed.get("cuda_error") else ""),
        f"Devices: {', '.join(probed.get('devices') or []) or 'CPU only'}"
        + ("; Apple MPS" if probed.get("mps_available") else ""),
        f"NVIDIA GPU / driver: {gpu.describe()}",
        f"Install folder: {root} (active: {folder or 'none'}; {check.describe()})",
        f"Free space there: {free_space_gb(root):.1f} GB",
        "",
        "Last install log:",
        last_log(root).rstrip(),
    ]
    return "\n".join(lines) + "\n"
