"""The QGIS side of the plugin: Processing provider, algorithms, styling and reports.

Only this package imports QGIS. It stays thin (parameters in, one engine call,
styling out) and imports nothing that needs torch at import time, so the
algorithms appear even where torch is missing and explain how to install it.
"""
