"""The names of a run folder's files (``run_folder.py`` tells what each holds), with no
import, so settings and ``--help`` can name them without loading torch."""

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
