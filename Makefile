# Every target sets up what it needs (idempotently) through `setup`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export QT_QPA_PLATFORM ?= offscreen
export PYTHONDONTWRITEBYTECODE := 1
PLUGIN_NAME := semantic_change
QGIS_PROFILE ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default

.PHONY: setup test lint demo bench package install-plugin clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .

demo: setup
	$(PY) scripts/demo.py

bench: setup
	$(PY) scripts/bench.py

package: setup
	$(PY) scripts/package.py --out dist

install-plugin:
	mkdir -p "$(QGIS_PROFILE)/python/plugins"
	ln -sfn "$(CURDIR)" "$(QGIS_PROFILE)/python/plugins/$(PLUGIN_NAME)"
	@echo "linked $(CURDIR) -> $(QGIS_PROFILE)/python/plugins/$(PLUGIN_NAME); enable it in Plugins > Manage and Install Plugins"

clean:
	rm -rf build dist .pytest_cache .ruff_cache
