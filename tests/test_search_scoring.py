"""Normalised ranking scores (pipeline/search/scoring.py): the softmax score is the query's share
of a softmax over bank + query, each score ranks as the streamed search ranks it, and on data
built with the hubness of close class texts (a per-video constant in every cosine) the
normalised scores rank each class's videos first where the raw cosine does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mote.pipeline.data.datasets import shipped_file
from mote.pipeline.errors import ConfigError
from mote.pipeline.search.exact import exact_top_k
from mote.pipeline.search.score_names import SCORES
from mote.pipeline.search.scoring import Scorer, bank_stats, collection_stats, normalise
from mote.pipeline.search.search_evaluation import class_retrieval
from mote.pipeline.search.vocabulary import LABEL_FILES, vocabulary

SCALE = 100.0


def hub_collection(seed: int = 0, classes: int = 8, per_class: int = 20):
    """(class texts [C, D], videos [N, D], labels [N]): texts share one direction (cosines about
    0.95 with each other); each video is its class's direction plus that shared direction times
    a weight drawn per video, so its cosine with every text moves together."""
    rng = np.random.default_rng(seed)
    dim = 32
    basis = np.linalg.qr(rng.standard_normal((dim, classes + 1)))[0].T  # orthonormal rows
    shared, own = basis[0], basis[1:]
    text = F.normalize(torch.tensor(shared + 0.3 * own, dtype=torch.float32), dim=-1)
    labels = np.repeat(np.arange(classes), per_class)
    weight = rng.uniform(-0.5, 0.5, len(labels))[:, None]  # the per-video constant
    noise = 0.05 * rng.standard_normal((len(labels), dim))
    videos = weight * shared + 0.3 * own[labels] + noise
    return text, F.normalize(torch.tensor(videos, dtype=torch.float32), dim=-1), labels


def test_softmax_is_the_querys_share_of_a_softmax_over_bank_and_query():
    text, videos, _ = hub_collection()
    query = F.normalize(torch.randn(1, text.shape[1]), dim=-1)
    raw = query @ videos.T
    scored = normalise("softmax", raw, bank_stats(text, videos, SCALE), SCALE)
    logits = SCALE * torch.cat([query, text]) @ videos.T  # [1 + C, N]
    share = torch.softmax(logits.double(), dim=0)[0]
    assert torch.allclose(scored[0].double().exp(), share, rtol=1e-4, atol=1e-9)
    centred = normalise("centred", raw, bank_stats(text, videos, SCALE), SCALE)
    assert torch.allclose(centred, raw - (text @ videos.T).mean(dim=0), atol=1e-6)


@pytest.mark.parametrize("kept", [False, True], ids=["stats-per-chunk", "stats-kept"])
@pytest.mark.parametrize("score", SCORES)
def test_streamed_search_ranks_by_the_score(score, kept):
    """Chunk by chunk, with each chunk's statistics computed or sliced from the collection's."""
    text, videos, _ = hub_collection(seed=1)
    queries = text[:3]
    chunks = [videos[i : i + 37].numpy() for i in range(0, len(videos), 37)]
    stats = collection_stats(text, chunks, SCALE, torch.device("cpu")) if kept else None
    scorer = Scorer(score, text, SCALE, stats)
    found, rows = exact_top_k(queries, chunks, 15, rescore=scorer)
    whole = Scorer(score, text, SCALE)(queries @ videos.T, videos, slice(None)).numpy()
    for q in range(len(queries)):
        order = np.lexsort((np.arange(len(videos)), -whole[q]))[:15]
        assert rows[q].tolist() == order.tolist()
        assert np.allclose(found[q], whole[q][order], atol=1e-5)
    picked = np.array([5, 77, 140])  # an index's candidates: rows by number
    some = scorer(queries @ videos[picked].T, videos[picked], picked).numpy()
    assert np.allclose(some, whole[:, picked], atol=1e-5)


def test_normalised_scores_rank_each_class_first_where_the_cosine_does_not():
    text, videos, labels = hub_collection(seed=2)
    found = class_retrieval(
        text, np.arange(len(text)), [videos.numpy()], labels, scores=SCORES, bank=text, scale=SCALE
    )
    rankings = found["rankings"]
    # measured: p@10 softmax 100, dual-softmax 98.8, centred 100, cosine 37.5; top-1 100
    assert rankings["cosine"]["p@10"] <= 50
    for score in ("softmax", "dual-softmax", "centred"):
        assert rankings[score]["p@10"] >= rankings["cosine"]["p@10"] + 40, rankings
        assert rankings[score]["p@10"] >= found["zeroshot_top1"] - 5, (score, found)
    assert found["score"] == "softmax" and found["map"] == rankings["softmax"]["map"]


def test_a_score_needs_a_known_name_and_a_bank():
    with pytest.raises(ConfigError, match="--score 'hub': use one of softmax"):
        Scorer("hub", torch.eye(4), SCALE)
    with pytest.raises(ConfigError, match="needs a bank of texts"):
        Scorer("softmax", None, SCALE)
    raw = Scorer("cosine", None, SCALE)(torch.ones(1, 2), torch.eye(2), slice(None))
    assert raw.tolist() == [[1.0, 1.0]]


def test_the_vocabulary_holds_every_shipped_class_name_once():
    names = vocabulary()
    keys = [n.lower().replace("_", " ") for n in names]
    assert len(keys) == len(set(keys)) and len(names) > 700
    for relative in LABEL_FILES:
        first = shipped_file(relative).read_text().splitlines()[1].split(",", 1)[1]
        assert first.lower().replace("_", " ") in keys, relative
