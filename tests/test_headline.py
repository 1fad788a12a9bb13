"""What `workbench run` shows: the held-out headline at its end (workbench/run/headline.py), the progress bar."""

from __future__ import annotations

from workbench.run.headline import headline_lines, run_headline


def test_headline_shows_pass1_and_the_largest_k_of_each_kind_start_to_end():
    histories = {
        "eval/countdown/pass_at_1": [(300, 0.31), (0, 0.25), (150, 0.28)],
        "eval/countdown/pass_at_32": [(0, 0.94), (300, 0.9)],
        "eval/countdown/pass_at_4": [(0, 0.6), (300, 0.61)],
        "eval/countdown/maj_at_32": [(0, 0.45), (300, 0.5)],
        "eval/countdown/level_3/pass_at_1": [(0, 0.1), (300, 0.2)],  # per level: not in the headline
        "train/reward": [(1, 0.3)],
        "eval/math500/pass_at_1": [(0, 0.5)],  # one evaluation: its one value
    }
    assert headline_lines(histories) == [
        "countdown (steps 0 -> 300): pass@1 0.250 -> 0.310, maj@32 0.450 -> 0.500, pass@32 0.940 -> 0.900",
        "math500 (step 0): pass@1 0.500",
    ]


def test_no_evaluation_gives_no_headline():
    assert headline_lines({"train/reward": [(1, 0.5)], "eval/countdown/pass_at_1": []}) == []


def test_the_headline_is_read_back_from_the_store(store):
    import mlflow

    with mlflow.start_run() as run:
        for step, value in ((0, 0.2), (10, 0.4)):
            mlflow.log_metric("eval/task/pass_at_1", value, step=step)
            mlflow.log_metric("eval/task/pass_at_8", value + 0.3, step=step)
    assert run_headline(run.info.run_id, store) == ["task (steps 0 -> 10): pass@1 0.200 -> 0.400, pass@8 0.500 -> 0.700"]


def test_the_progress_bar_shows_accuracy_and_labels_a_shaped_mean():
    from workbench.run.recording import ProgressBar

    grpo = {"reward": 0.25, "rewards/verifier/mean": 0.25, "kl": 0.01, "entropy": 1.2, "loss": 0.0}
    assert ProgressBar.postfix(grpo) == {"accuracy": "0.25", "kl": "0.01", "entropy": "1.2"}
    g2rl = {**grpo, "reward": -1.11, "rewards/shaping/mean": -1.36}
    assert ProgressBar.postfix(g2rl) == {"accuracy": "0.25", "shaped": "-1.11", "kl": "0.01", "entropy": "1.2"}
