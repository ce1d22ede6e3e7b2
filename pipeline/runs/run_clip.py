"""The CLIP that belongs to a run: the original weights, or the run's tuned visual tower.

Runs that tuned CLIP (imported reference checkpoints, end-to-end fine-tuning) carry
``clip.visual.*`` in their model file. Before every test the reference blends them with the
original weights, 0.99 x tuned + 0.01 x original (spec 7.4); ``blend`` sets that factor
(1 = the tuned weights as trained: ``mote extract --run RUN --no-blend``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mote.pipeline.clip.weights_id import file_weights_id
from mote.pipeline.errors import ConfigError
from mote.pipeline.runs.run_folder import CLIP_PREFIX, RunFolder

if TYPE_CHECKING:
    from mote.pipeline.clip.encoder import ClipEncoder

# The CLIP builder imports open_clip (about 2 s): it is imported where a CLIP is built, so that
# commands which only read a run's records (evaluate, embed, zeroshot's checks) never load it.

TEST_BLEND = 0.99  # spec 7.4


def run_clip_spec(run: Path) -> tuple[str, str]:
    """(model, pretrained) of the CLIP a run was built on."""
    folder = RunFolder(run)
    clip = folder.read_config().clip
    if not clip.model:
        raise ConfigError(f"{folder.config_file}: records no CLIP model")
    return clip.model, clip.pretrained or "openai"


def _random_seed(run: Path) -> int:
    """The seed of a run built on random CLIP weights (``random:seed=N``), else 0."""
    return random_seed(RunFolder(run).read_config().clip.weights_id or "")


def random_seed(weights_id: str) -> int:
    """The seed of random CLIP weights (``random:seed=N``), else 0."""
    prefix = "random:seed="
    return int(weights_id[len(prefix) :]) if weights_id.startswith(prefix) else 0


def recorded_clip(clip: dict, device: str = "auto") -> ClipEncoder:
    """The CLIP a store records (``model``, ``pretrained``, ``weights_id``), for its text
    tower: what run-less search embeds queries with. A store made with ``--run RUN`` records
    ``run:RUN``; that run's CLIP is built (its text tower is the original's)."""
    from mote.pipeline.clip.build import build_clip

    pretrained = str(clip["pretrained"])
    if pretrained.startswith("run:"):
        return clip_for_run(Path(pretrained[len("run:") :]), device)
    built = build_clip(clip["model"], pretrained, device, seed=random_seed(clip["weights_id"]))
    if built.weights_id != clip["weights_id"]:
        raise ConfigError(
            f"{clip['model']} with {pretrained} loads weights {built.weights_id} here, but the "
            f"store was encoded with {clip['weights_id']}; search on the machine that extracted "
            "it, or pass the same weights file"
        )
    return built


def store_expectation(run, blend: float = TEST_BLEND) -> dict:
    """What a store must match to be scored by a loaded run: the CLIP that made its features.

    Runs that carry tuned CLIP weights need stores made with ``mote extract --run RUN`` (with
    this ``blend``; 1 for ``--no-blend`` stores).
    """
    clip = run.config.clip
    recorded = {"model": clip.model, "weights_id": clip.weights_id, "dim": clip.dim}
    expect = {key: value for key, value in recorded.items() if value}
    expect.setdefault("dim", run.model.cfg.dim)
    tuned = run_weights_id(run.path, blend)
    if tuned is not None:
        expect["weights_id"] = tuned
    return expect


def tuned_visual(run: Path) -> dict[str, torch.Tensor]:
    """The run's tuned visual weights (``visual.*`` names), empty when it has none."""
    tensors = RunFolder(run).model_tensors(CLIP_PREFIX + "visual.")
    return {name[len(CLIP_PREFIX) :]: value for name, value in tensors.items()}


def run_weights_id(run: Path, blend: float = TEST_BLEND) -> str | None:
    """The weights identity a store made with this run's CLIP records (None: original CLIP)."""
    if not tuned_visual(run):
        return None
    return f"run:{file_weights_id(RunFolder(run).model_file)[7:]}:blend={blend:g}"


def clip_for_run(run: Path, device: str = "auto", blend: float = TEST_BLEND) -> ClipEncoder:
    """Build the run's CLIP; blend its tuned visual tower into the original when it has one."""
    from mote.pipeline.clip.build import build_clip

    model, pretrained = run_clip_spec(run)
    clip = build_clip(model, pretrained, device, seed=_random_seed(run))
    tuned = tuned_visual(run)
    if not tuned:
        return clip
    original = clip.model.state_dict()
    missing = sorted(set(tuned) - set(original))
    if missing:
        raise ConfigError(f"{run}: CLIP weights {missing[:3]} do not exist in {model}")
    blended = {}
    for name, value in tuned.items():
        base = original[name]
        if base.is_floating_point() and blend != 1:
            value = blend * value.to(base) + (1 - blend) * base
        blended[name] = value.to(base.dtype)
    clip.model.load_state_dict(blended, strict=False)
    clip.weights_id = run_weights_id(run, blend) or clip.weights_id
    clip.pretrained = f"run:{run}"
    if hasattr(clip, "refresh_inference_copy"):
        clip.refresh_inference_copy()
    return clip


@dataclass(frozen=True)
class ClipRecipe:
    """How to build the CLIP that encodes a store, in any process.

    It pickles, so every encoder process and dask worker builds what the driver built: ``model``
    with ``pretrained`` (random weights drawn from ``seed``), or a run's CLIP (``run``, blended
    0.99/0.01 with the original per spec 7.4 unless ``blend`` is off).
    """

    model: str
    pretrained: str
    seed: int = 0
    run: Path | None = None
    blend: bool = True

    def build(self, device: str | torch.device = "auto") -> ClipEncoder:
        from mote.pipeline.clip.build import build_clip

        if self.run is None:
            return build_clip(self.model, self.pretrained, str(device), self.seed)
        return clip_for_run(Path(self.run), str(device), TEST_BLEND if self.blend else 1.0)
