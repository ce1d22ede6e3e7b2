"""The temporal architectures by name: ``get_architecture("mote")``, ``architecture_names()``.

Each module below registers one class (``@register``). A new architecture is one module here,
imported on the line below, and its name on one line of ``arch_names.py`` (docs/architecture.md).
"""

from mote.pipeline.temporal.arch_names import ARCH_NAMES
from mote.pipeline.temporal.architectures import meanpool, mote, transformer  # noqa: F401
from mote.pipeline.temporal.architectures.base import (
    Architecture,
    architecture_names,
    get_architecture,
    register,
)

if set(architecture_names()) != set(ARCH_NAMES):
    raise ImportError(
        f"arch_names.py lists {list(ARCH_NAMES)} but classes are registered for "
        f"{list(architecture_names())}: add the module's import above or its name there"
    )

__all__ = ["Architecture", "architecture_names", "get_architecture", "register"]
