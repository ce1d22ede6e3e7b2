#!/usr/bin/env bash
# The GPU checks and timings (run from the repo root on a CUDA machine, mote installed):
# stage-two data overhead and cache speed-up for ViT-B/16 and ViT-L/14 widths, stage-one
# pipeline ratios with ViT-B/16 on the GPU, and an end-to-end extract -> train -> evaluate on
# CUDA (fp16 encoder, AMP training). Writes JSON figures and logs to $OUT (default /tmp/mote-gpu).
set -euo pipefail
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
out=${OUT:-/tmp/mote-gpu}
mkdir -p "$out"
workers=${WORKERS:-$(nproc)}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"

# Issue 10: whole-epoch videos/s and aten ops/step per arch (fused vs --no-fused), and a run's
# fixed cost outside its epochs, on 20k-video stores; then the data-path figures.
python3 bench/train_temporal.py --device cuda --epoch-videos 20000 --fixed-arch mote \
    --workdir "$out/bench_b16" --json "$out/epochs_b16.json"
python3 bench/train_temporal.py --device cuda --epoch-videos 20000 --archs mote --compile \
    --sections epochs --workdir "$out/bench_b16" --json "$out/epochs_b16_compile.json"
python3 bench/train_temporal.py --device cuda --dim 768 --epoch-videos 20000 --archs mote \
    --sections epochs --workdir "$out/bench_l14" --json "$out/epochs_l14.json"
python3 bench/train_temporal.py --sections data --videos 20000 --dim 512 --steps 30 \
    --device cuda --json "$out/train_b16.json"
python3 bench/train_temporal.py --sections data --videos 20000 --dim 768 --steps 30 \
    --device cuda --json "$out/train_l14.json"
python3 bench/extract.py --videos 200 --workers "$workers" --model ViT-B-16 --pretrained none \
    --device cuda --no-rss --workdir "$out/bench" --json "$out/extract_b16.json"

# End to end on CUDA with ViT-B/16 (random weights: checks the CUDA paths, not accuracy).
data="$out/bench/videos"
mote extract --dataset list --root "$data" --list "$data/list.txt" --labels "$data/labels.csv" \
    --model ViT-B-16 --pretrained none --device cuda --views 2x1 --sampling train \
    --out "$out/e2e_train.zarr" --json > "$out/e2e_extract.json"
mote train-temporal --train "$out/e2e_train.zarr" --val "$out/e2e_train.zarr" \
    --out "$out/e2e_run" --epochs 3 --batch-size 64 --device cuda --json > "$out/e2e_train.json"
mote evaluate --run "$out/e2e_run" --store "$out/e2e_train.zarr" --device cuda --json \
    > "$out/e2e_eval.json"
echo "gpu checks done"
