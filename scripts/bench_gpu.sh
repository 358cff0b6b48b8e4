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
# Compilation is ~100 s per 300M configuration on an H100; keep what can be kept between the runs of a part:
# whole executables (JAX's persistent cache: a re-run of the same configuration) and, where this XLA build
# knows the flag (an unknown XLA flag stops the process), GEMM autotuning results, which configurations
# with the same matmul shapes share.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$out/jax_cache}
if "$py" - 2>/dev/null <<'EOF'
import glob, os, sys
import jax
flag = b"xla_gpu_per_fusion_autotune_cache_dir"
site = os.path.dirname(os.path.dirname(jax.__file__))
libs = glob.glob(os.path.join(site, "jax*", "**", "*.so"), recursive=True)
sys.exit(0 if any(flag in open(p, "rb").read() for p in libs) else 1)
EOF
then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_per_fusion_autotune_cache_dir=$out/autotune_cache"
fi
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
