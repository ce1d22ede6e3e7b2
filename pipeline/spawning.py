"""Start ``spawn`` processes (the encoder pool's, a local dask cluster's) without re-running the
caller's ``__main__`` in them, so ``mote.extract(...)`` works from ``python -``, a REPL, a
notebook and a script without an ``if __name__ == "__main__":`` guard.

multiprocessing's spawn tells each child how to import the parent's ``__main__`` (by module name,
else by file: ``multiprocessing.spawn.get_preparation_data``) and the child runs it as
``__mp_main__`` before its target. From ``python -`` that file is ``<stdin>``, which the child
cannot open (it exits with code 1); a script without a guard would start its work again in every
child. mote's children run mote's functions, which unpickle by module name: they need nothing
of ``__main__``. So while they start, ``sys.modules["__main__"]`` is a bare module with neither
name nor file, which the children skip; an object of the caller's script sent to them fails to
pickle in the caller, with its name, instead of in the child.

The decode workers need none of this: they are fresh interpreters (``pipeline/video/
decode_pool.py``).
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager

_swap = threading.RLock()  # one swap at a time: each restores what it found


@contextmanager
def without_caller_main() -> Iterator[None]:
    """Processes spawned inside skip the caller's ``__main__`` (see the module's docstring).
    Keep the block to the starts: the parent's own ``import __main__`` sees the stand-in."""
    with _swap:
        caller = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__, __spec__ None
        try:
            yield
        finally:
            sys.modules["__main__"] = caller
