"""The end-to-end model (CLIP visual tower + MoTE + frozen text) on mote-tiny and real decoded
video clips: gradient checkpointing, gradients, parameter groups, warm start, text reuse, and
the closed loop (save a tuned run, re-extract with it and evaluate through the CLI)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import zarr
from helpers import worker_normalised

from mote.cache_schema.store_errors import StoreMismatch
from mote.pipeline.clip.build import build_clip
from mote.pipeline.data.datasets import load_dataset
from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.e2e_run import run_config, save_end_to_end, warm_start
from mote.pipeline.runs.run_config import RunClip, RunConfig
from mote.pipeline.runs.run_folder import RunFolder, load_run
from mote.pipeline.temporal.e2e import EndToEnd, build_end_to_end, text_from_store
from mote.pipeline.temporal.mote_model import MoTE
from mote.pipeline.temporal.temporal_config import default_config
from mote.pipeline.train.clip_batches import FailureLog, predict_clips
from mote.pipeline.train.distributed import DistContext
from mote.pipeline.video.clips import ClipDataset, make_loader
from mote.pipeline.video.decode_pool import DecodeTask, decode_one
from mote.pipeline.video.transforms import normalize

FRAMES = 4


def tiny_config(dim: int):
    return default_config(dim, layers=2)


def build_tiny(class_names, **kw) -> EndToEnd:
    return build_end_to_end(
        "mote-tiny", "none", class_names, device="cpu", seed=0, config=tiny_config, **kw
    )


@pytest.fixture(scope="module")
def names(motion_data):
    return list(motion_data.class_names)


@pytest.fixture(scope="module")
def model(names) -> EndToEnd:
    return build_tiny(names)


@pytest.fixture(scope="module")
def clips(motion_data):
    """uint8 (4, T, 64, 64, 3) clips of four real videos (training sampling) and their labels."""
    lines = motion_data.list_file.read_text().splitlines()
    picked = [lines[i] for i in (0, 3, 6, 9)]
    views, labels = [], []
    for i, line in enumerate(picked):
        path, label = line.rsplit(" ", 1)
        task = DecodeTask(i, str(motion_data.root / path), FRAMES, 1, 1, 64, mode="train", seed=i)
        video = decode_one(task)
        assert video.ok, video.reason
        views.append(torch.from_numpy(video.views[0]))
        labels.append(int(label))
    return torch.stack(views), torch.tensor(labels)


def forced(model: EndToEnd) -> dict:
    """Routing and WMR temperatures fixed, so two passes draw the same."""
    layers = model.temporal.cfg.layers
    return {"experts": [3, 1][:layers], "temperatures": [0.6, float("inf")][:layers]}


def test_the_text_tower_is_gone_and_the_bank_is_a_frozen_buffer(model, names):
    state = model.state_dict()
    assert not any(k.startswith(("transformer.", "token_embedding")) for k in state)
    assert all(k.startswith(("visual.", "temporal.", "class_text")) for k in state)
    assert "class_text" not in dict(model.named_parameters())
    assert model.class_text.dtype == torch.float32 and model.class_text.shape == (len(names), 64)
    by_clip = build_clip("mote-tiny", "none", device="cpu", seed=0).class_text_embeddings(names)
    torch.testing.assert_close(model.class_text, by_clip)
    torch.testing.assert_close(model.temporal.finetune_text, by_clip)
    assert model.visual.training and all(p.requires_grad for p in model.visual.parameters())


def test_encode_frames_takes_uint8_or_normalised_clips(model, clips):
    frames, _ = clips
    a = model.encode_frames(frames)
    b = model.encode_frames(worker_normalised(frames, model.preprocess))
    assert a.shape == (4, FRAMES, 64) and a.dtype == torch.float32
    assert torch.equal(a, b)  # normalised here = the floats the decode workers used to send
    assert torch.equal(a, model.encode_frames(normalize(frames, model.preprocess, torch.float32)))
    # the same embeddings the extraction encoder gives each frame
    plain = build_clip("mote-tiny", "none", device="cpu", seed=0)
    torch.testing.assert_close(a[1], plain.encode_frames(frames[1]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="do not fit mote-tiny"):
        model.encode_frames(torch.zeros(2, FRAMES, 3, 32, 32))


def test_grad_checkpointing_gives_the_same_loss_and_gradients(model, clips):
    frames, labels = clips
    results = []
    for on in (False, True):
        net = copy.deepcopy(model)
        net.set_grad_checkpointing(on)
        assert net.visual.transformer.grad_checkpointing is on
        losses = net.training_losses(frames, labels, **forced(net))
        losses["total"].backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters()}
        results.append((losses["total"].detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-5)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("amp", [False, True])
def test_a_step_on_uint8_clips_equals_one_on_worker_normalised_floats(model, clips, amp):
    """The numbers of training do not change now that clips reach the model as uint8: the
    losses and every gradient are bit for bit those of the old float clips (bf16 autocast
    too, whose casts come after the fp32 normalisation)."""
    frames, labels = clips
    results = []
    for inputs in (frames, worker_normalised(frames, model.preprocess)):
        net = copy.deepcopy(model)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            losses = net.training_losses(inputs, labels, **forced(net))
        losses["total"].backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        results.append((losses["total"].detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b) and grads_a.keys() == grads_b.keys()
    assert all(torch.equal(grads_a[name], grads_b[name]) for name in grads_a)


def test_every_trainable_parameter_gets_a_gradient_with_wmr(model, clips):
    frames, labels = clips
    net = copy.deepcopy(model)
    assert net.temporal.cfg.wmr
    net(frames, labels, torch.Generator().manual_seed(0))["total"].backward()
    missing = [
        name
        for name, p in net.named_parameters()
        if p.requires_grad and (p.grad is None or not bool(p.grad.abs().sum() > 0))
    ]
    assert not missing
    assert net.logit_scale.grad is not None and net.class_text.grad is None


def test_param_groups_split_every_parameter_once(model):
    groups = model.param_groups()
    temporal, clip = ({id(p) for p in groups[k]} for k in ("temporal", "clip"))
    everything = {id(p) for p in model.parameters()}
    assert temporal.isdisjoint(clip) and temporal | clip == everything
    assert id(model.logit_scale) in clip
    assert {id(p) for p in model.visual.parameters()} <= clip
    assert {id(p) for n, p in model.temporal.named_parameters() if n != "logit_scale"} == temporal


def adamw(net: EndToEnd, clip_lr: float) -> torch.optim.AdamW:
    groups = net.param_groups()
    return torch.optim.AdamW(
        [{"params": groups["temporal"], "lr": 1e-3}, {"params": groups["clip"], "lr": clip_lr}],
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.2,
    )


@pytest.mark.parametrize("clip_lr", [0.0, 1e-3])
def test_clip_lr_zero_leaves_the_visual_weights_bit_identical(model, clips, clip_lr):
    frames, labels = clips
    net = copy.deepcopy(model)
    before_visual = {k: v.clone() for k, v in net.visual.state_dict().items()}
    before_scale = net.logit_scale.detach().clone()
    before_temporal = {k: v.clone() for k, v in net.temporal.state_dict().items()}
    optimizer = adamw(net, clip_lr)
    for step in range(2):
        optimizer.zero_grad()
        net(frames, labels, torch.Generator().manual_seed(step))["total"].backward()
        optimizer.step()
    after = net.visual.state_dict()
    same = [k for k in before_visual if torch.equal(before_visual[k], after[k])]
    if clip_lr == 0:
        assert same == list(before_visual)  # every tensor, bit for bit
        assert torch.equal(net.logit_scale.detach(), before_scale)
    else:
        assert not same and not torch.equal(net.logit_scale.detach(), before_scale)
    moved = [
        k
        for k, v in net.temporal.state_dict().items()
        if k not in ("finetune_text", "logit_scale") and "fusion" not in k
        if not torch.equal(v, before_temporal[k])
    ]
    assert len(moved) > 10


def write_temporal_run(path, layers: int = 2, clip_model: str = "mote-tiny", seed: int = 5):
    """A run folder as train-temporal writes it: MoTE weights + text bank, config with "clip"."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = MoTE(default_config(64, layers=layers, logit_scale_init=3.0))
    head.set_finetune_text(torch.randn(5, 64))
    folder = RunFolder(path)
    folder.create()
    folder.save_model(head)
    folder.write_config(
        RunConfig("train-temporal", clip=RunClip(clip_model, "none", "random:seed=0"))
    )
    return head


def test_init_run_loads_the_head_and_logit_scale(model, tmp_path):
    head = write_temporal_run(tmp_path / "tt")
    net = copy.deepcopy(model)
    bank = net.class_text.clone()
    info = warm_start(net, tmp_path / "tt")
    assert info["logit_scale"] == pytest.approx(3.0)
    own = net.temporal.state_dict()
    for name, value in head.state_dict().items():
        if name != "finetune_text":
            assert torch.equal(own[name], value), name
    # the e2e text bank stays the model's own
    assert torch.equal(net.class_text, bank) and torch.equal(own["finetune_text"], bank)


def test_init_run_refuses_another_shape_or_clip(model, tmp_path):
    write_temporal_run(tmp_path / "deep", layers=3)
    with pytest.raises(ConfigError, match=r"layers 3 vs 2.*--layers 3") as caught:
        warm_start(copy.deepcopy(model), tmp_path / "deep")
    assert "\n" not in str(caught.value)
    write_temporal_run(tmp_path / "other", clip_model="ViT-B-16")
    with pytest.raises(ConfigError, match="trained on ViT-B-16 features"):
        warm_start(copy.deepcopy(model), tmp_path / "other")


def test_text_from_store_needs_the_same_weights_and_classes(
    model, names, motion_data, tmp_path, tiny_extract
):
    from mote.stages import extract

    same = tmp_path / "same.zarr"
    extract.run(tiny_extract(motion_data, same, limit=1))
    text = text_from_store(same, model.clip, names)
    torch.testing.assert_close(text, model.class_text, rtol=1e-5, atol=1e-5)
    built = build_tiny(names, text_from=same)
    torch.testing.assert_close(built.class_text, model.class_text, rtol=1e-5, atol=1e-5)

    other = tmp_path / "other.zarr"
    extract.run(tiny_extract(motion_data, other, limit=1, seed=1))
    with pytest.raises(ConfigError) as caught:
        text_from_store(other, model.clip, names)
    message = str(caught.value)
    assert "'random:seed=1'" in message and "'random:seed=0'" in message and "\n" not in message
    with pytest.raises(ConfigError, match="classes differ"):
        text_from_store(same, model.clip, list(reversed(names)))


def test_a_tuned_run_reextracts_and_evaluates_through_the_cli(
    model, clips, motion_data, tmp_path, mote_cli
):
    def cli(*args: str) -> str:
        """``mote ARGS`` through the real entry point in this process (an interpreter each
        would cost torch's and open_clip's imports); its stdout."""
        code, out, err = mote_cli(*args)
        assert code == 0, out + err
        return out

    frames, labels = clips
    net = copy.deepcopy(model)
    optimizer = adamw(net, clip_lr=1e-2)
    for step in range(2):
        optimizer.zero_grad()
        net(frames, labels, torch.Generator().manual_seed(step))["total"].backward()
        optimizer.step()
    run = tmp_path / "e2e"
    folder = RunFolder(run)
    folder.create()
    save_end_to_end(folder, net)
    folder.write_config(run_config(net, {}))

    loaded = load_run(run)
    torch.testing.assert_close(loaded.model.state_dict()["logit_scale"], net.logit_scale.detach())
    assert set(loaded.clip_state) == set(net.visual_state())

    data = [
        "--dataset", "list", "--root", str(motion_data.root),
        "--list", str(motion_data.list_file), "--labels", str(motion_data.labels_file),
        "--device", "cpu", "--decode-workers", "0", "--run", str(run),
    ]  # fmt: skip
    cli("extract", *data, "--out", str(tmp_path / "blend.zarr"))
    cli("extract", *data, "--no-blend", "--limit", "2", "--out", str(tmp_path / "raw.zarr"))

    # the store's features are the blended tuned tower's, and --no-blend the tuned tower's
    original = build_clip("mote-tiny", "none", device="cpu", seed=0).model.visual.state_dict()
    tuned = {k[len("visual.") :]: v for k, v in net.visual_state().items()}
    for store, blend in (("blend.zarr", 0.99), ("raw.zarr", 1.0)):
        group = zarr.open_group(tmp_path / store, mode="r")
        assert group.attrs["weights_id"].endswith(f"blend={blend:g}")
        tower = copy.deepcopy(net.visual).eval()
        tower.load_state_dict(
            {k: blend * v + (1 - blend) * original[k] if v.is_floating_point() else v
             for k, v in tuned.items()}
        )  # fmt: skip
        path = motion_data.root / str(group["video_ids"][1])
        video = decode_one(DecodeTask(1, str(path), 8, 1, 1, 64))
        with torch.no_grad():
            pixels = normalize(torch.from_numpy(video.views[0]), net.preprocess, torch.float32)
            expected = tower(pixels)  # (T, D)
        stored = torch.from_numpy(group["embeddings"][1, 0].astype(np.float32))
        torch.testing.assert_close(stored, expected, rtol=0, atol=2e-3)
        untouched = build_clip("mote-tiny", "none", device="cpu", seed=0)
        assert (
            untouched.encode_frames(torch.from_numpy(video.views[0])) - stored
        ).abs().max() > 1e-2

    result = json.loads(
        cli("evaluate", "--run", str(run), "--store", str(tmp_path / "blend.zarr"),
            "--device", "cpu", "--json")
    )  # fmt: skip
    assert result["n_videos"] == 24 and 0 <= result["top1"] <= 100
    assert result["same_classes_as_training"] is True
    split = f"{motion_data.list_file}:{motion_data.labels_file}"
    zs = cli(
        "zeroshot", "--run", str(run), "--dataset", "list", "--store",
        str(tmp_path / "blend.zarr"), "--split", split, "--device", "cpu",
    )  # fmt: skip
    assert "mean +- std" in zs
    report = json.loads(cli("report", str(run), "--out", str(tmp_path / "report"), "--json"))
    assert report["runs"][0]["source"] == "finetune-e2e"
    # evaluate scores with the blended weights (spec 7.4): the --no-blend store is refused
    with pytest.raises(StoreMismatch, match="weights_id"):
        from mote.stages import evaluate

        evaluate.run(evaluate.EvaluateConfig(run=run, store=tmp_path / "raw.zarr", device="cpu"))


def test_predict_scores_merged_in_fp32_and_keeps_the_mode(model, clips, names):
    frames, _ = clips
    net = copy.deepcopy(model).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, rho = net.predict(frames, tfm=True)
    assert net.training and logits.dtype == torch.float32 and logits.shape == (4, len(names))
    with torch.no_grad():
        e = net.encode_frames(frames)
        want, want_rho = net.temporal.predict(e, net.class_text, tfm=True)
    torch.testing.assert_close(logits, want)
    torch.testing.assert_close(rho, want_rho)
    assert float(logits.abs().max()) <= 1.0 + 1e-6  # plain cosines, no logit scale (spec 8)


def test_predict_clips_keeps_its_results_with_one_host_copy(model, mixed_folder, tmp_path):
    """Validation scores stay on the device until one copy at the end: the same CPU scores as
    scoring each batch of the old float clips and copying it back, broken videos listed."""
    val = load_dataset("list", "val", mixed_folder.list_file, mixed_folder.labels_file)
    clips = ClipDataset(val.items, mixed_folder.root, model.preprocess, FRAMES, "eval")
    loader = make_loader(clips, batch_size=5, workers=0, shuffle=False)
    folder = RunFolder(tmp_path / "run")
    folder.create()
    failures = FailureLog(folder, DistContext())
    scores, labels = predict_clips(model, loader, failures, epoch=0, tfm=True)

    want_scores, want_labels = [], []
    for batch in loader:
        if len(batch):
            floats = worker_normalised(batch.frames, model.preprocess)
            want_scores.append(model.predict(floats, tfm=True)[0].float().cpu())
            want_labels.append(batch.labels)
    assert scores.device.type == "cpu" and scores.dtype == torch.float32
    assert torch.equal(scores, torch.cat(want_scores))
    assert torch.equal(labels, torch.cat(want_labels))
    assert len(labels) == len(mixed_folder.good)
    assert failures.count["val"] == len(mixed_folder.broken)
    assert {row["video"] for row in folder.read_failures()} == set(mixed_folder.broken)
