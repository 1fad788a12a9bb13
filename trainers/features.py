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

1. Sampling: :class:`trainers.accumulator.PhiAccumulator`, a transformers ``LogitsProcessor``,
   sums p_t while ``generate`` samples; Phi then costs no forward pass.
2. Forward: :func:`phi_forward` makes one ``torch.no_grad`` forward over prompt + completion
   (for vLLM or any engine that cannot be hooked); :func:`phi_from_logits` if logits are at hand.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

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


def head_product(residual: Tensor, lm_head_weight: Tensor) -> Tensor:
    """``residual @ W``, (B, V) x (V, d) -> (B, d): the one V x d product of the closed form.

    On CPU in float32 it runs as oneDNN's linear with W's transpose as a view (no copy): 13.7 ms
    against 18.5 ms for ``@`` (MKL) at B = 16 and SmolLM2's V x d, and 8.9 against 11.9 ms at B = 4,
    one thread, relative difference to a float64 product 1e-6 either way (``make bench`` measures the
    forward route with it). Below :data:`ONEDNN_MIN_ELEMENTS` elements of W, elsewhere, and where this build
    lacks oneDNN, it is ``@``: at the tiny preset's 85 x 128 head oneDNN's call costs 21 µs against 6 µs,
    and took the tiny forward route from 0.73 % to 1.1 % of its forward pass.
    """
    if (residual.device.type == "cpu" and residual.dtype == lm_head_weight.dtype == torch.float32
            and _ONEDNN_LINEAR is not None and lm_head_weight.numel() >= ONEDNN_MIN_ELEMENTS
            and not residual.requires_grad and not lm_head_weight.requires_grad):
        return _ONEDNN_LINEAR(residual.contiguous(), lm_head_weight.t(), None, "none", [], "")
    return residual @ lm_head_weight


def _onednn_linear():
    """oneDNN's fp32 linear (``torch.ops.mkldnn._linear_pointwise``) where this build has it, else None."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise
        probe = op(torch.ones(1, 2), torch.ones(2, 3).t(), None, "none", [], "")  # (1, V=2) x (V, d=3)
    except (AttributeError, RuntimeError):
        return None
    return op if probe.shape == (1, 3) and bool((probe == 2).all()) else None


_ONEDNN_LINEAR = _onednn_linear()
ONEDNN_MIN_ELEMENTS = 1 << 20
"""The size of W from which :func:`head_product` goes through oneDNN (4096 x 256: 325 µs against 421 µs)."""


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
        return head_product(residual, lm_head_weight)  # (B, d)
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
    The one-hot counts are added into -P in place (``scatter_add_``), and the division by
    sum_t a_t is applied to the (B, d) product rather than to the (B, V) residual: the same
    closed form as :func:`phi_from_prob_sums`, in fewer passes over (B, V).

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
    residual = pooled_probs(logits, weights, temperature, block_elements).neg_()  # (B, V) -P
    residual.scatter_add_(1, tokens.long(), weights)  # (B, V) c - P
    if lm_head_weight.dtype != dtype:
        return phi_from_prob_sums(lm_head_weight, -residual, torch.zeros_like(residual), weights.sum(1), eps)
    return head_product(residual, lm_head_weight).div_(weights.sum(1, keepdim=True).add_(eps))  # (B, d)


def pooled_probs(logits: Tensor, weights: Tensor, temperature: float = 1.0, block_elements: int = 1 << 20) -> Tensor:
    """P = sum_t weights[:, t] softmax(logits[:, t] / T), (B, V), a block of about ``block_elements`` logits at a time.

    For a large V a block is a contiguous (c, V) slice of one sequence, its softmax written into one
    buffer reused by every block (a fresh 4 MB tensor per block pays its page faults), then summed by
    one matrix-vector product into the sequence's row; for a small V, whole sequences, summed by one
    batched product. Computed in the dtype of ``weights`` (float32 at least).
    """
    batch, length, vocab = logits.shape
    dtype = weights.dtype

    def scaled(z: Tensor) -> Tensor:
        z = z.to(dtype)
        return z if temperature == 1.0 else z / temperature  # T == 1: no division, same bits

    positions = max(1, block_elements // vocab)
    if positions >= length:  # small V: whole sequences per block
        seqs = max(1, positions // max(length, 1))
        if seqs >= batch:
            probs = torch.softmax(scaled(logits), dim=-1)  # (B, L, V)
            return torch.bmm(weights[:, None, :], probs).squeeze(1)  # (B, V)
        prob_sum = logits.new_empty(batch, vocab, dtype=dtype)  # (B, V)
        for b in range(0, batch, seqs):
            probs = torch.softmax(scaled(logits[b : b + seqs]), dim=-1)  # (s, L, V)
            prob_sum[b : b + seqs] = torch.bmm(weights[b : b + seqs, None, :], probs).squeeze(1)  # (s, V)
        return prob_sum
    prob_sum = logits.new_zeros(batch, vocab, dtype=dtype)  # (B, V)
    buffer = logits.new_empty(positions, vocab, dtype=dtype)  # (c, V), every block's softmax
    for b in range(batch):
        for start in range(0, length, positions):
            z = scaled(logits[b, start : start + positions])  # (c, V), contiguous
            probs = torch.ops.aten._softmax.out(z, -1, False, out=buffer[: z.size(0)])  # (c, V)
            prob_sum[b].addmv_(probs.t(), weights[b, start : start + positions])  # (V,)
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
