"""Tests for trainers/features.py (DESIGN 3.4): the pooled Phi against the per-token definition and
against autograd, and the sampling route against the forward route, on a real tiny transformers model."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from trainers.accumulator import PhiAccumulator, check_sampling_config, extra_logits_processors, sampling_config_problems
from trainers.features import (
    EPS,
    head_product,
    pad_batch,
    phi_forward,
    phi_from_logits,
    phi_from_prob_sums,
    phi_per_token,
    token_counts,
)

VOCAB, PAD, BOS, EOS = 50, 0, 1, 2
TEMPERATURES = [0.7, 1.0, 1.3]


def tiny_model(seed: int, dtype: torch.dtype = torch.float64, pad: int = PAD) -> LlamaForCausalLM:
    """A random 2-layer Llama: small enough for float64 autograd in milliseconds."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        pad_token_id=pad,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    model = LlamaForCausalLM(config).to(dtype).eval()
    with torch.no_grad():  # logits of order 1 (the default init gives nearly uniform p_t)
        model.lm_head.weight.mul_(20.0)
    return model


def random_batch(seed: int, batch: int, max_prompt: int, max_completion: int) -> tuple[list, list]:
    """Prompts and completions of different lengths (row 0 longest, row 1 shortest, so both kinds of
    padding occur); every other completion ends with EOS."""
    gen = torch.Generator().manual_seed(seed)
    prompts, completions = [], []
    for b in range(batch):
        p = int(torch.randint(1, max_prompt + 1, (1,), generator=gen))
        c = int(torch.randint(1, max_completion + 1, (1,), generator=gen))
        p, c = {0: (max_prompt, max_completion), 1: (1, 1)}.get(b, (p, c))
        prompts.append(torch.randint(3, VOCAB, (p,), generator=gen).tolist())
        completion = torch.randint(3, VOCAB, (c,), generator=gen).tolist()
        if b % 2:
            completion[-1] = EOS
        completions.append(completion)
    return prompts, completions


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # (B, L)


def autograd_phi(model, input_ids, attention_mask, completion_mask, temperature) -> torch.Tensor:
    """T * sum_t a~_t grad_{h_t} sum_s a_s log pi(y_s), h_t the input of the LM head (DESIGN 3.4)."""
    captured = {}

    def keep_input(module, args, output):
        args[0].retain_grad()
        captured["h"] = args[0]

    handle = model.get_output_embeddings().register_forward_hook(keep_input)
    try:
        positions = position_ids(attention_mask)  # (B, L)
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits
    finally:
        handle.remove()
    c = completion_mask.size(1)
    logp = torch.log_softmax(logits[:, -c - 1 : -1] / temperature, dim=-1)  # (B, C, V)
    token_logp = logp.gather(-1, input_ids[:, -c:, None]).squeeze(-1)  # (B, C)
    model.zero_grad()
    (token_logp * completion_mask).sum().backward()
    grad = captured["h"].grad[:, -c - 1 : -1]  # (B, C, d)
    weights = completion_mask.to(grad.dtype)  # (B, C)
    a_tilde = weights / (weights.sum(1, keepdim=True) + EPS)  # (B, C)
    return temperature * (a_tilde[..., None] * grad).sum(1)  # (B, d)


def completion_mask_like_trl(completion_ids: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """1 up to and including the first EOS (grpo_trainer.py, _generate_single_turn)."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids))  # (B, C)
    eos_idx = torch.full((is_eos.size(0),), is_eos.size(1), dtype=torch.long)
    eos_idx[is_eos.any(1)] = is_eos.int().argmax(1)[is_eos.any(1)]
    return (torch.arange(is_eos.size(1))[None] <= eos_idx[:, None]).long()  # (B, C)


# --------------------------------------------------------------------------- closed form == definition == autograd


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize(("seed", "batch", "max_prompt", "max_completion"), [(0, 3, 4, 6), (1, 5, 7, 3), (2, 4, 3, 9)])
def test_pooled_equals_per_token_equals_autograd(seed, batch, max_prompt, max_completion, temperature):
    model = tiny_model(seed)
    prompts, completions = random_batch(seed, batch, max_prompt, max_completion)
    input_ids, attention_mask, completion_mask = pad_batch(prompts, completions, PAD)
    assert (attention_mask == 0).any() and (completion_mask == 0).any()  # prompt and completion padding present
    c = completion_mask.size(1)
    weight = model.get_output_embeddings().weight.detach()  # (V, d)

    reference = autograd_phi(model, input_ids, attention_mask, completion_mask, temperature)
    with torch.no_grad():
        positions = position_ids(attention_mask)  # (B, L)
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits
    logits, tokens = logits[:, -c - 1 : -1], input_ids[:, -c:]  # (B, C, V), (B, C)

    vocab = logits.size(-1)
    pooled = phi_from_logits(logits, tokens, completion_mask, weight, temperature)  # all sequences in one block
    # blocks of two whole sequences (small-V path) and of two positions of one sequence (large-V path)
    by_sequences = phi_from_logits(logits, tokens, completion_mask, weight, temperature, block_elements=2 * c * vocab)
    by_positions = phi_from_logits(logits, tokens, completion_mask, weight, temperature, block_elements=2 * vocab)
    per_token = phi_per_token(logits, tokens, completion_mask, weight, temperature)
    forward = phi_forward(model, input_ids, attention_mask, completion_mask, temperature, batch_size=2,
                          block_elements=3 * vocab)
    assert pooled.dtype == torch.float64 and pooled.shape == (batch, weight.size(1))
    assert reference.abs().max() > 1e-3  # not trivially zero
    torch.testing.assert_close(pooled, per_token, rtol=0, atol=1e-8)
    torch.testing.assert_close(by_sequences, per_token, rtol=0, atol=1e-8)
    torch.testing.assert_close(by_positions, per_token, rtol=0, atol=1e-8)
    torch.testing.assert_close(pooled, reference, rtol=0, atol=1e-8)
    torch.testing.assert_close(forward, reference, rtol=0, atol=1e-8)


def test_phi_is_mean_of_token_features_hand_case():
    """V = 2, d = 1, W = [[1], [-1]], z = 0: p = (1/2, 1/2), so phi_t = W[y_t] and Phi = mean W[y_t]."""
    weight = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    logits = torch.zeros(1, 3, 2, dtype=torch.float64)
    tokens = torch.tensor([[0, 0, 1]])
    mask = torch.tensor([[1, 1, 0]])
    phi = phi_from_logits(logits, tokens, mask, weight, eps=0.0)
    assert phi.tolist() == [[1.0]]
    mask = torch.tensor([[1, 1, 1]])
    expected = torch.tensor([[1 / 3]], dtype=torch.float64)
    torch.testing.assert_close(phi_from_logits(logits, tokens, mask, weight, eps=0.0), expected)


def test_empty_mask_gives_zero():
    weight = torch.randn(7, 3)
    phi = phi_from_logits(torch.randn(2, 4, 7), torch.randint(0, 7, (2, 4)), torch.zeros(2, 4), weight)
    assert torch.equal(phi, torch.zeros(2, 3))


def test_half_precision_head_is_upcast_in_chunks():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(37, 5, generator=gen).to(torch.bfloat16)  # (V, d)
    probs = torch.softmax(torch.randn(3, 37, generator=gen), -1) * 4  # (B, V), 4 tokens each
    count = token_counts(torch.randint(0, 37, (3, 4), generator=gen), torch.ones(3, 4), 37)
    expected = phi_from_prob_sums(weight.float(), probs, count, torch.full((3,), 4.0))
    chunked = phi_from_prob_sums(weight, probs, count, torch.full((3,), 4.0), chunk_rows=8)
    assert chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, expected, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- the sampling route


def sample(model, temperature, seed, processors=(), pad=PAD, max_new_tokens=24, **extra):
    """Left-padded prompts of lengths 2..6; returns (sequences, prompt attention mask)."""
    gen = torch.Generator().manual_seed(100 + seed)
    prompts = [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in (2, 6, 4, 3, 5, 6, 2, 4)]
    input_ids, attention_mask, _ = pad_batch(prompts, [[] for _ in prompts], pad)
    torch.manual_seed(seed)
    sequences = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        do_sample=True,
        temperature=temperature,
        top_k=0,  # None would become the global default 50
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        eos_token_id=EOS,
        pad_token_id=pad,
        logits_processor=list(processors) or None,
        **extra,
    )
    return sequences, attention_mask


@pytest.mark.parametrize(
    ("dtype", "pad", "rel_tol"),
    [
        # float32 model: the sampler's p_t and phi_forward's p_t come from the KV-cached and the full
        # forward, whose float32 logits differ in the last bits; summed over <= 24 tokens and
        # multiplied by W the gap is ~2e-7 of max |Phi| (measured <= 2.3e-7), so 1e-5 has margin.
        (torch.float32, PAD, 1e-5),
        # float64 model: generate() casts each step's logits to float32 before the processors
        # (transformers generation/utils.py, _sample), so the sampling route carries float32 rounding
        # of z_t (measured <= 1.1e-7 of max |Phi|); a float64 bound is out of reach on this route.
        (torch.float64, PAD, 1e-6),
        # pad == eos (TRL's fallback when a tokenizer has no pad token): EOS ids in the left padding
        # of the prompt must not end a sequence.
        (torch.float64, EOS, 1e-6),
    ],
)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("pooling", ["buffered", "buffer refilled", "eager"])
def test_sampling_route_equals_forward_route(dtype, pad, rel_tol, temperature, pooling, monkeypatch):
    model = tiny_model(3, dtype, pad=pad)
    if pooling == "buffer refilled":  # a buffer of 3 steps, pooled 8 times during generation
        monkeypatch.setattr(PhiAccumulator, "BUFFER_BYTES", 3 * 8 * VOCAB * 4)
    elif pooling == "eager":  # the large-V path: every step pooled at once
        monkeypatch.setattr(PhiAccumulator, "EAGER_ELEMENTS", 0)
    acc = PhiAccumulator(EOS, temperature)
    sequences, prompt_mask = sample(model, temperature, seed=4, processors=[acc], pad=pad)
    prompt_len = prompt_mask.size(1)
    completion_ids = sequences[:, prompt_len:]  # (B, C)
    completion_mask = completion_mask_like_trl(completion_ids, [EOS])  # (B, C)
    lengths = completion_mask.sum(1)
    assert (lengths < completion_ids.size(1)).any() and (lengths == 24).any()  # some end early, some are cut
    assert acc.prompt_length == prompt_len and torch.equal(acc.num_tokens, lengths)
    if pooling == "eager":
        assert acc._buffer is None
    else:  # all 24 steps fit in the default buffer; the small one holds 3
        assert acc._buffer.size(1) == 3 if pooling == "buffer refilled" else acc._buffer.size(1) >= 24

    weight = model.get_output_embeddings().weight  # (V, d)
    sampled = acc.phi(weight, completion_ids, completion_mask)
    attention_mask = torch.cat([prompt_mask, completion_mask], 1)  # (B, P + C)
    forward = phi_forward(model, sequences, attention_mask, completion_mask, temperature)
    scale = forward.abs().max()
    assert scale > 1e-3
    torch.testing.assert_close(sampled.double(), forward.double(), rtol=0, atol=rel_tol * float(scale))


def test_accumulator_leaves_sampling_unchanged():
    model = tiny_model(5, torch.float32)
    plain, _ = sample(model, 1.3, seed=7)
    acc = PhiAccumulator(EOS, 1.3)
    hooked, _ = sample(model, 1.3, seed=7, processors=[acc])
    assert torch.equal(plain, hooked)
    scores = torch.randn(2, VOCAB)
    assert PhiAccumulator(EOS, 0.7)(torch.zeros(2, 3, dtype=torch.long), scores) is scores


def test_extra_logits_processors_reaches_generate_and_is_removed():
    model = tiny_model(6, torch.float32)
    direct_acc, wrapped_acc = PhiAccumulator(EOS, 1.0), PhiAccumulator(EOS, 1.0)
    direct, _ = sample(model, 1.0, seed=2, processors=[direct_acc])
    with extra_logits_processors(model, wrapped_acc):
        wrapped, _ = sample(model, 1.0, seed=2)
    assert "generate" not in vars(model)
    assert torch.equal(direct, wrapped)
    torch.testing.assert_close(wrapped_acc.prob_sum, direct_acc.prob_sum, rtol=0, atol=0)


def test_accumulator_refuses_reuse_and_wrong_masks():
    model = tiny_model(7, torch.float32)
    acc = PhiAccumulator(EOS, 1.0)
    sequences, prompt_mask = sample(model, 1.0, seed=1, processors=[acc])
    completion_ids = sequences[:, prompt_mask.size(1) :]
    mask = completion_mask_like_trl(completion_ids, [EOS])
    weight = model.get_output_embeddings().weight
    with pytest.raises(ValueError, match="completion_mask counts"):
        acc.phi(weight, completion_ids, torch.ones_like(mask))
    zeroed = mask.clone()
    zeroed[0] = 0  # a masked-out (e.g. truncated) completion: Phi = 0, as the forward route gives
    assert torch.equal(acc.phi(weight, completion_ids, zeroed)[0], torch.zeros(weight.size(1)))
    with pytest.raises(RuntimeError, match="one generate"):
        sample(model, 1.0, seed=1, processors=[acc])
    acc.reset()
    sample(model, 1.0, seed=1, processors=[acc])
    assert torch.equal(acc.num_tokens, mask.sum(1))


@pytest.mark.parametrize("eager", [False, True])
def test_accumulator_refuses_masked_scores(eager, monkeypatch):
    if eager:
        monkeypatch.setattr(PhiAccumulator, "EAGER_ELEMENTS", 0)
    model = tiny_model(8, torch.float32)
    acc = PhiAccumulator(EOS, 1.0)
    sequences, prompt_mask = sample(model, 1.0, seed=1, processors=[acc], suppress_tokens=[5])
    completion_ids = sequences[:, prompt_mask.size(1) :]
    with pytest.raises(ValueError, match="-inf"):
        acc.phi(model.get_output_embeddings().weight, completion_ids, completion_mask_like_trl(completion_ids, [EOS]))


# --------------------------------------------------------------------------- generation configs


def trl_like_config(**overrides) -> GenerationConfig:
    """The kwargs GRPOTrainer builds for transformers generation (grpo_trainer.py, __init__)."""
    kwargs = dict(
        max_new_tokens=16,
        do_sample=True,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=[EOS],
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
    )
    kwargs.update(overrides)
    return GenerationConfig(**kwargs)


def test_trl_defaults_pass_and_set_the_accumulator():
    model = tiny_model(9, torch.float32)
    acc = PhiAccumulator.from_generation_config(model, trl_like_config(temperature=0.7))
    assert acc.temperature == 0.7 and acc.eos_token_ids == [EOS]
    assert sampling_config_problems(trl_like_config(top_k=VOCAB), vocab_size=VOCAB) == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"top_k": 20},
        {"top_k": None},
        {"top_p": 0.9},
        {"min_p": 0.05},
        {"repetition_penalty": 1.1},
        {"min_new_tokens": 3},
        {"suppress_tokens": [5]},
        {"no_repeat_ngram_size": 2},
    ],
)
def test_score_altering_settings_are_refused(overrides):
    with pytest.raises(ValueError, match=next(iter(overrides))):
        check_sampling_config(trl_like_config(**overrides), vocab_size=VOCAB)
    with pytest.warns(UserWarning, match="softmax"):
        check_sampling_config(trl_like_config(**overrides), vocab_size=VOCAB, strict=False)


def test_model_generation_config_defaults_are_seen():
    """generate() fills None fields from model.generation_config: a model default of min_p counts."""
    model = tiny_model(10, torch.float32)
    model.generation_config.min_p = 0.1
    with pytest.raises(ValueError, match="min_p"):
        PhiAccumulator.from_generation_config(model, trl_like_config())


def test_pad_batch_layout():
    input_ids, attention_mask, completion_mask = pad_batch([[5, 6], [7]], [[8, EOS], [9, 10, 11]], PAD)
    assert input_ids.tolist() == [[5, 6, 8, EOS, PAD], [PAD, 7, 9, 10, 11]]
    assert attention_mask.tolist() == [[1, 1, 1, 1, 0], [0, 1, 1, 1, 1]]
    assert completion_mask.tolist() == [[1, 1, 0], [1, 1, 1]]


@pytest.mark.parametrize("batch", [1, 4, 16])
def test_head_product_is_the_matrix_product(batch):
    """The closed form's V x d product (oneDNN on CPU float32 for a large head) equals ``residual @ W``."""
    from trainers.features import ONEDNN_MIN_ELEMENTS

    gen = torch.Generator().manual_seed(batch)
    for vocab, dim in [(4096, 256), (85, 128)]:  # through oneDNN, and below its threshold
        assert (vocab * dim >= ONEDNN_MIN_ELEMENTS) == (vocab == 4096)
        weight = torch.randn(vocab, dim, generator=gen) * 0.05  # (V, d)
        residual = torch.softmax(torch.randn(batch, vocab, generator=gen), -1) * 7 - 0.01  # (B, V)
        want = (residual.double() @ weight.double()).float()
        got = head_product(residual, weight)
        assert got.shape == (batch, dim) and got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        strided = torch.randn(vocab, 2 * batch, generator=gen).t()[::2]  # (B, V), not contiguous
        torch.testing.assert_close(head_product(strided, weight), strided @ weight, rtol=1e-4, atol=1e-4)
        assert head_product(residual.double(), weight.double()).dtype == torch.float64  # outside oneDNN: `@`
