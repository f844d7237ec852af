"""Stage: build a role's alpaca training set from the competition data and the teacher cache.

Answer: instruction = Answer prompt, output = the teacher's text (only replies that reach the
gold letter when `teacher.keep` is `agreeing`). Evaluate: instruction = Evaluate prompt with
the teacher's text as its reasoning, output = `答案是：X` with the gold X; it takes every
reply, since a wrong reasoning paired with the gold letter teaches the correction.
The replies are those of the last `distill` run, whatever settings it was given.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.data import Question
from orchestrator.errors import UserError
from orchestrator.files import atomic_write_json
from orchestrator.fixes import fixes_path, read_training
from orchestrator.ledger import Ledger
from orchestrator.llamafactory import render_dataset_info
from orchestrator.paths import dataset_source, datasets_dir, project_root
from orchestrator.prompts import answer_prompt, evaluate_prompt, evaluate_target
from orchestrator.recipes import Loaded, PipelineRecipe, RoleRecipe
from orchestrator.teacher_cache import cache_path, cached_reply, last_teacher


@dataclass
class DatasetSummary:
    role: str
    train_path: Path
    train: int = 0
    val: int = 0
    val_path: Path | None = None
    missing: int = 0  # no teacher reply cached
    dropped: int = 0  # reply never reached the gold letter (keep: agreeing)
    subsampled: tuple[int, int] | None = None  # (problems kept, problems) under dataset.subsample
    letters: Counter = field(default_factory=Counter)
    prompt_tokens: dict[str, int] | None = None

    def lines(self) -> list[str]:
        out = [f"{self.train_path}: {self.train} samples"]
        if self.val_path:
            out.append(f"{self.val_path}: {self.val} samples (held out by problem)")
        out.append(f"skipped: {self.missing} without a teacher reply, {self.dropped} whose reply missed the gold letter")
        if self.subsampled:
            out.append(f"subsample: {self.subsampled[0]} of {self.subsampled[1]} problems (dataset.subsample, dataset.seed)")
        total = sum(self.letters.values()) or 1
        out.append("gold letters: " + ", ".join(f"{k} {v} ({v / total:.0%})" for k, v in sorted(self.letters.items())))
        if self.prompt_tokens:
            t = self.prompt_tokens
            out.append(f"prompt tokens: min {t['min']}, mean {t['mean']}, max {t['max']}")
        return out


def split_by_problem(questions: list[Question], val_size: float, seed: int) -> tuple[list[Question], list[Question]]:
    """Hold out whole problems: the questions of one problem never straddle the split."""
    if val_size <= 0:
        return questions, []
    problem_ids = sorted({q.problem_id for q in questions})
    random.Random(seed).shuffle(problem_ids)
    n_val = min(len(problem_ids) - 1, max(1, round(val_size * len(problem_ids))))
    held = set(problem_ids[:n_val])
    return [q for q in questions if q.problem_id not in held], [q for q in questions if q.problem_id in held]


def subsample_problems(questions: list[Question], fraction: float, seed: int) -> list[Question]:
    """The questions of a `fraction` of the problems, chosen by `seed` (whole problems, input order)."""
    if fraction >= 1:
        return questions
    problem_ids = sorted({q.problem_id for q in questions})
    random.Random(f"subsample:{seed}").shuffle(problem_ids)
    kept = set(problem_ids[: max(1, round(fraction * len(problem_ids)))])
    return [q for q in questions if q.problem_id in kept]


def _token_stats(rows: list[dict], tokenizer_path: str) -> dict[str, int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    lengths = [len(tokenizer(r["instruction"])["input_ids"]) for r in rows] or [0]
    return {"min": min(lengths), "mean": round(sum(lengths) / len(lengths)), "max": max(lengths)}


def build_dataset(
    *,
    role: Loaded[RoleRecipe],
    pipeline: Loaded[PipelineRecipe],
    input_path: str | Path | None = None,
    tokenizer: str | None = None,
) -> DatasetSummary:
    role_recipe, pipe = role.recipe, pipeline.recipe
    if role_recipe.dataset.subsample < 1 and role_recipe.dataset_name == f"train_{role_recipe.role}_instruct":
        raise UserError(
            f"{role.where('dataset.subsample')}: dataset.subsample {role_recipe.dataset.subsample} needs a "
            f"dataset.name of its own (e.g. train_{role_recipe.run_name.replace('-', '_')}), so this "
            f"variant's subset does not overwrite {role_recipe.dataset_name}"
        )
    teacher = last_teacher(pipe.teacher)
    source = input_path or project_root() / pipe.data.train
    training, fixed = read_training(source, fixes_path(pipe.data), "dataset")
    questions = [q for q in training.questions if q.answer is not None]
    if not questions:
        raise UserError(f"{source}: no question has an answer; the training file needs gold letters")

    summary = DatasetSummary(role_recipe.role, datasets_dir() / f"{role_recipe.dataset_name}.json")
    rows: dict[str, dict] = {}
    with Ledger(cache_path()) as cache:
        for q in questions:
            record = cached_reply(cache, q, teacher)
            if record is None or not record.get("text"):
                summary.missing += 1
                continue
            if role_recipe.role == "answer":
                if teacher.keep == "agreeing" and not record.get("agrees"):
                    summary.dropped += 1
                    continue
                rows[q.qid] = {"instruction": answer_prompt(q), "input": "", "output": record["text"]}
            else:
                rows[q.qid] = {
                    "instruction": evaluate_prompt(q, record["text"]),
                    "input": "",
                    "output": evaluate_target(q.answer),
                }
            summary.letters[q.answer] += 1
    if not rows:
        raise UserError(
            f"no teacher reply is cached for {source} under the current teacher settings: "
            "run `orchestrator distill` first"
        )
    answered = [q for q in questions if q.qid in rows]
    chosen = subsample_problems(answered, role_recipe.dataset.subsample, role_recipe.dataset.seed)
    if role_recipe.dataset.subsample < 1:
        summary.subsampled = (len({q.problem_id for q in chosen}), len({q.problem_id for q in answered}))
        summary.letters = Counter(q.answer for q in chosen)
    train_qs, val_qs = split_by_problem(chosen, role_recipe.dataset.val_size, role_recipe.dataset.seed)
    train_rows = [rows[q.qid] for q in train_qs]
    atomic_write_json(summary.train_path, train_rows)
    summary.train = len(train_rows)
    if val_qs:
        summary.val_path = datasets_dir() / f"{role_recipe.eval_dataset_name}.json"
        atomic_write_json(summary.val_path, [rows[q.qid] for q in val_qs])
        summary.val = len(val_qs)
    # what the set was made from, copied into the manifest of the model trained on it
    atomic_write_json(dataset_source(role_recipe.dataset_name), {
        "train": str(source), "fixes": fixed.record() if fixed else None,
        "samples": summary.train, "val_samples": summary.val,
    })
    render_dataset_info([role_recipe])
    if tokenizer:
        summary.prompt_tokens = _token_stats(train_rows, tokenizer)
    return summary
