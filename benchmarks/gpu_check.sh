#!/usr/bin/env bash
# Every GPU benchmark of docs/benchmarks.md, on a fresh GPU machine with this project checked out:
#
#     bash benchmarks/gpu_check.sh                    # figures -> gpu_figures.md (+ .jsonl); about 5 minutes
#     bash benchmarks/gpu_check.sh --out $OUT/gpu_figures.md
#     bash benchmarks/gpu_check.sh --dry-run          # tiny models on CPU in seconds (what CI runs)
#
# 1. Installs the packages the image lacks (torch is expected to be there and is never touched): from the wheels in
#    .whl/ when that folder exists (offline machines: `pip download -d .whl datasets evaluate` beforehand), else
#    from the package index.
# 2. Runs benchmarks/gpu_check.py: hf_deit's distillation step vs timm's TokenDistillationTask (DeiT-S + RegNetY-16GF,
#    bf16, eager and compiled), DeiT-B MFU, loader vs step images/s. Each stage appends to the figures file as it
#    ends; the whole run is cut at --limit seconds (default 290) so that it stays inside a 5-minute slot.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
out=gpu_figures.md
limit=290
dry_run=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=(--dry-run) ;;
        --out) out=$2; shift ;;
        --limit) limit=$2; shift ;;
        *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run] [--out FILE] [--limit SECONDS]" >&2; exit 2 ;;
    esac
    shift
done

# --- 1. what the image lacks (import name -> pip requirement, from pyproject.toml)
missing=$("$python" - <<'PY'
import importlib.util
wanted = {"datasets": "datasets>=4.0", "evaluate": "evaluate>=0.4.3", "timm": "timm>=1.0.20",
          "transformers": "transformers>=5.17,<6", "accelerate": "accelerate>=1.10", "safetensors": "safetensors>=0.4",
          "huggingface_hub": "huggingface-hub>=1.0", "PIL": "Pillow>=10", "jinja2": "jinja2>=3.1", "tqdm": "tqdm"}
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
timeout --signal=INT --kill-after=10 "$limit" "$python" benchmarks/gpu_check.py --out "$out" "${dry_run[@]}" || status=$?
if [ "$status" -ne 0 ]; then
    echo "gpu_check.py stopped with status $status (124/130: cut at --limit $limit s); the finished stages are in $out" | tee -a "$out"
fi
echo "figures: $out"
exit "$status"
