"""A plain TRL script with G2RLTrainer: no workbench CLI, config or task objects.

Run directly (``python tests/trl_script.py OUT``) or under ``torchrun``; the tests
import :func:`rewards_of` and :data:`WEIGHTS` to recompute the shaping.
"""

from __future__ import annotations

import os
import sys

WEIGHTS = [0.7, 0.5]
STEPS, PROMPTS, GENERATIONS = 2, 4, 4


def has_seven(completions, **kwargs):
    return [1.0 if "7" in c else 0.0 for c in completions]


def short(completions, **kwargs):
    return [1.0 - min(len(c), 8) / 8 for c in completions]


def rewards_of(completions: list[str]) -> list[float]:
    """The weighted sum TRL forms of the two reward functions."""
    return [WEIGHTS[0] * a + WEIGHTS[1] * b for a, b in zip(has_seven(completions), short(completions), strict=True)]


def tiny_model_and_data():
    """(a seeded random 2-layer Llama, its tokenizer, a 16-prompt dataset)."""
    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.models.tokenizer import char_tokenizer  # any tokenizer; this one needs no download

    torch.manual_seed(0)
    tok = char_tokenizer()
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                         eos_token_id=tok.eos_token_id))
    return model, tok, Dataset.from_list([{"prompt": f"{a} + {a} ="} for a in range(16)])


def main(out: str) -> None:
    from trainers import G2RLConfig, G2RLTrainer

    model, tok, dataset = tiny_model_and_data()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = G2RLConfig(
        output_dir=out, max_steps=STEPS, per_device_train_batch_size=PROMPTS * GENERATIONS // world,
        num_generations=GENERATIONS, max_completion_length=8, learning_rate=1e-3, reward_weights=WEIGHTS,
        report_to=["mlflow"], logging_steps=1, save_strategy="no", use_cpu=True, seed=0,
        g2rl_lam=1.0, features_dump_every=1,
    )
    trainer = G2RLTrainer(model=model, reward_funcs=[has_seven, short], args=args, train_dataset=dataset,
                          processing_class=tok)
    trainer.train()


if __name__ == "__main__":
    main(sys.argv[1])
