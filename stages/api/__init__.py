"""mote's Python API: every command as a function, a trained run, a feature store.

This folder is installed as the top-level package ``mote`` (``pyproject.toml`` maps it with
``package-dir``), beside ``mote.pipeline``, ``mote.stages`` and ``mote.cache_schema``. Importing
it loads no torch: a command function is made when first looked up (``mote.extract``), with
its options as keyword-only parameters and listed in its docstring (``help(mote.extract)``);
only then is its stage imported.

    import mote
    mote.extract(dataset="list", list_file="list.txt", root="videos", out="train.zarr")
    mote.train_temporal(train="train.zarr", out="run")
    run = mote.load_run("run")
    run.predict(["a.mp4", "b.mp4"])
    found = run.embed("train.zarr")  # .vectors (N, D), .video_ids, .labels
    run.search(["a person juggling"], "train.emb.zarr", k=10)  # one dict per hit
"""

from mote.commands import STAGES
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


def __getattr__(name: str) -> object:
    """``mote.extract`` and the other command functions, made on first use."""
    if name in STAGES:
        from mote.commands import command

        return command(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *STAGES})
