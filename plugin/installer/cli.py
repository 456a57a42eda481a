"""The installer's command line, for scripts, tests and users without the desktop dialog.

``python -m semantic_change.plugin.installer install|check|diagnostics|detect`` (from the folder
holding the plugin; ``python -m plugin.installer`` from a source checkout) does what the dialog
does, with the same options; docs/dependencies.md describes it. Exit status: 0 done, 1 failed
(for ``check``: the folder is damaged), 130 cancelled.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .checks import check_folder
from .diagnostics import diagnostics_text
from .errors import CancelledError, InstallError
from .gpu import CUDA_BUILDS, GpuInfo, choose_variant, detect_gpu
from .install import Installer
from .layout import default_root
from .plan import Options


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.root:
        root = Path(args.root)
    elif args.profile:
        root = default_root(args.profile)
    else:
        parser.error("give --root or --profile")
    python = args.python or sys.executable
    gpu = detect_gpu()
    if args.command == "detect":
        print(gpu.describe())
        print(f"build to install: {choose_variant(gpu)}" + (f" ({gpu.fitting_build})" if gpu.fitting_build else ""))
        return 0
    if args.command == "check":
        check = check_folder(root)
        print(check.describe())
        return 1 if check.broken else 0
    if args.command == "diagnostics":
        print(diagnostics_text(root, python, gpu=gpu))
        return 0
    return _install(args, root, python, gpu)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m semantic_change.plugin.installer",
        description="Install the plugin's Python packages into its private folder, outside QGIS's site-packages.")
    parser.add_argument("command", choices=("install", "check", "diagnostics", "detect"),
                        help="install (or repair); check the folder for damage; print diagnostics; detect the GPU")
    parser.add_argument("--root", help="the private folder (default: in the QGIS profile given by --profile)")
    parser.add_argument("--profile", help="the QGIS profile folder, e.g. ~/.local/share/QGIS/QGIS3/profiles/default")
    parser.add_argument("--python", help="QGIS's Python interpreter (default: this one)")
    parser.add_argument("--variant", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--cuda-build", choices=CUDA_BUILDS)
    parser.add_argument("--find-links", action="append", default=[], metavar="FOLDER", help="a local wheel folder")
    parser.add_argument("--index-url", help="a package index replacing the default (corporate mirror)")
    parser.add_argument("--no-index", action="store_true", help="use only the wheel folders (offline)")
    parser.add_argument("--no-pytorch-index", action="store_true", help="do not add PyTorch's index for the build")
    parser.add_argument("--proxy", help="proxy for pip, e.g. http://user:password@proxy:8080")
    return parser


def _install(args: argparse.Namespace, root: Path, python: str, gpu: GpuInfo) -> int:
    """``install``: the build chosen (or the one that fits the GPU), then one install run printed as it goes."""
    variant = choose_variant(gpu) if args.variant == "auto" else args.variant
    options = Options(variant=variant, cuda_build=args.cuda_build or (gpu.fitting_build if variant == "cuda"
                                                                      else None),
                      find_links=args.find_links, index_url=args.index_url, no_index=args.no_index,
                      use_pytorch_index=not args.no_pytorch_index, proxy=args.proxy)
    installer = Installer(root, python=python, options=options, on_line=print)
    try:
        installer.run()
    except CancelledError as error:
        print(error, file=sys.stderr)
        return 130
    except InstallError as error:
        print(f"install failed: {error}", file=sys.stderr)
        return 1
    return 0
