"""Preference pairs from the SFT Answer model's own replies (orchestrator/stages/preference.py):
right by construction from a loopback server replying right and wrong, the teacher's solution as
chosen, resumed without asking twice, one Error line for a set without a pair; and, for real,
DPO trained by llamafactory-cli on the SFT adapter with ref_model (the merged reference, and the
`preference` chain, run in tests/e2e/test_preference_walk.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, default_reply, expected_letter
from helpers import REPO, make_train, trained_copy

from orchestrator.core.common.ledger import Ledger
from orchestrator.core.data.answers import extract_choice
from orchestrator.core.data.competition import Question, read_dataset
from orchestrator.core.data.prompts import answer_prompt
from orchestrator.stages.preference import pairs_of

DPO = "recipes/tiny-answer-dpo.yaml"  # 4 samples a question, preference.chosen: teacher, val_size 0.2


def wrong_reply(prompt: str) -> str:
    right = expected_letter(prompt)
    return f"### 思考思路:\n1. 错误的推理。\n### 可能的结果:\n答案是：{'B' if right == 'A' else 'A'}"


class RightWrong:
    """Per question, replies alternately right (the gold letter: make_train's) and wrong."""

    def __init__(self) -> None:
        self.seen, self.lock = Counter(), threading.Lock()

    def __call__(self, prompt: str, request: dict) -> str:
        with self.lock:
            n = self.seen[prompt]
            self.seen[prompt] += 1
        return default_reply(prompt, request) if n % 2 == 0 else wrong_reply(prompt)


def setup(project: Path) -> tuple[list[Question], str]:
    train = make_train(project / "train.jsonl", problems=5, per_problem=2)  # gold = default_reply's letter
    (project / "recipes" / "pl.yaml").write_text("extends: tiny-pipeline.yaml\ndata:\n  train: train.jsonl\n",
                                                 encoding="utf-8")
    return read_dataset(train).questions, "recipes/pl.yaml"


def pairs_command(url: str, *extra: str) -> list[str]:
    return ["preference", "--recipe", DPO, "--pipeline", "recipes/pl.yaml", "--answer-url", url, "--pairs-only", *extra]


def test_pairs_are_a_right_and_a_wrong_reply_of_the_held_in_questions(project: Path, cli) -> None:
    questions, _ = setup(project)
    with FakeOpenAI(models=("sft",), reply=RightWrong()) as server:
        code, out, err = cli(*pairs_command(server.url))
        assert code == 0, err

        record = json.loads((project / "datasets" / "pref_tiny_answer.sources.json").read_text(encoding="utf-8"))
        held = set(record["split"]["val_problems"])
        assert len(held) == 1  # val_size 0.2 of 5 problems, as the SFT set holds them out
        asked = [q for q in questions if q.problem_id not in held]
        assert server.completions == len(asked) * 4
        assert not [p for p in server.prompts for q in questions if q.problem_id in held and q.question in p]

        rows = json.loads((project / "datasets" / "pref_tiny_answer.json").read_text(encoding="utf-8"))
        assert len(rows) == len(asked)  # pairs_per_question 1
        by_prompt = {answer_prompt(q): q for q in asked}
        for row, pair in zip(rows, record["pairs"], strict=True):
            q = by_prompt[row["instruction"]]
            assert set(row) == {"instruction", "input", "chosen", "rejected"}
            assert extract_choice(row["chosen"], 4) == q.answer == pair["chosen"]["letter"] == pair["gold"]
            assert extract_choice(row["rejected"], 4) == pair["rejected"]["letter"] != q.answer
            assert pair["id"] == q.qid and pair["chosen"]["model"] == pair["rejected"]["model"] == "sft"
            assert pair["chosen"]["sample"] != pair["rejected"]["sample"]
        assert f"{len(asked)} pairs from {len(asked)} training questions (2 held-out questions never asked)" in out
        assert "questions without a pair: 0" in out
        assert record["preference"] == {
            "sft_recipe": "recipes/tiny-answer.yaml", "model": "sft", "samples": 4, "temperature": 1.0,
            "chosen": "teacher", "reference": "merged"}

        # each sample where it was cached, under the model that wrote it
        lines = (project / "runs" / "tiny-answer-dpo" / "answer_samples.jsonl").read_text(encoding="utf-8")
        samples = {(r["id"], r["sample"]): r for r in map(json.loads, lines.splitlines())}
        for row, pair in zip(rows, record["pairs"], strict=True):
            assert samples[pair["id"], pair["chosen"]["sample"]]["text"] == row["chosen"]
            assert samples[pair["id"], pair["rejected"]["sample"]]["text"] == row["rejected"]

        info = json.loads((project / "datasets" / "dataset_info.json").read_text(encoding="utf-8"))
        assert info["pref_tiny_answer"] == {
            "file_name": "pref_tiny_answer.json", "formatting": "alpaca", "ranking": True,
            "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}}

        # resumed: the same command asks nothing again and writes the same pairs
        code, out, err = cli(*pairs_command(server.url))
        assert code == 0, err
        assert server.completions == len(asked) * 4 and "0 asked now" in out
        assert json.loads((project / "datasets" / "pref_tiny_answer.json").read_text(encoding="utf-8")) == rows


def test_make_builds_the_pairs_with_dataset_answer(project: Path, cli) -> None:
    """`make answer-model ANSWER_RECIPE=<a DPO recipe>` runs `dataset answer` for its set: the pairs."""
    setup(project)
    with FakeOpenAI(models=("sft",), reply=RightWrong()) as server:
        args = ["dataset", "answer", "--recipe", DPO, "--pipeline", "recipes/pl.yaml", "--answer-url", server.url]
        code, out, err = cli(*args)
        assert code == 0, err
        assert "8 pairs from 8 training questions" in out and server.completions == 32
        code, out, err = cli(*args, "--input", "train.jsonl")
    assert code == 2 and "Error: --input and --tokenizer are not for a preference set" in err
    assert len(json.loads((project / "datasets" / "pref_tiny_answer.json").read_text(encoding="utf-8"))) == 8


def _cache_teacher(project: Path, questions: list[Question], pipeline: str) -> None:
    """A distilled teacher reply that reached the gold letter, for every question."""
    from orchestrator.core.recipes.loading import load_pipeline
    from orchestrator.core.data.teacher_cache import cache_path, sampling_of, teacher_key, teacher_prompt

    teacher = load_pipeline(project / pipeline).recipe.teacher
    cache_path().parent.mkdir(parents=True, exist_ok=True)
    with Ledger(cache_path()) as cache:
        for q in questions:
            prompt = teacher_prompt(q, teacher)
            cache.append({"key": teacher_key(q.qid, prompt, teacher.model, sampling_of(teacher)), "id": q.qid,
                          "text": f"### 思考思路:\n1. 老师的推理。\n### 可能的结果:\n答案是：{q.answer}", "agrees": True})


@pytest.mark.parametrize("chosen, expected", [
    ("teacher", "pairs"),
    ("model", "Error: recipes/tiny-answer-dpo.yaml: no preference pair: none of the 8 training questions got both a "
              "right and a wrong reply among 4 samples of sft (8 every reply wrong); raise preference.samples or "
              "preference.temperature, or preference.chosen: teacher (the teacher's solution as chosen)"),
])
def test_where_no_reply_is_right_the_teachers_solution_is_chosen(project: Path, cli, chosen: str,
                                                                  expected: str) -> None:
    questions, pipeline = setup(project)
    _cache_teacher(project, questions, pipeline)
    with FakeOpenAI(models=("sft",), reply=lambda prompt, request: wrong_reply(prompt)) as server:
        code, out, err = cli(*pairs_command(server.url, "--set", f"preference.chosen={chosen}"))
    if expected != "pairs":
        assert code == 2 and err.strip().splitlines()[-1] == expected and err.count("Error:") == 1
        assert not (project / "datasets" / "pref_tiny_answer.json").exists()
        return
    assert code == 0, err
    record = json.loads((project / "datasets" / "pref_tiny_answer.sources.json").read_text(encoding="utf-8"))
    rows = json.loads((project / "datasets" / "pref_tiny_answer.json").read_text(encoding="utf-8"))
    assert len(rows) == 8 and "chosen from the teacher's verified solution (preference.chosen: teacher): 8" in out
    for row, pair in zip(rows, record["pairs"], strict=True):
        assert "老师的推理" in row["chosen"] and pair["chosen"] == {"from": "teacher", "model": "deepseek-chat",
                                                                    "letter": pair["gold"]}
        assert pair["rejected"]["letter"] != pair["gold"]


def test_a_set_without_a_pair_is_one_error(project: Path, cli) -> None:
    setup(project)
    with FakeOpenAI(models=("sft",)) as server:  # always the gold letter
        code, out, err = cli(*pairs_command(server.url))
        assert code == 2
        assert err.count("Error:") == 1 and "no preference pair" in err and "(8 every reply right)" in err
        assert "Traceback" not in err

        # what check refuses is refused before a reply is asked
        server.reset_counts()
        code, out, err = cli(*pairs_command(server.url, "--set", "dataset.val_size=0.4"))
        assert code == 2 and "differ from the SFT recipe's" in err and server.completions == 0


R, W, N = "R", "W", None  # a reply with the gold letter, a wrong letter, no letter
PAIRS = [
    # replies (letter kinds), pairs_per_question, teacher solution -> pairs as (chosen, rejected) kinds, or reason
    ([R, W, W], 1, False, [("R0", "W1")]),
    ([R, W, R, N], 2, False, [("R0", "W1"), ("R2", "N3")]),
    ([R, W, R, N], 1, False, [("R0", "W1")]),
    ([W, R], 4, False, [("R1", "W0")]),
    ([R, R], 1, True, "every reply right"),
    ([W, N], 1, False, "every reply wrong"),
    ([W, N], 2, True, [("T", "W0"), ("T", "N1")]),
    ([], 1, True, "without a reply"),
]


@pytest.mark.parametrize("kinds, n, teacher, expected", PAIRS)
def test_pairs_of(kinds, n, teacher, expected) -> None:
    q = Question("p", 0, "题目", "问题?", ("a", "b", "c", "d"), answer="C")
    letter = {R: "C", W: "A", N: None}
    replies = [{"text": f"reply {i}", "letter": letter[k], "sample": i, "model": "m", "kind": f"{k or 'N'}{i}"}
               for i, k in enumerate(kinds)]
    solution = {"text": "teacher", "letter": "C", "model": "t", "kind": "T"} if teacher else None
    found, reason = pairs_of(q, replies, n, solution)
    if isinstance(expected, str):
        assert (found, reason) == ([], expected)
    else:
        assert reason is None and [(c["kind"], r["kind"]) for c, r in found] == expected


# ---------------------------------------------------------------- for real, on the tiny SFT model


def _rewards(adapter: Path) -> list[dict]:
    """LLaMA-Factory's logged steps with its DPO metrics (rewards/chosen, rewards/margins, ...)."""
    history = json.loads((adapter / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
    return [h for h in history if "rewards/margins" in h]


ORCH = str(REPO / ".venv" / "bin" / "orchestrator")


def _trained_project(made, tmp_path: Path, monkeypatch) -> Path:
    """A copy of the session's trained tiny pair (conftest's made_eval), as the working directory."""
    assert made.done.returncode == 0, made.done.stderr[-3000:]
    root = trained_copy(made.project, tmp_path / "project", without=("runs/tiny-eval",))
    monkeypatch.chdir(root)
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(root))
    return root


@pytest.mark.slow
def test_the_adapter_reference_and_the_trap(tmp_path: Path, made_eval, monkeypatch) -> None:
    """The adapter path (a quantized base's): the SFT adapter goes on training with ref_model +
    ref_model_adapters naming the SFT model, whose first rewards are 0 (up to rounding); the trap,
    the same training as LLaMA-Factory runs it without ref_model, measures against the base, and
    its first rewards are not. (The merged reference, the shipped recipe's: tests/e2e/test_preference_walk.py.)"""
    root = _trained_project(made_eval, tmp_path, monkeypatch)
    sets = ["--set", "name=tiny-answer-dpo-adapter", "--set", "preference.reference=adapter",
            "--set", "train.max_steps=2", "--set", "train.save_steps=2"]
    with FakeOpenAI(models=("sft",), reply=RightWrong()) as server:
        done = subprocess.run([ORCH, "preference", "--recipe", DPO, "--pipeline", "recipes/tiny-pipeline.yaml",
                               "--answer-url", server.url, "--pairs-only", *sets], capture_output=True, text=True,
                              timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([ORCH, "train", "answer", "--recipe", DPO, *sets], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    run = root / "runs" / "tiny-answer-dpo-adapter"
    train_yaml = (run / "train.yaml").read_text(encoding="utf-8")
    sft_adapter = root / "runs" / "tiny-answer" / "adapter"
    assert f"ref_model: {(root / 'models' / 'tiny-qwen2').resolve()}" in train_yaml
    assert f"ref_model_adapters: {sft_adapter}" in train_yaml and f"adapter_name_or_path: {sft_adapter}" in train_yaml
    first = _rewards(run / "adapter")[0]  # the reference loaded apart: equal up to rounding (6e-6 seen)
    assert abs(first["rewards/chosen"]) < 1e-3 and abs(first["rewards/margins"]) < 1e-3

    # the trap, as LLaMA-Factory runs it: the same training without ref_model measures against the base
    trap = tmp_path / "trap.yaml"
    trap.write_text("".join(line for line in train_yaml.splitlines(keepends=True) if not line.startswith("ref_model"))
                    .replace(str(run / "adapter"), str(tmp_path / "trap")).replace("max_steps: 2", "max_steps: 1"),
                    encoding="utf-8")
    cli_path = shutil.which("llamafactory-cli", path=str(REPO / ".venv" / "bin"))
    assert cli_path
    done = subprocess.run([cli_path, "train", str(trap)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "DISABLE_VERSION_CHECK": "1"}, cwd=run)
    assert done.returncode == 0, done.stderr[-3000:]
    first = _rewards(tmp_path / "trap")[0]  # 152.7 and -154.4 seen: the SFT model measured against the base
    assert abs(first["rewards/chosen"]) > 1 and abs(first["rewards/margins"]) > 1
