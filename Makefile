# The two commands of the README: `make demo` and `make test`. Both create the environment.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.valuemech-installed
RUN ?= runs/quick-smollm2-135m
export HF_HUB_OFFLINE := 1

.PHONY: demo test env browser bench-env clean

env: $(STAMP)

# torch 2.13.0 first (a CPU wheel on this kind of machine); an open range would pull a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	# repeng (tests read exported GGUF control vectors with it) pins numpy<2: without its dependencies
	$(PY) -m pip install -q --no-deps repeng==0.4.0
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/valuemech models pull smollm2-135m
	$(VENV)/bin/valuemech run --preset quick --out $(RUN)
	@echo "results in $(RUN)/ (report.html, config.yaml, responses.jsonl, labels.jsonl, vectors.safetensors, components.safetensors, decompose.json, neurons.json)"

# Debian's chromium, for the headless check of the HTML report (tests skip it when missing).
# Installed only when absent; without root or apt it warns and the tests skip.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium) \
		|| echo "warning: could not install chromium (needs root and apt); the browser test will be skipped"

test: $(STAMP) browser
	$(PY) -m pytest

# Peers of the benchmarks in bench/ (the `bench` extra). steering-vectors pins transformers<5,
# so it goes in with --no-deps; its own needs (torch, transformers, scikit-learn) are met.
bench-env: $(STAMP)
	$(PY) -m pip install --no-deps steering-vectors==0.12.2 && $(PY) -m pip install scikit-learn pyinstrument

clean:
	rm -rf $(VENV) runs .pytest_cache
