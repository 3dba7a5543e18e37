# The two commands of the README:  `make quickstart`  and  `make test`.
# Each creates .venv (Python 3.11, pip) with the pinned CPU stack on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	# DeepSpeed after torch, without build isolation (else pip fetches another torch to build it), with the CPU
	# shared-memory op precompiled (else the first init_distributed JIT-compiles it, ~33 s).
	DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 $(PY) -m pip install -q --no-build-isolation deepspeed==0.19.8
	$(PY) -m pip install -q --no-deps -e .
	touch $@

.PHONY: install quickstart test
install: $(VENV)/.installed

quickstart: $(VENV)/.installed
	$(VENV)/bin/rl-dlm train

# pyproject.toml's addopts already has -q; a second -q (-qq) would hide pytest's "N passed" summary line.
test: $(VENV)/.installed
	$(PY) -m pytest
