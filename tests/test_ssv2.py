"""Something-Something v2 as it ships (three JSON files, ``<id>.webm`` videos) and spec 8.3's flip
rule: a flipped training clip of a left/right class takes its mirror class's label."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline.data.datasets import VideoItem, load_dataset
from mote.pipeline.data.synthetic import write_frames
from mote.pipeline.errors import AnnotationError, ConfigError
from mote.pipeline.video.augment import augment_clip
from mote.pipeline.video.clips import ClipDataset, ClipSample, item_rng
from mote.pipeline.video.decode import open_video
from mote.pipeline.video.flips import FlipRule
from mote.pipeline.video.sampling import sample_indices
from mote.pipeline.video.transforms import PreprocessSpec
from mote.stages import extract, finetune_e2e

# Official indices of the names the tests use (something-something-v2-labels.json is sorted by
# name); every other class gets a stand-in name, so the file has SSv2's 174 classes.
OFFICIAL = {
    0: "Approaching something with your camera",
    19: "Holding something next to something",
    70: "Pretending to pour something out of something, but something is empty",
    86: "Pulling something from left to right",
    87: "Pulling something from right to left",
    93: "Pushing something from left to right",
    94: "Pushing something from right to left",
    166: "Turning the camera left while filming something",
    167: "Turning the camera right while filming something",
}
NAMES = tuple(OFFICIAL.get(i, f"stand-in class {i}") for i in range(174))
TEMPLATES = {
    0: "Approaching [something] with your camera",
    19: "Holding [something] next to [something]",
    70: "Pretending to pour [something] out of [something], but [something] is empty",
    86: "Pulling [something] from left to right",
    93: "Pushing [something] from left to right",
    166: "Turning the camera left while filming [something]",
}
TRAIN = [("78687", 19), ("1001", 86), ("1002", 86), ("2003", 93), ("3004", 0)]
VALIDATION = [("5005", 70), ("5006", 166), ("5007", 86)]


@dataclass(frozen=True)
class Ssv2:
    root: Path  # the videos, <id>.webm
    labels: Path  # something-something-v2-labels.json, beside the split JSONs


def _entry(video: str, label: int) -> dict:
    template = TEMPLATES[label]
    return {
        "id": video,
        "label": template.replace("[something]", "a cup").lower(),
        "template": template,
        "placeholders": ["a cup"] * template.count("[something]"),
    }


def _ramp_clip(frames: int, seed: int) -> np.ndarray:
    """(frames, 48, 64, 3) uint8 growing brighter to the right (plus noise): any crop of it is
    brighter on its right, so a mirrored clip shows."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 230, 64)[None, None, :, None]
    noise = rng.integers(0, 16, size=(frames, 48, 64, 3))
    return (ramp + noise).astype(np.uint8)


@pytest.fixture(scope="module")
def ssv2(tmp_path_factory: pytest.TempPathFactory) -> Ssv2:
    """A tiny SSv2 in the official layout: VP9 .webm files written with PyAV, three JSONs."""
    base = tmp_path_factory.mktemp("ssv2")
    videos, labels_dir = base / "20bn-something-something-v2", base / "labels"
    labels_dir.mkdir()
    for n, (video, _) in enumerate(TRAIN + VALIDATION):
        write_frames(videos / f"{video}.webm", _ramp_clip(14, n), "libvpx-vp9", fps=12)
    labels = labels_dir / "something-something-v2-labels.json"
    labels.write_text(json.dumps({name: str(i) for i, name in enumerate(NAMES)}, indent=4))
    for split, rows in (("train", TRAIN), ("validation", VALIDATION)):
        entries = [_entry(video, label) for video, label in rows]
        (labels_dir / f"something-something-v2-{split}.json").write_text(json.dumps(entries))
    test = [{"id": "9009"}, {"id": "9010"}]
    (labels_dir / "something-something-v2-test.json").write_text(json.dumps(test))
    return Ssv2(videos, labels)


def test_splits_read_as_shipped_with_classes_from_the_templates(ssv2: Ssv2) -> None:
    train = load_dataset("ssv2", "train", labels_file=ssv2.labels)
    assert train.class_names == NAMES and train.num_classes == 174
    assert train.items == tuple(VideoItem(f"{video}.webm", label) for video, label in TRAIN)
    assert train.list_file == str(ssv2.labels.with_name("something-something-v2-train.json"))
    # Spec 8.3's pairs, found by name, sit at the indices the spec gives.
    assert train.flip == FlipRule(pairs=((86, 87), (93, 94), (166, 167)))
    val = load_dataset("ssv2", "validation", labels_file=ssv2.labels)
    assert [NAMES[item.label] for item in val.items] == [OFFICIAL[70], OFFICIAL[166], OFFICIAL[86]]
    explicit = ssv2.labels.with_name("something-something-v2-validation.json")
    assert load_dataset("ssv2", "validation", explicit, ssv2.labels).items == val.items


def test_test_split_and_bad_files_are_one_clear_line(ssv2: Ssv2, tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="split 'test'.*without labels.*--split validation"):
        load_dataset("ssv2", "test", labels_file=ssv2.labels)
    test_json = ssv2.labels.with_name("something-something-v2-test.json")
    with pytest.raises(AnnotationError, match="video 9009 has no 'template'"):
        load_dataset("ssv2", "validation", test_json, ssv2.labels)
    with pytest.raises(AnnotationError, match="needs --labels something-something-v2-labels"):
        load_dataset("ssv2", "train")
    with pytest.raises(AnnotationError, match="no split 'val'; valid splits: train, validation"):
        load_dataset("ssv2", "val", labels_file=ssv2.labels)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([{"id": "7", "template": "Juggling [something]"}]))
    with pytest.raises(AnnotationError, match="video 7: template class 'Juggling something'"):
        load_dataset("ssv2", "train", unknown, ssv2.labels)
    gap = tmp_path / "something-something-v2-labels.json"
    gap.write_text(json.dumps({"a": "0", "b": "2"}))
    with pytest.raises(AnnotationError, match="indices must run 0..1; 1 is missing"):
        load_dataset("ssv2", "train", unknown, gap)
    no_pairs = tmp_path / "labels.json"
    no_pairs.write_text(json.dumps({"Juggling something": "0"}))
    subset = load_dataset("ssv2", "train", unknown, no_pairs)  # read: nothing flips here
    with pytest.raises(AnnotationError, match="'Pulling something from left to right' is miss"):
        subset.flip  # noqa: B018 (a training run's lookup)


@pytest.fixture(scope="module")
def extracted(ssv2: Ssv2, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The validation split extracted with mote-tiny: the store and the command's summary."""
    out = tmp_path_factory.mktemp("ssv2-store") / "ssv2.zarr"
    summary = extract.run(
        extract.ExtractConfig(
            dataset="ssv2",
            out=out,
            root=ssv2.root,
            labels_file=ssv2.labels,
            model="mote-tiny",
            pretrained="none",
            devices="cpu",
            decode_workers=0,
            frames=4,
        )
    )
    return out, summary


def test_extract_stores_the_validation_split_with_its_class_ids(extracted) -> None:
    out, summary = extracted
    assert summary["n_done"] == 3 and summary["n_failed"] == 0 and summary["classes"] == 174
    store = FeatureStore.open(out)
    assert (store.spec.dataset, store.spec.split) == ("ssv2", "validation")
    assert store.video_ids == ("5005.webm", "5006.webm", "5007.webm")
    assert list(store.labels) == [70, 166, 86] and store.class_names == NAMES
    assert store.text_embeddings.shape == (174, 64)


def test_a_subset_without_the_flip_pairs_extracts_and_trains_with_flips_off(
    ssv2: Ssv2, tmp_path: Path
) -> None:
    """extract never flips, so an SSv2 subset lacking spec 8.3's left/right classes extracts;
    finetune-e2e flips, so it asks for the pairs (or --flip off), and trains with flips off."""
    kept = (OFFICIAL[0], OFFICIAL[19], OFFICIAL[70])
    labels = tmp_path / "subset" / "something-something-v2-labels.json"
    labels.parent.mkdir()
    labels.write_text(json.dumps({name: str(i) for i, name in enumerate(kept)}))
    rows = [_entry(video, label) for video, label in TRAIN + VALIDATION if label in (0, 19, 70)]
    split_file = labels.with_name("something-something-v2-train.json")
    split_file.write_text(json.dumps(rows))
    tiny = dict(model="mote-tiny", pretrained="none", frames=4)
    store = tmp_path / "subset.zarr"
    summary = extract.run(
        extract.ExtractConfig(
            dataset="ssv2", split="train", out=store, root=ssv2.root, labels_file=labels,
            devices="cpu", decode_workers=0, **tiny,
        )
    )  # fmt: skip
    assert summary["n_done"] == 3 and summary["classes"] == 3
    settings = dict(
        dataset="ssv2", root=ssv2.root, labels_file=labels, text_from=store, device="cpu",
        layers=1, workers=0, epochs=1, batch_size=3, warmup_epochs=0, **tiny,
    )  # fmt: skip
    with pytest.raises(AnnotationError, match="is missing.*or --flip off"):
        finetune_e2e.run(finetune_e2e.FinetuneConfig(out=tmp_path / "flips", **settings))
    run = tmp_path / "off"
    finetune_e2e.run(finetune_e2e.FinetuneConfig(out=run, flip="off", **settings))
    assert json.loads((run / "config.json").read_text())["train_sampling"]["flip"] == "off"


def _tiny_spec() -> PreprocessSpec:
    import open_clip

    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    return PreprocessSpec(size=64, mean=tuple(mean), std=tuple(std))


def _expected(ssv2: Ssv2, dataset: ClipDataset, epoch: int, index: int, flip: bool):
    """Decode and augment item ``index`` as the spec says, from its own generator."""
    rng = item_rng(dataset.seed, epoch, index)
    with open_video(ssv2.root / dataset.videos[index]) as video:
        indices = sample_indices(video.num_frames, dataset.frames, 1, "train", rng)[0]
        frames = video.get(indices)
    return augment_clip(frames, 64, rng, flip=flip)


def test_flipped_clips_of_a_left_right_class_take_the_mirror_label(ssv2: Ssv2) -> None:
    train = load_dataset("ssv2", "train", labels_file=ssv2.labels)
    dataset = ClipDataset(train.items, ssv2.root, _tiny_spec(), 4, "train", 3, flip=train.flip)
    seen: dict[tuple[int, bool], int] = {}
    for epoch in range(8):
        for index, item in enumerate(train.items):
            sample = dataset[(epoch, index)]
            assert isinstance(sample, ClipSample)
            clip, params = _expected(ssv2, dataset, epoch, index, flip=True)
            assert torch.equal(sample.frames, torch.from_numpy(clip))
            mirror = {86: 87, 93: 94}.get(item.label, item.label)
            assert sample.label == (mirror if params.flip else item.label)
            seen[(item.label, params.flip)] = sample.label
            # the decoded pixels agree: a flipped clip is brighter on its left
            column = sample.frames.float().mean(dim=(0, 1, 3))  # (W,)
            assert bool(column[:32].mean() > column[32:].mean()) == params.flip
    assert seen[(86, True)] == 87 and seen[(86, False)] == 86
    assert seen[(93, True)] == 94 and seen[(19, True)] == 19 and seen[(0, True)] == 0
    # the same seed draws the same flips and labels; another seed draws others
    again = ClipDataset(train.items, ssv2.root, _tiny_spec(), 4, "train", 3, flip=train.flip)
    other = ClipDataset(train.items, ssv2.root, _tiny_spec(), 4, "train", 4, flip=train.flip)
    labels = [dataset[(e, 1)].label for e in range(8)]
    assert labels == [again[(e, 1)].label for e in range(8)]
    assert labels != [other[(e, 1)].label for e in range(8)]


def test_flips_off_never_mirror_and_keep_every_other_draw(ssv2: Ssv2) -> None:
    train = load_dataset("ssv2", "train", labels_file=ssv2.labels)
    off = ClipDataset(train.items, ssv2.root, _tiny_spec(), 4, "train", 3, flip=FlipRule(False))
    flipped_somewhere = False
    for epoch in range(6):
        sample = off[(epoch, 1)]
        clip, params = _expected(ssv2, off, epoch, 1, flip=True)
        unflipped, kept = _expected(ssv2, off, epoch, 1, flip=False)
        flipped_somewhere |= params.flip
        assert not kept.flip and kept.gray == params.gray and kept.box == params.box
        assert sample.label == 86 and torch.equal(sample.frames, torch.from_numpy(unflipped))
    assert flipped_somewhere  # the draw did flip; the rule stopped it


def test_finetune_records_the_rule_and_checks_a_flag(ssv2: Ssv2, extracted, tmp_path) -> None:
    settings = dict(
        text_from=extracted[0],  # the store's 174 class embeddings: no text encoding here
        dataset="ssv2",
        root=ssv2.root,
        labels_file=ssv2.labels,
        model="mote-tiny",
        pretrained="none",
        device="cpu",
        frames=4,
        layers=1,
        workers=0,
        epochs=1,
        batch_size=5,
        warmup_epochs=0,
    )
    run = tmp_path / "run"
    finetune_e2e.run(finetune_e2e.FinetuneConfig(out=run, **settings))
    config = json.loads((run / "config.json").read_text())
    assert config["train_sampling"]["flip"] == "86:87,93:94,166:167"
    assert config["datasets"]["train"]["name"] == "ssv2"
    with pytest.raises(ConfigError, match="--flip pair 3:174: training list .* has 174 classes"):
        finetune_e2e.run(finetune_e2e.FinetuneConfig(out=tmp_path / "x", flip="3:174", **settings))
