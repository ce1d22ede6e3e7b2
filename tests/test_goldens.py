"""mote-tiny and MoTE outputs on fixed inputs equal the stored goldens (tests/data)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_file

DATA = Path(__file__).parent / "data"


def load_maker():
    spec = importlib.util.spec_from_file_location("make_goldens", DATA / "make_goldens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_outputs_match_the_goldens():
    expected = load_file(DATA / "goldens.safetensors")
    got = load_maker().compute()
    assert got.keys() == expected.keys()
    assert torch.equal(got["crops"], expected["crops"])  # preprocessing is exact (uint8)
    for name in sorted(set(got) - {"crops"}):
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_goldens_tell_the_modes_apart():
    g = load_file(DATA / "goldens.safetensors")
    assert not torch.allclose(g["routed"], g["merged"])
    assert not torch.allclose(g["wmr"], g["merged"])
    assert (g["rho"] > 0).all() and (g["rho"] <= 1 + 1e-6).all()
