# Two commands do all the set-up: `make demo` and `make test`.
# Each creates .venv with python3 -m venv if missing and installs the requirements.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export MPLBACKEND := Agg
export YOLO_OFFLINE := 1

.PHONY: test test-slow test-browser demo venv clean-venv

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

demo: $(STAMP)
	$(BIN)/python demo.py

clean-venv:
	rm -rf $(VENV)
