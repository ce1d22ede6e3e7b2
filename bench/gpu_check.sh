#!/usr/bin/env bash
# The one script a lent GPU runs (issue 14): every CUDA path of mote once, with its figures, in
# about 10 minutes on one H100/H200 with a 16-core host. Each step logs to its own file and never
# stops the next (a failed step is a FAIL row); the compiled step runs last (its compile time is
# the least predictable). Ends with one summary table (also in $out/summary.txt).
#
#   source .whl/prelude.sh && bash bench/gpu_check.sh            # on the GPU machine
#   bash bench/gpu_check.sh --device cpu --tiny                  # CPU twin, tiny sizes (CI)
#
# Options: --device cuda|cpu (default cuda), --tiny (small sizes, mote-tiny), --out DIR
# (default $OUT/gpu_check or /tmp/mote-gpu-check). PYTHON picks the interpreter (default python3).
set -u
device=cuda tiny=0 out=${OUT:+$OUT/gpu_check}
while [ $# -gt 0 ]; do
  case $1 in
    --device) device=$2; shift 2 ;;
    --tiny) tiny=1; shift ;;
    --out) out=$2; shift 2 ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
out=${out:-/tmp/mote-gpu-check}
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$out"
: > "$out/steps.tsv"
cores=$(nproc)

if [ "$tiny" = 1 ]; then
  clip=mote-tiny dim=64 wide=64 videos=12 train_videos=128 batch=32 e2e_videos=8 e2e_batch=4
  frames=4 devices=cpu,cpu gpus=2 limit=300 scaling=1,2 scaling_videos=384
  clips=(--video-frames 16 --video-size 160x120)  # generated videos: a fraction to write and decode
else
  clip=ViT-B-16 dim=512 wide=768 videos=200 train_videos=20000 batch=192 e2e_videos=64
  e2e_batch=16 frames=8 devices=all limit=420 scaling=1 scaling_videos=768 clips=()
  gpus=$(nvidia-smi -L 2>/dev/null | wc -l); [ "$gpus" -ge 1 ] || gpus=1
fi
workers=$(( cores < 16 ? cores : 16 ))

# step NAME COMMAND...: run it under a time limit, log to $out/NAME.log, record rc and seconds.
step() {
  local name=$1; shift
  local start=$SECONDS
  echo "== $name: $*" >&2
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >> "$out/steps.tsv"
  [ "$rc" = 0 ] || { echo "   $name failed (rc $rc), see $out/$name.log" >&2; tail -5 "$out/$name.log" >&2; }
}

step environment "$py" -c "
import torch, mote.pipeline as p
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory // 2**30, 'GiB',
          'bf16', torch.cuda.is_bf16_supported())
print('SUMMARY', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"

# Stage one: every device from the one decode pool, then one dask worker per GPU.
step extract_devices "$py" "$here/extract.py" --videos "$videos" --workers "$workers" \
  --model "$clip" --pretrained none --devices "$devices" --frames "$frames" --no-rss \
  "${clips[@]}" --workdir "$out/extract" --json "$out/extract_devices.json"
data="$out/extract/videos"
step extract_dask "$py" -m mote.stages extract --dataset list --root "$data" \
  --list "$data/list.txt" --labels "$data/labels.csv" --model "$clip" --pretrained none \
  --frames "$frames" --dask "local:$gpus" --out "$out/dask.zarr" --overwrite --json

# Stage two eager: whole epochs per arch (fused vs one by one), B/16 and L/14 widths.
step train_b16 "$py" "$here/train_temporal.py" --sections epochs --device "$device" \
  --dim "$dim" --epoch-videos "$train_videos" --archs mote,transformer \
  --workdir "$out/train_b16" --json "$out/train_b16.json"
step train_l14 "$py" "$here/train_temporal.py" --sections epochs --device "$device" \
  --dim "$wide" --epoch-videos "$train_videos" --archs mote \
  --workdir "$out/train_l14" --json "$out/train_l14.json"
# No synchronisation inside a step or a validation batch (sync debug mode "error" on CUDA).
step sync "$py" "$here/step_checks.py" sync --device "$device" --dim "$dim" \
  --videos "$train_videos" --batch "$batch" --workdir "$out/steps"
# Launches and host time per step and rank.
step scaling "$py" "$here/ddp_scaling.py" --device "$device" --dim "$dim" --worlds "$scaling" \
  --videos "$scaling_videos" --epochs 1 --json "$out/scaling.json"

# Stage three: finetune-e2e with AMP and gradient checkpointing, against decode and steps alone.
e2e_memory=(); [ "$tiny" = 1 ] && e2e_memory=(--no-memory)
step finetune_e2e "$py" "$here/finetune_e2e.py" --model "$clip" --pretrained none \
  --device "$device" --videos "$e2e_videos" --batch "$e2e_batch" --frames "$frames" \
  --epochs 2 --temporal-epochs 2 --workers "$workers" --grad-checkpointing "${e2e_memory[@]}" \
  "${clips[@]}" \
  --workdir "$out/e2e" --json "$out/finetune_e2e.json"
video=$(find "$out/e2e/videos" -name '*.mp4' 2>/dev/null | sort | head -1)
step predict "$py" -m mote.stages predict --run "$out/e2e/e2e_run" --device "$device" \
  --json "${video:-missing.mp4}"

# Exact top-k search over 10k-1M synthetic embeddings on the device (fp16 rows on the GPU).
search_sizes=(--sections exact --sizes 10000,100000,1000000); [ "$tiny" = 1 ] && search_sizes=(--smoke --sections exact)
step search "$py" "$here/search.py" --device "$device" "${search_sizes[@]}" \
  --json "$out/search.json"

# Last: the compiled (graphed) step against eager, same weights and draws.
step graphed "$py" "$here/step_checks.py" graphed --device "$device" --dim "$dim" \
  --videos "$train_videos" --batch "$batch" --workdir "$out/steps"

"$py" "$here/gpu_check_summary.py" "$out" > "$out/summary.txt"
status=$?
cat "$out/summary.txt"
exit $status
