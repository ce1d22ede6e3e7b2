"""The temporal architectures' names, torch-free: ``--help``, the config's check of ``arch`` and
the light settings modules read them here, while each architecture's class (in
``architectures/``, torch and all) registers under its name. ``architectures/__init__.py``
refuses to load when the two lists disagree, so a name cannot exist without its class."""

from __future__ import annotations

MOTE = "mote"
TRANSFORMER = "transformer"
MEANPOOL = "meanpool"

# Every architecture, in help order, with the words ``--arch``'s help puts after its name.
DESCRIPTIONS: dict[str, str] = {
    MOTE: "",
    TRANSFORMER: "Text4Vis baseline: one FFN per layer, CE only",
    MEANPOOL: "CLIP mean pooling",
}
ARCH_NAMES: tuple[str, ...] = tuple(DESCRIPTIONS)
DEFAULT_ARCH = MOTE


def arch_help() -> str:
    """``--arch``'s help: 'mote, transformer (...) or meanpool (...).'"""
    items = [f"{name} ({text})" if text else name for name, text in DESCRIPTIONS.items()]
    if len(items) == 1:
        return f"{items[0]}."
    return f"{', '.join(items[:-1])} or {items[-1]}."
