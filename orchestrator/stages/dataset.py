"""Stage: build a role's alpaca training set from the competition data and the teacher cache.

Answer: instruction = Answer prompt, output = the teacher's text (only replies that reach the
gold letter when `teacher.keep` is `agreeing`). Evaluate: instruction = Evaluate prompt with
the teacher's text as its reasoning, output = `答案是：X` with the gold X; it takes every
reply, since a wrong reasoning paired with the gold letter teaches the correction.
The replies are those of the last `distill` run, whatever settings it was given.
With `dataset.evaluate_source: answer_model` the Evaluate set reads the trained Answer model's
own replies instead (orchestrator/core/serving/answer_replies.py). Questions come from data.train and each
of data.extra_train, counted per file in the summary and in datasets/<name>.sources.json.

With `dataset.val_size > 0` whole problems of the gold training file are held out, chosen from
that file alone (not from which replies exist), so both roles hold out the same problems for
the same seed; they are also written with their answers as datasets/val.jsonl for
`orchestrator eval`, and the split (seed, problem ids) goes into the sources record, which
`train` copies into the model's manifest.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_json, atomic_write_jsonl, file_hash
from orchestrator.core.common.ledger import Ledger
from orchestrator.core.common.paths import datasets_dir, val_path
from orchestrator.core.common.progress import say
from orchestrator.core.data.competition import Question
from orchestrator.core.data.fewshot import examples_for
from orchestrator.core.data.heldout import split_by_problem
from orchestrator.core.data.mixed_datasets import mixed_entries
from orchestrator.core.data.prompts import answer_prompt, evaluate_prompt, evaluate_target
from orchestrator.core.data.sources import sources_path, training_sources
from orchestrator.core.data.teacher_cache import cache_path, cached_reply, last_teacher
from orchestrator.core.llamafactory.configs import render_dataset_info
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import PipelineRecipe, RoleRecipe
from orchestrator.core.run_folders.role_paths import role_paths
from orchestrator.core.serving.answer_replies import AnswerReplies, answer_model_replies


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
    sources: list[dict] = field(default_factory=list)  # per file: kind, questions, samples
    answer_model: AnswerReplies | None = None  # evaluate_source: answer_model

    def lines(self) -> list[str]:
        out = [f"{self.train_path}: {self.train} samples"]
        if self.val_path:
            out.append(f"{self.val_path}: {self.val} samples (held out by problem)")
        for s in self.sources if len(self.sources) > 1 else []:
            out.append(f"  from {s['file']} ({s['kind']}): {s['samples']} samples of {s['questions']} questions")
        if self.answer_model:
            out += [self.answer_model.line(), f"skipped: {self.missing} without an Answer-model reply"]
        else:
            out.append(f"skipped: {self.missing} without a teacher reply, {self.dropped} whose reply missed the gold letter")
        if self.subsampled:
            out.append(f"subsample: {self.subsampled[0]} of {self.subsampled[1]} problems (dataset.subsample, dataset.seed)")
        total = sum(self.letters.values()) or 1
        label = "gold letters" if all(s["kind"] == "gold" for s in self.sources) else "target letters (gold and extra_train)"
        out.append(f"{label}: " + ", ".join(f"{k} {v} ({v / total:.0%})" for k, v in sorted(self.letters.items())))
        if self.prompt_tokens:
            t = self.prompt_tokens
            out.append(f"prompt tokens: min {t['min']}, mean {t['mean']}, max {t['max']}")
        return out


def subsample_problems(questions: list[Question], fraction: float, seed: int) -> list[Question]:
    """The questions of a `fraction` of the problems, chosen by `seed` (whole problems, input order)."""
    if fraction >= 1:
        return questions
    problem_ids = sorted({q.problem_id for q in questions})
    random.Random(f"subsample:{seed}").shuffle(problem_ids)
    kept = set(problem_ids[: max(1, round(fraction * len(problem_ids)))])
    return [q for q in questions if q.problem_id in kept]


def _write_val(held: list[Question], variant: str) -> dict[str, str]:
    """datasets/val.jsonl (val.<hash>.jsonl for a variant's set): the held-out problems in
    competition format, with their answers."""
    problems: dict[str, dict] = {}
    for q in held:
        problem = problems.setdefault(q.problem_id, {"id": q.problem_id, "problem": q.problem, "questions": []})
        problem["questions"].append({"question": q.question, "options": list(q.options), "answer": q.answer})
    atomic_write_jsonl(val_path(variant), list(problems.values()))
    return {"val_file": str(val_path(variant)), "val_hash": file_hash(val_path(variant))}


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
    answer_url: str | None = None,
    answer_model: str | None = None,
) -> DatasetSummary:
    role_recipe, pipe = role.recipe, pipeline.recipe
    mixed_entries(role_recipe, role.where)  # a bad dataset.extra file fails before any work
    from_answer_model = role_recipe.role == "evaluate" and role_recipe.dataset.evaluate_source == "answer_model"
    if (answer_url or answer_model) and not from_answer_model:
        raise UserError("--answer-url and --answer-model are for `dataset evaluate` with "
                        "dataset.evaluate_source: answer_model")
    teacher = last_teacher(pipe.teacher)
    if input_path is None:
        pipeline.data_file("data.train")
        say("dataset", pipeline.data_line("data.train"))
    sources = training_sources(pipe.data, input_path, "dataset")
    origin = {q.qid: s for s in sources for q in s.questions}
    questions = [q for s in sources for q in s.questions if q.answer is not None]
    gold_letter = {q.qid: q.answer for q in questions if q.answer is not None}  # typed str, not None
    if not questions:
        raise UserError(f"{sources[0].file}: no question has an answer; the training file needs gold letters")

    summary = DatasetSummary(role_recipe.role, datasets_dir() / f"{role_recipe.dataset_name}.json")
    rows: dict[str, list[dict]] = {}
    shots = examples_for([], pipe, None)
    if from_answer_model:
        replies = answer_model_replies(
            questions, pipe=pipe, samples=role_recipe.dataset.evaluate_samples,
            ledger_path=role_paths(role_recipe).run_dir / "answer_samples.jsonl",
            answer_url=answer_url, answer_model=answer_model,
        )
        summary.answer_model = replies
        for q in questions:
            got = [r for r in replies.replies[q.qid] if r.get("text")]
            if not got:
                summary.missing += 1
                continue
            rows[q.qid] = [{"instruction": evaluate_prompt(q, r["text"]), "input": "",
                            "output": evaluate_target(gold_letter[q.qid])} for r in got]
            summary.letters[q.answer] += 1
    else:
        shots = examples_for(questions, pipe, role_recipe, teacher)
        with Ledger(cache_path()) as cache:
            for q in questions:
                record = cached_reply(cache, q, teacher, shots.get(q))
                if record is None or not record.get("text"):
                    summary.missing += 1
                    continue
                if role_recipe.role == "answer":
                    if teacher.keep == "agreeing" and not record.get("agrees"):
                        summary.dropped += 1
                        continue
                    rows[q.qid] = [{"instruction": answer_prompt(q, examples=shots.get(q)), "input": "",
                                    "output": record["text"]}]
                else:
                    rows[q.qid] = [{
                        "instruction": evaluate_prompt(q, record["text"]),
                        "input": "",
                        "output": evaluate_target(gold_letter[q.qid]),
                    }]
                summary.letters[q.answer] += 1
    if not rows:
        raise UserError(
            f"no teacher reply is cached for {sources[0].file} under the current teacher settings"
            + (f" with fewshot.k={shots.setting.k} examples" if shots.setting.k else "")
            + ": run `orchestrator distill` first"
        )
    # held out from the gold file alone, whatever replies exist: the same problems for both roles
    split = role_recipe.dataset
    gold = [q for q in sources[0].questions if q.answer is not None]
    held = split_by_problem(gold, split.val_size, split.seed)[1]
    held_ids = {q.qid for q in held}
    split_record = {"val_size": split.val_size, "seed": split.seed,
                    "val_problems": list(dict.fromkeys(q.problem_id for q in held)),
                    **(_write_val(held, role_recipe.dataset_variant) if held else {})}
    answered = [q for q in questions if q.qid in rows and q.qid not in held_ids]
    chosen = subsample_problems(answered, role_recipe.dataset.subsample, role_recipe.dataset.seed)
    if role_recipe.dataset.subsample < 1:
        summary.subsampled = (len({q.problem_id for q in chosen}), len({q.problem_id for q in answered}))
        summary.letters = Counter(q.answer for q in chosen)
    train_qs, val_qs = chosen, [q for q in held if q.qid in rows]
    train_rows = [row for q in train_qs for row in rows[q.qid]]
    atomic_write_json(summary.train_path, train_rows)
    summary.train = len(train_rows)
    if val_qs:
        summary.val_path = datasets_dir() / f"{role_recipe.eval_dataset_name}.json"
        val_rows = [row for q in val_qs for row in rows[q.qid]]
        atomic_write_json(summary.val_path, val_rows)
        summary.val = len(val_rows)
    for source in sources:
        summary.sources.append({
            **source.describe(),
            "samples": sum(len(rows[q.qid]) for q in source.questions if q.qid in rows),
            "held_out": sum(len(rows[q.qid]) for q in val_qs if origin[q.qid] is source),
        })
    # what the set was made from, copied into the manifest of the model trained on it
    atomic_write_json(sources_path(role_recipe.dataset_name), {
        "dataset": role_recipe.dataset_name,
        "evaluate_source": role_recipe.dataset.evaluate_source if role_recipe.role == "evaluate" else None,
        "answer_model": summary.answer_model.model if summary.answer_model else None,
        "fixes": sources[0].fixes,
        "sources": summary.sources,
        "split": split_record,
        # the worked examples in each training prompt (fewshot.k > 0): the pool and the ids
        "fewshot": None if not shots.setting.k else {
            **shots.record(), "examples": {q.qid: shots.ids(q) for q in train_qs + val_qs}},
    })
    render_dataset_info([role_recipe])
    if tokenizer:
        summary.prompt_tokens = _token_stats(train_rows, tokenizer)
    return summary
