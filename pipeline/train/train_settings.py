"""Settings both training commands share: the spec's per-width defaults and the MoTE switches.

``train-temporal`` and ``finetune-e2e`` build their config dataclasses from these, so a fact such
as "B/16 trains 30 epochs at batch 192" or a new MoTEConfig switch lives in one place.
"""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from mote.pipeline.config import DEVICE_HELP, Settings, option_fields, seed_setting, setting
from mote.pipeline.errors import ConfigError
from mote.pipeline.locations import resolved
from mote.pipeline.runs.layout import CONFIG_FILE
from mote.pipeline.runs.metric_logs import BACKENDS, check_logs
from mote.pipeline.temporal.arch_names import ARCH_NAMES
from mote.pipeline.temporal.temporal_config import MoTEConfig, default_config
from mote.pipeline.train.precisions import AUTO_RULE, PRECISIONS, check_precision
from mote.pipeline.train.sampler import MICRO_BATCHES_RULE, default_micro_batches

if TYPE_CHECKING:
    from mote.pipeline.runs.run_folder import RunFolder

# Spec 7: (epochs, batch, CLIP lr ratio) by embedding width; B/16 = 512, L/14 = 768.
SPEC_DEFAULTS = {512: (30, 192, 0.07), 768: (20, 144, 0.06)}
FEW_STEPS = 10  # fewer steps per epoch at the spec's batch than this: a small store
SPEC_LR = 5e-5  # spec 7: the temporal module's lr, for K400's ~1,250 steps per epoch
# A small store gets settings that learn (measured on generated motion stores of 30 to 240
# training videos, 4 and 8 classes, mote and transformer: bench/small_data.py, docs/training.md):
# about SMALL_STEPS_PER_EPOCH steps per epoch, SMALL_STEPS steps in all, lr SMALL_LR.
SMALL_STEPS, SMALL_STEPS_PER_EPOCH, SMALL_MIN_BATCH, SMALL_LR = 1000, 8, 8, 5e-4
MIN_STEPS = 300  # fewer optimiser steps in all than this: warn, with the fix
WARMUP_SHARE = 0.2  # the lr warm-up takes at most this share of the epochs
# MoTEConfig fields the training store decides, not the user.
FROM_STORE = ("dim",)
TRAINING_PANEL = "Training"  # --help panels of the shared settings and the MoTE switches
MODEL_PANEL = "MoTE model"
# The settings a --resume may change, on any resume: the way out a divergence names (a lower lr,
# full precision). Every other difference from the run's settings is refused (check_resume).
RECOVERY_SETTINGS = ("lr", "precision")
CHANGED_KEY = "changed_on_resume"  # config.json: every resume's changes; history.jsonl: its own


def spec_default(index: int) -> Callable[[], str]:
    """Help text of a per-width default of SPEC_DEFAULTS: '30 for D=512, 20 for D=768'."""
    return lambda: ", ".join(f"{v[index]:g} for D={dim}" for dim, v in SPEC_DEFAULTS.items())


def with_model_switches(cls: type) -> type:
    """Append every MoTEConfig switch (a field with help) to a settings class, in --help's
    MoTE panel.

    So one new MoTEConfig field with help is a flag of every training command, a ``--config``
    key and an entry of the run's config.json. Per-width switches (heads, layers) default to
    None here: "``default_config``'s value for the store's width"."""
    hints = typing.get_type_hints(MoTEConfig)
    for f in option_fields(MoTEConfig):
        if f.name in FROM_STORE:
            continue
        required = f.default is MISSING and f.default_factory is MISSING
        cls.__annotations__[f.name] = hints[f.name] | None if required else hints[f.name]
        metadata = {**f.metadata, "panel": MODEL_PANEL}
        setattr(cls, f.name, field(default=None if required else f.default, metadata=metadata))
    return cls


def training_setting(default: Any = MISSING, help: str = "", **meta: Any) -> Any:
    """A setting every training command shares, in --help's Training panel."""
    return setting(default, help, panel=TRAINING_PANEL, **meta)


@dataclass(frozen=True, kw_only=True)
@with_model_switches
class TrainingSettings(Settings):
    """The settings every training command shares, and all the epoch loop reads: the base of
    ``TrainConfig`` (train-temporal) and ``FinetuneConfig`` (finetune-e2e). None means "the
    spec's default for this width" (``resolve``).

    Fields without help are not options; a command makes one an option by declaring it again
    with help (train-temporal's --fused and --compile). A command keyword-only subclass adds
    its own settings."""

    epochs: int | None = training_setting(
        None, "Training epochs (spec 7).", default_text=spec_default(0), min=1
    )
    warmup_epochs: float = training_setting(5.0, "Linear lr warm-up epochs.", min=0)
    batch_size: int | None = training_setting(
        None, "Videos per step (over all processes).", default_text=spec_default(1), min=1
    )
    micro_batches: int | None = training_setting(
        None,
        "Micro-batches per step, each with its own routing and WMR draw (spec 3.1: the "
        "reference's GPUs); under torchrun a multiple of the process count, split among them.",
        default_text=MICRO_BATCHES_RULE,
        min=1,
    )
    lr: float | None = training_setting(
        None,
        "Temporal module lr.",
        default_text=f"{SPEC_LR:g} (spec 7); {SMALL_LR:g} on a small store",
        above=0,
    )
    clip_lr_ratio: float | None = training_setting(
        None,
        "CLIP-side lr = lr x ratio (the logit scale; in finetune-e2e the visual tower too).",
        default_text=spec_default(2),
        min=0,
    )
    weight_decay: float = training_setting(0.2, "AdamW weight decay.", min=0)
    seed: int = seed_setting(
        "Seed of initialisation, routing and batch order (and finetune-e2e's clip draws).",
        panel=TRAINING_PANEL,
    )
    device: str = training_setting("auto", DEVICE_HELP)
    precision: str = training_setting(
        "auto",
        f"{', '.join(PRECISIONS)}; auto: {AUTO_RULE} (fp16/bf16 there: CPU autocast, slow, "
        "for tests).",
    )
    fused: bool = True  # every micro-batch in one batched pass (same update as one by one)
    compile: bool = False  # compile the fused losses with CUDA graphs (CUDA only)
    tfm: bool = training_setting(True, "TFM in the final evaluation.")
    resume: bool = training_setting(
        False,
        "Continue the run in --out from its last epoch (after a divergence: its last good one). "
        f"Only {' and '.join('--' + key for key in RECOVERY_SETTINGS)} may differ from the run's; "
        "the change is recorded in config.json and on the next history.jsonl line.",
    )
    stop_after_epochs: int | None = training_setting(
        None, "Stop after this many epochs (continue later with --resume).", min=1
    )
    log: tuple[str, ...] = training_setting(
        (),
        f"Metric logs beside history.jsonl, comma-separated: {', '.join(BACKENDS)} (RUN/"
        "tensorboard/: every epoch's losses, lr, val top-1, time; pip install "
        "'mote[tensorboard]').",
    )


def resolve(cfg: Any, dim: int, world_size: int = 1) -> Any:
    """Fill the spec's per-backbone defaults (epochs, batch, CLIP lr ratio) and the
    micro-batches of ``world_size`` processes (``MICRO_BATCHES_RULE``)."""
    epochs, batch, ratio = SPEC_DEFAULTS.get(dim, SPEC_DEFAULTS[512])
    micro = cfg.micro_batches
    return replace(
        cfg,
        epochs=epochs if cfg.epochs is None else cfg.epochs,
        batch_size=batch if cfg.batch_size is None else cfg.batch_size,
        lr=SPEC_LR if cfg.lr is None else cfg.lr,
        clip_lr_ratio=cfg.clip_lr_ratio if cfg.clip_lr_ratio is not None else ratio,
        micro_batches=default_micro_batches(world_size) if micro is None else micro,
    )


def model_config(cfg: Any, dim: int) -> MoTEConfig:
    """The MoTEConfig of these settings; switches left None take ``default_config``'s value."""
    overrides = {
        f.name: getattr(cfg, f.name)
        for f in option_fields(MoTEConfig)
        if f.name not in FROM_STORE and getattr(cfg, f.name) is not None
    }
    return default_config(dim, **overrides)


def steps_per_epoch(videos: int, batch_size: int) -> int:
    """Optimiser steps of one epoch (the last partial batch is a step too, spec 7)."""
    return max(1, math.ceil(videos / batch_size))


def small_store_settings(
    cfg: Any, videos: int, dim: int, what: str = "store"
) -> tuple[Any, str | None]:
    """Batch, epochs and lr that learn on a training set far smaller than the spec assumes
    (fewer than ``FEW_STEPS`` steps per epoch at its batch), for the ones the user left unset,
    and the one line saying so (``what``: the store, the training list); a set of the spec's
    size keeps the spec's settings. Both training commands apply it, so the rule is one."""
    epochs, batch, _ = SPEC_DEFAULTS.get(dim, SPEC_DEFAULTS[512])
    unset = [cfg.batch_size is None, cfg.epochs is None, cfg.lr is None]
    if steps_per_epoch(videos, batch) >= FEW_STEPS or not any(unset):
        return cfg, None
    small_batch = max(SMALL_MIN_BATCH, min(batch, videos // SMALL_STEPS_PER_EPOCH))
    new_batch = small_batch if cfg.batch_size is None else cfg.batch_size
    steps = steps_per_epoch(videos, new_batch)
    new_epochs = max(epochs, math.ceil(SMALL_STEPS / steps)) if cfg.epochs is None else cfg.epochs
    new_lr = SMALL_LR if cfg.lr is None else cfg.lr
    chosen = [
        text
        for text, free in zip(
            (f"batch {new_batch}", f"{new_epochs} epochs", f"lr {new_lr:g}"), unset, strict=True
        )
        if free
    ]
    note = (
        f"small {what}: {videos} videos are {steps_per_epoch(videos, batch)} steps per epoch at "
        f"the spec's batch {batch}, so training with {', '.join(chosen)} ({steps * new_epochs} "
        f"steps in all) instead of the spec's batch {batch}, {epochs} epochs, lr {SPEC_LR:g}; "
        "--batch-size, --epochs and --lr choose them"
    )
    return replace(cfg, batch_size=new_batch, epochs=new_epochs, lr=new_lr), note


def capped_warmup(cfg: Any) -> tuple[Any, str | None]:
    """A warm-up of at most ``WARMUP_SHARE`` of the (resolved) epochs, and the line saying
    so when it was longer: 5 warm-up epochs in a 2-epoch run never leave the warm-up."""
    cap = WARMUP_SHARE * cfg.epochs
    if cfg.warmup_epochs <= cap:
        return cfg, None
    note = (
        f"--warmup-epochs {cfg.warmup_epochs:g} is more than a fifth of the {cfg.epochs} epochs: "
        f"warming up for {cap:g}"
    )
    return replace(cfg, warmup_epochs=cap), note


def plan(
    cfg: Any,
    dim: int,
    videos: int,
    world_size: int = 1,
    small_store: bool = True,
    what: str = "store",
) -> tuple[Any, list[str]]:
    """The settings a run trains with, and one line for each choice made for the user: the
    small-store settings (unless ``small_store`` is False: a protocol that fixes them; ``what``
    names the training set in the line), the spec's defaults (``resolve``), the warm-up cap."""
    notes = []
    if small_store:
        cfg, note = small_store_settings(cfg, videos, dim, what)
        notes += [note] if note else []
    cfg, note = capped_warmup(resolve(cfg, dim, world_size))
    return cfg, notes + ([note] if note else [])


def few_steps_warnings(videos: int, batch_size: int, epochs: int) -> list[str]:
    """A warning with the fix when the whole run is fewer than ``MIN_STEPS`` optimiser steps
    (30 steps of the spec's batch on a 160-video store train to chance)."""
    steps = steps_per_epoch(videos, batch_size)
    if steps * epochs >= MIN_STEPS:
        return []
    return [
        f"{videos} videos at batch {batch_size} for {epochs} epochs are {steps * epochs} "
        f"optimiser steps in all, too few to learn: raise --epochs to "
        f"{math.ceil(MIN_STEPS / steps)} or lower --batch-size"
    ]


def check_training(cfg: TrainingSettings) -> None:
    """The choices every training command shares (``arch``, ``precision``, ``log`` and its
    package); numbers are checked by their fields' bounds when the settings are made
    (``check_ranges``)."""
    if cfg.arch not in ARCH_NAMES:
        raise ConfigError(f"--arch must be one of {', '.join(ARCH_NAMES)}, got '{cfg.arch}'")
    check_precision(cfg.precision)
    check_logs(cfg.log)


def recorded_settings(cfg: Any, path_keys: tuple[str, ...]) -> dict:
    """The settings as a run's config.json records them: paths resolved, so a ``--resume``
    spelled ``runs/x`` or ``/abs/runs/x`` is the same run."""
    settings = asdict(cfg)
    for key in path_keys:
        if settings.get(key) is not None:
            settings[key] = resolved(settings[key])
    for item in fields(cfg):  # credentials may be in them: never written to a run
        if item.metadata.get("storage_options"):
            settings.pop(item.name, None)
    return settings


def check_resume(
    folder: RunFolder, cfg: Any, ignored: tuple[str, ...], path_keys: tuple[str, ...]
) -> str | None:
    """Refuse a ``--resume`` whose settings differ from the run's (except ``ignored`` ones and
    ``RECOVERY_SETTINGS``), naming every difference; paths compare resolved. A folder with no run
    yet starts one (a job script that always passes ``--resume`` works from its first launch),
    and the returned notice says so, for the command to print.

    The output folder is where the run is, not one of its settings: a run moved or copied to
    another folder resumes there. A setting the run does not record (it was written before
    the setting existed) counts as that setting's default, so adding a switch does not strand
    older runs. How a run is watched (``--log``) is not one of its settings either: a resume may
    add a log or drop one."""
    if not folder.is_run():
        return f"--resume: no run in {folder.path} yet (no {CONFIG_FILE}); starting a new one"
    ignored = (*ignored, *RECOVERY_SETTINGS, "out", "log")
    diffs = [
        f"{key}: {old!r} in the run, {new!r} now"
        for key, (old, new) in _differences(folder, cfg, path_keys).items()
        if key not in ignored
    ]
    if diffs:
        raise ConfigError(
            f"{folder.path}: cannot resume with other settings ({'; '.join(diffs)}); only "
            f"{', '.join('--' + key for key in RECOVERY_SETTINGS)} may change on --resume"
        )
    return None


class Resumed(NamedTuple):
    """What a resume changed: ``now``, this resume's ``{"lr": [in the run, now]}`` (empty when
    nothing), for its first history line; ``record``, config.json's list of every resume's
    changes, each with the epochs done before it (``after_epoch``)."""

    now: dict[str, list]
    record: list[dict]


def changed_on_resume(folder: RunFolder, cfg: Any, path_keys: tuple[str, ...]) -> Resumed:
    """The recovery settings (``RECOVERY_SETTINGS``) this ``--resume`` changes, and the run's
    record of them with this resume's added; nothing without a run to resume. Call it before
    the run's config.json is written again."""
    if not cfg.resume or not folder.is_run():
        return Resumed({}, [])
    earlier = list(folder.read_config(reader=False).details.get(CHANGED_KEY, []))
    found = _differences(folder, cfg, path_keys)
    now = {key: list(found[key]) for key in RECOVERY_SETTINGS if key in found}
    if not now:
        return Resumed({}, earlier)
    return Resumed(now, [*earlier, {"after_epoch": folder.checkpoint_epoch(), **now}])


def _differences(folder: RunFolder, cfg: Any, path_keys: tuple[str, ...]) -> dict[str, tuple]:
    """Every setting whose value now differs from the run's: name -> (in the run, now)."""
    saved = folder.read_config(reader=False).train  # every rank of the writing job
    now = recorded_settings(cfg, path_keys)
    defaults = setting_defaults(type(cfg))

    def same(key: str, old: Any, new: Any) -> bool:
        if key in path_keys and old is not None and new is not None:
            return resolved(old) == resolved(new)
        return json.dumps(old, default=str) == json.dumps(new, default=str)

    def recorded(key: str) -> Any:
        return saved[key] if key in saved else defaults.get(key)

    return {
        key: (recorded(key), now.get(key))
        for key in now
        if not same(key, recorded(key), now.get(key))
    }


def setting_defaults(config_type: type) -> dict[str, Any]:
    """Each field's default as ``recorded_settings`` would record it (fields without one left
    out), in the dataclass ``config_type``."""
    out = {}
    for item in fields(config_type):
        if item.default is not MISSING:
            out[item.name] = item.default
        elif item.default_factory is not MISSING:
            out[item.name] = item.default_factory()
    return json.loads(json.dumps(out, default=str))


def epoch_message(line: dict, epochs: int) -> str:
    """The one line a training command prints per epoch."""
    val = f" val top-1 {line['val_top1']:.1f} (1 view)" if line["val_top1"] is not None else ""
    return (
        f"epoch {line['epoch']}/{epochs} loss {line['loss']:.4f} (ce {line['loss_ce']:.4f}) "
        f"lr {line['lr']:.2e}{val} {line['videos_per_s']:.1f} videos/s"
    )
