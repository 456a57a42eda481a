"""QGIS entry point of the Semantic Change Detection plugin.

QGIS installs this folder under a name of its own, so everything below is imported
relatively. Importing the package must stay cheap and must not need torch: the
algorithms appear even when torch is missing and explain how to install it.
"""


def classFactory(iface):  # noqa: N802 - name required by QGIS
    # First of all, before anything can import torch: keep Triton out of the QGIS process, whose
    # LLVM crashes QGIS against the GL driver's (see plugin/torch_guard.py).
    from .plugin.torch_guard import keep_triton_out

    keep_triton_out()

    # The packages the plugin's installer put in its private folder go on sys.path first,
    # before anything can import torch (the installer itself imports nothing heavy).
    from .plugin.dependencies import use_private_packages

    use_private_packages()

    from .plugin.plugin import SemanticChangePlugin

    return SemanticChangePlugin(iface)
