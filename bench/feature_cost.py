"""Benchmark 1: what G2RL's gradient feature Phi costs, as a ratio to the policy's own work (DESIGN 3.4).

Models are random-init Llamas of two sizes (weights do not change the cost): the ``tiny`` preset's
architecture and vocabulary, and SmolLM2-135M's (V 49152, d 576, 30 layers). Batch: prompts of
32 random tokens and completions of C random tokens, all completion tokens counted (the
pooling's worst case).

- **Sampling route** (default): :class:`~trainers.accumulator.PhiAccumulator` rides on
  ``model.generate`` (sampling, temperature 1, top-k off, C new tokens). Its per-step softmax and
  sum are timed inside the very ``generate`` call they ride on, and the final closed form
  (:meth:`PhiAccumulator.phi`) right after; the ratio is (accumulator + closed form) /
  (``generate`` time without the accumulator's own time). Target <= 1 %.
- **Forward route**: the pooling :func:`~trainers.features.phi_from_logits` over the forward pass
  itself (``logits_to_keep=C+1``), as :func:`~trainers.features.phi_forward` runs them: each round
  one forward, then the pooling of its logits at once, each timed (the pooling reads logits the
  forward has just written, as in training). Target <= 1 %. (Timed apart, after a ``gc.collect()``
  that evicts the caches, the tiny pooling took 0.7 ms against 0.3 ms right after its forward.)
- **Per-token** :func:`~trainers.features.phi_per_token` (one V x d product per token) and
  **autograd** (LM head, log-softmax, gather, backward to the final hidden states: what the
  definition costs without the closed form), each over the same forward pass. No target: the
  references the closed form replaces.

Run: ``python -m bench.feature_cost [--quick]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.results import Row, append, stat_row
from bench.timing import interleave, set_threads, summary
from trainers.accumulator import PhiAccumulator
from trainers.features import phi_from_logits, phi_per_token

BENCH = "1 feature cost"
PROMPT_LEN = 32
TEMPERATURE = 1.0


def tiny_config(max_len: int):
    from transformers import LlamaConfig

    from workbench.models.tiny import ARCH
    from workbench.models.tokenizer import char_tokenizer

    arch = dict(ARCH, max_position_embeddings=max(ARCH["max_position_embeddings"], max_len))
    return LlamaConfig(vocab_size=len(char_tokenizer()), **arch)


def smollm2_config(max_len: int):
    """SmolLM2-135M's architecture (HuggingFaceTB/SmolLM2-135M-Instruct config.json)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=max(8192, max_len),
                       rope_theta=100000.0, tie_word_embeddings=True, rms_norm_eps=1e-5)


SIZES = {"tiny": tiny_config, "smollm2-135m": smollm2_config}


def build(size: str, max_len: int):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(SIZES[size](max_len)).eval()
    model.generation_config.eos_token_id = None  # run every sequence to C tokens; the accumulator gets a dummy id
    model.generation_config.pad_token_id = 0
    return model


def batch(model, batch_size: int, completion_len: int):
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(3, vocab, (batch_size, PROMPT_LEN), generator=gen)  # (B, P)
    completion = torch.randint(3, vocab, (batch_size, completion_len), generator=gen)  # (B, C)
    input_ids = torch.cat([prompt, completion], 1)  # (B, P + C)
    attention_mask = torch.ones_like(input_ids)
    completion_mask = torch.ones_like(completion)
    return prompt, input_ids, attention_mask, completion_mask


def forward_route_ratios(model, batch_size: int, completion_len: int, rounds: int) -> tuple[list[float], list[float]]:
    """Per round: (pooling / forward, forward seconds) of one forward and the pooling of its logits."""
    import gc

    _, ids, attn, cmask = batch(model, batch_size, completion_len)
    c = completion_len
    tokens = ids[:, -c:]  # (B, C)
    weight = model.get_output_embeddings().weight.detach()  # (V, d)
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)  # (B, P + C)
    ratios, forwards = [], []
    for r in range(rounds + 1):  # the first round warms up
        gc.collect()
        start = time.perf_counter()
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids,
                           logits_to_keep=c + 1).logits[:, :-1]  # (B, C, V)
        middle = time.perf_counter()
        phi_from_logits(logits, tokens, cmask, weight, TEMPERATURE)
        end = time.perf_counter()
        if r:
            ratios.append((end - middle) / (middle - start))
            forwards.append(middle - start)
        del logits
    return ratios, forwards


def forward_cases(model, batch_size: int, completion_len: int) -> dict:
    """Forward pass, pooling, per-token and autograd on one batch, as interleavable closures."""
    _, ids, attn, cmask = batch(model, batch_size, completion_len)
    c = completion_len
    tokens = ids[:, -c:]  # (B, C)
    weight = model.get_output_embeddings().weight.detach()  # (V, d)
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)  # (B, P + C)

    @torch.no_grad()
    def forward():
        return model(input_ids=ids, attention_mask=attn, position_ids=position_ids, logits_to_keep=c + 1).logits

    logits = forward()[:, :-1]  # (B, C, V), the view phi_forward pools
    with torch.no_grad():
        hidden = model.model(input_ids=ids, attention_mask=attn, position_ids=position_ids).last_hidden_state
    hidden = hidden[:, -c - 1 : -1].detach().clone()  # (B, C, d)

    def pooled():
        return phi_from_logits(logits, tokens, cmask, weight, TEMPERATURE)

    def per_token():
        return phi_per_token(logits, tokens, cmask, weight, TEMPERATURE)

    def autograd():
        h = hidden.clone().requires_grad_(True)  # (B, C, d)
        z = model.lm_head(h) / TEMPERATURE  # (B, C, V)
        logp = torch.log_softmax(z, -1).gather(-1, tokens[..., None]).squeeze(-1)  # (B, C)
        (logp * cmask).sum().backward()
        a = cmask / cmask.sum(1, keepdim=True)  # (B, C)
        return TEMPERATURE * (a[..., None] * h.grad).sum(1)  # (B, d)

    # The three agree (the tests assert it at tighter tolerance on small shapes).
    ref = autograd()
    for fn in (pooled, per_token):
        err = (fn() - ref).abs().max().item() / ref.abs().max().item()
        assert err < 1e-3, f"{fn.__name__} disagrees with autograd: relative error {err:.1e}"
    return {"forward": forward, "pooled": pooled, "per_token": per_token, "autograd": autograd}


class Timed:
    """Wraps a logits processor and sums the seconds spent in its calls."""

    def __init__(self, processor) -> None:
        self.processor = processor
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, input_ids, scores):
        start = time.perf_counter()
        out = self.processor(input_ids, scores)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def sampling_ratios(model, batch_size: int, completion_len: int, repeats: int) -> dict[str, list[float]]:
    """(accumulator + closed form) / (generation without the accumulator's own time), per generate call."""
    prompt, _, _, _ = batch(model, batch_size, completion_len)
    weight = model.get_output_embeddings().weight.detach()
    vocab = model.config.vocab_size
    out: dict[str, list[float]] = {"ratio": [], "per_call": [], "per_token": []}
    for r in range(repeats + 1):  # the first call (8 tokens) warms up
        new_tokens = completion_len if r else 8
        acc = Timed(PhiAccumulator(eos_token_id=vocab, temperature=TEMPERATURE))  # an id never sampled
        torch.manual_seed(r)
        start = time.perf_counter()
        with torch.no_grad():
            seq = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                                 temperature=TEMPERATURE, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
                                 logits_processor=[acc])
        gen_s = time.perf_counter() - start - acc.seconds
        completion = seq[:, PROMPT_LEN:]  # (B, C)
        assert completion.size(1) == new_tokens, completion.shape
        start = time.perf_counter()
        acc.processor.phi(weight, completion, torch.ones_like(completion))  # (B, d)
        if r:
            out["ratio"].append((acc.seconds + time.perf_counter() - start) / gen_s)
            out["per_call"].append(acc.seconds / acc.calls)
            out["per_token"].append(gen_s / new_tokens)
    return out


def run(quick: bool = False) -> list[Row]:
    set_threads()
    plan = [  # (size, completion length, batch of the forward-route rows, rounds, generation repeats, note)
        ("tiny", 64, 16, 9, 9, ""),
        ("tiny", 512, 16, 7, 5, ""),
        ("smollm2-135m", 64, 16, 3, 2, ""),
        ("smollm2-135m", 512, 4, 3, 1, "batch 4 (16 x 512 x V logits in float32 are 1.6 GB a copy, and a round "
                                        "would take minutes on this CPU)"),
    ]
    if quick:
        plan = [("tiny", 64, 16, 3, 1, ""), ("smollm2-135m", 64, 4, 2, 1, "quick: batch 4")]
    rows: list[Row] = []
    models = {}
    for size, c, b, rounds, gen_repeats, note in plan:
        if size not in models:
            models.clear()
            models[size] = build(size, PROMPT_LEN + max(p[1] for p in plan if p[0] == size) + 1)
        model = models[size]
        label = f"{size}, C={c}"
        cases = forward_cases(model, b, c)
        pooled, forwards = forward_route_ratios(model, b, c, rounds)
        rows.append(stat_row(BENCH, f"{label}, B={b}: forward route: pooling / forward", summary(pooled), "pct",
                             target="<= 1 %", limit=0.01,
                             note="; ".join(x for x in (f"forward {summary(forwards).fmt('s')}; the pooling "
                                                        "right after the forward that wrote its logits", note) if x)))
        del cases["pooled"]
        times = interleave(cases, rounds=rounds, warmup=1)
        for name, title, limit in [
            ("per_token", "per-token phi_t (reference) / forward", None),
            ("autograd", "autograd to h (reference) / forward", None),
        ]:
            ratio = [t / f for t, f in zip(times[name], times["forward"], strict=True)]
            rows.append(stat_row(BENCH, f"{label}, B={b}: {title}", summary(ratio), "pct",
                                 target="<= 1 %" if limit else "", limit=limit, note=note))
        gen_b = b if quick else 16
        ratios = sampling_ratios(model, gen_b, c, gen_repeats)
        timing = (f"accumulator {summary(ratios['per_call']).fmt('s')} a call, generation "
                  f"{summary(ratios['per_token']).fmt('s')} a token (batch {gen_b})")
        rows.append(stat_row(BENCH, f"{label}, B={gen_b}: sampling route: accumulator + closed form / generation",
                             summary(ratios["ratio"]), "pct", target="<= 1 %", limit=0.01, note=timing))
        del cases
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only, few repeats (a smoke run)")
    args = parser.parse_args(argv)
    append(run(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
