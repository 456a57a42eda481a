#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: Debian's QGIS/GDAL stack plus a venv
# that sees it (--system-site-packages) and holds torch and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

# xvfb, xauth and Mesa's GL driver: the desktop test runs the real QGIS under Xvfb with the GL driver loaded.
debian_packages=(qgis python3-qgis qgis-providers python3-gdal python3-rasterio python3-venv xvfb xauth libgl1-mesa-dri
                 libglx-mesa0)
missing=()
for pkg in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" -eq 0 ]; then
        echo "setup: installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "setup: missing Debian packages: ${missing[*]}" >&2
        echo "setup: run 'sudo apt-get install --no-install-recommends ${missing[*]}' or run make as root" >&2
        exit 1
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv (with Debian's system site-packages)"
    /usr/bin/python3 -m venv --system-site-packages .venv
fi

# Hold numpy at the version Debian's GDAL, rasterio and QGIS bindings were built against.
/usr/bin/python3 -c 'import numpy; print(f"numpy=={numpy.__version__}")' > .venv/constraints.txt
# requirements.txt includes plugin/runtime-requirements.txt (the pins the plugin's installer uses too).
stamp=".venv/.requirements-$(cat requirements.txt plugin/runtime-requirements.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "setup: installing Python requirements into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt -c .venv/constraints.txt
    rm -f .venv/.requirements-*
    touch "$stamp"
fi
