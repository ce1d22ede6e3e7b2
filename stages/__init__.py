"""One module per CLI stage; each exposes ``run(cfg) -> dict``."""

import mote.pipeline  # noqa: F401  (applies the torchvision shim before any stage imports open_clip)
