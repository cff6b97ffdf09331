# Two commands do all the set-up: `make test` and `make demo` (see README.md; the manual is in docs/).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed

.PHONY: test demo bench install system-deps clean

test: $(STAMP)
	$(PY) -m pytest -q

# REGIME=scratch: the from-scratch demo instead of fine-tuning Whisper base (docs/demo.md)
demo: $(STAMP)
	$(VENV)/bin/echoasr demo $(if $(REGIME),--regime $(REGIME))

# The inference benchmark times the default model (shipped, or $ECHOASR_MODEL) unless MODEL=run folder; LM optional.
bench: $(STAMP)
	$(PY) benchmarks/inference.py $(if $(MODEL),--model "$(MODEL)") $(if $(LM),--lm "$(LM)")
	$(PY) benchmarks/training_speed.py

install: $(STAMP)

system-deps:
	./scripts/install-system-deps

# torch first, pinned to the CPU build on local disk; pyworld builds against the venv's
# numpy and setuptools<81 (it needs pkg_resources), hence --no-build-isolation.
$(STAMP): requirements.txt pyproject.toml scripts/install-system-deps
	./scripts/install-system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install "setuptools<81" wheel cython $$(grep -E '^(torch|numpy)==' requirements.txt)
	$(PIP) install --no-build-isolation -r requirements.txt
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $(STAMP)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
