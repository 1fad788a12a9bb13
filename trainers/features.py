"""The G2RL sequence gradient feature Phi (DESIGN.md section 3.4), computed exactly and cheaply.

Token feature (DESIGN 3.4): with W the LM head weight (V, d), T the sampling temperature and
p_t = softmax(z_t / T),

    phi_t = W[y_t] - sum_v p_t[v] W[v]        (= T * grad_{h_t} log pi(y_t | x, y_<t))

Sequence feature: Phi = sum_t a~_t phi_t, a~_t = a_t / (sum_s a_s + eps), a_t = 1 on completion
tokens (the EOS token included, as TRL's ``completion_mask``), 0 on prompt and padding.

Closed form ("Compute it exactly and cheaply"): the pooling is linear, so

    Phi = W^T (c - P) / (sum_t a_t + eps),   c = sum_t a_t onehot(y_t),  P = sum_t a_t p_t   (B, V)

Sum the probability rows first, then one (V x d) product per sequence; no per-token V x d product
and no backward pass. The formula is exact for a linear LM head z = W h + b; models that soft-cap
or rescale their logits after the head (Gemma 2 soft-capping, Cohere ``logit_scale``) are outside it.

Two routes give P, and they agree to float tolerance (tests/test_features.py):

1. Sampling: :class:`PhiAccumulator`, a transformers ``LogitsProcessor``, sums p_t while
   ``generate`` samples; Phi then costs no forward pass.
2. Forward: :func:`phi_forward` makes one ``torch.no_grad`` forward over prompt + completion
   (for vLLM or any engine that cannot be hooked); :func:`phi_from_logits` if logits are at hand.

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
import inspect
import itertools
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

EPS = 1e-8
"""The eps in a~_t = a_t / (sum_s a_s + eps)."""


# ---------------------------------------------------------------------------------------------
# The closed form and the two ways to feed it
# ---------------------------------------------------------------------------------------------


def _compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float32 at least, float64 when any input is float64."""
    out = torch.float32
    for dtype in dtypes:
        out = torch.promote_types(out, dtype)
    return out


def token_counts(tokens: Tensor, weights: Tensor, vocab_size: int, dtype: torch.dtype | None = None) -> Tensor:
    """c[b, v] = sum_t weights[b, t] * 1{tokens[b, t] == v}: the a-weighted one-hot token sum, (B, V)."""
    dtype = dtype or _compute_dtype(weights.dtype if weights.is_floating_point() else torch.float32)
    counts = torch.zeros(tokens.size(0), vocab_size, dtype=dtype, device=tokens.device)  # (B, V)
    return counts.scatter_add_(1, tokens.long(), weights.to(dtype))


def phi_from_prob_sums(
    lm_head_weight: Tensor,
    prob_sum: Tensor,
    token_count: Tensor,
    weight_sum: Tensor,
    eps: float = EPS,
    chunk_rows: int = 16384,
) -> Tensor:
    """Phi = W^T (c - P) / (sum_t a_t + eps) (DESIGN 3.4, closed form): the product both routes call.

    Args:
        lm_head_weight: W, (V, d).
        prob_sum: P = sum_t a_t p_t, (B, V).
        token_count: c = sum_t a_t onehot(y_t), (B, V) (see :func:`token_counts`).
        weight_sum: sum_t a_t, (B,).
        eps: the eps of a~_t.
        chunk_rows: when W is stored below float32 (bf16/fp16), W is upcast this many rows at a time,
            so the product runs in float32 without a float32 copy of the whole head.

    Returns:
        Phi, (B, d), in float32 (float64 when W or P is float64).
    """
    dtype = _compute_dtype(prob_sum.dtype, lm_head_weight.dtype)
    scale = 1.0 / (weight_sum.to(dtype) + eps)  # (B,)
    residual = (token_count.to(dtype) - prob_sum.to(dtype)) * scale[:, None]  # (B, V)
    if lm_head_weight.dtype == dtype:
        return residual @ lm_head_weight  # (B, d)
    phi = residual.new_zeros(residual.size(0), lm_head_weight.size(1))  # (B, d)
    for start in range(0, lm_head_weight.size(0), chunk_rows):
        rows = lm_head_weight[start : start + chunk_rows].to(dtype)  # (chunk, d)
        phi += residual[:, start : start + chunk_rows] @ rows
    return phi


def phi_from_logits(
    logits: Tensor,
    tokens: Tensor,
    mask: Tensor,
    lm_head_weight: Tensor,
    temperature: float = 1.0,
    block_elements: int = 1 << 20,
    eps: float = EPS,
) -> Tensor:
    """Phi from logits aligned with the tokens they predict (DESIGN 3.4, forward route).

    The softmax runs over blocks of about ``block_elements`` logits (4 MB in float32, see
    :func:`pooled_probs`), so the probabilities never exist for the whole batch and each block stays
    in cache. (Blocks of 64 positions of every sequence were strided slices of 200 MB at SmolLM2's V
    that softmax copied first: 6.3 % of a forward pass, against 2.1-2.6 % by blocks; ``make bench``.)

    Args:
        logits: z, (B, L, V); ``logits[:, t]`` predicts ``tokens[:, t]`` (already shifted).
        tokens: y, (B, L).
        mask: a, (B, L); 1 on completion tokens, 0 elsewhere.
        lm_head_weight: W, (V, d).
        temperature: T in p_t = softmax(z_t / T).
        block_elements: logits per softmax block.
        eps: the eps of a~_t.

    Returns:
        Phi, (B, d).
    """
    _check_temperature(temperature)
    dtype = _compute_dtype(logits.dtype, lm_head_weight.dtype)
    weights = mask.to(dtype)  # (B, L)
    prob_sum = pooled_probs(logits, weights, temperature, block_elements)  # (B, V)
    count = token_counts(tokens, weights, logits.size(-1), dtype)  # (B, V)
    return phi_from_prob_sums(lm_head_weight, prob_sum, count, weights.sum(1), eps)


def pooled_probs(logits: Tensor, weights: Tensor, temperature: float = 1.0, block_elements: int = 1 << 20) -> Tensor:
    """P = sum_t weights[:, t] softmax(logits[:, t] / T), (B, V), a block of about ``block_elements`` logits at a time.

    For a large V a block is a contiguous (c, V) slice of one sequence, summed by one matrix-vector
    product; for a small V, whole sequences, summed by one batched product. Computed in the dtype of
    ``weights`` (float32 at least).
    """
    batch, length, vocab = logits.shape
    dtype = weights.dtype
    prob_sum = logits.new_zeros(batch, vocab, dtype=dtype)  # (B, V)

    def probs_of(z: Tensor) -> Tensor:
        z = z.to(dtype)
        return torch.softmax(z if temperature == 1.0 else z / temperature, dim=-1)  # T == 1: no division, same bits

    positions = max(1, block_elements // vocab)
    if positions >= length:  # small V: whole sequences per block
        seqs = max(1, positions // max(length, 1))
        for b in range(0, batch, seqs):
            probs = probs_of(logits[b : b + seqs])  # (s, L, V)
            prob_sum[b : b + seqs] = torch.bmm(weights[b : b + seqs, None, :], probs).squeeze(1)  # (s, V)
    else:  # large V: a few positions of one sequence per block
        for b in range(batch):
            for start in range(0, length, positions):
                probs = probs_of(logits[b, start : start + positions])  # (c, V), contiguous
                prob_sum[b] += weights[b, start : start + positions] @ probs  # (V,)
    return prob_sum


def token_features(logits: Tensor, tokens: Tensor, lm_head_weight: Tensor, temperature: float = 1.0) -> Tensor:
    """phi_t = W[y_t] - p_t @ W for every position (DESIGN 3.4, token feature), (B, L, d).

    One V x d product per token: the plain definition, kept as the reference for the closed form.
    """
    _check_temperature(temperature)
    dtype = _compute_dtype(logits.dtype, lm_head_weight.dtype)
    weight = lm_head_weight.to(dtype)  # (V, d)
    probs = torch.softmax(logits.to(dtype) / temperature, dim=-1)  # (B, L, V)
    return weight[tokens.long()] - probs @ weight  # (B, L, d)


def phi_per_token(
    logits: Tensor,
    tokens: Tensor,
    mask: Tensor,
    lm_head_weight: Tensor,
    temperature: float = 1.0,
    eps: float = EPS,
) -> Tensor:
    """Phi = sum_t a~_t phi_t from one phi_t per token (DESIGN 3.4, the definition), (B, d).

    The reference for :func:`phi_from_logits` (same arguments); it costs one V x d product per token.
    """
    phis = token_features(logits, tokens, lm_head_weight, temperature)  # (B, L, d)
    weights = mask.to(phis.dtype)  # (B, L)
    a_tilde = weights / (weights.sum(1, keepdim=True) + eps)  # (B, L)
    return (a_tilde[..., None] * phis).sum(1)  # (B, d)


def _check_temperature(temperature: float) -> None:
    if not temperature or temperature <= 0:
        raise ValueError(f"temperature must be > 0 for p_t = softmax(z_t / T); got {temperature!r}")


def pad_batch(
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    pad_token_id: int,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """TRL's layout from token lists (completions cut after their first EOS, as TRL returns them).

    Returns:
        input_ids (B, P + C): left-padded prompts then right-padded completions;
        attention_mask (B, P + C); completion_mask (B, C).
    """
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
    prompt_lens = torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)  # (B,)
    completion_lens = torch.tensor([len(c) for c in completion_ids], dtype=torch.long)  # (B,)
    prompt_len = int(prompt_lens.max()) if len(prompt_ids) else 0
    completion_len = int(completion_lens.max()) if len(completion_ids) else 0
    in_prompt = torch.arange(prompt_len) >= prompt_len - prompt_lens[:, None]  # (B, P), left-padded
    in_completion = torch.arange(completion_len) < completion_lens[:, None]  # (B, C), right-padded
    input_ids = torch.full((len(prompt_ids), prompt_len + completion_len), pad_token_id, dtype=torch.long)
    # boolean-mask assignment fills row by row, left to right: the order of the concatenated lists
    input_ids[:, :prompt_len][in_prompt] = torch.tensor(list(itertools.chain.from_iterable(prompt_ids)),
                                                         dtype=torch.long)
    input_ids[:, prompt_len:][in_completion] = torch.tensor(list(itertools.chain.from_iterable(completion_ids)),
                                                             dtype=torch.long)
    attention_mask = torch.cat([in_prompt, in_completion], 1).long()  # (B, P + C)
    completion_mask = in_completion.long()  # (B, C)
    return input_ids.to(device), attention_mask.to(device), completion_mask.to(device)


@torch.no_grad()
def phi_forward(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    temperature: float = 1.0,
    batch_size: int | None = None,
    block_elements: int = 1 << 20,
    eps: float = EPS,
) -> Tensor:
    """Phi from one no-grad forward over prompt + completion (DESIGN 3.4, forward route).

    The layout is TRL's: ``input_ids = cat(prompt_ids, completion_ids)`` with left-padded prompts
    and right-padded completions; ``completion_mask`` covers the last C positions. Logits are kept
    only for the C positions that predict completion tokens (``logits_to_keep=C + 1`` when the model
    accepts it), and position ids follow the attention mask as in ``generate``.

    Args:
        model: a causal LM with ``get_output_embeddings()``.
        input_ids: (B, P + C).
        attention_mask: (B, P + C).
        completion_mask: a, (B, C); 1 up to and including the first EOS.
        temperature: T of the sampling policy.
        batch_size: sequences per forward (None: all at once).
        block_elements: logits per softmax block in :func:`phi_from_logits`.

    Returns:
        Phi, (B, d).
    """
    weight = model.get_output_embeddings().weight  # (V, d)
    num_completion = completion_mask.size(1)
    params = inspect.signature(model.forward).parameters
    batch_size = batch_size or input_ids.size(0)
    phis = []
    for start in range(0, input_ids.size(0), batch_size):
        ids = input_ids[start : start + batch_size]  # (b, P + C)
        attn = attention_mask[start : start + batch_size]  # (b, P + C)
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": attn}
        if "position_ids" in params:
            kwargs["position_ids"] = (attn.long().cumsum(-1) - 1).masked_fill(attn == 0, 0)  # (b, P + C)
        if "logits_to_keep" in params:
            kwargs["logits_to_keep"] = num_completion + 1
        logits = model(**kwargs).logits[:, -num_completion - 1 : -1]  # (b, C, V)
        phis.append(
            phi_from_logits(
                logits,
                ids[:, -num_completion:],
                completion_mask[start : start + batch_size],
                weight,
                temperature,
                block_elements,
                eps,
            )
        )
    return torch.cat(phis)  # (B, d)


# ---------------------------------------------------------------------------------------------
# The sampling route
# ---------------------------------------------------------------------------------------------


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

    Cost: for a large (B, V) each step is pooled at once (a softmax and a fused add). For a small
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
        elif batch != self._prob_sum.size(0) or length != self._length + 1:
            raise RuntimeError(
                f"PhiAccumulator saw input_ids of shape {(batch, length)} after "
                f"{(self._prob_sum.size(0), self._length)}: "
                "it follows one generate() call token by token; create a new one (or call reset()) per call. "
                "Beam search and assisted generation are not supported."
            )
        if self._buffer is not None and self._filled == self._buffer.size(1):
            self._pool_buffer()  # before this call's ids: the buffered steps end with the previous call
        self._length = length
        self._input_ids = input_ids
        if self._buffer is not None:  # small V: keep the scores, pool K steps at once
            self._buffer[:, self._filled].copy_(scores)
            self._filled += 1
            return scores
        if length > self.prompt_length:  # large V: pool this step now
            self._finished |= torch.isin(input_ids[:, -1], self._eos)  # (B,)
        active = ~self._finished  # (B,)
        z = scores.to(self._prob_sum.dtype)  # (B, V)
        probs = torch.softmax(z if self.temperature == 1.0 else z / self.temperature, dim=-1)  # (B, V)
        self._prob_sum.addcmul_(probs, active[:, None].to(probs.dtype))  # (B, V)
        self._num_tokens += active
        self._nonfinite |= ~torch.isfinite(scores.sum())  # -inf or NaN anywhere makes the sum non-finite
        return scores

    def _start(self, input_ids: Tensor, scores: Tensor) -> None:
        batch, vocab = scores.shape
        dtype = _compute_dtype(scores.dtype)
        self._prob_sum = scores.new_zeros(scores.shape, dtype=dtype)  # (B, V)
        self._num_tokens = torch.zeros(batch, dtype=torch.long, device=scores.device)  # (B,)
        self._finished = torch.zeros(batch, dtype=torch.bool, device=scores.device)  # (B,)
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=scores.device)
        self._eos = torch.tensor(self.eos_token_ids, device=input_ids.device)  # (E,)
        self.prompt_length = input_ids.size(1)
        if batch * vocab <= self.EAGER_ELEMENTS:
            steps = max(2, self.BUFFER_BYTES // (batch * vocab * scores.element_size()))
            self._buffer = scores.new_empty(batch, steps, vocab)  # (B, K, V)

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
