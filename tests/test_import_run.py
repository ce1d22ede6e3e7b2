"""A reference checkpoint with tuned CLIP weights: import it, extract with its CLIP, evaluate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from mote.cache_schema.store_errors import StoreMismatch
from mote.pipeline.clip.build import build_clip
from mote.stages import evaluate, extract


def test_extract_with_the_run_uses_the_blended_tuned_weights(
    imported_run, motion_data, tmp_path, tiny_extract
):
    run, tuned, original = imported_run
    out = tmp_path / "run.zarr"
    summary = extract.run(tiny_extract(motion_data, out, run=run, limit=3))
    assert summary["n_done"] == 3
    group = zarr.open_group(out, mode="r")
    assert group.attrs["weights_id"].startswith("run:")
    assert group.attrs["weights_id"].endswith("blend=0.99")

    # the same frames through a CLIP with 0.99 * tuned + 0.01 * original by hand
    by_hand = build_clip("mote-tiny", "none", device="cpu", seed=0)
    base = original.model.state_dict()
    by_hand.model.load_state_dict(
        {k: 0.99 * v + 0.01 * base[k] if v.is_floating_point() else v for k, v in tuned.items()},
        strict=False,
    )
    from mote.pipeline.video.decode_pool import DecodeTask, decode_one

    video = decode_one(
        DecodeTask(0, str(motion_data.root / str(group["video_ids"][0])), 8, 1, 1, 64)
    )
    expected = by_hand.encode_frames(torch.from_numpy(video.views[0])).to(torch.float16).numpy()
    np.testing.assert_allclose(
        group["embeddings"][0, 0].astype(np.float32), expected.astype(np.float32), atol=2e-3
    )
    plain = build_clip("mote-tiny", "none", device="cpu", seed=0)
    differs = plain.encode_frames(torch.from_numpy(video.views[0])).to(torch.float16).numpy()
    assert np.abs(differs.astype(np.float32) - expected.astype(np.float32)).max() > 1e-2

    predictions = tmp_path / "pred.npz"
    result = evaluate.run(
        evaluate.EvaluateConfig(run=run, store=out, device="cpu", save_predictions=predictions)
    )
    saved = np.load(predictions)
    assert result["n_videos"] == 3
    assert saved["labels"].tolist() == [int(x) for x in group["labels"][:3]]
    by_hand = 100 * (saved["fused_scores"].argmax(axis=1) == saved["labels"]).mean()
    assert result["top1"] == pytest.approx(by_hand, abs=1e-4)


def test_evaluate_refuses_a_store_made_with_the_original_clip(
    imported_run, motion_data, tmp_path, tiny_extract
):
    run, _, _ = imported_run
    out = tmp_path / "plain.zarr"
    extract.run(tiny_extract(motion_data, out, limit=2))
    with pytest.raises(StoreMismatch, match="weights_id"):
        evaluate.run(evaluate.EvaluateConfig(run=run, store=out, device="cpu"))
