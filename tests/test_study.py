"""``workbench study``: a tiny study end to end (train, probe, report, resume), and bad study files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from analysis.loaders import metric_history, runs_table
from workbench.cli import main

# Shrunk for 2 CPU cores: 2 RL steps of 4 prompts x 4 completions of at most 6 tokens (a 100-step warm
# start, as tests/conftest.py's SMALL); evaluation and probe sample 2 completions of 2 problems.
TINY_STUDY = {
    "experiment": "tiny-study",
    "report_dir": "report",
    "seeds": [0],
    "probe": {"benchmark": "task", "n": 2, "max_problems": 2},
    "arms": [{"name": "grpo", "method": "grpo"},
             {"name": "g2rl-zero", "method": "g2rl", "set": {"g2rl.uniform_groups": "zero"}}],
    "model": {"warmstart_steps": 100},
    "training": {"steps": 2, "prompts_per_step": 4, "num_generations": 4, "max_completion_length": 6,
                 "steps_per_generation": None, "beta": 0},  # one update per rollout batch, no reference model
    "eval": {"n": 2, "max_problems": 2},
}
REPORT_FILES = ["README.md", "per_run.csv", "passk.png", "passk.html", "figure3.png", "figure3.html", "curves.png",
                "curves.html", "groups.png", "groups.html", "dynamics.png", "dynamics.html", "table_start.csv",
                "table_end.csv", "paired_end.csv", "hypotheses.csv"]


def _write(tmp_path, data, name="study.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_tiny_study_trains_probes_reports_and_resumes(store, model_cache, tmp_path, capsys):
    path = _write(tmp_path, TINY_STUDY)
    assert main(["study", "--config", path]) == 0
    runs = runs_table("tiny-study", store)
    train, probes = runs[runs["kind"] != "probe"], runs[runs["kind"] == "probe"]
    assert sorted(train["arm"]) == ["g2rl-zero", "grpo"] and (train["status"] == "FINISHED").all()
    assert sorted(probes["arm"]) == ["g2rl-zero", "grpo"] and (probes["status"] == "FINISHED").all()
    assert train.set_index("arm").loc["g2rl-zero", "param.g2rl.uniform_groups"] == "zero"
    for name in REPORT_FILES:
        assert (tmp_path / "report" / name).stat().st_size > 0, name

    # The table: one row per arm, each cell the run's logged eval metric in percent (one seed: the value).
    key = "eval/countdown_test/pass_at_1"
    for stage, step in (("end", 2), ("start", 0)):
        table = pd.read_csv(tmp_path / "report" / f"table_{stage}.csv", index_col=0, dtype=str)
        assert list(table.index) == ["grpo", "g2rl-zero"]
        for run in train.itertuples():
            logged = metric_history(run.run_id, key, store).set_index("step")["value"][step]
            assert table.loc[run.arm, "countdown_test pass@1"] == f"{100 * logged:.1f}"
    readme = (tmp_path / "report" / "README.md").read_text()
    assert f"config: `{path}`" in readme and "commit: `" in readme and "for this invocation" in readme
    assert "| grpo | grpo | 1 |" in readme  # the Figure 3 table has a row per arm with its probe count

    # Again: every cell and probe was done, so nothing new is recorded; --report-only rewrites the report.
    capsys.readouterr()
    assert main(["study", "--config", path]) == 0
    assert len(runs_table("tiny-study", store)) == len(runs)
    assert "already finished" in capsys.readouterr().err
    (tmp_path / "report" / "README.md").unlink()
    assert main(["study", "--config", path, "--report-only"]) == 0
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "| g2rl-zero |" in readme and "for this invocation" not in readme


def test_study_cells_are_nested_under_the_studys_parent_run(store, tmp_path):
    """A fake train function: only the MLflow record is checked. The parent is the study's, not a sweep's."""
    from analysis.study import study_runs
    from workbench.experiments.study import run_study
    from workbench.experiments.study_spec import load_study
    from analysis.records import PARENT_TAG
    from workbench.tracking import client

    def fake_train(cfg, tracker):
        tracker.log_metrics({"train/reward": 0.5}, step=1)

    study = load_study(_write(tmp_path, {**TINY_STUDY, "probe": None, "seeds": [0, 1]}))
    results, probed = run_study(study, train_fn=fake_train)
    assert [r.status for r in results] == ["finished"] * 4 and probed == []
    c = client(store)
    exp = c.get_experiment_by_name("tiny-study").experiment_id
    (parent,) = c.search_runs([exp], filter_string="tags.`workbench.kind` = 'study'")
    assert (parent.info.run_name, parent.info.status) == ("tiny-study", "FINISHED")
    assert not c.search_runs([exp], filter_string="tags.`workbench.kind` = 'sweep'")
    assert {c.get_run(r.run_id).data.tags[PARENT_TAG] for r in results} == {parent.info.run_id}
    train, _ = study_runs(runs_table("tiny-study", store), [a.name for a in study.arms])
    assert sorted(train["run_id"]) == sorted(r.run_id for r in results)  # the parent is no cell


def _eval_rows(step: int, seed: int, bonus: float, problems: int = 8, n: int = 4) -> pd.DataFrame:
    """Evaluation rows as a run records them: the same draws for every arm of a seed, correct more often with
    ``bonus`` after step 0; problems alternate between levels 2 and 3; two solution forms."""
    rng = np.random.default_rng(1000 * seed + step)
    rows = []
    for p in range(problems):
        for s in range(n):
            ok = bool(rng.random() < 0.3 + (bonus if step else 0.0))
            rows.append((step, "countdown_test", f"p{p}", s, str(p) if ok else str(100 + s), ok, 2 + p % 2,
                         f"{p}:{s % 2}" if ok else None))
    return pd.DataFrame(rows, columns=["step", "benchmark", "problem_id", "sample", "answer", "correct", "level",
                                       "solution"]).astype({"level": "Int64"})


def _recording_train(cfg, tracker):
    """Stands in for training: logs group shares every step and evaluates at 0, 5 and 10 as a run does."""
    from analysis.records import eval_path
    from workbench.run.evaluation import eval_table, score

    bonus = 0.3 if cfg.method == "g2rl" else 0.0
    for step in range(11):
        if step:
            tracker.log_metrics({"train/reward": 0.5, "train/mixed_groups": 0.5 + bonus / 3,
                                 "train/all_wrong_groups": 0.3, "train/all_correct_groups": 0.2 - bonus / 3}, step)
        if step % 5 == 0:
            frame = _eval_rows(step, cfg.seed, bonus)
            tracker.log_metrics(score(frame), step=step)
            tracker.log_parquet(eval_table(frame), eval_path(step))


def test_report_tables_are_recomputed_from_the_per_run_csv(store, tmp_path):
    """Recorded evaluations (no training) of grpo x 3 seeds and g2rl x 2: the CSV holds every run, step, level
    and metric; Table 1, the paired table and the hypotheses' verdicts follow from it by hand (scipy)."""
    from workbench.experiments.study import run_study
    from workbench.experiments.study_report import write_study_report
    from workbench.experiments.study_spec import load_study

    data = {**TINY_STUDY, "probe": None, "seeds": [0, 1, 2], "eval": {"n": 4, "every": 5}, "training": {"steps": 10},
            "arms": [{"name": "grpo", "method": "grpo"}, {"name": "g2rl", "method": "g2rl", "seeds": [0, 1]}],
            "hypotheses": [{"arm": "g2rl", "metric": "pass@1", "min_effect": 0.05},
                           {"arm": "g2rl", "metric": "pass@1", "min_effect": 0.9},
                           {"arm": "g2rl", "metric": "maj@4", "min_effect": 0.0, "level": 3, "step": 5}]}
    study = load_study(_write(tmp_path, data))
    run_study(study, train_fn=_recording_train)
    write_study_report(study, store, command="workbench study", wall_s=None)
    out = tmp_path / "report"
    values = pd.read_csv(out / "per_run.csv", dtype={"level": str})
    assert list(values.columns) == ["arm", "seed", "run_id", "step", "benchmark", "level", "metric", "value",
                                    "problems"]
    # 5 runs x 3 steps x (all, level 2, level 3) x (pass@1..4, maj@1..4, distinct_correct)
    assert len(values) == 5 * 3 * 3 * 9 and values.groupby("arm")["seed"].nunique().to_dict() == {"grpo": 3, "g2rl": 2}
    frame = _eval_rows(10, 1, 0.3)
    c = frame[frame["level"] == 3].groupby("problem_id")["correct"].sum()
    row = values[(values["arm"] == "g2rl") & (values["seed"] == 1) & (values["step"] == 10) &
                 (values["level"] == "3") & (values["metric"] == "pass@1")]
    assert math.isclose(row["value"].item(), round(c.mean() / 4, 6))

    end = values[values["step"] == 10]
    table = pd.read_csv(out / "table_end.csv", index_col=0, dtype=str)
    for arm in ("grpo", "g2rl"):
        for metric, column in (("pass@1", "countdown_test pass@1"), ("maj@4", "countdown_test maj@4")):
            v = end[(end["arm"] == arm) & (end["level"] == "all") & (end["metric"] == metric)]["value"]
            half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
            assert table.loc[arm, column] == f"{100 * v.mean():.1f} ± {100 * half:.1f}"

    def paired(metric, level="all", step=10):
        part = values[(values["step"] == step) & (values["level"] == level) & (values["metric"] == metric)]
        g2rl, grpo = (part[part["arm"] == a].set_index("seed")["value"] for a in ("g2rl", "grpo"))
        return stats.ttest_rel(g2rl, grpo.loc[g2rl.index]), (g2rl - grpo.loc[g2rl.index]).mean()

    diffs = pd.read_csv(out / "paired_end.csv", dtype={"level": str}).set_index(["level", "metric"])
    test, mean = paired("pass@4", "2")
    assert diffs.loc[("2", "pass@4"), "pairs"] == 2 and math.isclose(diffs.loc[("2", "pass@4"), "mean"], mean)
    assert math.isclose(diffs.loc[("2", "pass@4"), "lo"], test.confidence_interval().low)
    results = pd.read_csv(out / "hypotheses.csv")
    for r, (metric, level, step) in zip(results.itertuples(), [("pass@1", "all", 10), ("pass@1", "all", 10),
                                                              ("maj@4", "3", 5)]):
        test, mean = paired(metric, level, step)
        ci = test.confidence_interval()
        want = "supported" if ci.low > r.min_effect else "refuted" if ci.high < r.min_effect else "inconclusive"
        assert (r.verdict, r.pairs) == (want, 2) and math.isclose(r.mean, mean) and math.isclose(r.hi, ci.high)
    assert results["verdict"].iloc[1] == "refuted"  # +0.9 is far above anything 0.3 more correct samples give
    readme = (out / "README.md").read_text()
    assert "## Hypotheses" in readme and "**refuted**" in readme and "paired t-interval over seeds" in readme
    assert "grpo x 3 seeds, g2rl x 2 seeds" in readme and "| g2rl | g2rl | 0, 1 |" in readme
    assert "countdown_test L3 pass@1" in readme and "At each of the 3 evaluation steps" in readme
    for name in ("curves.png", "paired.png", "passk.png", "groups.png", "dynamics.html"):
        assert (out / name).stat().st_size > 0, name


def _arms(*arms):
    return [dict(a) for a in arms]


BAD = [
    ({"arms": _arms({"name": "a", "method": "grpo", "lam": 1})}, "unknown arm key 'lam'"),
    ({"arms": _arms({"name": "a", "method": "grpo"}, {"name": "a", "method": "g2rl"})}, "'a' appear more than once"),
    ({"seeds": []}, "`seeds` [] must be a non-empty list"),
    ({"arms": []}, "non-empty list `arms`"),
    ({"arms": _arms({"name": "a", "method": "g2rl"}, {"name": "b", "method": "g2rl", "set": {"g2rl.lam": 1.0}})},
     "arms 'a' and 'b' resolve to the same config"),
    ({"arms": _arms({"name": "a", "method": "g2rl", "set": {"g2rl.lamda": 1}})}, "arm 'a': unknown config key"),
    ({"arms": _arms({"name": "a", "method": "grpo", "set": {"seed": 3}})}, "may not set seed"),
    ({"arms": _arms({"name": "a", "method": "nonsense"})}, "nonsense"),
    ({"probe": {"benchmark": "task", "samples": 8}}, "unknown probe key 'samples'"),
    ({"jobs": 0}, "`jobs` 0 must be a whole number >= 1"),
    ({"jobs": "2"}, "`jobs` '2' must be a whole number >= 1"),
    ({"include": ["no/such/reading.md"]}, "`include` file(s) ['no/such/reading.md'] do not exist"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_study_file_is_refused_before_anything_is_recorded(store, tmp_path, capsys, change, message):
    data = {"experiment": "bad", "seeds": [0], "arms": _arms({"name": "grpo", "method": "grpo"})} | change
    assert main(["study", "--config", _write(tmp_path, data)]) == 2
    assert message in capsys.readouterr().err
    assert runs_table("bad", store).empty


def test_report_only_without_recorded_runs_leaves_the_report_folder_alone(store, tmp_path, capsys):
    path = _write(tmp_path, TINY_STUDY)
    assert main(["study", "--config", path, "--report-only"]) == 2
    assert "no finished runs of this study's arms" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_shards_split_the_cells_and_included_files_follow_the_report(tmp_path):
    """Every cell falls in exactly one shard; an included file is appended with its headings one level down."""
    from workbench.experiments.study import parse_shard, shard_cells
    from workbench.experiments.study_spec import load_study
    from workbench.experiments.study_sections import demoted

    arms = [{"name": f"a{k}", "method": "g2rl", "set": {"g2rl.lam": 0.1 * (k + 1)}} for k in range(3)]
    study = load_study(_write(tmp_path, {"experiment": "x", "seeds": [0, 1], "arms": arms, "jobs": 2}))
    assert study.jobs == 2
    shards = [shard_cells(study, j, 2) for j in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(6)) and not set(shards[0]) & set(shards[1])
    assert parse_shard("1/2") == (1, 2)
    with pytest.raises(Exception, match="--shard '2/2'"):
        parse_shard("2/2")
    text = ["# Reading", "text", "```bash", "# a comment", "```", "## More"]
    assert demoted(text) == ["## Reading", "text", "```bash", "# a comment", "```", "### More"]


def test_the_shipped_default_study_parses(monkeypatch):
    """configs/study-default.yaml, run from the repository root as the README says: 7 arms, grpo and g2rl
    on 8 seeds and the rest on 4 (36 cells), 2 jobs, its hypotheses against the grpo arm."""
    from pathlib import Path

    from workbench.experiments.study_spec import load_study

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    study = load_study("configs/study-default.yaml")
    assert (len(study.arms), len(study.seeds), len(study.cells), study.jobs) == (7, 4, 36, 2)
    assert {a.name: len(a.seeds) for a in study.arms if len(a.seeds) != 4} == {"grpo": 8, "g2rl": 8}
    assert study.baseline == "grpo" and study.hypotheses
    assert [p.name for p in study.include] == ["reading.md"]
    assert study.base["features"] == {"encoder_dtype": "float32"}  # as the committed report ran
