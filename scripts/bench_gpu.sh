#!/usr/bin/env bash
# The GPU numbers of docs/benchmarks.md, one command per part: `bash scripts/bench_gpu.sh PART [OUTDIR]`.
#   check  correctness of the GPU-only paths (cuDNN attention, chunked loss): scripts/check_gpu.py
#   train  300M step sweep at 1024 tokens with 4 packed examples per row, JAX vs PyTorch+PEFT
#   decode greedy decode, batch 1 and 32, vs Hugging Face generate on the same GPU
#   sft    the plan's 10K pairs x 3 epochs through the real trainer, wall clock
# Rows go to OUTDIR/bench.jsonl (appended), logs to OUTDIR/*.log. Each part fits in 10 minutes on an H100.
set -uo pipefail
part=${1:?part: check|train|decode|sft}
out=${2:-runs/bench_gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
bench() { "$py" scripts/benchmark.py --out "$out/bench.jsonl" "$@" 2>&1 | tee -a "$out/$part.log" | grep -E '^\||^## |Error|error:' ; }

case $part in
  check)
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$out/check.log"
    "$py" -c "import jax, flax, optax, torch, transformers, peft; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" \
      | tee -a "$out/check.log"
    "$py" scripts/check_gpu.py 2>&1 | tee -a "$out/check.log" | grep -vE "^(WARNING|I0000|E0000)"
    ;;
  train)
    common=(--suite train --config 300m --device gpu --seq 1024 --segments 4 --steps 10 --warmup 3)
    bench "${common[@]}" --mode full --batch 16 --attention xla --compare torch
    bench "${common[@]}" --mode full --batch 16 --attention cudnn
    bench "${common[@]}" --mode lora --batch 16 --attention cudnn --compare torch
    bench "${common[@]}" --mode full --batch 32 --attention cudnn --loss-chunk 4096
    bench "${common[@]}" --mode full --batch 32 --attention cudnn
    bench "${common[@]}" --mode full --batch 16 --attention cudnn --remat
    ;;
  decode)
    bench --suite decode --presets 300m --batches 1,32 --prompt-len 128 --new-tokens 256 --dtype bfloat16 --device gpu
    ;;
  sft)
    bench --suite sft --preset 300m --mode lora --pairs 10000 --epochs 3 --seq 1024 --batch 32 --attention cudnn
    ;;
  *) echo "unknown part $part" >&2; exit 2 ;;
esac
