"""The options of what a run records of its update geometry: one model for ``workbench run`` and TRL scripts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


RECORD_POINTS = 10
"""Feature dumps and the text embeddings of the semantic geometry default to every tenth of the run.

MiniLM costs about as much CPU per completion as training the tiny policy on it (``make bench``), so
the semantic metrics (``geometry/sem_*``, the summaries' semantic columns, the dumps' ``embedding``)
are sampled, as the dumps are: at step 1 and every ``steps // 10`` steps. Phi and the gradient geometry
stay every step. A method whose rewards read the embeddings (EVOL-RL) embeds every step, and its
semantic geometry is every step too."""


def default_cadence(steps: int) -> int:
    """Every tenth of a run of ``steps`` optimizer steps (:data:`RECORD_POINTS`), at least every step."""
    return max(1, int(steps) // RECORD_POINTS)


class FeatureOptions(BaseModel):
    """What a run records of its update geometry (DESIGN 6).

    ``geometry`` computes Phi of every step's completions and logs the gradient ``geometry/*``
    metrics every step, and the semantic ones (text embeddings) every ``semantic_every`` steps;
    off, no method logs geometry (G2RL still computes Phi for its rewards), so runs of different
    methods carry the same metrics. ``dump_every`` is the cadence of the feature dumps; dumps hold
    Phi (computed for them) and the embeddings (computed at every dump step) where ``geometry`` is on.

    One model for both ways in: ``workbench run``'s ``features`` section (``--set features.tau=0.2``)
    and :class:`~trainers.geometry.GeometryArgs`, where each field is ``features_<field>``
    (``features_tau=0.2``), with the same names, defaults and rules.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    geometry: bool = Field(True, description="Compute Phi every step and text embeddings every semantic_every "
                           "steps, and log geometry/* (false: no method logs geometry).")
    dump_every: int | None = Field(None, ge=0, description="Write a feature dump at step 1 and every N steps (0: no "
                                   "dumps; None: every tenth of training.steps).")
    semantic_every: int | None = Field(None, ge=1, description="Embed the completions' texts (geometry/sem_*, the "
                                       "dumps' embedding column) at step 1, every N steps and at every dump step; "
                                       "1: every step. None: every step for a method whose rewards read the "
                                       "embeddings (evol_rl), else every tenth of training.steps.")
    dtype: Literal["float32", "float16"] = Field("float32", description="Storage dtype of dumped vectors.")
    project_dim: int | None = Field(None, ge=2, description="Seeded random projection of Phi before dumping.")
    encoder: str | None = Field(None, description="sentence-transformers model id or path (default: packaged MiniLM).")
    encoder_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Precision the text encoder computes in. auto: bfloat16 where the device computes it "
                            "natively (a CPU with AVX512-BF16 or AMX, a CUDA GPU with bf16), else float32; the run's "
                            "param records the one used. bfloat16 halves MiniLM's CPU time, and its per-pair cosines "
                            "differ from float32's by at most 0.01 (measured in make bench).")
    tau: float = Field(0.1, ge=0, le=1, description="Orthogonality threshold of the geometry fractions.")

    def dump_cadence(self, steps: int) -> int:
        """``dump_every``, with None resolved to every tenth of a run of ``steps`` steps."""
        return default_cadence(steps) if self.dump_every is None else self.dump_every

    def semantic_cadence(self, steps: int, rewards_embed: bool) -> int:
        """``semantic_every``, with None resolved: 1 for a method whose rewards read the embeddings, else every
        tenth of a run of ``steps`` steps."""
        if self.semantic_every is not None:
            return self.semantic_every
        return 1 if rewards_embed else default_cadence(steps)

    @model_validator(mode="before")
    @classmethod
    def _split_every(cls, data: Any) -> Any:
        if isinstance(data, dict) and "every" in data:
            raise ValueError(f"features.every={data['every']!r} is no longer a setting: it was two. Use "
                             "features.geometry=true|false (geometry metrics every step) and features.dump_every=N "
                             "(a feature dump every N steps, 0: none)")
        return data
