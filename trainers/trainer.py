"""The one TRL subclass every method trains with.

``WorkbenchTrainer`` is TRL's ``GRPOTrainer`` with three hooks changed, and
nothing else (loss, clipping, KL, optimisation are TRL's own):

- ``_generate_single_turn``: with ``g2rl.route: sampling`` a
  :class:`~trainers.accumulator.PhiAccumulator` rides along transformers'
  ``generate`` and sums the sampling distributions, so Phi costs no forward pass.
- ``_generate``: keeps the local prompt/completion ids and computes Phi
  (sampling route: from the accumulator; forward route: one no-grad forward).
- ``_calculate_rewards``: after TRL has run (and gathered) the verifier reward,
  gathers the rest of the batch (answers, Phi, text embeddings) across
  processes, lets the method shape whole groups, and returns the shaped rewards,
  which TRL then standardises into advantages as GRPO does.

``_generate_and_score_completions`` finally hands the step (with TRL's
advantages) to a :class:`~workbench.recording.StepRecorder`, which logs metrics
and feature dumps.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather, gather_object
from trl import GRPOTrainer

from trainers.accumulator import PhiAccumulator, extra_logits_processors
from trainers.features import pad_batch, phi_forward
from trainers.method import Method, Shaped, StepBatch


class VerifierReward:
    """TRL reward function: 1.0 if the task's verifier accepts the completion, else 0.0.

    Keeps the local verdicts of its last call so the trainer can gather the
    extracted answers too.
    """

    __name__ = "verifier"

    def __init__(self, task) -> None:
        self.task = task
        self.last: list = []

    def __call__(self, prompts, completions, answer, **_: Any) -> list[float]:
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        self.last = [self.task.verify(text, gold) for text, gold in zip(texts, answer, strict=True)]
        return [1.0 if v.correct else 0.0 for v in self.last]


class WorkbenchTrainer(GRPOTrainer):
    """GRPOTrainer whose rewards are shaped by a workbench :class:`Method`."""

    def __init__(self, *args, method: Method, verifier: VerifierReward, recorder, embedder=None,
                 want_features: bool = True, route: str = "sampling", **kwargs) -> None:
        super().__init__(*args, reward_funcs=[verifier], **kwargs)
        self.method = method
        self.verifier = verifier
        self.recorder = recorder
        self.embedder = embedder
        self.want_features = want_features or method.needs_features
        self.want_embeddings = embedder is not None
        self.route = "forward" if self.use_vllm else route
        self._wb_accumulator: PhiAccumulator | None = None
        self._wb_sampling: tuple[list[int], float] | None = None  # (EOS ids, T) of the checked generation config
        self._wb_local: dict[str, Any] = {}
        self._wb_batch: dict[str, Any] = {}

    # -- generation: Phi by the sampling route -------------------------------------------------
    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if not (self.want_features and self.route == "sampling") or self.use_vllm:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        model = self.accelerator.unwrap_model(self.model_wrapped)
        if self._wb_sampling is None:  # checked once: resolving the effective config costs ~1 ms a step
            checked = PhiAccumulator.from_generation_config(model, self.generation_config)
            self._wb_sampling = (checked.eos_token_ids, checked.temperature)
        self._wb_accumulator = PhiAccumulator(*self._wb_sampling)
        with extra_logits_processors(model, self._wb_accumulator):
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)

    def _generate(self, prompts: list):
        out = super()._generate(prompts)
        prompt_ids, completion_ids, completions = out[0], out[1], out[3]
        start = time.perf_counter()
        phi = self._local_phi(prompt_ids, completion_ids) if self.want_features else None
        feature_s = time.perf_counter() - start
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        self._wb_local = {"phi": phi, "texts": texts, "num_tokens": [len(c) for c in completion_ids],
                       "feature_s": feature_s}
        return out

    def _local_phi(self, prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> torch.Tensor:
        model = self.accelerator.unwrap_model(self.model_wrapped)
        device = model.get_output_embeddings().weight.device
        ids, attn, cmask = pad_batch(prompt_ids, completion_ids, self._tokenizer.pad_token_id, device=device)
        if self.route == "sampling" and self._wb_accumulator is not None:
            acc, self._wb_accumulator = self._wb_accumulator, None
            completion = ids[:, ids.size(1) - cmask.size(1) :]  # (B, C)
            return acc.phi(model.get_output_embeddings().weight, completion, cmask)  # (B, d)
        return phi_forward(model, ids, attn, cmask, self.temperature)  # (B, d)

    # -- rewards: gather the group, let the method shape it -------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        correct = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)[:, 0]  # (N,)
        embeddings, embed_s = None, 0.0
        if self.want_embeddings:
            start = time.perf_counter()
            embeddings = torch.from_numpy(self.embedder.encode(self._wb_local["texts"]))  # (B, e)
            embed_s = time.perf_counter() - start
        verdicts = self.verifier.last
        batch = gather_step_batch(correct, [v.answer for v in verdicts], self._wb_local["phi"], embeddings,
                                  self.num_generations)
        shaped = self.method.shape(batch)
        _check_finite(shaped)
        self._wb_batch = {"batch": batch, "shaped": shaped, "embed_s": embed_s,
                          "timed_out": gather_object([v.timed_out for v in verdicts]),
                          "prompts": gather_object([_prompt_text(p) for p in prompts]),
                          "prompt_ids": gather_object([str(x.get("prompt_id", "")) for x in inputs]),
                          "texts": gather_object(self._wb_local["texts"]),
                          "num_tokens": gather_object(self._wb_local["num_tokens"]),
                          "feature_s": self._wb_local["feature_s"]}
        return torch.as_tensor(shaped.shaped_reward, dtype=torch.float32, device=correct.device).unsqueeze(1)  # (N, 1)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            advantages = gather(output["advantages"].detach()).float().cpu().numpy()  # (N,)
            if self.accelerator.is_main_process:
                self.recorder.record(step=self.state.global_step + 1, advantages=advantages, **self._wb_batch)
        return output


def gather_step_batch(correct: torch.Tensor, answers: list[str | None], features: torch.Tensor | None,
                      embeddings: torch.Tensor | None, num_generations: int) -> StepBatch:
    """One whole generation batch on every process, in TRL's order (rank by rank).

    ``correct`` is already gathered (TRL's rewards); answers, Phi and embeddings
    are local and gathered here, so a group split across processes is scored
    whole and 1 or N processes give the same shaped rewards. TRL's sampler puts
    each prompt's ``num_generations`` completions next to each other, so the
    group of global row ``i`` is ``i // num_generations``.
    """
    device = correct.device
    answers = gather_object(answers)
    if features is not None:
        features = gather(features.to(device=device, dtype=torch.float32).contiguous()).cpu().numpy()  # (N, d)
    if embeddings is not None:
        embeddings = gather(embeddings.to(device=device, dtype=torch.float32).contiguous()).cpu().numpy()  # (N, e)
    n = correct.numel()
    return StepBatch(
        groups=np.arange(n) // num_generations,
        correct=correct.detach().cpu().numpy() > 0.5,
        has_answer=np.array([a is not None for a in answers]),
        answers=answers,
        features=features,
        embeddings=embeddings,
    )


def _prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(str(m.get("content", "")) for m in prompt)


def _check_finite(shaped: Shaped) -> None:
    bad = ~np.isfinite(shaped.shaped_reward)
    if bad.any():
        raise FloatingPointError(
            f"{int(bad.sum())} shaped rewards are NaN or infinite (indices {np.flatnonzero(bad)[:8].tolist()}); "
            "the method's shape() must return finite rewards"
        )
