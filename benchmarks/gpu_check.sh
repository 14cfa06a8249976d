#!/usr/bin/env bash
# One prepared call on a lent GPU machine (see benchmarks/README.md):
#   every GPU path checked against the fp32 reference at ViT-B/16 shapes, then timed.
# The machine has torch + triton but not open_clip (carried as wheels in .whl/), and nothing can be
# fetched there. Results: $OUT/gpu_check.json (+ the log); commit them under benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 STDD_COMMIT=${STDD_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}

site=${STDD_SITE:-/tmp/stdd_site}  # benchmarks/gpu_dali.sh installs DALI here too
if ls .whl/*.whl >/dev/null 2>&1; then
    # once per machine: a later call on the same warm machine (e.g. after gpu_dali.sh) finds them installed
    stamp=$(sha256sum .whl/*.whl | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$site/.stdd_wheels" 2>/dev/null)" != "$stamp" ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || exit 1
        echo "$stamp" > "$site/.stdd_wheels"
    else
        echo "gpu_check.sh: the carried wheels are installed in $site already (this machine ran an earlier call)"
    fi
fi
# stdd_fast without building a wheel: the package-dir mapping (kernels/ -> stdd_fast.kernels, ...) as links
pkg=/tmp/stdd_pkg/stdd_fast
rm -rf /tmp/stdd_pkg && mkdir -p "$pkg"
ln -s "$PWD"/stdd_fast/* "$pkg"/
for sub in kernels export training; do rm -rf "${pkg:?}/$sub"; ln -s "$PWD/$sub" "$pkg/$sub"; done
export PYTHONPATH=/tmp/stdd_pkg:$site${PYTHONPATH:+:$PYTHONPATH}
# the recorded clips of the video sections (benchmarks/gpu_clips.py), carried as .gpu_clips
[ -f .gpu_clips/manifest.json ] && export STDD_GPU_CLIPS=${STDD_GPU_CLIPS:-$PWD/.gpu_clips}
python3 -c "import av" 2>/dev/null || echo "gpu_check.sh: PyAV is not importable (carry its wheel in .whl): the video sections will fail"

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.draw,power.limit --format=csv | tee "$OUT/nvidia-smi.csv"
python3 benchmarks/gpu_check.py --out "$OUT" --budget "${GPU_CHECK_BUDGET:-420}" "$@" 2>&1 | tee "$OUT/gpu_check.log"
status=${PIPESTATUS[0]}

# Optional: the user-facing benchmark on this GPU (GPU_CHECK_BENCH_S seconds at most)
# (from /tmp: in the repository root, ./stdd_fast would shadow the package links and its subpackages)
if [ "${GPU_CHECK_BENCH_S:-0}" -gt 0 ]; then
    (cd /tmp && timeout "$GPU_CHECK_BENCH_S" python3 -m stdd_fast.bench --device cuda --batch 1,32 \
        --paths reference,fused,triton,graph:triton --iters 10 \
        --json "$OUT/bench_gpu.json" --plot "$OUT/bench_gpu.png") 2>&1 | tee "$OUT/bench_gpu.log"
fi
# Optional: a tiny fine-tuning run on CUDA (fp16 autocast + GradScaler, Triton kernels), GPU_CHECK_TRAIN_S seconds
if [ "${GPU_CHECK_TRAIN_S:-0}" -gt 0 ]; then
    demo=/tmp/stdd_train_demo
    (cd /tmp && timeout "$GPU_CHECK_TRAIN_S" bash -c "
        python3 -m stdd_fast.training.synthetic $demo/data &&
        python3 -c \"import stdd_fast; stdd_fast.save_checkpoint(stdd_fast.create_model('test-tiny'), '$demo/init.safetensors')\" &&
        python3 -m stdd_fast.training.train pretrained=$demo/init.safetensors train_csv=$demo/data/train.csv \
            prefix=$demo/data/videos classes=$demo/data/index2cls.json num_frames=4 batch_size=4 epochs=3 \
            warmup_epochs=1 base_lr=1e-3 precision=fp16 num_workers=0 device=cuda impl=triton average_start=1 \
            output_dir=$demo/run") 2>&1 | tail -40 | tee "$OUT/train_gpu.log"
fi
exit "$status"
