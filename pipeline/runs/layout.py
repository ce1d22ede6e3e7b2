"""The names of a run folder's files (``run_folder.py`` tells what each holds) and what makes a
folder a run, with no import, so settings, ``--help`` and the store (which tells a run folder
from a store) can name them without loading torch: it sits in the base layer.
"""

from typing import Any

MODEL_FILE = "model.safetensors"
BEST_FILE = "model_best.safetensors"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.jsonl"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
CONFUSION_FILE = "confusion.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
FAILURES_FILE = "failures.jsonl"
ZEROSHOT_PREFIX = "zeroshot_"
ZEROSHOT_SUMMARY_FILE = "zeroshot_summary.json"
FEWSHOT_FILE = "fewshot.json"
TENSORBOARD_DIR = "tensorboard"
CLIP_PREFIX = "clip."  # CLIP weights inside model files (end-to-end and imported runs)


def is_run_folder(path: Any) -> bool:
    """Whether ``path`` (a ``Path``, or a store's ``RemoteFiles`` at a URL) is a mote run: it
    has a config file, written before the first epoch."""
    return (path / CONFIG_FILE).is_file()
