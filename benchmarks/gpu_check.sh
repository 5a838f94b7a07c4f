#!/usr/bin/env bash
# The whole GPU check in one command: every kernel test natively on CUDA, then every benchmark's
# GPU table, in at most 8 minutes on an H100 or H200 from a fresh checkout with no network.
#
#   benchmarks/gpu_check.sh OUT_DIR              on a GPU machine (make gpu-check OUT=OUT_DIR)
#   benchmarks/gpu_check.sh --dry-run OUT_DIR    on a CPU: the same steps at tiny sizes, kernels
#                                                through Triton's interpreter (make gpu-check-dry)
#
# 1. Uses the machine's own python3, torch and triton (PYTHON=... to choose another python);
#    never installs, upgrades or pins them.
# 2. Installs, with --no-deps and no index, the wheels in .gpu-wheels/ (the dependencies and test
#    oracles that a GPU machine lacks: gguf, torchao, bitsandbytes, compressed-tensors...; `make
#    gpu-wheels` fills the git-ignored folder where pip reaches PyPI) and this working tree's
#    package, into a fresh folder put first on PYTHONPATH.
# 3. Runs the kernel tests (the tests that take the `device` fixture: tests/kernel_device.py)
#    with LEC19QUANT_TEST_DEVICE=cuda, each kernel against the torch reference on the GPU.
# 4. Runs every benchmark that uses harness.run with `--gpu --save` (its GPU sizes), each under a
#    time limit and all under one deadline.
# 5. Writes OUT_DIR/summary.txt (versions, each step's status and seconds, the goals),
#    OUT_DIR/pytest.log, OUT_DIR/benchmarks.log and OUT_DIR/results.tar.gz, which holds
#    benchmarks/results/<benchmark>_gpu_<GPU name>.json: unpack it at the repository's root.
# The exit status is 0 when every step passed (goals missed do not count: they are goals).
#
# With the device tool (15 minutes of device time a session; this takes at most 8 of them; the
# steps in full: benchmarks/README.md):
#   here, once:   make gpu-wheels
#   device run:   command   "benchmarks/gpu_check.sh $OUT"
#                 carry     [".gpu-wheels"]
#                 timeout_s 540
#   then here:    tar -xzf <files_at>/results.tar.gz && git add benchmarks/results/*_gpu_*.json
#                 (and read <files_at>/summary.txt; <files_at>/pytest.log holds every failure)
set -uo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
if [[ $# -ne 1 ]]; then
    echo "usage: $0 [--dry-run] OUT_DIR" >&2
    exit 2
fi
mkdir -p "$1" && OUT_DIR=$(cd "$1" && pwd) || exit 2
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
WHEELS=${GPU_WHEELS:-$ROOT/.gpu-wheels}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SITE=$WORK/site
RESULTS=$WORK/benchmarks/results
STEPS=$WORK/steps.tsv
START=$SECONDS
if (( DRY_RUN )); then
    # tiny: a few kernel tests under the interpreter (GPU_CHECK_TESTS and GPU_CHECK_BENCHMARKS, lists of
    # test files and of benchmark names, narrow them further: tests/test_gpu_check.py does)
    DEADLINE=${GPU_CHECK_SECONDS:-900} TEST_LIMIT=300 BENCH_LIMIT=300 KERNELS_LIMIT=300
    TEST_DEVICE=cpu TEST_ARGS=(-m kernel -k "int32_product_is_exact or ties_round_to_even or decodes_any_bytes")
    BENCH_ARGS=(--dry-run)
else
    DEADLINE=${GPU_CHECK_SECONDS:-470} TEST_LIMIT=210 BENCH_LIMIT=45 KERNELS_LIMIT=150
    TEST_DEVICE=cuda TEST_ARGS=(-m kernel)
    BENCH_ARGS=(--gpu)
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p "$RESULTS"
: >"$STEPS"
: >"$OUT_DIR/pytest.log"
: >"$OUT_DIR/benchmarks.log"

# step NAME LIMIT LOG COMMAND...: run COMMAND under min(LIMIT, time left), append its output to
# LOG and a line "NAME<TAB>status<TAB>seconds" to the steps file.
step() {
    local name=$1 limit=$2 log=$3 left status began=$SECONDS
    shift 3
    left=$(( DEADLINE - (SECONDS - START) ))
    (( left < limit )) && limit=$left
    if (( limit < 5 )); then
        printf '%s\tnot run: out of time\t0\n' "$name" >>"$STEPS"
        return 1
    fi
    echo "== $name (limit ${limit} s)" | tee -a "$log"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
    status=${PIPESTATUS[0]}
    case $status in
        0) status=ok ;;
        124|137) status="timed out after ${limit} s" ;;
        *) status="failed (exit $status)" ;;
    esac
    printf '%s\t%s\t%s\n' "$name" "$status" $(( SECONDS - began )) >>"$STEPS"
    [[ $status == ok ]]
}

# 1. The machine's own stack.
"$PYTHON" - <<'EOF' | tee "$WORK/versions.txt"
import importlib.util, platform, torch
import triton
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU"
print(f"{gpu}; python {platform.python_version()}, torch {torch.__version__}, triton {triton.__version__}")
missing = [m for m in ("numpy", "pytest", "hypothesis", "ml_dtypes", "matplotlib", "transformers", "gguf",
                       "torchao", "bitsandbytes", "xdist") if importlib.util.find_spec(m) is None]
print("not installed here:", ", ".join(missing) or "nothing")
EOF
if (( ! DRY_RUN )) && ! "$PYTHON" -c "import torch; assert torch.cuda.is_available()"; then
    echo "no CUDA GPU: run with --dry-run on a CPU" >&2
    exit 1
fi

# 2. The carried wheels, then the package from this tree, both without dependencies.
install() {
    local pip=("$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir
               --target "$SITE") wheels=()
    [[ -d $WHEELS ]] && wheels=("$WHEELS"/*.whl)
    if [[ -e ${wheels[0]:-} ]] && (( DRY_RUN )); then  # wheels for the GPU machine: see that they install there
        "${pip[@]/#$SITE/$SITE-gpu}" --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 "${wheels[@]}" || return 1
        echo "the wheels install for Python 3.12 on x86-64 (this one uses its own packages)"
    elif [[ -e ${wheels[0]:-} ]]; then
        "${pip[@]}" "${wheels[@]}" || return 1
    else
        echo "no wheels in $WHEELS (make gpu-wheels): the machine's packages only"
    fi
    if ! "${pip[@]}" "$ROOT"; then  # a setuptools older than 77 cannot build it (PEP 639's license)
        echo "pip could not build the package here: importing it from the working tree instead"
        mkdir -p "$SITE" && ln -s "$ROOT/lec19quant" "$SITE/lec19quant" || return 1
    fi
    PYTHONPATH=$SITE "$PYTHON" -c "import lec19quant, gguf; print('lec19quant', lec19quant.__version__, 'from', lec19quant.__file__)"
}
export -f install
export PYTHON WHEELS SITE ROOT DRY_RUN
step install 120 "$OUT_DIR/pytest.log" bash -c install
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}

# 3. The kernel tests, on the device (several processes on a GPU machine when pytest-xdist is there).
mapfile -t KERNEL_TESTS < <("$PYTHON" tests/kernel_device.py tests)
[[ -n ${GPU_CHECK_TESTS:-} ]] && read -ra KERNEL_TESTS <<<"$GPU_CHECK_TESTS"  # a test narrows them
PARALLEL=()
if (( ! DRY_RUN )) && "$PYTHON" -c "import xdist" 2>/dev/null; then PARALLEL=(-n 8); fi
step "kernel tests" "$TEST_LIMIT" "$OUT_DIR/pytest.log" \
    env LEC19QUANT_TEST_DEVICE=$TEST_DEVICE "$PYTHON" -m pytest -q -p no:cacheprovider -rfEs --tb=short "${PARALLEL[@]}" \
    "${TEST_ARGS[@]}" "${KERNEL_TESTS[@]}"

# 4. Every benchmark that uses harness.run, at its GPU sizes: bench_kernels, the table of every
# family at the sizes that matter, first.
for script in benchmarks/bench_kernels.py $(grep -l "^from harness import .*\brun\b" benchmarks/bench_*.py |
                                             grep -v bench_kernels); do
    name=$(basename "$script" .py)
    [[ -n ${GPU_CHECK_BENCHMARKS:-} && " $GPU_CHECK_BENCHMARKS " != *" $name "* ]] && continue
    limit=$BENCH_LIMIT
    [[ $name == bench_kernels ]] && limit=$KERNELS_LIMIT
    step "$name" "$limit" "$OUT_DIR/benchmarks.log" \
        "$PYTHON" "$script" "${BENCH_ARGS[@]}" --save --out "$RESULTS"
done

# 5. The summary and the results.
tar -czf "$OUT_DIR/results.tar.gz" -C "$WORK" benchmarks/results
"$PYTHON" - "$WORK/versions.txt" "$STEPS" "$RESULTS" "$DRY_RUN" "$(( SECONDS - START ))" "$OUT_DIR/pytest.log" \
    <<'EOF' | tee "$OUT_DIR/summary.txt"
import json, math, re, sys
from pathlib import Path

versions, steps, results, dry_run, seconds, log = sys.argv[1:]
sys.path.insert(0, "benchmarks")
from bench_kernels import goals  # noqa: E402

print("GPU check" + (" (dry run on the CPU: tiny sizes, nothing measured)" if dry_run == "1" else ""),
      f"in {seconds} s:", Path(versions).read_text().strip())
for line in Path(steps).read_text().splitlines():
    name, status, took = line.split("\t")
    print(f"  {name:<22} {took:>4} s  {status}")
counts = [line.strip("= ") for line in Path(log).read_text().splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
print("kernel tests:", counts[-1] if counts else "no count (see pytest.log)")
files = sorted(Path(results).glob("*.json"))
print("results:", ", ".join(f.name for f in files) or "none")
kernels = [json.loads(f.read_text()) for f in files if f.name.startswith("kernels_gpu")]
if kernels:
    print("goals (the slowest shape counts):")
    for g in goals(kernels[0]["rows"]):
        measured = "not measured" if math.isnan(g["measured"]) else f"{g['measured']:.2f}"
        print(f"  {g['goal']:<48} {measured:>12}  {'met' if g['met'] == 'yes' else 'not met'}")
EOF
! grep -qv $'\tok\t' "$STEPS"
