"""Settings of ``mote zeroshot``: a run, the protocol's dataset and stores, TFM and the
trade-off; a light module so ``--help`` needs no torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mote.pipeline.config import Settings, setting, store_in_setting
from mote.pipeline.locations import Url
from mote.stages.configs.scoring_config import with_scoring_settings


@dataclass(frozen=True)
@with_scoring_settings
class ZeroShotConfig(Settings):
    dataset: str = setting(help="ucf101, hmdb51, k600 (3 splits each) or list.")
    stores: tuple[Path | Url, ...] = store_in_setting(
        "Feature store(s) holding the videos: one per split, or one made with --split all; "
        "repeat the option for several.",
        flag="--store",
        multiple=True,
    )
    splits: tuple[str, ...] = setting(
        (),
        "Standard datasets: evaluate only these splits. list: LIST:LABELS, repeat once per split.",
        flag="--split",
        multiple=True,
        default_text="every split of the protocol",
    )
    tfm: bool = setting(True, "Temporal Feature Modulation (K400 text bank as proxies).")
    allow_protocol_mismatch: bool = setting(
        False, "Accept stores that are not 3x1 views of 8 frames with the evaluation sampling."
    )
    close_set_top1: float | None = setting(
        None,
        "Close-set top-1 (%) for the trade-off.",
        default_text="the run's metrics.json",
        min=0,
        max=100,
    )
    save_predictions: Path | None = setting(
        None,
        "Per split: fused scores, per-view logits and rho (FILE_<split>.safetensors/.npz).",
    )
    save: bool = True
