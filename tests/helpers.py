"""What many tests share that is not a fixture: real stores and runs made without training,
tiny extraction settings, reference checkpoints, tolerances and readers of what runs write.

Test modules import these (``from helpers import random_store``); conftest.py keeps the fixtures
and builds some of them from here. bench/ scripts import them too, with tests/ on ``sys.path``.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class MixedFolder:
    """A `list` dataset whose list names good videos and every kind of broken one."""

    root: Path
    list_file: Path
    labels_file: Path
    good: tuple[str, ...]
    broken: tuple[str, ...]


def write_broken_videos(root: Path) -> list[str]:
    """Write one file of each broken kind under ``root``; return their relative paths."""
    from mote.pipeline.data.synthetic import write_numbered_video

    broken = root / "broken"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "empty.mp4").write_bytes(b"")
    (broken / "random.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    (broken / "text.mp4").write_text("this is not a video\n" * 50)
    (broken / "folder.mp4").mkdir(exist_ok=True)
    whole = write_numbered_video(broken / "whole.mp4", 120, size=(64, 48))
    data = whole.read_bytes()
    (broken / "truncated.mp4").write_bytes(data[: len(data) // 2])
    whole.unlink()
    write_numbered_video(broken / "zero_frames.mp4", 0, size=(64, 48))
    names = [
        "missing.mp4",
        "empty.mp4",
        "random.mp4",
        "text.mp4",
        "folder.mp4",
        "truncated.mp4",
        "zero_frames.mp4",
    ]
    return [f"broken/{name}" for name in names]


def tiny_extract_config(data, out: Path, **overrides):
    """An ExtractConfig for a `list` dataset (anything with root, list_file, labels_file)
    encoded by mote-tiny with seeded random weights on the CPU, decoding in this process."""
    from mote.stages.extract import ExtractConfig

    settings = dict(
        dataset="list",
        out=out,
        root=data.root,
        list_file=data.list_file,
        labels_file=data.labels_file,
        model="mote-tiny",
        pretrained="none",
        devices="cpu",
        decode_workers=0,
    )
    settings.update(overrides)
    return ExtractConfig(**settings)


HOLD_RUN_CLAIM = """
import sys
from mote.pipeline.runs.run_folder import RunClaim
claim = RunClaim.acquire(sys.argv[1])
print("claimed", flush=True)
sys.stdin.read()
claim.release()
"""


@contextmanager
def held_by_another_process(folder: Path):
    """A live process holding the run claim on ``folder`` until the block ends; yields its
    pid."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_RUN_CLAIM, str(folder)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "claimed"
        yield holder.pid
    finally:
        holder.communicate("", timeout=60)


def smoke_bench(script: str, folder: Path, *extra: str) -> tuple[dict, str]:
    """Run ``bench/<script>`` at its ``--smoke`` size in a process of its own: the figures it
    writes with ``--json``, and what it printed (the run must succeed; its stderr tail is the
    failure message)."""
    import json
    import subprocess

    out = folder / f"{Path(script).stem}.json"
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[1] / "bench" / script)]
        + ["--smoke", "--json", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def random_store(
    path: Path,
    ids: list[str],
    labels: list[int],
    class_names: tuple[str, ...],
    *,
    dim: int = 64,
    views: tuple[int, int] = (1, 1),
    model: str = "mote-tiny",
    dataset: str = "list",
    split: str = "test",
    seed: int = 0,
):
    """A real store of random features (fp16, 8 frames of ``dim``) for these videos, every
    one done: what scoring tests need without decoding a video."""
    from mote.cache_schema.feature_store import FeatureStore, StoreSpec, VideoResult

    clips, crops = views
    spec = StoreSpec(
        model=model,
        pretrained="none",
        weights_id="random:seed=0",
        dim=dim,
        frames=8,
        clips=clips,
        crops=crops,
        sampling="eval",
        sampling_seed=0,
        preprocess={"size": 64, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic"},
        dataset=dataset,
        split=split,
        class_names=tuple(class_names),
        tool_version="test",
    )
    rng = np.random.default_rng(seed)
    text = rng.standard_normal((len(class_names), dim)).astype(np.float32)
    store = FeatureStore.create(path, spec, ids, labels, text, chunk_videos=16)
    views_n = clips * crops
    for chunk in range(store.n_chunks):
        start, stop = store.chunk_range(chunk)
        results = [
            VideoResult(
                i,
                rng.standard_normal((views_n, 8, dim)).astype(np.float16),
                np.zeros((views_n, 8), np.int32),
                8,
            )
            for i in range(start, stop)
        ]
        store.write_chunk(chunk, results)
    return store


def random_run(path: Path, seed: int = 0, layers: int = 2, texts: int = 40) -> Path:
    """A run folder of a randomly initialised MoTE over mote-tiny features (D = 64, seeded
    random CLIP weights) with a fine-tuning text bank of ``texts`` rows, so TFM works: what
    scoring tests need without training."""
    from mote.pipeline.runs.run_files import write_json
    from mote.pipeline.runs.run_folder import save_model
    from mote.pipeline.temporal.mote_model import MoTE
    from mote.pipeline.temporal.temporal_config import default_config

    path.mkdir(parents=True)
    torch.manual_seed(seed)
    model = MoTE(default_config(64, layers=layers))
    model.set_finetune_text(torch.randn(texts, 64))
    save_model(path / "model.safetensors", model)
    clip = {"model": "mote-tiny", "weights_id": "random:seed=0", "dim": 64}
    write_json(path / "config.json", {"arch": "mote", "clip": clip})
    return path


def motion_split_stores(work: Path, videos_per_class: int, val_views: str | None = "3x1"):
    """Motion videos split 3:1 per class (``demo.split_list``) and extracted by mote-tiny: a
    train store of 2 random clips per video and, unless ``val_views`` is None, a val store of
    evenly spaced clips. Returns (dataset, train store, val store or None, val list)."""
    from mote.pipeline.data.synthetic import write_motion_dataset
    from mote.stages import demo, extract

    data = write_motion_dataset(work / "videos", videos_per_class=videos_per_class, seed=3)
    train_list, val_list = demo.split_list(data.list_file)
    train, val = work / "train.zarr", work / "val.zarr"
    extract.run(
        tiny_extract_config(
            data, train, list_file=train_list, views="2x1", sampling="train", decode_workers=2
        )
    )
    if val_views is None:
        return data, train, None, val_list
    extract.run(
        tiny_extract_config(data, val, list_file=val_list, views=val_views, decode_workers=2)
    )
    return data, train, val, val_list


def train_tiny_run(store: Path, run: Path) -> Path:
    """A 2-layer MoTE trained 60 epochs on a mote-tiny store on the CPU: the search tests' run
    (bench/search_scores.py trains its runs so too)."""
    from mote.stages import train_temporal

    train_temporal.run(
        train_temporal.TrainConfig(
            train=store, out=run, layers=2, epochs=60, warmup_epochs=5, batch_size=8,
            micro_batches=1, lr=1e-3, clip_lr_ratio=1.0, device="cpu",
        )
    )  # fmt: skip
    return run


# Max |weight difference| of a run on several processes (torchrun, gloo) and one with the same
# global batch: the same sums in another order (measured ~1e-7 for train-temporal, 2.6e-7 for
# finetune-e2e, attention key biases aside: see comparable_weights).
DDP_TOLERANCE = 1e-5


def comparable_weights(weights: dict) -> dict:
    """Weights of two runs that should agree, minus what only rounding noise moves.

    The attention key bias shifts every score of a query equally, so softmax ignores it: its
    true gradient is 0, its computed one is rounding noise, and Adam (g / sqrt(v)) turns noise
    into lr-sized steps. Two runs that sum the same numbers in another order (fused vs one by
    one, 1 vs 2 processes) differ there and nowhere else; keep the query and value biases.
    """
    out = {}
    for key, value in weights.items():
        if key.endswith("attn.in_proj_bias"):
            d = len(value) // 3
            value = torch.cat([value[:d], value[2 * d :]])
        out[key] = value
    return out


def worker_normalised(clips: torch.Tensor, spec) -> torch.Tensor:
    """uint8 (..., S, S, 3) clips as the decode workers normalised them before clips stayed
    uint8 to the device: the old ``transforms.normalize`` body (mean/std built at each call, a
    division by the Python number 255) on the CPU, a golden the device path must equal."""
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1)
    chw = clips.cpu().movedim(-1, -3).to(torch.float32).div_(255.0)
    return chw.sub_(mean).div_(std).contiguous()


def write_reference_checkpoint(ckpt: Path) -> tuple[dict, Any]:
    """A checkpoint of mote-tiny in the reference implementation's layout, its visual tower
    'fine-tuned' (seeded noise), written to ``ckpt``: (the tuned visual weights, the untuned
    CLIP)."""
    from mote.pipeline.clip.build import build_clip
    from mote.pipeline.temporal.mote_model import MoTE
    from mote.pipeline.temporal.temporal_config import default_config

    original = build_clip("mote-tiny", "none", device="cpu", seed=0)
    g = torch.Generator().manual_seed(0)
    tuned = {
        k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in original.model.state_dict().items()
        if k.startswith("visual.")
    }
    torch.manual_seed(1)
    temporal = MoTE(default_config(64, layers=2))
    temporal.set_finetune_text(torch.randn(400, 64))
    state = temporal.state_dict()
    fusion = {f"module.{k}": v for k, v in state.items() if k != "logit_scale"}
    fusion["module.spe_cls_feature"] = fusion.pop("module.finetune_text")
    torch.save(
        {
            "epoch": 3,
            "model_state_dict": {**tuned, "logit_scale": state["logit_scale"]},
            "fusion_model_state_dict": fusion,
            "optimizer_state_dict": {},
        },
        ckpt,
    )
    return tuned, original


def tensorboard_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of ``RUN/tensorboard/`` as TensorBoard's own reader reads it: tag -> its
    (step, value) events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


S3_BUCKET = "mote-test"
S3_ENV = {  # fake credentials: the loopback server accepts any
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def merged_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The deployable single-FFN module of a ``MoTE`` (spec 3.2, 11.4): experts replaced by
    their uniform average, named like the reference's baseline (``mlp.c_fc`` / ``mlp.c_proj``).
    Holds the temporal module only (no logit_scale, text bank or fusion vectors)."""
    if model.architecture.pools_only:
        return {}
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.startswith(("frame_position_embeddings.", "transformer.")) and (
                ".mlp." not in name
            ):
                out[name] = tensor.detach().clone()
        for index, block in enumerate(model.transformer.resblocks):
            w_up, b_up, w_dn, b_dn = block.mlp.merged_weights(block.mlp.merge_coefficients())
            prefix = f"transformer.resblocks.{index}.mlp."
            out[prefix + "c_fc.weight"], out[prefix + "c_fc.bias"] = w_up, b_up
            out[prefix + "c_proj.weight"], out[prefix + "c_proj.bias"] = w_dn, b_dn
    return out
