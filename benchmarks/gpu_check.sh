#!/usr/bin/env bash
# Every GPU benchmark of docs/benchmarks.md, on a fresh GPU machine with this project checked out.
#
# A lent H200 gives about 15 minutes in all, start-up and transfers included, so one lease runs one of these:
#
#   lease 1, the benchmarks (stages 1-5 of benchmarks/gpu_check.py, each under its own cut: 490 s; all cut at 540 s):
#     bash benchmarks/gpu_check.sh --out $OUT/gpu_figures.md
#   lease 2, the paper's table on the full CIFAR-10 training set (about 8 min; the stage's own cut is 540 s):
#     bash benchmarks/gpu_check.sh --stages table --limit 570 --out $OUT/gpu_figures.md   (carry .gpu_data)
#   one stage, e.g. to re-run it:   bash benchmarks/gpu_check.sh --stages syncs --out $OUT/gpu_figures.md
#   CI, every stage on CPU with tiny models:   bash benchmarks/gpu_check.sh --dry-run --stages all
#
# The table needs CIFAR-10 on that machine, and only the repository travels there (64 MiB at most): pack the images
# here (train: all 50,000; test: the 200 per class --gpu_h200 evaluates on; about 18 MB), carry .gpu_data:
#     mkdir -p .gpu_data && echo /.gpu_data/ >> .git/info/exclude
#     (cd ../shared/data && { find cifar10/train -name '*.jpg'; for c in cifar10/test/*/; do ls "$c"*.jpg | head -200; done; } \
#         | tar czf - -T -) > .gpu_data/cifar10.tgz
# Python packages the image lacks (datasets, evaluate, ... ; torch is never touched) are installed from the wheels in
# .whl/ when that folder exists (an offline machine: `pip download` them here beforehand, for that machine's Python
# and platform, and carry .whl), else from the package index.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
out=gpu_figures.md
limit=540
dry_run=()
stages=()
table_data=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=(--dry-run) ;;
        --out) out=$2; shift ;;
        --limit) limit=$2; shift ;;
        --table-data) table_data=(--table-data "$2"); shift ;;
        --stages) shift
            while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do stages+=("$1"); shift; done
            continue ;;
        *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run] [--out FILE] [--limit SECONDS] [--stages NAME... | all]" \
                "[--table-data FOLDER_OR_TGZ]" >&2; exit 2 ;;
    esac
    shift
done
if [ "${stages[*]:-}" = "all" ]; then
    stages=(distill_eager mfu distill_compiled syncs loader table)
fi

# --- 1. what the image lacks (import name -> pip requirement, from pyproject.toml)
missing=$("$python" - <<'PY'
import importlib.util
wanted = {"datasets": "datasets>=4.0", "evaluate": "evaluate>=0.4.3", "timm": "timm>=1.0.20",
          "transformers": "transformers>=5.25,<6", "accelerate": "accelerate>=1.10", "safetensors": "safetensors>=0.4",
          "huggingface_hub": "huggingface-hub>=1.0", "PIL": "Pillow>=10", "jinja2": "jinja2>=3.1", "tqdm": "tqdm",
          "matplotlib": "matplotlib>=3.8"}
print(" ".join(req for name, req in wanted.items() if importlib.util.find_spec(name) is None))
PY
)
if [ -n "$missing" ]; then
    if [ -d .whl ] && compgen -G ".whl/*.whl" > /dev/null; then
        echo "installing from .whl/: $missing"
        "$python" -m pip install --quiet --no-index --find-links .whl $missing
    else
        echo "installing from the package index: $missing"
        "$python" -m pip install --quiet $missing
    fi
fi
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

# --- 2. the benchmarks
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
status=0
stage_args=()
if [ ${#stages[@]} -gt 0 ]; then stage_args=(--stages "${stages[@]}"); fi
timeout --signal=INT --kill-after=10 "$limit" "$python" benchmarks/gpu_check.py --out "$out" \
    ${dry_run[@]+"${dry_run[@]}"} ${stage_args[@]+"${stage_args[@]}"} ${table_data[@]+"${table_data[@]}"} || status=$?
if [ "$status" -ne 0 ]; then
    echo "gpu_check.py stopped with status $status (3: a stage was cut or failed; 124/130: the whole run was cut at" \
         "--limit $limit s); the finished stages are in $out" | tee -a "$out"
fi
echo "figures: $out"
exit "$status"
