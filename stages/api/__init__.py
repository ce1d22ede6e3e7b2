"""mote's Python API: every command as a function, a trained run, a feature store.

This folder is installed as the top-level package ``mote`` (``pyproject.toml`` maps it with
``package-dir``), beside ``mote.pipeline``, ``mote.stages`` and ``mote.cache_schema``. Importing
it loads no torch: each function imports its command when called.

    import mote
    mote.extract(dataset="list", list_file="list.txt", root="videos", out="train.zarr")
    mote.train_temporal(train="train.zarr", out="run")
    run = mote.load_run("run")
    run.predict(["a.mp4", "b.mp4"])
    found = run.embed("train.zarr")  # .vectors (N, D), .video_ids, .labels
    run.search(["a person juggling"], "train.emb.zarr", k=10)  # one dict per hit
"""

from mote.commands import (
    demo,
    embed,
    evaluate,
    extract,
    fewshot,
    finetune_e2e,
    import_reference,
    info,
    predict,
    report,
    search,
    train_temporal,
    zeroshot,
)
from mote.pipeline import __version__
from mote.store import Embeddings, open_embeddings, open_store
from mote.trained_run import TrainedRun, load_run

__all__ = [
    "Embeddings",
    "TrainedRun",
    "__version__",
    "demo",
    "embed",
    "evaluate",
    "extract",
    "fewshot",
    "finetune_e2e",
    "import_reference",
    "info",
    "load_run",
    "open_embeddings",
    "open_store",
    "predict",
    "report",
    "search",
    "train_temporal",
    "zeroshot",
]
