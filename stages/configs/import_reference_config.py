"""Settings of ``mote import-reference``: the released checkpoint and the run to write;
light, so its ``--help`` loads no torch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mote.pipeline.config import (
    Settings,
    model_setting,
    pretrained_setting,
    run_out_setting,
    setting,
)


@dataclasses.dataclass(frozen=True)
class ImportReferenceConfig(Settings):
    """Settings of ``mote import-reference``."""

    ckpt: Path = setting(
        help="MoTE_B16.pt / MoTE_L14.pt or a reference last_model.pt / model_best.pt.",
        argument=True,
    )
    out: Path = run_out_setting()
    head_only: bool = setting(
        False,
        "Import only the temporal module and text bank; CLIP visual weights then come from "
        "--model/--pretrained.",
    )
    model: str = model_setting("The original CLIP: ViT-B-16 or ViT-L-14.")
    pretrained: str = pretrained_setting("Its text tower and the test-time blend use them.")
