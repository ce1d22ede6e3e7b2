"""Let open_clip import when the installed torchvision's C extension cannot load.

open_clip imports torchvision, whose ``_meta_registrations`` registers fake kernels for
``torchvision::nms`` and ``torchvision::qnms``; when ``_C.so`` was built against another torch
(for example a CUDA torchvision beside a CPU torch) those operators do not exist and the import
fails. mote never calls a torchvision C op, so declaring the two schemas is enough. Where
torchvision's extension loads, this does nothing.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # keeps the torch.library.Library alive for the life of the process


def install() -> bool:
    """Declare the missing op schemas if needed; return True when the shim was applied."""
    global _library
    if _library is not None or "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    import torch

    folder = list(spec.submodule_search_locations)[0]
    extensions = glob.glob(os.path.join(folder, "_C.*"))
    if extensions:
        try:
            torch.ops.load_library(extensions[0])
            return False
        except (OSError, RuntimeError):
            pass
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS.values():
        library.define(schema)
    _library = library
    return True
