# t0-jax developer entry points. Everything runs inside .venv/ at the repo root.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed-$(shell cat setup.py | sha1sum | cut -c1-12)
XLA8    := XLA_FLAGS=--xla_force_host_platform_device_count=8
CHECKPOINT ?=
DATA_DIR   ?=
DEMO_OUT   ?= demo_out
PAPER_OUT  ?= paper_out
QUICK      ?=

.PHONY: install test demo paper lint bench bench-gpu notebooks clean

install: $(STAMP)

# Reuse an existing .venv when setup.py (the pinned requirements) is unchanged.
$(STAMP): setup.py
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade "pip<26" "setuptools<81" wheel
	# CPU torch from the local wheel first, so transformers does not pull a CUDA build.
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test]"
	# promptsource 0.2.3 declares python<3.10 but its templates work on 3.11.
	$(PIP) install -q --no-deps --ignore-requires-python "promptsource==0.2.3"
	rm -f .venv/.installed-*
	touch $(STAMP)

test: install
	$(XLA8) $(PY) -m pytest -q tests

demo: install
	$(PY) -m t0_jax.bin.demo --out_dir=$(DEMO_OUT) $(if $(CHECKPOINT),--checkpoint=$(CHECKPOINT)) $(if $(DATA_DIR),--data_dir=$(DATA_DIR))

# The paper's comparisons in miniature (T5+LM vs T0, prompt and dataset ablations, seeds):
# t0-experiments; QUICK=1 for 2 seeds and fewer steps.
paper: install
	$(PY) -m t0_jax.bin.experiments --out_dir=$(PAPER_OUT) $(if $(QUICK),--quick)

lint: install
	$(PY) -m compileall -q t0_jax bench tests

bench: install
	$(PY) -m bench.run_all --out docs/benchmarks.md

# One GPU: train-step MFU (small, base, xl) and bf16 scoring vs the t-zero loop, ≤ 8 min
# (bench/gpu.py). No install step: any Python with JAX for CUDA, flax, optax, orbax, torch,
# transformers and sentencepiece runs it from this directory (.venv's when there is one).
bench-gpu:
	$(if $(wildcard $(PY)),$(PY),python3) -m bench.gpu --out docs/benchmarks.md

notebooks: install
	$(XLA8) $(PY) -m pytest -q tests/test_notebooks.py

clean:
	rm -rf .venv .cache $(DEMO_OUT) $(PAPER_OUT) bench_out
