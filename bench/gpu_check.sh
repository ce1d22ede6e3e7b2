#!/usr/bin/env bash
# The one script a lent GPU runs (issues 14, 29): every CUDA path of mote once, with its figures,
# inside one deadline on one H100/H200 with a 16-core host and no network. It first checks that
# mote imports and CUDA is there (else one line and exit 3); each step then logs to its own file
# in a /tmp work folder and never stops the next; each step's limit is the least of its own cap and
# what is left of --budget (less a reserve for the summary). After every step the summary is
# rewritten under the output folder: summary.md (the table), summary.json and logs.txt (the
# logs' tails), capped at about 5 MB together; stores, videos and traces stay in /tmp.
#
#   source .whl/prelude.sh && bash bench/gpu_check.sh --budget 540     # on the GPU machine
#   bash bench/gpu_check.sh --device cpu --tiny --budget 120           # CPU twin, tiny sizes (CI)
#
# Options: --device cuda|cpu (default cuda), --tiny (small sizes, mote-tiny), --budget SECONDS
# (default 540), --only STEP,STEP (and environment; the others show as "skipped: not selected"),
# --out DIR (default $OUT, else a folder in the work folder). PYTHON picks the interpreter.
# Exit: 0 all ran ok, 1 some step failed, was cut or skipped, 3 no mote or no CUDA.
set -u
device=cuda tiny=0 budget=540 only="" out=${OUT:-}
while [ $# -gt 0 ]; do
  case $1 in
    --device) device=$2; shift 2 ;;
    --tiny) tiny=1; shift ;;
    --budget) budget=$2; shift 2 ;;
    --only) only=,$2,; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
started=$SECONDS
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/mote-gpu-check.XXXXXX")  # everything big lives here
out=${out:-$work/out}
mkdir -p "$out" "$work/logs"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
reserve=15  # seconds kept for the kill grace (timeout -k 10) and the last summary
cores=$(nproc)
workers=$(( cores < 16 ? cores : 16 ))

if [ "$tiny" = 1 ]; then
  clip=mote-tiny dim=64 wide=64 videos=12 train_videos=128 batch=32 e2e_videos=8 e2e_batch=4
  frames=4 devices=cpu,cpu gpus=2 scaling_videos=384 ddp_worlds=2
  staging=(--batch 8 --batches 4) decoding=(--size 160x120 --frames-per-video 24 --repeats 1)
  gpu_decoder=pyav  # the CPU twin of --decoder nvdec: the same PyAV path, decoding on the CPU
  clips=(--video-frames 16 --video-size 160x120)  # generated videos: a fraction to write and decode
else
  clip=ViT-B-16 dim=512 wide=768 videos=200 train_videos=20000 batch=192 e2e_videos=64
  e2e_batch=16 frames=8 devices=all scaling_videos=768 clips=()
  staging=(--batch 256 --batches 40) decoding=(--size 1280x720 --frames-per-video 300)
  gpu_decoder=nvdec
  gpus=$(nvidia-smi -L 2>/dev/null | wc -l); [ "$gpus" -ge 1 ] || gpus=1
  # NCCL refuses two ranks on one GPU ("Duplicate GPU detected"): one GPU runs W=1 under torchrun.
  ddp_worlds=$gpus
fi

STEPS=(environment extract_devices extract_dask staging decode extract_cpu_decode
       extract_gpu_decode train_b16 train_l14 sync scaling finetune_e2e predict search profile
       graphed graphed_ddp)
printf '%s\n' "${STEPS[@]}" > "$work/plan.txt"
: > "$work/steps.tsv"

# cap SECONDS: a step's own limit on the GPU, scaled to the budget (tiny: the budget decides).
cap() {
  if [ "$tiny" = 1 ]; then echo 600; else echo $(( $1 * budget / 540 )); fi
}

# record NAME RC SECONDS LIMIT NOTE: one row of steps.tsv, then, for a step that ran, the summary
# is rewritten (a step that did not run changes no figure; finish writes the last summary).
record() {
  printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$work/steps.tsv"
  [ "$2" = - ] || "$py" "$here/gpu_check_summary.py" "$work" "$out" > /dev/null 2>&1
}

# step NAME CAP COMMAND...: run it under the lesser of CAP and what is left, log in the work folder.
step() {
  local name=$1 limit; limit=$(cap "$2"); shift 2
  if [ -n "$only" ] && [ "$name" != environment ] && [[ $only != *",$name,"* ]]; then
    record "$name" - 0 0 unselected; return
  fi
  local left=$(( budget - (SECONDS - started) - reserve )) note=ran
  if [ "$left" -lt 5 ]; then record "$name" - 0 0 no_time; return; fi
  if [ "$left" -le "$limit" ]; then limit=$left note=deadline; fi
  echo "== $name (limit ${limit}s): $*" >&2
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" > "$work/logs/$name.log" 2>&1
  local rc=$?
  if [ "$note" = deadline ] && { [ "$rc" = 124 ] || [ "$rc" = 137 ]; }; then note=cut; fi
  [ "$note" = deadline ] && note=ran
  record "$name" "$rc" "$((SECONDS - start))" "$limit" "$note"
  [ "$rc" = 0 ] || [ "$name" = environment ] \
    || { echo "   $name: rc $rc ($note), see logs.txt" >&2; tail -3 "$work/logs/$name.log" >&2; }
}

# finish CODE: print the table, exit with CODE (or 1 when a step did not run ok).
finish() {
  "$py" "$here/gpu_check_summary.py" "$work" "$out"
  local status=$?
  echo "work folder (stores, videos, full logs, trace): $work; summary in $out" >&2
  exit $(( $1 ? $1 : status ))
}

step environment 60 "$py" "$here/gpu_check_env.py" --device "$device"
if [ "$(cut -f2 "$work/steps.tsv" | head -1)" != 0 ]; then  # no mote or no CUDA: one line, stop
  grep '^gpu_check:' "$work/logs/environment.log" >&2 || tail -5 "$work/logs/environment.log" >&2
  for name in "${STEPS[@]:1}"; do record "$name" - 0 0 no_environment; done
  finish 3
fi

# Stage one: every device from the one decode pool, then one dask worker per GPU.
step extract_devices 60 "$py" "$here/extract.py" --videos "$videos" --workers "$workers" \
  --model "$clip" --pretrained none --devices "$devices" --frames "$frames" --no-rss \
  "${clips[@]}" --workdir "$work/extract" --json "$work/extract_devices.json"
data="$work/extract/videos"
step extract_dask 45 "$py" -m mote.stages extract --dataset list --root "$data" \
  --list "$data/list.txt" --labels "$data/labels.csv" --model "$clip" --pretrained none \
  --frames "$frames" --dask "local:$gpus" --out "$work/dask.zarr" --overwrite --json

# The encoder's host side: pinned staging and the copy on a side stream against the plain copy.
step staging 30 "$py" "$here/staging.py" --device "$device" --model "$clip" --pretrained none \
  "${staging[@]}" --json "$work/staging.json"
# Decoding: frames/s and frame accuracy per backend (NVDEC on CUDA), then extract videos/s with
# CPU decoding and with GPU decoding on the same videos.
step decode 45 "$py" "$here/decode_backends.py" --device "${device%%:*}" "${decoding[@]}" --markdown
for decoder in auto "$gpu_decoder"; do
  name=extract_cpu_decode; [ "$decoder" = auto ] || name=extract_gpu_decode
  step "$name" 30 "$py" -m mote.stages extract --dataset list --root "$data" \
    --list "$data/list.txt" --labels "$data/labels.csv" --model "$clip" --pretrained none \
    --frames "$frames" --decoder "$decoder" --out "$work/$name.zarr" --overwrite --json
done

# Stage two eager: whole epochs per arch (fused vs one by one), B/16 and L/14 widths.
step train_b16 45 "$py" "$here/train_temporal.py" --sections epochs --device "$device" \
  --dim "$dim" --epoch-videos "$train_videos" --archs mote,transformer \
  --workdir "$work/train_b16" --json "$work/train_b16.json"
step train_l14 30 "$py" "$here/train_temporal.py" --sections epochs --device "$device" \
  --dim "$wide" --epoch-videos "$train_videos" --archs mote \
  --workdir "$work/train_l14" --json "$work/train_l14.json"
# No synchronisation inside a step or a validation batch (sync debug mode "error" on CUDA).
step sync 40 "$py" "$here/step_checks.py" sync --device "$device" --dim "$dim" \
  --videos "$train_videos" --batch "$batch" --workdir "$work/steps"
# Launches and host time per step and rank (eager).
step scaling 40 "$py" "$here/ddp_scaling.py" --device "$device" --dim "$dim" --worlds 1 \
  --videos "$scaling_videos" --epochs 1 --json "$work/scaling.json"

# Stage three: finetune-e2e with AMP and gradient checkpointing, against decode and steps alone.
e2e_memory=(); [ "$tiny" = 1 ] && e2e_memory=(--no-memory)
step finetune_e2e 60 "$py" "$here/finetune_e2e.py" --model "$clip" --pretrained none \
  --device "$device" --videos "$e2e_videos" --batch "$e2e_batch" --frames "$frames" \
  --epochs 2 --temporal-epochs 2 --workers "$workers" --grad-checkpointing "${e2e_memory[@]}" \
  "${clips[@]}" --workdir "$work/e2e" --json "$work/finetune_e2e.json"
video=$(find "$work/e2e/videos" -name '*.mp4' 2>/dev/null | sort | head -1)
step predict 25 "$py" -m mote.stages predict --run "$work/e2e/e2e_run" --device "$device" \
  --json "${video:-missing.mp4}"

# Exact top-k search over 10k-1M synthetic embeddings on the device (fp16 rows on the GPU).
search_sizes=(--sections exact --sizes 10000,100000,1000000)
[ "$tiny" = 1 ] && search_sizes=(--smoke --sections exact)
step search 30 "$py" "$here/search.py" --device "$device" "${search_sizes[@]}" \
  --json "$work/search.json"

# Host ms vs GPU ms per step over 20 steps (the profiler's trace stays in the work folder).
step profile 35 "$py" "$here/step_checks.py" profile --device "$device" --dim "$dim" \
  --videos $((20 * batch)) --batch "$batch" --workdir "$work/profile"

# Last, the least predictable: the compiled (graphed) step against eager, same weights and
# draws; then the compiled step under torchrun (W = the GPUs; CPU: 2 gloo processes).
step graphed 60 "$py" "$here/step_checks.py" graphed --device "$device" --dim "$dim" \
  --videos "$train_videos" --batch "$batch" --workdir "$work/steps"
step graphed_ddp 60 "$py" "$here/ddp_scaling.py" --device "$device" --dim "$dim" \
  --worlds "$ddp_worlds" --videos "$scaling_videos" --epochs 1 --compile \
  --json "$work/graphed_ddp.json"

finish 0
