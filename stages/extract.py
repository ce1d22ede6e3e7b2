"""Stage one, ``mote extract``: decode, sample, encode with CLIP, write a Zarr feature store.

Flow: resolve the dataset, the encoder devices and the CLIP encoder, open the store (resume) or
create it, then stream the videos still to do through a pool of decode workers into fixed-size
CLIP batches and write each chunk of videos as soon as all of its videos are resolved (done or
failed). The store marks a video done only after its data is on disk, so an interrupted run
resumes where it stopped and ends bit-identical to an uninterrupted one.

Devices (``--devices``): one encodes in this process; G > 1 run one encoder process each, fed
by the one decode pool (``pipeline/clip/encoder_pool.py``); ``--dask`` hands whole chunks to
dask workers (``pipeline/extraction/``). Whatever the devices, the class text bank is computed
here on the first one, so the store's text does not depend on how many encoded.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mote.cache_schema.claim import StoreClaim, StoreReadOnly
from mote.cache_schema.feature_store import FeatureStore
from mote.cache_schema.folder import METADATA_FILE, is_store
from mote.cache_schema.remote_claim import claim_location
from mote.cache_schema.spec import StoreSpec
from mote.cache_schema.store_errors import StoreCorrupt, StoreError
from mote.cache_schema.verify import verify
from mote.pipeline import __version__
from mote.pipeline.clip.encoder import ClipEncoder
from mote.pipeline.clip.encoder_pool import EncoderPool
from mote.pipeline.clip.encoding import BatchedEncoder
from mote.pipeline.config import (
    carried_clip,
    default_encoder_batch,
)
from mote.pipeline.data.datasets import DatasetSpec, open_dataset
from mote.pipeline.data.folders import check_root
from mote.pipeline.device import release_memory, resolve_devices
from mote.pipeline.errors import ConfigError
from mote.pipeline.extraction.cluster import check_dask_address
from mote.pipeline.extraction.dask_extraction import extract_distributed
from mote.pipeline.extraction.local import extract_local
from mote.pipeline.extraction.results import ExtractCounts
from mote.pipeline.locations import Url
from mote.pipeline.progress import NullProgress, Progress
from mote.pipeline.runs.run_clip import ClipRecipe
from mote.pipeline.threads import command_threads, use_threads
from mote.pipeline.video.decode_pool import DecodePool, DecodeTask, default_workers, store_tasks
from mote.pipeline.video.nvdec import check_decoder_usable
from mote.pipeline.video.sampling import parse_views
from mote.stages.configs.extract_config import (  # noqa: F401
    DEFAULT_SPLIT,
    DEFAULT_VIEWS,
    MAX_FRAMES,
    ExtractConfig,
)


def _check(cfg: ExtractConfig) -> None:
    if not 1 <= cfg.frames <= MAX_FRAMES:
        raise ConfigError(
            f"--frames {cfg.frames}: must be 1 to {MAX_FRAMES} (the temporal model's positional "
            f"table has {MAX_FRAMES} rows); the spec uses 8, 16 or 32"
        )
    if cfg.sampling not in ("eval", "train"):
        raise ConfigError(f"--sampling must be 'eval' or 'train', got '{cfg.sampling}'")
    check_decoder_usable(cfg.decoder)
    check_root(cfg.dataset, cfg.root, storage_options=cfg.storage_options)
    if cfg.dask:
        check_dask_address(cfg.dask)
    if cfg.repair and cfg.overwrite:
        raise ConfigError("--repair keeps the store and --overwrite replaces it: pass one of them")


def _dataset(cfg: ExtractConfig) -> tuple[DatasetSpec, Path | Url]:
    """The split and its video root (--kinetics-csv reads the CSV's --split, default train)."""
    split = (cfg.split or "train") if cfg.kinetics_csv is not None else cfg.resolved_split
    return open_dataset(
        cfg.dataset,
        split,
        cfg.list_file,
        cfg.labels_file,
        cfg.kinetics_csv,
        cfg.root,
        cfg.storage_options,
        allow_outside_root=cfg.allow_outside_root,
    )


def clip_recipe(cfg: ExtractConfig) -> ClipRecipe:
    """The encoder: a run's CLIP (``--run``), or ``--model`` with ``--pretrained``; when they
    are not given, the ones the store at ``--out`` records (a resume or ``--repair`` needs no
    model flags), else the defaults."""
    model, pretrained = carried_clip(cfg.model, cfg.pretrained, _store_clip(cfg))
    return ClipRecipe(model, pretrained, cfg.seed, cfg.run, cfg.blend)


def _store_clip(cfg: ExtractConfig) -> tuple[str, str] | None:
    """The (model, weights) of the store this run continues; None for a new store."""
    if cfg.overwrite or cfg.run is not None:
        return None
    if not isinstance(cfg.out, Url) and not is_store(Path(cfg.out)):
        return None
    try:
        spec = FeatureStore.open(cfg.out, storage_options=cfg.storage_options).spec
    except StoreError:
        return None  # not a readable store: open_store says why
    return spec.model, spec.pretrained


def store_spec(cfg: ExtractConfig, clip: ClipEncoder, dataset: DatasetSpec) -> StoreSpec:
    """What the store records about how its features were made."""
    clips, crops = parse_views(cfg.resolved_views)
    p = clip.preprocess
    return StoreSpec(
        model=clip.model_name,
        pretrained=clip.pretrained,
        weights_id=clip.weights_id,
        dim=clip.dim,
        frames=cfg.frames,
        clips=clips,
        crops=crops,
        sampling=cfg.sampling,
        sampling_seed=cfg.seed,
        preprocess={
            "size": p.size,
            "mean": list(p.mean),
            "std": list(p.std),
            "interpolation": p.interpolation,
        },
        dataset=dataset.name,
        split=dataset.split,
        class_names=tuple(dataset.class_names),
        tool_version=__version__,
    )


def open_store(
    cfg: ExtractConfig, clip: ClipEncoder, dataset: DatasetSpec, claim: StoreClaim | None
) -> FeatureStore:
    """Reopen the store to resume (checking it matches), or create it with the text bank.

    Every write happens under ``claim``; without one (the folder is read-only) the store opens
    read-only, which is enough only when nothing is left to do.
    """
    spec = store_spec(cfg, clip, dataset)
    items = dataset.items[: cfg.limit] if cfg.limit else dataset.items
    video_ids = [item.video_id for item in items]
    labels = [item.label for item in items]

    def text() -> np.ndarray:
        if not dataset.labelled:  # an unlabelled store: no class text bank
            return np.zeros((0, clip.dim), np.float32)
        return clip.class_text_embeddings(dataset.class_names)

    if claim is None:
        store = FeatureStore.resume(cfg.out, spec, video_ids, labels)
        left = len(store.todo(cfg.retry_failed))
        if cfg.overwrite or left or store.needs_consolidation():
            work = "--overwrite" if cfg.overwrite else f"{left} videos to extract"
            raise StoreReadOnly(
                f"{cfg.out}: read-only, but this run has work to do ({work}); make the folder "
                "writable, or choose another --out."
            )
        return store
    if cfg.overwrite:
        return FeatureStore.create(
            cfg.out,
            spec,
            video_ids,
            labels,
            text(),
            chunk_videos=cfg.chunk_videos,
            overwrite=True,
            claim=claim,
            storage_options=cfg.storage_options,
        )
    store = FeatureStore.open_or_create(
        cfg.out,
        spec,
        video_ids,
        labels,
        text,
        cfg.chunk_videos,
        claim,
        repair=cfg.repair,
        storage_options=cfg.storage_options,
    )
    store.remove_partial_files(claim)  # a killed run may have left temporary chunk files
    return store


def repair(store: FeatureStore) -> dict:
    """Verify every chunk and mark the videos with damaged data pending, so this run redoes
    them; an unusable chunk is redone whole, so it is rewritten without being read."""
    report = verify(store)
    fixed_at_creation = report.unrepairable()
    if fixed_at_creation:
        raise StoreCorrupt(
            f"{fixed_at_creation[0].line()}; this array is written when the store is created and "
            "this chunk reads but holds wrong values, so --repair cannot tell the right ones: "
            f"re-create the store with `mote extract ... --out {store.path} --overwrite`."
        )
    videos = report.damaged_videos()
    if videos.size:
        store.mark_pending(videos)
    return {
        "problems": [p.line() for p in report.problems],
        "videos": len(videos),
        "rewritten": store.restored_creation,
    }


def claim_store(cfg: ExtractConfig, progress: Progress) -> StoreClaim | None:
    """Claim ``--out`` for this run; None for an existing read-only store (nothing to write).

    The run owns the claim (the store only checks it), from before anything is written to the
    end, dask workers' writes included. A second run on a claimed store is refused naming the
    owner; a claim whose process is gone (or, on S3, whose lease ran out) is taken over with a
    notice.
    """
    try:
        claim = claim_location(cfg.out, cfg.storage_options)
    except StoreReadOnly:
        if not is_store(Path(cfg.out)):
            raise
        return None
    if claim.taken_over is not None:
        progress.message(
            f"{cfg.out}: taking over the claim of {claim.gone} ({claim.taken_over.describe()})"
        )
    return claim


def _encode(
    cfg: ExtractConfig,
    store: FeatureStore,
    claim: StoreClaim | None,
    tasks: list[DecodeTask],
    pool: DecodePool,
    clip: ClipEncoder | None,
    recipe: ClipRecipe,
    devices: list[torch.device],
    shape: tuple[int, int],
    batch_size: int,
    progress: Progress,
) -> ExtractCounts:
    """Encode on dask workers, with ``clip`` here (one device), or on one process per device.

    ``shape`` is (image size, embedding width) of the store's CLIP, which every process builds.
    """
    if cfg.dask:
        return extract_distributed(
            cfg.dask,
            store,
            tasks,
            recipe,
            cfg.devices,
            devices,
            batch_size,
            cfg.decode_timeout,
            progress,
            default_workers(),
            getattr(claim, "token", None),
        )
    if clip is not None:
        return extract_local(store, tasks, pool, BatchedEncoder(clip, batch_size), progress)
    # Every CPU encoder uses the thread count the policy gave this process (in run), as the
    # one-device path does: fp32 sums depend on how many threads split them (mote-tiny differs
    # by up to 4e-7 between 1, 3 and 8 threads), which the float16 store only usually rounds
    # away. The same count keeps --devices cpu,cpu bit-identical to --devices cpu.
    threads = torch.get_num_threads()
    with EncoderPool(recipe.build, devices, batch_size, *shape, cpu_threads=threads) as encoders:
        return extract_local(store, tasks, pool, BatchedEncoder(encoders), progress)


def device_rows(counts: ExtractCounts, seconds: float) -> list[dict]:
    """The summary's ``devices``: per encoder (per dask worker), its counts and videos/s."""
    return [
        {
            **row,
            "busy_s": round(row["busy_s"], 3),
            "videos_per_s": round(row["videos"] / seconds, 3) if seconds > 0 else 0.0,
        }
        for row in counts.devices
    ]


@command_threads()
def run(cfg: ExtractConfig, progress: Progress | None = None) -> dict:
    """Extract every video of the dataset split that the store does not hold yet."""
    progress = progress or NullProgress()
    _check(cfg)
    devices = resolve_devices(cfg.devices)
    dataset, root = _dataset(cfg)
    workers = default_workers() if cfg.decode_workers is None else cfg.decode_workers
    recipe = clip_recipe(cfg)
    # Start the decode workers first: they boot while the CLIP weights load.
    with DecodePool(0 if cfg.dask else workers, cfg.decode_timeout) as pool:
        # Claimed before the model loads: a second writer is refused at once. Released however
        # the run ends (errors, Ctrl-C); the dask driver holds it for its workers.
        claim = claim_store(cfg, progress)
        try:
            clip = recipe.build(devices[0])  # the store's facts and text bank: the first device
            use_threads(devices[0], width=clip.dim, workers=0 if cfg.dask else workers)
            store = open_store(cfg, clip, dataset, claim)
            _say_restored(cfg, store, progress)
            repaired = repair(store) if cfg.repair else None
            todo = store.todo(cfg.retry_failed)
            tasks = store_tasks(
                store.spec, store.video_ids, todo, root, cfg.decoder, cfg.storage_options
            )
            batch_size = cfg.batch_size or default_encoder_batch(devices[0])
            shape = (clip.preprocess.size, clip.dim)
            if cfg.dask or len(devices) > 1:  # processes of their own encode: free this one
                clip = None
                release_memory(devices[0])
            started = time.perf_counter()
            if not tasks and not store.needs_consolidation():
                progress.message(f"{cfg.out}: nothing to do: every video is done or failed")
                counts = ExtractCounts()
            else:
                progress.start(len(tasks), f"extract {dataset.name}/{dataset.split}")
                try:
                    counts = _encode(
                        cfg, store, claim, tasks, pool, clip, recipe, devices, shape, batch_size,
                        progress,
                    )  # fmt: skip
                finally:
                    progress.finish()
                store.consolidate()
        finally:
            if claim is not None:
                claim.release()
    seconds = time.perf_counter() - started
    used = {
        "decode_workers": workers,
        "batch_size": batch_size,
        "device": ",".join(str(d) for d in devices),
        "devices": device_rows(counts, seconds),
    }
    return _summary(cfg, store, counts, len(tasks), seconds, used, repaired)


def _say_restored(cfg: ExtractConfig, store: FeatureStore, progress: Progress) -> None:
    """What opening the store put back (metadata from the consolidated copy, arrays of an
    interrupted creation), one line each."""
    if store.restored_metadata:
        names = ", ".join(f"{name}/{METADATA_FILE}" for name in store.restored_metadata)
        progress.message(f"{cfg.out}: restored {names} from the consolidated metadata")
    if store.restored_creation:
        rewritten = ", ".join(store.restored_creation)
        progress.message(f"{cfg.out}: rewrote {rewritten} from the video list")


def _summary(
    cfg: ExtractConfig,
    store: FeatureStore,
    counts: ExtractCounts,
    attempted: int,
    seconds: float,
    used: dict,
    repaired: dict | None,
) -> dict:
    """The store's summary with this call's counts, rates, what it ran on and what it repaired."""
    summary = store.summary()
    summary.update(
        store=str(cfg.out),
        attempted=attempted,
        newly_done=counts.done,
        newly_failed=counts.failed,
        seconds=round(seconds, 3),
        videos_per_s=round(attempted / seconds, 3) if seconds > 0 else 0.0,
        frames_per_s=round(counts.images / seconds, 1) if seconds > 0 else 0.0,
        **used,
        dask=cfg.dask,
    )
    if repaired is not None:
        summary["repaired"] = repaired
    return summary
