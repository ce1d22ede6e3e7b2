"""Which devices encode (``resolve_devices``) and what an encoder process that fails says."""

from __future__ import annotations

import time

import pytest
import torch

from mote.pipeline.clip.encoder_pool import EncoderPool
from mote.pipeline.device import resolve_devices
from mote.pipeline.errors import ConfigError, EncoderFailed
from mote.pipeline.runs.run_clip import ClipRecipe


def test_an_encoder_that_cannot_build_its_clip_names_its_device():
    recipe = ClipRecipe("no-such-model", "none")
    with EncoderPool(recipe.build, ["cpu"], batch_size=2, image_size=64, dim=64) as pool:
        slot = pool.free_slot()
        pool.submit(slot, 0, 1)
        with pytest.raises(EncoderFailed, match="encoder process on cpu failed while building"):
            for _ in range(600):  # bounded: a hang fails the test instead of blocking it
                pool.collect(block=False)
                time.sleep(0.1)


@pytest.mark.parametrize(
    "spec,gpus,message",
    [
        ("5", 2, "--devices 5: only 2 CUDA devices here (0, 1)"),
        ("0,1", 0, "--devices 0,1: CUDA is not available here; use --devices cpu"),
        ("cuda:1", 1, "--devices cuda:1: only 1 CUDA device here (0)"),
        ("cpu,0", 2, "mixes the CPU and GPUs"),
        ("0,0", 2, "cuda:0 is listed twice"),
        ("0,,1", 2, "an empty entry"),
        ("gpu", 2, "'gpu' is not a device; expected all"),
        ("mps", 2, "mote encodes on cpu or cuda, not mps"),
    ],
)
def test_device_specs_that_cannot_run_say_why(spec, gpus, message):
    with pytest.raises(ConfigError) as error:
        resolve_devices(spec, gpu_count=gpus)
    assert message in str(error.value)


def test_device_specs():
    cuda = [torch.device("cuda", i) for i in range(4)]
    assert resolve_devices("all", gpu_count=0) == [torch.device("cpu")]
    assert resolve_devices("all", gpu_count=2) == cuda[:2]
    assert resolve_devices("0,1,3", gpu_count=4) == [cuda[0], cuda[1], cuda[3]]
    assert resolve_devices("cuda:1", gpu_count=2) == [cuda[1]]
    assert resolve_devices("cpu,cpu", gpu_count=2) == [torch.device("cpu")] * 2
