"""Keep Triton out of the QGIS process, so importing torch can never crash QGIS.

Why: the pip build of PyTorch for Linux is the CUDA build, and it ships Triton, the
GPU kernel compiler of ``torch.compile``. ``libtriton.so`` carries its own copy of
LLVM and exports LLVM's symbols. The QGIS desktop has, before any plugin runs,
loaded Mesa's OpenGL driver (swrast, iris, radeonsi, ...), which links the system's
``libLLVM-15`` into the process with global symbol visibility. When ``libtriton.so``
is then loaded, the dynamic linker binds part of its LLVM to the system's LLVM of
another version, and Triton's static initialisers (LLVM's command-line option and
debug-counter registries) write into the wrong library's data: QGIS dies with a
segmentation fault while the library is being loaded, before Python can catch
anything. ``qgis_process`` and offscreen tests never load a GL driver, which is why
they do not crash.

Nobody imports Triton on purpose here: ``import torchvision`` imports
``torch._dynamo`` (``torchvision.ops`` asks it whether ``torch.compile`` is
supported), and ``torch._dynamo`` probes for Triton by importing it. Inference in
eager mode, which is all the plugin does, never uses Triton, Dynamo or Inductor:
without Triton PyTorch behaves as its CPU build does (``torch.compile`` falls back
or is unavailable), and the networks run exactly as fast.

So, before anything imports torch, the plugin marks ``triton`` as not importable
(``sys.modules["triton"] = None``, Python's documented way to block an import):
``import triton`` then raises ``ModuleNotFoundError``, which PyTorch treats as "no
Triton installed". This holds for the whole QGIS process, the Python console
included, which otherwise crashes the same way on ``import torchvision``.
"""

from __future__ import annotations

import sys

#: The packages that hold a private LLVM which clashes with the GL driver's.
BLOCKED = ("triton",)


def keep_triton_out() -> bool:
    """Make ``import triton`` fail cleanly in this process; call it before anything imports torch.

    Returns:
        True when Triton is blocked (now or already); False when it was loaded before
        this call (by another plugin), in which case blocking it is too late and
        nothing is changed.
    """
    blocked = True
    for name in BLOCKED:
        if name in sys.modules and sys.modules[name] is not None:
            blocked = False
            continue
        sys.modules[name] = None  # type: ignore[assignment]
    return blocked
