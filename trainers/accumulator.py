"""G2RL's Phi by the sampling route (DESIGN 3.4, route 1): sum p_t while ``generate`` samples.

:class:`PhiAccumulator` is a transformers ``LogitsProcessor``; after generation its sums go
through the closed form of :mod:`trainers.features`, so Phi costs no forward pass.

Where a user ``logits_processor`` runs in transformers 5.24 (``generation/utils.py``):
``GenerationMixin._get_logits_processor`` builds the score-altering processors (repetition
penalty, n-gram blocking, bad words, min length, suppress tokens, forced BOS/EOS, ...), merges the
user's list after them (``_merge_criteria_processor_list``), and only then appends the sampling
warpers: temperature, top-h, top-k, top-p, min-p, typical, epsilon, eta (then watermarking and
``LogitNormalization``). So a user processor sees the raw logits z_t, not z_t / T, and cannot see
what top-k/top-p do. ``_sample`` casts each step's logits to float32 before the processors
(``outputs.logits[:, -1].to(copy=True, dtype=torch.float32)``), whatever the model dtype, and
samples from ``softmax(processed_scores)``. :class:`PhiAccumulator` therefore divides by T itself,
exactly as ``TemperatureLogitsWarper`` does (``scores / temperature``), which reproduces the
sampler's probabilities bit for bit when temperature is the only active warper; every setting
that would make the sampling distribution differ from softmax(z / T) is refused by
:func:`check_sampling_config`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from trainers.features import EPS, _check_temperature, _compute_dtype, phi_from_prob_sums, pooled_probs, token_counts


def sampling_config_problems(generation_config: GenerationConfig, vocab_size: int | None = None) -> list[str]:
    """Settings under which transformers does not sample from softmax(z / T), one line each.

    Pass the config ``generate`` will use; a ``None`` temperature or top-k is reported because
    ``generate`` fills it from the model's generation config or the global default (top_k 50).
    """
    gc = generation_config

    def get(name: str) -> Any:
        return getattr(gc, name, None)

    problems = []
    temperature = get("temperature")
    if temperature is None or temperature <= 0:
        problems.append(f"temperature={temperature!r}: set a positive temperature explicitly")
    top_k = get("top_k")
    if top_k is None:
        problems.append("top_k=None: generate() replaces it by the model's or the global default (50); set top_k=0")
    elif top_k != 0 and (vocab_size is None or top_k < vocab_size):
        problems.append(f"top_k={top_k}: set top_k=0")
    if (get("num_beams") or 1) > 1:
        problems.append(f"num_beams={get('num_beams')}: use num_beams=1")
    checks = {
        "top_p": lambda v: v is not None and v < 1.0,
        "min_p": lambda v: v is not None,
        "top_h": lambda v: v is not None,
        "typical_p": lambda v: v is not None and v < 1.0,
        "epsilon_cutoff": lambda v: v is not None and 0.0 < v < 1.0,
        "eta_cutoff": lambda v: v is not None and 0.0 < v < 1.0,
        "repetition_penalty": lambda v: v is not None and v != 1.0,
        "encoder_repetition_penalty": lambda v: v is not None and v != 1.0,
        "no_repeat_ngram_size": lambda v: v is not None and v > 0,
        "bad_words_ids": lambda v: bool(v),
        "sequence_bias": lambda v: bool(v),
        "suppress_tokens": lambda v: bool(v),
        "begin_suppress_tokens": lambda v: bool(v),
        "min_length": lambda v: v is not None and v > 0,
        "min_new_tokens": lambda v: v is not None and v > 0,
        "forced_bos_token_id": lambda v: v is not None,
        "forced_eos_token_id": lambda v: v is not None,
        "exponential_decay_length_penalty": lambda v: v is not None,
        "guidance_scale": lambda v: v is not None and v != 1.0,
        "watermarking_config": lambda v: v is not None,
    }
    for name, bad in checks.items():
        if bad(get(name)):
            problems.append(f"{name}={get(name)!r} alters the sampling scores")
    return problems


def check_sampling_config(
    generation_config: GenerationConfig, vocab_size: int | None = None, strict: bool = True
) -> None:
    """Raise (``strict``) or warn when the sampler's distribution is not softmax(z / T).

    Then the sampling route's Phi would describe a truncated or penalised distribution rather than
    the policy's, and would differ from the forward route's.
    """
    problems = sampling_config_problems(generation_config, vocab_size)
    if not problems:
        return
    message = (
        "the G2RL sampling-route feature needs generation to sample from softmax(logits / T); "
        + "; ".join(problems)
        + ". Fix these settings, or compute Phi with phi_forward after generation."
    )
    if strict:
        raise ValueError(message)
    warnings.warn(message, stacklevel=2)


def effective_generation_config(model: Any, generation_config: GenerationConfig | None = None) -> GenerationConfig:
    """The config ``model.generate(generation_config=...)`` will actually use.

    ``generate`` fills every ``None`` field from ``model.generation_config`` and then from global
    defaults (``GenerationMixin._prepare_generation_config``); this calls that same method.
    """
    return model._prepare_generation_config(generation_config)[0]


class PhiAccumulator(LogitsProcessor):
    """Sums p_t = softmax(z_t / T) per sequence while ``generate`` samples (DESIGN 3.4, route 1).

    Pass it as ``model.generate(..., logits_processor=[acc])`` (or through
    :func:`extra_logits_processors`) and, after generation, call :meth:`phi`. Use one accumulator per
    ``generate`` call, or :meth:`reset` it in between.

    Placement: transformers 5.24 runs user processors after its own score-altering processors and
    before the temperature and top-k/top-p warpers, so the scores seen here are raw logits z_t
    (float32, cast by ``_sample``). The accumulator divides by ``temperature`` itself, as
    ``TemperatureLogitsWarper`` does, so with temperature the only active warper its p_t are exactly
    the probabilities the sampler draws from. Build it with :meth:`from_generation_config` to take T
    and the EOS ids from the config ``generate`` uses and to refuse configs that sample from anything
    else (:func:`check_sampling_config`). Scores containing -inf or NaN (a processor before this one
    masked tokens) are recorded and refused in :meth:`phi`.

    Ends: the first call sees the prompt (B, P); each later call sees one more token. A sequence
    stops accumulating after it has emitted one of ``eos_token_id`` in its generated part; the step
    that samples the EOS is still counted, matching TRL's ``completion_mask``. EOS-valued tokens in
    the prompt (left padding when pad == eos) are ignored. The scores are returned unchanged.

    Cost: for a large (B, V) each step is pooled at once (a softmax into a buffer kept across steps,
    and a fused add). For a small
    one (at most ``EAGER_ELEMENTS`` scores) the dozen small tensor operations of a step would cost
    more than the arithmetic, so the raw scores are copied into a ``BUFFER_BYTES`` buffer and pooled
    K steps at a time by :func:`pooled_probs`, the forward route's function; the tokens generated in
    the meantime say which steps count. Both give the same P to float rounding (tests).
    """

    EAGER_ELEMENTS = 1 << 16
    BUFFER_BYTES = 16 << 20

    def __init__(self, eos_token_id: int | Sequence[int], temperature: float = 1.0) -> None:
        _check_temperature(temperature)
        ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        if not ids:
            raise ValueError("PhiAccumulator needs at least one eos_token_id to know where sequences end")
        self.eos_token_ids = ids
        self.temperature = float(temperature)
        self.reset()

    @classmethod
    def from_generation_config(
        cls, model: Any, generation_config: GenerationConfig | None = None, strict: bool = True
    ) -> PhiAccumulator:
        """An accumulator for ``model.generate(generation_config=generation_config)``: T and EOS ids from
        the effective config, which must sample from softmax(z / T) (raises if not; warns if not
        ``strict``)."""
        config = effective_generation_config(model, generation_config)
        vocab_size = model.get_output_embeddings().weight.size(0)
        check_sampling_config(config, vocab_size, strict)
        if config.eos_token_id is None:
            raise ValueError("the generation config has no eos_token_id; set it so sequences can end")
        return cls(config.eos_token_id, config.temperature)

    def reset(self) -> None:
        """Forget everything accumulated (start of a new ``generate`` call)."""
        self._prob_sum: Tensor | None = None  # (B, V): sum_t a_t p_t
        self._num_tokens: Tensor | None = None  # (B,): sum_t a_t
        self.prompt_length: int | None = None
        self._finished: Tensor | None = None  # (B,) bool, large V only
        self._length: int | None = None
        self._nonfinite: Tensor | None = None  # () bool
        self._buffer: Tensor | None = None  # (B, K, V) raw scores of the steps not pooled yet, small V only
        self._steps = 0  # K
        self._batch = 0
        self._filled = 0
        self._input_ids: Tensor | None = None  # the last call's (B, P + t): every token sampled so far

    @property
    def prob_sum(self) -> Tensor | None:
        """P = sum_t a_t p_t so far, (B, V)."""
        self._pool_buffer()
        return self._prob_sum

    @property
    def num_tokens(self) -> Tensor | None:
        """sum_t a_t so far, (B,): the steps counted per sequence."""
        self._pool_buffer()
        return self._num_tokens

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        batch, length = input_ids.shape
        if self._prob_sum is None:
            self._start(input_ids, scores)
        elif batch != self._batch or length != self._length + 1:
            raise RuntimeError(
                f"PhiAccumulator saw input_ids of shape {(batch, length)} after "
                f"{(self._batch, self._length)}: "
                "it follows one generate() call token by token; create a new one (or call reset()) per call. "
                "Beam search and assisted generation are not supported."
            )
        self._length = length
        if self._buffer is not None:  # small V: keep the scores, pool K steps at once
            if self._filled == self._steps:
                self._pool_buffer()  # before this call's ids: the buffered steps end with the previous call
            self._input_ids = input_ids
            self._buffer[:, self._filled].copy_(scores)
            self._filled += 1
            return scores
        self._input_ids = input_ids
        if length > self.prompt_length:  # large V: pool this step now
            self._finished |= torch.isin(input_ids[:, -1], self._eos)  # (B,)
        active = ~self._finished  # (B,)
        z = scores.to(self._prob_sum.dtype)  # (B, V)
        if self.temperature != 1.0:
            z = torch.div(z, self.temperature, out=self._scaled)  # (B, V)
        probs = torch.ops.aten._softmax.out(z, -1, False, out=self._probs)  # (B, V), into the step buffer
        self._prob_sum.addcmul_(probs, active[:, None].to(probs.dtype))  # (B, V)
        self._num_tokens += active
        self._nonfinite |= ~torch.isfinite(scores.sum())  # -inf or NaN anywhere makes the sum non-finite
        return scores

    def _start(self, input_ids: Tensor, scores: Tensor) -> None:
        batch, vocab = scores.shape
        dtype = _compute_dtype(scores.dtype)
        self._prob_sum = scores.new_zeros(scores.shape, dtype=dtype)  # (B, V)
        self._batch = batch
        self._num_tokens = torch.zeros(batch, dtype=torch.long, device=scores.device)  # (B,)
        self._finished = torch.zeros(batch, dtype=torch.bool, device=scores.device)  # (B,)
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=scores.device)
        self._eos = torch.tensor(self.eos_token_ids, device=input_ids.device)  # (E,)
        self.prompt_length = input_ids.size(1)
        if batch * vocab <= self.EAGER_ELEMENTS:
            steps = max(2, self.BUFFER_BYTES // (batch * vocab * scores.element_size()))
            self._buffer = scores.new_empty(batch, steps, vocab)  # (B, K, V)
            self._steps = steps
        else:  # reused every step: fresh (B, V) tensors cost their page faults each time (bench: ~40 % of a call)
            self._probs = torch.empty_like(self._prob_sum)  # (B, V)
            self._scaled = torch.empty_like(self._prob_sum) if self.temperature != 1.0 else None  # (B, V)

    def _pool_buffer(self) -> None:
        """Add the buffered steps to P (the last call's input_ids hold every token sampled before them)."""
        if not self._filled:
            return
        generated = self._input_ids[:, self.prompt_length :]  # (B, n): tokens of steps 0 .. n - 1
        first = generated.size(1) + 1 - self._filled  # index of the first buffered step
        # step t is counted unless an EOS came before it (the step that samples the EOS counts)
        eos_before = torch.isin(generated[:, : first + self._filled - 1], self._eos).long().cumsum(1)  # (B, n)
        eos_before = torch.cat([eos_before.new_zeros(eos_before.size(0), 1), eos_before], 1)  # (B, n + 1)
        active = (eos_before[:, first : first + self._filled] == 0).to(self._prob_sum.dtype)  # (B, k)
        block = self._buffer[:, : self._filled]  # (B, k, V)
        self._prob_sum += pooled_probs(block, active, self.temperature)  # (B, V)
        self._num_tokens += active.sum(1).long()
        self._nonfinite |= ~torch.isfinite(block.sum())
        self._filled = 0

    @torch.no_grad()
    def phi(self, lm_head_weight: Tensor, completion_ids: Tensor, completion_mask: Tensor, eps: float = EPS) -> Tensor:
        """Phi for the sequences just generated, (B, d).

        Args:
            lm_head_weight: W, (V, d).
            completion_ids: the generated tokens, (B, C) (``sequences[:, prompt_length:]``).
            completion_mask: 1 up to and including the first EOS, (B, C), as TRL builds it. A row that
                is all zero (e.g. a truncated completion masked out) gives Phi = 0, as the forward route.
        """
        if self._prob_sum is None:
            raise RuntimeError("PhiAccumulator has seen no generation step; pass it to generate() first")
        self._pool_buffer()
        if completion_ids.size(0) != self._prob_sum.size(0):
            raise ValueError(
                f"completion_ids has {completion_ids.size(0)} rows, the accumulator {self._prob_sum.size(0)}"
            )
        if bool(self._nonfinite):
            raise ValueError(
                "the scores had -inf/NaN entries: a logits processor before the accumulator masked tokens "
                "(suppress_tokens, bad_words_ids, min_new_tokens, ...), so the sampler did not draw from "
                "softmax(z / T); remove it or compute Phi with phi_forward"
            )
        weight_sum = completion_mask.sum(1).to(self._num_tokens.device)  # (B,)
        mismatch = (weight_sum != self._num_tokens) & (weight_sum != 0)  # (B,)
        if bool(mismatch.any()):
            rows = mismatch.nonzero().flatten().tolist()
            raise ValueError(
                f"completion_mask counts {weight_sum[rows].tolist()} tokens in rows {rows}, the accumulator "
                f"{self._num_tokens[rows].tolist()}: the mask must run up to and including the first of "
                f"eos ids {self.eos_token_ids} (did a stop string or other criterion end a sequence?)"
            )
        keep = (weight_sum != 0).to(self._prob_sum.dtype)  # (B,)
        count = token_counts(completion_ids, completion_mask, self._prob_sum.size(1), self._prob_sum.dtype)  # (B, V)
        return phi_from_prob_sums(lm_head_weight, self._prob_sum * keep[:, None], count, weight_sum, eps)


@contextlib.contextmanager
def extra_logits_processors(model: Any, *processors: LogitsProcessor) -> Iterator[None]:
    """While open, every ``model.generate(...)`` call also gets ``processors`` in its ``logits_processor``.

    For engines that call ``generate`` themselves without a ``logits_processor`` argument (TRL 1.16's
    ``GRPOTrainer._generate_single_turn``): it shadows ``generate`` with an instance attribute and
    removes it on exit.
    """
    had_own = "generate" in vars(model)
    original = model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        extra = list(kwargs.pop("logits_processor", None) or [])
        return original(*args, logits_processor=LogitsProcessorList([*extra, *processors]), **kwargs)

    model.generate = generate
    try:
        yield
    finally:
        if had_own:
            model.generate = original
        else:
            del model.generate
