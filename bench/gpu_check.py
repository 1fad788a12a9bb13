"""The first thing to run on a new GPU machine (``bash bench/gpu_check.sh``); prints a short report.

1. CUDA and bf16: the device, its memory, bf16 support; "no CUDA" on a CPU-only machine (the
   other checks then run on the CPU).
2. Phi by the sampling route equals Phi by the forward route on the device (DESIGN 3.4: both
   must agree to float tolerance): completions of the preset's model sampled with the
   accumulator hooked in, then one forward over them. TF32 is switched off for this check, so
   both routes compute in float32.
3. A few g2rl and grpo steps of the preset (``smollm2-135m`` on a GPU, ``tiny`` on a CPU), with
   TRL's vLLM generation in colocate mode where ``vllm`` imports, and the g2rl / grpo step-time
   ratio: steps of both methods interleaved round by round, the policy held still so both
   generate the same completions (``bench/step_cost.py``), the median step of each round.

Exit status 1 when the Phi routes disagree.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys

PHI_TOLERANCE = 1e-4  # of max |Phi|; measured <= 2.3e-7 on CPU in float32 (tests/test_features.py)


def cuda_report() -> tuple[list[str], str]:
    """Report lines on CUDA and bf16, and the device the other checks use."""
    import torch

    if not torch.cuda.is_available():
        return [f"CUDA           : no CUDA (torch {torch.__version__}); the checks below run on the CPU",
                "bf16           : not checked (no CUDA)"], "cpu"
    props = torch.cuda.get_device_properties(0)
    lines = [f"CUDA           : {torch.cuda.device_count()} x {props.name}, {props.total_memory / 2**30:.0f} GiB, "
             f"CUDA {torch.version.cuda}, torch {torch.__version__}"]
    bf16 = torch.cuda.is_bf16_supported()
    if bf16:
        x = torch.randn(64, 64, device="cuda", dtype=torch.bfloat16)
        bf16 = bool(torch.isfinite(x @ x).all())
    verdict = "supported (a bf16 matmul ran)" if bf16 else "NOT supported: keep training.bf16=false"
    lines.append(f"bf16           : {verdict}")
    return lines, "cuda"


def phi_route_gap(model, prompt_ids: list[list[int]], eos_token_id: int, pad_token_id: int,
                  temperature: float = 1.0, max_new_tokens: int = 16) -> tuple[float, int]:
    """max |Phi_sampling - Phi_forward| / max |Phi_forward| over completions of ``prompt_ids``, and their count."""
    import torch

    from trainers.accumulator import PhiAccumulator
    from trainers.features import pad_batch, phi_forward

    device = model.get_output_embeddings().weight.device
    input_ids, prompt_mask, _ = pad_batch(prompt_ids, [[] for _ in prompt_ids], pad_token_id, device=device)
    acc = PhiAccumulator(eos_token_id, temperature)
    torch.manual_seed(0)
    with torch.no_grad():
        sequences = model.generate(input_ids=input_ids, attention_mask=prompt_mask, do_sample=True,
                                   temperature=temperature, top_k=0, top_p=1.0, repetition_penalty=1.0,
                                   max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                                   pad_token_id=pad_token_id, logits_processor=[acc])
    completion = sequences[:, input_ids.size(1):]  # (B, C)
    is_eos = completion == eos_token_id  # (B, C)
    after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0  # tokens after the first EOS
    completion_mask = (~after_eos).long()  # (B, C) 1 up to and including the first EOS, as TRL masks
    weight = model.get_output_embeddings().weight  # (V, d)
    sampled = acc.phi(weight, completion, completion_mask)  # (B, d)
    attention_mask = torch.cat([prompt_mask, completion_mask], 1)  # (B, P + C)
    forward = phi_forward(model, sequences, attention_mask, completion_mask, temperature)  # (B, d)
    gap = (sampled.double() - forward.double()).abs().max() / forward.double().abs().max()
    return float(gap), len(prompt_ids)


def phi_report(cfg, device: str) -> tuple[str, bool]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.models.presets import PRESETS
    from workbench.tasks import build_task

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    path = PRESETS.get(cfg.model.preset).load(cfg)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    problems = build_task(cfg.task).problems("train")[:8]
    prompts = [tokenizer(p.prompt, add_special_tokens=False)["input_ids"] for p in problems]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    gap, n = phi_route_gap(model, prompts, tokenizer.eos_token_id, pad, cfg.training.temperature)
    ok = gap <= PHI_TOLERANCE
    verdict = "OK" if ok else f"FAIL (tolerance {PHI_TOLERANCE:g})"
    return (f"Phi routes     : sampling vs forward, max |diff| / max |Phi| = {gap:.1e} on {device}, "
            f"{n} completions of {cfg.model.preset}  {verdict}"), ok


def step_report(preset: str, steps: int, rounds: int, use_vllm: bool, overrides: list[str]) -> list[str]:
    from bench.harness import build_trainer, config
    from bench.step_cost import HOLD, interleaved_steps
    from workbench.tracking import NullTracker

    settings = [f"model.preset={preset}", f"training.steps={steps}", HOLD, "features.geometry=false", "features.dump_every=0",
                f"training.use_vllm={str(use_vllm).lower()}", *overrides]
    trainers = {m: build_trainer(config(m, *settings), NullTracker()) for m in ("grpo", "g2rl")}
    times = interleaved_steps(trainers, rounds, warmup_steps=1)
    ratios = [g / b for g, b in zip(times["g2rl"], times["grpo"], strict=True)]
    engine = "vLLM colocate" if use_vllm else "transformers generate"
    return [f"g2rl steps     : {rounds} rounds x {steps} steps of {preset} per method, {engine}; median step "
            f"g2rl {statistics.median(times['g2rl']):.3f} s, grpo {statistics.median(times['grpo']):.3f} s",
            f"g2rl / grpo    : step-time ratio {statistics.median(ratios):.2f} (logging off: g2rl pays for Phi)"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", help="model preset (default: smollm2-135m with CUDA, tiny without)")
    parser.add_argument("--steps", type=int, default=3, help="steps per method and round (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of interleaved steps (default 2)")
    parser.add_argument("--vllm", choices=("auto", "on", "off"), default="auto",
                        help="TRL's vLLM generation: auto (on where vllm imports), on, off")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="config override of the checks' runs (repeatable), "
                             "e.g. --set training.max_completion_length=32")
    args = parser.parse_args(argv)

    from workbench.config import build_config

    lines, device = cuda_report()
    print("G2RL workbench machine check")
    print("\n".join(lines), flush=True)
    preset = args.preset or ("smollm2-135m" if device == "cuda" else "tiny")
    use_vllm = args.vllm == "on" or (args.vllm == "auto" and importlib.util.find_spec("vllm") is not None)
    cfg = build_config([{"model": {"preset": preset}}], args.overrides)
    line, ok = phi_report(cfg, device)
    print(line, flush=True)
    print("\n".join(step_report(preset, args.steps, args.rounds, use_vllm, args.overrides)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
