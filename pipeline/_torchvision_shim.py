"""Let open_clip import when the installed torchvision's C extension cannot load.

open_clip imports torchvision, whose ``_meta_registrations`` registers fake kernels for
``torchvision::nms`` and ``torchvision::qnms``; when ``_C.so`` was built against another torch
(for example a CUDA torchvision beside a CPU torch) those operators do not exist and the import
fails. mote never calls a torchvision C op, so declaring the two schemas is enough. Where
torchvision's extension loads, this does nothing.

``install_hook`` (run by ``mote.pipeline.__init__`` in every process) arms an import hook that
applies the fix just before torchvision is first imported, so processes that never touch
torchvision (decode workers) do not pay for importing torch.
"""

from __future__ import annotations

import glob
import importlib.abc
import importlib.util
import os
import sys

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # keeps the torch.library.Library alive for the life of the process
_checked = False


def install() -> bool:
    """Declare the missing op schemas if needed; return True when the shim was applied."""
    global _library, _checked
    if _checked or "torchvision" in sys.modules:
        return False
    _checked = True
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


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs ``install`` the first time anything imports torchvision, then steps aside."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 (importlib protocol)
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            install()
        return None  # let the normal finders import it


def install_hook() -> None:
    """Arm the hook (idempotent); if torchvision is already imported it is too late to help."""
    if "torchvision" in sys.modules or _checked:
        return
    if not any(isinstance(finder, _BeforeTorchvision) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())
