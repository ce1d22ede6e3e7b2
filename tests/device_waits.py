"""Find the calls that would make the host wait for the GPU, on a machine without one.

On CUDA a training step must never read a device tensor on the host (``.item()``, ``.tolist()``,
``bool(t)``, ``nonzero``...: each waits for every queued kernel) nor build a device tensor from
Python data (``torch.tensor(x, device=...)``: a blocking copy). On the CPU both devices are one,
so ``DeviceWaits`` tracks which tensors *would* live on the GPU: the ones it is given (weights,
optimiser state, resident features, text) and every tensor computed from them (taint). Host
tensors (the routing draws of the CPU generators) stay untainted and may be read freely, as on
a GPU machine. Any such call on a tainted tensor, or any tensor built from Python data with a
``device``, is recorded with the op's name.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

aten = torch.ops.aten
# Ops whose result size or value the host needs: on CUDA each one synchronises.
WAITING_OPS = {
    aten._local_scalar_dense,
    aten.nonzero,
    aten.masked_select,
    aten._unique2,
    aten.unique_dim,
    aten.unique_consecutive,
    aten.equal,
    aten.is_nonzero,
}
# Tensor methods that bring a value to the host.
HOST_READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__"}
# Tensors built from Python data: with a device, a blocking host-to-device copy.
FROM_PYTHON = {"tensor", "as_tensor", "scalar_tensor"}


class _Taint(TorchDispatchMode):
    def __init__(self, owner: DeviceWaits) -> None:
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        dirty = any(t in self.owner.tainted for t in inputs)
        self.owner.ops += 1
        if dirty and func.overloadpacket in WAITING_OPS and not self.owner.reading:
            self.owner.record(str(func))
        out = func(*args, **kwargs)
        if dirty:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.owner.tainted[t] = True
        return out


class _HostReads(TorchFunctionMode):
    def __init__(self, owner: DeviceWaits) -> None:
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in HOST_READS and args and isinstance(args[0], torch.Tensor):
            if args[0] in self.owner.tainted and not self.owner.reading:
                self.owner.record(f"Tensor.{name}")
                self.owner.reading = True  # its own _local_scalar_dense is the same wait
                try:
                    return func(*args, **kwargs)
                finally:
                    self.owner.reading = False
        if name in FROM_PYTHON and kwargs.get("device") is not None:
            self.owner.record(f"torch.{name}(..., device=...)")
        return func(*args, **kwargs)


class DeviceWaits:
    """``with DeviceWaits(tensors) as waits:`` records in ``waits.calls`` every call inside
    that would make the host wait for the GPU; ``waits.ops`` counts the ops seen (so a test
    knows the region really ran)."""

    def __init__(self, device_tensors: Iterable[torch.Tensor] = ()) -> None:
        self.tainted = WeakIdKeyDictionary()
        self.calls: list[str] = []
        self.ops = 0
        self.reading = False
        self._modes = (_HostReads(self), _Taint(self))
        self.add(device_tensors)

    def add(self, tensors: Iterable[torch.Tensor]) -> None:
        """Mark more tensors as living on the device."""
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self.tainted[t] = True

    def record(self, what: str) -> None:
        self.calls.append(what)

    def __enter__(self) -> DeviceWaits:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every tensor of an optimiser's state (moments, step counts)."""
    return [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
