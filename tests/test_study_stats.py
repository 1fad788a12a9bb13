"""The study's statistics on synthetic frames (DESIGN 10): paired differences, verdicts, the per-run values and
the tables made from them, and the checks of a study file's hypotheses and per-arm seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.paired import metric_label, paired_difference, paired_table, parse_metric_label, verdict
from analysis.passk import pass_at_k
from analysis.study_tables import (Hypothesis, arm_table, headline_metrics, hypothesis_rows, level_table,
                                   paired_display, paired_rows)
from analysis.study_values import ALL_LEVELS, VALUE_COLUMNS, eval_values, read_values, write_values
from conftest import imported_packages
from workbench.config import ConfigError


def _values(per_seed: dict[str, dict[int, float]], metric: str = "pass@8", level: str = ALL_LEVELS,
            step: int = 10, benchmark: str = "countdown_test") -> pd.DataFrame:
    """A per-run values frame with one value per (arm, seed) at one step, and a step-0 row for each run."""
    rows = []
    for arm, values in per_seed.items():
        for seed, value in values.items():
            run = f"{arm}-{seed}"
            rows += [(arm, seed, run, 0, benchmark, level, metric, 0.5, 10),
                     (arm, seed, run, step, benchmark, level, metric, value, 10)]
    return pd.DataFrame(rows, columns=VALUE_COLUMNS)


# --------------------------------------------------------------------------- paired differences and verdicts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_difference_is_scipys_paired_t_interval(seed):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.6, size=8)
    arm = base + rng.normal(0.02, 0.03, size=8)
    d = paired_difference(dict(enumerate(arm)), dict(enumerate(base)))
    ci = stats.ttest_rel(arm, base).confidence_interval(0.95)
    assert d.pairs == 8 and d.seeds == tuple(range(8))
    assert math.isclose(d.mean, float(np.mean(arm - base)), rel_tol=1e-12)
    assert math.isclose(d.lo, ci.low, rel_tol=1e-9) and math.isclose(d.hi, ci.high, rel_tol=1e-9)
    by_hand = 2.3646242510102993 * np.std(arm - base, ddof=1) / math.sqrt(8)  # t(0.975, 7)
    assert math.isclose((d.hi - d.lo) / 2, by_hand, rel_tol=1e-9)


def test_an_arm_with_fewer_seeds_pairs_on_the_common_ones():
    base = {0: 0.30, 1: 0.40, 2: 0.35, 3: 0.50, 4: 0.45, 5: 0.20, 6: 0.31, 7: 0.33}
    arm = {0: 0.36, 1: 0.41, 2: 0.45, 3: 0.52, 9: 0.99}  # seed 9: the baseline never ran it
    d = paired_difference(arm, base)
    diffs = [arm[s] - base[s] for s in (0, 1, 2, 3)]
    assert d.pairs == 4 and d.seeds == (0, 1, 2, 3)
    assert math.isclose(d.mean, float(np.mean(diffs)))
    ci = stats.ttest_rel([arm[s] for s in range(4)], [base[s] for s in range(4)]).confidence_interval()
    assert math.isclose(d.lo, ci.low) and math.isclose(d.hi, ci.high)
    one = paired_difference({3: 0.6}, base)
    assert (one.pairs, math.isclose(one.mean, 0.1), math.isnan(one.lo)) == (1, True, True)
    assert paired_difference({11: 0.6}, base).pairs == 0


def test_paired_table_per_group_leaves_the_baseline_out():
    rows = pd.DataFrame([("grpo", s, m, v) for s in range(3) for m, v in (("pass@1", 0.1 * s), ("maj@8", 0.2))] +
                        [("g2rl", s, m, v + 0.05) for s in range(2) for m, v in (("pass@1", 0.1 * s), ("maj@8", 0.2))],
                        columns=["arm", "seed", "metric", "value"])
    table = paired_table(rows, "grpo", ["metric"]).set_index("metric")
    assert list(table["arm"]) == ["g2rl", "g2rl"] and list(table["pairs"]) == [2, 2]
    assert np.allclose(table["mean"], 0.05) and np.allclose(table["lo"], 0.05) and np.allclose(table["hi"], 0.05)
    with pytest.raises(ValueError, match="repeated"):
        paired_table(pd.concat([rows, rows]), "grpo", ["metric"])


def test_verdict_rule():
    assert verdict(0.04, 0.09, 0.03) == "supported"
    assert verdict(-0.05, 0.01, 0.03) == "refuted"
    assert verdict(0.01, 0.05, 0.03) == "inconclusive"
    assert verdict(0.03, 0.05, 0.03) == "inconclusive"  # touching min_effect is not above it
    assert verdict(math.nan, math.nan, 0.0) == "inconclusive"  # fewer than 2 pairs


def test_hypothesis_verdicts_on_synthetic_seeds():
    """Three arms against one baseline over 8 seeds: clearly better, clearly worse, and within noise."""
    rng = np.random.default_rng(7)
    base = rng.uniform(0.3, 0.6, size=8)
    values = _values({"grpo": dict(enumerate(base)),
                      "better": dict(enumerate(base + 0.10 + rng.normal(0, 0.01, 8))),
                      "worse": dict(enumerate(base - 0.05 + rng.normal(0, 0.01, 8))),
                      "noisy": dict(enumerate(base + 0.03 + rng.normal(0, 0.10, 8)))})
    hypotheses = [Hypothesis(arm, "grpo", "pass@8", 0.03, "countdown_test") for arm in ("better", "worse", "noisy")]
    results = hypothesis_rows(values, hypotheses).set_index("arm")
    assert list(results["verdict"]) == ["supported", "refuted", "inconclusive"]
    assert (results["pairs"] == 8).all()
    for arm in ("better", "worse", "noisy"):
        a = values[(values["arm"] == arm) & (values["step"] == 10)]["value"].to_numpy()
        ci = stats.ttest_rel(a, base).confidence_interval()
        assert math.isclose(results.loc[arm, "lo"], ci.low) and math.isclose(results.loc[arm, "hi"], ci.high)
    at_start = hypothesis_rows(values, [Hypothesis("better", "grpo", "pass@8", 0.0, "countdown_test", step=0)])
    assert at_start.loc[0, "mean"] == 0.0 and at_start.loc[0, "verdict"] == "inconclusive"  # same start


def test_metric_labels():
    assert metric_label("pass", 32) == "pass@32" and parse_metric_label("maj@4") == ("maj", 4)
    assert parse_metric_label("distinct_correct") == ("distinct_correct", None)
    for bad in ("pass@0", "pass_at_1", "mean@4", "pass@"):
        with pytest.raises(ValueError, match="pass@k, maj@k"):
            parse_metric_label(bad)


# --------------------------------------------------------------------------- the per-run values


def _eval_frame(levels: bool = True, solutions: bool = True, n: int = 4) -> pd.DataFrame:
    """6 problems x n samples at steps 0 and 5; problem p has p % (n + 1) correct samples."""
    rows = []
    for step in (0, 5):
        for p in range(6):
            c = (p + step) % (n + 1)
            for s in range(n):
                ok = s < c
                rows.append((step, "countdown_test", f"p{p}", s, str(p) if ok else f"w{s}", ok,
                             2 + p % 2, f"{p}-{s % 2}" if ok else None))
    frame = pd.DataFrame(rows, columns=["step", "benchmark", "problem_id", "sample", "answer", "correct", "level",
                                        "solution"]).astype({"level": "Int64"})
    return frame.drop(columns=[c for c, keep in (("level", levels), ("solution", solutions)) if not keep])


def test_eval_values_rows_every_k_every_level():
    frame = _eval_frame(n=4)
    values = eval_values(frame)
    # per step: (all + levels 2, 3) x (pass@1..4, maj@1..4, distinct_correct)
    assert len(values) == 2 * 3 * (2 * 4 + 1)
    assert set(values["metric"]) == {*(f"{m}@{k}" for m in ("pass", "maj") for k in range(1, 5)), "distinct_correct"}
    assert set(values["level"]) == {"all", "2", "3"}
    one = values.set_index(["step", "level", "metric"])
    for step in (0, 5):
        for level, problems in (("all", range(6)), ("2", range(0, 6, 2)), ("3", range(1, 6, 2))):
            counts = [(p + step) % 5 for p in problems]
            for k in (1, 2, 4):
                want = np.mean([pass_at_k(4, c, k) for c in counts])
                assert math.isclose(one.loc[(step, level, f"pass@{k}"), "value"], round(want, 6))
            distinct = np.mean([min(c, 2) for c in counts])  # solutions alternate between two forms
            assert math.isclose(one.loc[(step, level, "distinct_correct"), "value"], round(distinct, 6))
            assert one.loc[(step, level, "pass@1"), "problems"] == len(problems)


def test_eval_values_of_a_frame_recorded_before_levels_and_solutions():
    values = eval_values(_eval_frame(levels=False, solutions=False))
    assert set(values["level"]) == {"all"} and "distinct_correct" not in set(values["metric"])
    assert len(values) == 2 * 8


def _study_values(levels: bool) -> pd.DataFrame:
    parts = []
    for arm, shift in (("grpo", 0), ("g2rl", 1)):
        for seed in (0, 1, 2):
            frame = _eval_frame(levels=levels)
            if shift:  # one more correct sample for every problem but those already all correct, at step 5
                frame = frame.assign(correct=frame["correct"] | ((frame["step"] == 5) & (frame["sample"] == seed)))
            parts.append(eval_values(frame).assign(arm=arm, seed=seed, run_id=f"{arm}{seed}"))
    return pd.concat(parts, ignore_index=True)[VALUE_COLUMNS]


def test_tables_with_and_without_levels(tmp_path):
    with_levels = read_values(write_values(_study_values(levels=True), tmp_path / "v.csv"))
    table = level_table(with_levels, "last", ["grpo", "g2rl"])
    assert list(table.index) == ["grpo", "g2rl"] and table.loc["grpo", "seeds"] == "3"
    assert [c for c in table.columns if c.endswith("pass@1")] == ["countdown_test L2 pass@1",
                                                                   "countdown_test L3 pass@1"]
    rows = with_levels[(with_levels["step"] == 5) & (with_levels["level"] == "3") &
                       (with_levels["metric"] == "maj@4") & (with_levels["arm"] == "g2rl")]["value"]
    mean, half = rows.mean(), stats.t.ppf(0.975, 2) * rows.std(ddof=1) / math.sqrt(3)
    assert table.loc["g2rl", "countdown_test L3 maj@4"] == f"{100 * mean:.1f} ± {100 * half:.1f}"
    paired = paired_rows(with_levels, "grpo")
    assert set(paired["level"]) == {"all", "2", "3"} and (paired["pairs"] == 3).all()
    shown = paired_display(paired, ["grpo", "g2rl"], ["2", "3"])
    assert list(shown.index) == ["g2rl"] and "countdown_test L2 distinct correct" in shown.columns

    without = read_values(write_values(_study_values(levels=False), tmp_path / "w.csv"))
    assert level_table(without, "last").empty
    assert set(paired_rows(without, "grpo")["level"]) == {"all"}
    end = arm_table(without, "last", ["grpo", "g2rl"])
    assert list(end.columns) == ["seeds", "countdown_test pass@1", "countdown_test maj@4", "countdown_test pass@4",
                                 "countdown_test distinct correct"]
    assert headline_metrics(without, "countdown_test") == ["pass@1", "maj@4", "pass@4", "distinct_correct"]
    no_solutions = without[without["metric"] != "distinct_correct"]
    assert headline_metrics(no_solutions, "countdown_test") == ["pass@1", "maj@4", "pass@4"]


def test_study_analysis_modules_import_no_torch_or_upper_layers():
    for module in ("analysis/paired.py", "analysis/study_values.py", "analysis/study_tables.py"):
        assert imported_packages(module).isdisjoint({"torch", "workbench", "trainers", "transformers", "trl"}), module


# --------------------------------------------------------------------------- the study file


def _study(**change):
    from workbench.experiments.study_spec import parse_study

    data = {"experiment": "x", "seeds": [0, 1, 2, 3],
            "arms": [{"name": "grpo", "method": "grpo", "seeds": [0, 1, 2, 3, 4, 5, 6, 7]},
                     {"name": "g2rl", "method": "g2rl"},
                     {"name": "entropy", "method": "entropy", "seeds": [6, 7, 8, 9]}],
            "eval": {"n": 8, "every": 50}, "training": {"steps": 100}} | change
    return parse_study(data, "s.yaml")


def test_per_arm_seeds_and_hypotheses_parse():
    study = _study(hypotheses=[{"arm": "g2rl", "metric": "pass@8", "min_effect": 0.03},
                               {"arm": "grpo", "baseline": "entropy", "metric": "distinct_correct", "min_effect": 0,
                                "level": 3, "step": 50}])
    assert [a.seeds for a in study.arms] == [tuple(range(8)), (0, 1, 2, 3), (6, 7, 8, 9)]
    assert len(study.cells) == 16 and [c.seed for c in study.arm_cells("entropy")] == [6, 7, 8, 9]
    assert study.cell_arms.count("grpo") == 8 and study.baseline == "grpo"
    assert study.grid_text() == "grpo x 8 seeds, g2rl x 4 seeds, entropy x 4 seeds"
    first, second = study.hypotheses
    assert first == Hypothesis("g2rl", "grpo", "pass@8", 0.03, "countdown_test")
    assert (second.baseline, second.level, second.step, second.min_effect) == ("entropy", 3, 50, 0.0)
    other = _study(baseline="g2rl", hypotheses=[{"arm": "grpo", "metric": "maj@2", "min_effect": -0.01}])
    assert other.baseline == "g2rl" and other.hypotheses[0].baseline == "g2rl"


BAD_HYPOTHESES = [
    ({"arm": "g2rlx", "metric": "pass@8", "min_effect": 0.03}, "arm 'g2rlx' is not an arm of the study"),
    ({"arm": "g2rl", "baseline": "ppo", "metric": "pass@8", "min_effect": 0.03}, "baseline 'ppo' is not an arm"),
    ({"arm": "grpo", "metric": "pass@8", "min_effect": 0.03}, "arm and baseline are both 'grpo'"),
    ({"arm": "g2rl", "metric": "mean@8", "min_effect": 0.03}, "metric 'mean@8' must be pass@k, maj@k or distinct"),
    ({"arm": "g2rl", "metric": "pass@16", "min_effect": 0.03}, "metric 'pass@16' needs k <= 8"),
    ({"arm": "g2rl", "metric": "maj@8", "min_effect": "3 pp"}, "min_effect '3 pp' must be a number"),
    ({"arm": "g2rl", "metric": "maj@8", "min_effect": True}, "min_effect True must be a number"),
    ({"arm": "g2rl", "metric": "maj@8"}, "give min_effect"),
    ({"arm": "g2rl", "metric": "maj@8", "min_effect": 0, "k": 8}, "unknown key 'k'"),
    ({"arm": "g2rl", "metric": "maj@8", "min_effect": 0, "step": 40}, "step 40 is not an evaluation step of both arms; "
                                                                      "choose one of [0, 50, 100]"),
    ({"arm": "g2rl", "metric": "maj@8", "min_effect": 0, "level": "hard"}, "level 'hard' must be a problem level"),
    ({"arm": "g2rl", "metric": "maj@8", "min_effect": 0, "benchmark": "aime25"}, "benchmark 'aime25' is not evaluated"),
    ({"arm": "entropy", "baseline": "g2rl", "metric": "maj@8", "min_effect": 0}, "share no seed"),
]


@pytest.mark.parametrize(("hypothesis", "message"), BAD_HYPOTHESES, ids=[m for _, m in BAD_HYPOTHESES])
def test_bad_hypotheses_are_refused_with_the_value_and_the_fix(hypothesis, message):
    with pytest.raises(ConfigError) as err:
        _study(hypotheses=[hypothesis])
    assert message in str(err.value) and "hypotheses[0]" in str(err.value)


@pytest.mark.parametrize(("change", "message"), [
    ({"hypotheses": {"arm": "g2rl"}}, "`hypotheses` must be a list"),
    ({"baseline": "ppo"}, "`baseline` 'ppo' is not an arm"),
    ({"arms": [{"name": "grpo", "method": "grpo", "seeds": [0, 0]}]}, "seeds [0] are listed more than once"),
    ({"arms": [{"name": "grpo", "method": "grpo", "seeds": []}]}, "(grpo): `seeds` [] must be a non-empty list"),
    ({"arms": [{"name": "a", "method": "g2rl", "seeds": [0]}, {"name": "b", "method": "g2rl", "seeds": [5]}]},
     "arms 'a' and 'b' resolve to the same config"),
])
def test_bad_study_keys(change, message):
    with pytest.raises(ConfigError) as err:
        _study(**change)
    assert message in str(err.value)
