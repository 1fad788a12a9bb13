"""Exploration geometry for any TRL GRPO trainer: ``class MyTrainer(GeometryMixin, GRPOTrainer)``.

:class:`GeometryMixin` adds, without changing the loss or the rewards:

- Phi, the sequence gradient feature of each completion (DESIGN 3.4), by the
  sampling route (:class:`~trainers.accumulator.PhiAccumulator` rides along
  transformers' ``generate``; no forward pass) or the forward route (one no-grad
  forward after generation; always with vLLM);
- optionally the completions' text embeddings (sentence-transformers);
- the ``geometry/*`` metrics of DESIGN 4 and the ``train/*`` step scalars,
  through TRL's own logging, so ``report_to`` (MLflow, W&B, trackio,
  TensorBoard) sees them;
- the feature dumps of DESIGN 6: MLflow artifacts ``features/step_<step>.parquet``
  when MLflow is the tracker, otherwise ``output_dir/features/``, one schema;
- the per-step pair summaries ``summary/pairs.parquet`` (:mod:`analysis.summary`), in the
  same place, rewritten at each checkpoint and at the end of training (the recorder's ``flush``).

A recorder that writes each value under the record's own step (``background = True``, as the
workbench's) runs on a worker thread while the next step trains, embedding the texts there
(:mod:`trainers.background`); the default recorder, TRL's logging, records in the step.

A completion counts as correct when TRL's reward (the weighted sum of the
reward functions) is above ``correct_threshold``. The hooks overridden are
``_generate_single_turn``, ``_generate``, ``_calculate_rewards`` and
``_generate_and_score_completions`` of TRL 1.16's ``GRPOTrainer``; each calls
TRL's own and only reads what it returns. Options come from ``args`` when it is
a :class:`GeometryArgs` (``G2RLConfig`` is), else from ``geometry=GeometryArgs(...)``.
"""

from __future__ import annotations

import time
from dataclasses import field
from typing import Any, Literal

import numpy as np
import torch
from accelerate.utils import gather, gather_object
from transformers import TrainerCallback

from trainers.accumulator import PhiAccumulator, extra_logits_processors
from trainers.background import BackgroundRecorder
from trainers.feature_options import FeatureOptions
from trainers.features import pad_batch, phi_forward
from trainers.method import Shaped, StepBatch
from trainers.recorder import StepRecorder, TrainerLogSink
from trainers.step_record import StepRecord, embedding_due
from trainers.trl_options import options_from, with_options


class GeometryArgs:
    """What :class:`GeometryMixin` computes and records. Every field has a default.

    The feature options are :class:`~trainers.feature_options.FeatureOptions`, ``workbench run``'s
    ``features`` section, as fields ``features_<field>`` (``features_geometry``, ``features_dump_every``,
    ``features_semantic_every``, ``features_dtype``, ``features_project_dim``, ``features_encoder``,
    ``features_tau``), with its defaults and rules; :meth:`feature_options` returns them validated.
    """

    phi_route: Literal["sampling", "forward"] = field(default="sampling", metadata={
        "help": "Where Phi is computed: 'sampling' sums the sampling distributions while generate() runs (no "
                "extra pass); 'forward' runs one no-grad forward pass after generation. vLLM always uses 'forward'."})
    correct_threshold: float = field(default=0.5, metadata={
        "help": "A completion whose (weighted) reward is above this counts as correct."})

    def feature_options(self) -> FeatureOptions:
        """The ``features_*`` fields as :class:`~trainers.feature_options.FeatureOptions`; ValueError naming
        the bad field and the fix."""
        return options_from(self, FeatureOptions, FEATURES_PREFIX)

    def check_geometry_args(self) -> None:
        """Raise ValueError naming a bad value and the fix."""
        if self.phi_route not in ("sampling", "forward"):
            raise ValueError(f"phi_route={self.phi_route!r}: use 'sampling' or 'forward'")
        self.feature_options()


FEATURES_PREFIX = "features"
GeometryArgs = with_options(GeometryArgs, FeatureOptions, FEATURES_PREFIX)


def feature_fields(options: FeatureOptions) -> dict[str, Any]:
    """``options`` as :class:`GeometryArgs` keyword arguments: ``{"features_tau": 0.1, ...}``."""
    return {f"{FEATURES_PREFIX}_{name}": value for name, value in options.model_dump().items()}


class RecorderFlush(TrainerCallback):
    """Calls the recorder's ``flush`` on the main process at each checkpoint and at the end of training."""

    def __init__(self, flush) -> None:
        self.flush = flush

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.flush()

    on_train_end = on_save




class GeometryMixin:
    """Phi, text embeddings, ``geometry/*`` metrics and feature dumps for a GRPO trainer (module docstring).

    Put it first: ``class MyTrainer(GeometryMixin, GRPOTrainer)``. Extra keyword
    arguments: ``geometry`` (:class:`GeometryArgs`, when ``args`` is not one),
    ``recorder`` (an object with ``record(StepRecord)`` and optionally ``flush()``, called at
    checkpoints and at the end of training; default: TRL's logging)
    and ``embedder`` (an object with ``encode(texts) -> (N, e)`` unit rows).

    A recorder whose ``background`` attribute is true writes every value with ``record.step``, so it
    may run later: it is wrapped in a :class:`~trainers.background.BackgroundRecorder`, which records
    on a worker thread while the next step trains, and embeds the texts there too unless the rewards
    need them in the step (:attr:`rewards_need_embeddings`). The default recorder appends to TRL's
    ``_metrics``, which TRL logs at the step it is at, so it records in the step.
    """

    def __init__(self, *args: Any, geometry: GeometryArgs | None = None, recorder: Any = None,
                 embedder: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        options = geometry or (self.args if isinstance(self.args, GeometryArgs) else GeometryArgs())
        options.check_geometry_args()
        self.geometry_options = options
        self.features = features = options.feature_options()
        self.dump_every = features.dump_cadence(self.args.max_steps)
        self.semantic_every = features.semantic_every  # None: resolved once the method is known (semantic_cadence)
        if embedder is None and features.geometry:
            from trainers.embeddings import TextEmbedder

            embedder = TextEmbedder(features.encoder, dtype=features.encoder_dtype)
        self.embedder = embedder
        if recorder is None:  # TRL's own logging, and the artifacts to MLflow or output_dir
            recorder = StepRecorder(TrainerLogSink(self), features, seed=self.args.seed, dump_every=self.dump_every)
        if getattr(recorder, "background", False):
            recorder = BackgroundRecorder(recorder, embed=None if embedder is None else embedder.encode,
                                          due=self.embedding_due)
        self.recorder = recorder
        if callable(getattr(self.recorder, "flush", None)):
            self.add_callback(RecorderFlush(self.recorder.flush))
        self.phi_route = "forward" if self.use_vllm else options.phi_route
        self._geo_sampling: tuple[list[int], float] | None = None  # (EOS ids, T) of the checked generation config
        self._geo_accumulator: PhiAccumulator | None = None
        self._geo_local: dict[str, Any] = {}
        self._geo_step: dict[str, Any] = {}

    # -- what a subclass changes -------------------------------------------------------------
    shaping_columns = 0  # trailing reward columns that are not the user's reward functions

    @property
    def wants_phi(self) -> bool:
        return self.features.geometry or self.dump_every > 0

    def shape_batch(self, batch: StepBatch) -> Shaped:
        """The rewards TRL standardises; here TRL's own reward, unchanged."""
        return Shaped(base_reward=batch.rewards, shaped_reward=batch.rewards)

    def shaped_columns(self, rewards_per_func: torch.Tensor, batch: StepBatch, shaped: Shaped) -> torch.Tensor:
        """The reward columns handed back to TRL; here TRL's, unchanged."""
        return rewards_per_func

    def answers(self) -> tuple[list[str | None] | None, list[bool]]:
        """Local extracted answers (None: no verifier) and answer-check timeouts of the last reward call."""
        return None, [False] * len(self._geo_local.get("texts", []))

    score_columns: tuple[str, ...] = ()

    @property
    def rewards_need_embeddings(self) -> bool:
        """Whether :meth:`shape_batch` reads ``batch.embeddings`` (then they are computed in the step)."""
        return False

    @property
    def generation_span(self) -> int:
        """Optimizer steps one generation batch trains: TRL generates every ``steps_per_generation x
        num_iterations`` micro-batches, and steps the optimizer every ``gradient_accumulation_steps``."""
        a = self.args
        return max(1, a.steps_per_generation * self.num_iterations // a.gradient_accumulation_steps)

    @property
    def semantic_cadence(self) -> int:
        """Steps between embeddings: ``semantic_every``; None: 1 when the rewards read them, else a tenth of the run."""
        return self.features.semantic_cadence(self.args.max_steps, self.rewards_need_embeddings)

    def embedding_due(self, step: int) -> bool:
        """Whether the texts of step ``step`` are embedded (:func:`~trainers.step_record.embedding_due`)."""
        return embedding_due(step, self.semantic_cadence, self.dump_every, self.generation_span)

    def _embed_in_step(self) -> bool:
        if self.embedder is None:
            return False
        if self.rewards_need_embeddings:
            return True
        return not isinstance(self.recorder, BackgroundRecorder) and self.embedding_due(self.state.global_step + 1)

    # -- generation: Phi by the sampling route -----------------------------------------------
    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if not (self.wants_phi and self.phi_route == "sampling") or self.use_vllm:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        model = self.accelerator.unwrap_model(self.model_wrapped)
        if self._geo_sampling is None:  # checked once: resolving the effective config costs ~1 ms a step
            checked = PhiAccumulator.from_generation_config(model, self.generation_config)
            self._geo_sampling = (checked.eos_token_ids, checked.temperature)
        self._geo_accumulator = PhiAccumulator(*self._geo_sampling)
        with extra_logits_processors(model, self._geo_accumulator):
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)

    def _generate(self, prompts: list):
        out = super()._generate(prompts)
        prompt_ids, completion_ids, completions = out[0], out[1], out[3]
        start = time.perf_counter()
        phi = self._local_phi(prompt_ids, completion_ids) if self.wants_phi else None
        feature_s = time.perf_counter() - start
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        self._geo_local = {"phi": phi, "texts": texts, "num_tokens": [len(c) for c in completion_ids],
                           "feature_s": feature_s}
        return out

    def _local_phi(self, prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> torch.Tensor:
        model = self.accelerator.unwrap_model(self.model_wrapped)
        device = model.get_output_embeddings().weight.device
        ids, attn, cmask = pad_batch(prompt_ids, completion_ids, self._tokenizer.pad_token_id, device=device)
        if self.phi_route == "sampling" and self._geo_accumulator is not None:
            acc, self._geo_accumulator = self._geo_accumulator, None
            completion = ids[:, ids.size(1) - cmask.size(1) :]  # (B, C)
            return acc.phi(model.get_output_embeddings().weight, completion, cmask)  # (B, d)
        return phi_forward(model, ids, attn, cmask, self.temperature)  # (B, d)

    # -- rewards: gather the batch, shape it ---------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # (N, F) gathered
        user = per_func[:, : per_func.size(1) - self.shaping_columns]  # (N, F_user)
        weights = self.reward_weights[: user.size(1)].to(user.device)  # (F_user,)
        rewards = (user * weights.unsqueeze(0)).nansum(dim=1)  # (N,) TRL's sum_then_normalize reward
        scorable = ~torch.isnan(user).all(dim=1)  # (N,)
        embeddings, embed_s = None, 0.0
        if self._embed_in_step():
            start = time.perf_counter()
            embeddings = torch.from_numpy(np.asarray(self.embedder.encode(self._geo_local["texts"])))  # (B, e)
            embed_s = time.perf_counter() - start
        answers, timed_out = self.answers()
        batch = gather_step_batch(rewards, scorable, answers, self._geo_local.get("phi"), embeddings,
                                  self.num_generations, self.geometry_options.correct_threshold)
        shaped = self.shape_batch(batch)
        _check_finite(shaped)
        self._geo_step = {"batch": batch, "shaped": shaped, "embed_s": embed_s,
                          "timed_out": gather_object(list(timed_out)),
                          "prompts": gather_object([_prompt_text(p) for p in prompts]),
                          "prompt_ids": gather_object([str(x.get("prompt_id", "")) for x in inputs]),
                          "texts": gather_object(self._geo_local["texts"]),
                          "num_tokens": gather_object(self._geo_local["num_tokens"]),
                          "feature_s": self._geo_local["feature_s"]}
        return self.shaped_columns(per_func, batch, shaped)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            advantages = gather(output["advantages"].detach()).float().cpu().numpy().copy()  # (N,), owned
            if self.accelerator.is_main_process:
                self.recorder.record(StepRecord(step=self.state.global_step + 1, advantages=advantages,
                                                score_columns=tuple(self.score_columns), span=self.generation_span,
                                                **self._geo_step))
        return output


def gather_step_batch(rewards: torch.Tensor, scorable: torch.Tensor, answers: list[str | None] | None,
                      features: torch.Tensor | None, embeddings: torch.Tensor | None, num_generations: int,
                      correct_threshold: float = 0.5) -> StepBatch:
    """One whole generation batch on every process, in TRL's order (rank by rank).

    ``rewards`` (N,) and ``scorable`` (N,) are already gathered (TRL gathers the
    rewards); answers, Phi and embeddings are local and gathered here, so a group
    split across processes is scored whole and 1 or N processes give the same
    shaped rewards. TRL's sampler puts each prompt's ``num_generations``
    completions next to each other, so the group of global row ``i`` is
    ``i // num_generations``. Without a verifier (``answers`` None) every
    scorable completion counts as having an answer.
    """
    device = rewards.device
    if features is not None:
        features = gather(features.to(device=device, dtype=torch.float32).contiguous()).cpu().numpy()  # (N, d)
    if embeddings is not None:
        embeddings = gather(embeddings.to(device=device, dtype=torch.float32).contiguous()).cpu().numpy()  # (N, e)
    scorable = scorable.detach().cpu().numpy()
    n = rewards.numel()
    if answers is None:
        answers, has_answer = [None] * n, scorable
    else:
        answers = gather_object(list(answers))
        has_answer = np.array([a is not None for a in answers])
    values = rewards.detach().cpu().double().numpy()  # (N,)
    return StepBatch(
        groups=np.arange(n) // num_generations,
        correct=(values > correct_threshold) & scorable,
        has_answer=has_answer,
        answers=answers,
        features=features,
        embeddings=embeddings,
        rewards=values,
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
