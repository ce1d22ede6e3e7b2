"""Benchmark (not a test): which ``mote search --score`` ranks videos best, on labelled
collections of generated motion videos (real MP4s, mote-tiny features, a trained MoTE run).

Each collection: a run trained on one data set's training split, then a store embedded by `mote
embed`. Every class name is a text query (``class_retrieval``: mAP, P@10 for each score against
the store's class text bank, and zero-shot top-1 from the same vectors); every video is also a
query by example against the rest (P@10 of the videos of its class, each score).

  fixture  tests/test_search_cli.py's: 8 classes, 12 videos each (seed 3), trained on 9 of each
           and searched over those 72 (the training videos themselves).
  fresh    the fixture's run over a fresh data set of its 8 classes, 10 videos each (seed 11),
           extracted with evaluation sampling: 80 videos (tests/test_search_cli.py's too).
  held-out-4  4 directions of a square: trained on 18 of 24 videos each (seed 5), searched over
           a fresh data set of 15 each (seed 11): 60 videos the run never saw.
  held-out-4c 4 directions of a circle, trained on 36 of 48 each, searched likewise.
  held-out-8  the fixture's 8 classes, trained likewise, searched over a fresh 20 each (160).

    python bench/search_scores.py --json scores.json   # a few minutes on 2 busy cores
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from benchlib import doc_parser

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import motion_split_stores, tiny_extract_config, train_tiny_run  # noqa: E402

from mote.cache_schema.embeddings import EmbeddingsFile
from mote.cache_schema.feature_store import FeatureStore
from mote.pipeline.data.synthetic import MOTION_CLASSES, write_motion_dataset
from mote.pipeline.runs.run_clip import clip_for_run
from mote.pipeline.runs.run_folder import load_run
from mote.pipeline.search.score_names import SCORES
from mote.pipeline.search.scoring import bank_stats, normalise
from mote.pipeline.search.search_evaluation import class_retrieval
from mote.pipeline.search.search_metrics import precision_at_k, ranking
from mote.stages import demo, embed, extract

DIRECTIONS = ("left", "right", "up", "down")


def trained_run(work: Path, data) -> Path:
    """A MoTE run on the data set's training split (3 of each 4 videos, 2 random clips each)."""
    train_list, _ = demo.split_list(data.list_file)
    store = work / "train.zarr"
    extract.run(
        tiny_extract_config(
            data, store, list_file=train_list, views="2x1", sampling="train", decode_workers=2
        )
    )
    return train_tiny_run(store, work / "run")


def searched(data, out: Path) -> Path:
    """A store of a data set, extracted with evaluation sampling (1 view)."""
    extract.run(tiny_extract_config(data, out, decode_workers=2))
    return out


def collections(work: Path) -> dict[str, tuple[Path, Path]]:
    """(run, store searched) per collection."""
    fixture, store, _, _ = motion_split_stores(work / "fixture", 12, val_views=None)
    run = train_tiny_run(store, work / "fixture" / "run")
    fresh = write_motion_dataset(work / "fresh", videos_per_class=10, seed=11)
    out = {"fixture": (run, store), "fresh": (run, searched(fresh, work / "fresh.zarr"))}
    for name, classes, taught_videos, fresh_videos in (
        ("held-out-4", tuple(f"square moving {d}" for d in DIRECTIONS), 24, 15),
        ("held-out-4c", tuple(f"circle moving {d}" for d in DIRECTIONS), 48, 15),
        ("held-out-8", MOTION_CLASSES, 24, 20),
    ):
        taught = write_motion_dataset(work / name, classes, taught_videos, seed=5)
        new = write_motion_dataset(work / f"{name}-new", classes, fresh_videos, seed=11)
        out[name] = (trained_run(work / name, taught), searched(new, work / f"{name}.zarr"))
    return out


def measure(run: Path, store_path: Path, work: Path) -> dict:
    emb = work / f"{store_path.stem}.emb.zarr"
    embed.run(embed.EmbedConfig(run=run, store=store_path, out=emb, device="cpu"))
    file = EmbeddingsFile.open(emb)
    table = file.read_table().to_pydict()
    labels = np.asarray(table["label"])
    store = FeatureStore.open(store_path)
    bank = torch.from_numpy(np.array(store.text_embeddings))
    scale = float(load_run(run).model.logit_scale.detach().exp())
    clip = clip_for_run(run, "cpu")
    class_ids = np.unique(labels)
    text = clip.class_text_embeddings([store.class_names[c] for c in class_ids])
    chunks = (chunk for _, chunk in file.iter_chunks())
    found = class_retrieval(text, class_ids, chunks, labels, scores=SCORES, bank=bank, scale=scale)
    vectors = torch.from_numpy(file.read_vectors(np.arange(file.n_rows)).astype(np.float32))
    like = {}
    for name in SCORES:
        raw = vectors @ vectors.T
        scored = normalise(name, raw, bank_stats(bank, vectors, scale), scale).numpy()
        np.fill_diagonal(scored, -np.inf)  # a video is not its own answer
        like[name] = float(precision_at_k(ranking(scored, 10), labels, labels, 10).mean())
    return {
        "videos": int(file.n_rows),
        "classes": int(len(class_ids)),
        "bank": int(len(bank)),
        "scale": round(scale, 2),
        "zeroshot_top1": round(found["zeroshot_top1"], 1),
        "chance": round(found["chance_precision"], 1),
        "text": {k: {m: round(v, 1) for m, v in r.items()} for k, r in found["rankings"].items()},
        "like_p@10": {k: round(v, 1) for k, v in like.items()},
    }


def main() -> None:
    parser = doc_parser(__doc__)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="mote-scores-") as folder:
        work = Path(folder)
        figures = {
            name: measure(run, store, work) for name, (run, store) in collections(work).items()
        }
    for name, f in figures.items():
        print(f"{name}: {f['videos']} videos, {f['classes']} classes, top-1 {f['zeroshot_top1']}")
        for score in SCORES:
            t = f["text"][score]
            print(
                f"  {score:>12}: mAP {t['map']:5.1f}  P@10 {t['p@10']:5.1f}  P@50 {t['p@50']:5.1f}"
                f"  like P@10 {f['like_p@10'][score]:5.1f}"
            )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
