# Two commands do all the set-up: `make demo` and `make test`.
# Each creates .venv with python3 -m venv if missing and installs the requirements.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export MPLBACKEND := Agg
export YOLO_OFFLINE := 1

.PHONY: test test-slow test-browser demo readme-demo venv clean-venv

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# real-browser tests of the review app (Selenium + Debian's chromium and chromium-driver;
# they skip, saying why, when those are absent: apt-get install -y chromium chromium-driver)
test-browser: $(STAMP)
	$(BIN)/python -m pytest -q -rs -m browser tests/browser

# writes only dataset/ data/ runs/ weights/ logs/ results/ (git-ignored)
demo: $(STAMP)
	$(BIN)/python demo.py

# the demo, then its block in README.md and docs/demo_overlay.png refreshed (tracked files)
readme-demo: $(STAMP)
	$(BIN)/python demo.py --update_readme

clean-venv:
	rm -rf $(VENV)
