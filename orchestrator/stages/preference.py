"""Stage: a preference set from the SFT Answer model's own replies, and the chain that trains on it.

`preference.samples` replies to each training question (never a held-out one) at
`preference.temperature`, from the SFT recipe's model (`preference.sft_recipe`, served for the
block) or an endpoint, cached in runs/<name>/answer_samples.jsonl like the Evaluate set's
(core/serving/answer_replies.py): a re-run asks nothing twice. A pair is a reply whose letter is
the gold one (chosen) and one whose letter is another or none (rejected), to the same prompt;
where no reply is right, `preference.chosen: teacher` takes the teacher's verified solution
(a cached reply that reached the gold letter) as chosen. Written as
datasets/<dataset.name>.json in LLaMA-Factory's alpaca ranking format (instruction, input,
chosen, rejected), registered with `ranking: true`; each pair's provenance (the model, the
sample, the letters) in datasets/<name>.sources.json, which `train` copies into the manifest.

The chain (`preference_chain`): SFT set -> SFT train -> SFT merge -> samples -> pairs -> DPO
train -> DPO merge, each step skipped when up to date by content (train and merge decide that
themselves; the SFT set is rebuilt from the cached teacher replies, which asks nothing). A planner
runs the steps itself: `build_pairs` is the pairs step, cheap to run again (it serves the SFT model
only for replies its cache lacks, keyed by the model's identity, the prompt and the sampling).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_json
from orchestrator.core.common.ledger import Ledger
from orchestrator.core.common.paths import datasets_dir, display
from orchestrator.core.common.progress import say
from orchestrator.core.data.competition import Question
from orchestrator.core.data.fewshot import examples_for
from orchestrator.core.data.heldout import split_by_problem
from orchestrator.core.data.sources import TrainingSource, sources_path, training_sources
from orchestrator.core.data.teacher_cache import cache_path, cached_reply, last_teacher
from orchestrator.core.llamafactory.configs import render_dataset_info
from orchestrator.core.llamafactory.reference import reference_problems
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import PipelineRecipe, RoleRecipe
from orchestrator.core.run_folders.role_paths import role_paths, sft_of
from orchestrator.core.serving.answer_replies import AnswerReplies, answer_model_replies
from orchestrator.stages.dataset import build_dataset
from orchestrator.stages.merge import merge
from orchestrator.stages.train import train

STAGE = "preference"


@dataclass
class PreferenceSummary:
    path: Path
    questions: int = 0  # training questions sampled (held-out ones never are)
    held_out: int = 0
    pairs: int = 0
    teacher_chosen: int = 0  # pairs whose chosen is the teacher's solution (preference.chosen: teacher)
    # questions without a pair, by why: every reply right, every reply wrong, no reply with text
    without_pair: Counter = field(default_factory=Counter)
    replies: AnswerReplies | None = None

    def lines(self) -> list[str]:
        out = [f"{self.path}: {self.pairs} pairs from {self.questions} training questions "
               f"({self.held_out} held-out questions never asked)"]
        if self.replies:
            out.append(self.replies.line())
        if self.teacher_chosen:
            out.append(f"chosen from the teacher's verified solution (preference.chosen: teacher): {self.teacher_chosen}")
        missing = sum(self.without_pair.values())
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.without_pair.items()))
        out.append(f"questions without a pair: {missing}" + (f" ({why})" if why else ""))
        return out


def _split(role: RoleRecipe, pipe: PipelineRecipe) -> tuple[list[TrainingSource], list[Question], dict[str, Any]]:
    """The training files, the held-out questions (as the dataset stage holds them out, from
    the gold file alone) and the split's record."""
    sources = training_sources(pipe.data, None, STAGE)
    if not any(q.answer is not None for s in sources for q in s.questions):
        raise UserError(f"{sources[0].file}: no question has an answer; the training file needs gold letters")
    gold = [q for q in sources[0].questions if q.answer is not None]
    held = split_by_problem(gold, role.dataset.val_size, role.dataset.seed)[1]
    record = {"val_size": role.dataset.val_size, "seed": role.dataset.seed,
              "val_problems": list(dict.fromkeys(q.problem_id for q in held))}
    return sources, held, record


def _provenance(r: dict[str, Any]) -> dict[str, Any]:
    return {"from": "model", "model": r["model"], "sample": r["sample"], "letter": r["letter"]}


def pairs_of(q: Question, replies: list[dict[str, Any]], n: int,
             teacher: dict[str, Any] | None = None) -> tuple[list[tuple[dict, dict]], str | None]:
    """Up to `n` (chosen, rejected) replies to `q`: each right reply (the gold letter) with
    another wrong one (another letter, or none); where none is right, `teacher` (a reply that
    reached the gold letter) is the chosen one. The reason when there is no pair."""
    with_text = [r for r in replies if r.get("text")]
    right = [r for r in with_text if r["letter"] == q.answer]
    wrong = [r for r in with_text if r["letter"] != q.answer]
    if not with_text:
        return [], "without a reply"
    if not wrong:
        return [], "every reply right"
    if not right:
        if teacher is None:
            return [], "every reply wrong"
        right = [teacher]
    chosen = right * n if right[0] is teacher else right  # the one solution, against each wrong reply
    return list(zip(chosen, wrong))[:n], None


def build_pairs(role: Loaded[RoleRecipe], pipeline: Loaded[PipelineRecipe], *, answer_url: str | None = None,
                answer_model: str | None = None) -> PreferenceSummary:
    """Sample the SFT model (or the endpoint at `answer_url`) on the training questions and
    write the preference set; a UserError when it would hold no pair."""
    recipe, pipe = role.recipe, pipeline.recipe
    sft = sft_of(recipe)
    if sft is None:
        raise UserError(f"{display(role.path)}: not a preference recipe; it needs train.stage: dpo and "
                        "preference.sft_recipe (see recipes/tiny-answer-dpo.yaml)")
    if problems := reference_problems(role):  # before a reply is asked: what `check` would refuse
        raise UserError(*problems)
    pref = recipe.preference
    pipeline.data_file("data.train")
    say(STAGE, pipeline.data_line("data.train"))
    sources, held, split = _split(recipe, pipe)
    held_ids = {q.qid for q in held}
    train_qs = [q for s in sources for q in s.questions if q.answer is not None and q.qid not in held_ids]
    summary = PreferenceSummary(datasets_dir() / f"{recipe.dataset_name}.json", questions=len(train_qs),
                                held_out=len(held))
    replies = answer_model_replies(
        train_qs, pipe=pipe, samples=pref.samples, ledger_path=role_paths(recipe).run_dir / "answer_samples.jsonl",
        answer_url=answer_url, answer_model=answer_model, answer_recipe=sft, temperature=pref.temperature,
        max_tokens=pref.max_tokens, stage=STAGE)
    summary.replies = replies
    teacher_solutions = _teacher_solutions(train_qs, pipe, sft.recipe) if pref.chosen == "teacher" else {}
    rows, provenance, per_file = [], [], Counter[str]()
    origin = {q.qid: s.file for s in sources for q in s.questions}
    for q in train_qs:
        found, reason = pairs_of(q, replies.replies.get(q.qid, []), pref.pairs_per_question,
                                 teacher_solutions.get(q.qid))
        if reason:
            summary.without_pair[reason] += 1
        for chosen, rejected in found:
            rows.append({"instruction": replies.prompts[q.qid], "input": "", "chosen": chosen["text"],
                         "rejected": rejected["text"]})
            by_teacher = chosen is teacher_solutions.get(q.qid)
            summary.teacher_chosen += by_teacher
            per_file[origin[q.qid]] += 1
            provenance.append({"id": q.qid, "gold": q.answer,
                               "chosen": {"from": "teacher", "model": chosen["model"], "letter": q.answer}
                               if by_teacher else _provenance(chosen),
                               "rejected": _provenance(rejected)})
    summary.pairs = len(rows)
    if not rows:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(summary.without_pair.items()))
        hint = "" if pref.chosen == "teacher" else ", or preference.chosen: teacher (the teacher's solution as chosen)"
        raise UserError(f"{display(role.path)}: no preference pair: none of the {len(train_qs)} training questions got "
                        f"both a right and a wrong reply among {pref.samples} samples of {replies.model} ({why}); "
                        f"raise preference.samples or preference.temperature{hint}")
    atomic_write_json(summary.path, rows)
    atomic_write_json(sources_path(recipe.dataset_name), {
        "dataset": recipe.dataset_name,
        "kind": "preference",
        "preference": {"sft_recipe": pref.sft_recipe, "model": replies.model, "samples": pref.samples,
                       "temperature": pref.temperature, "chosen": pref.chosen, "reference": pref.reference},
        "sources": [{**s.describe(), "samples": per_file[s.file], "held_out": 0} for s in sources],
        "split": split,
        "without_pair": dict(summary.without_pair),
        "pairs": provenance,
    })
    render_dataset_info([recipe])
    return summary


def _teacher_solutions(questions: list[Question], pipe: PipelineRecipe, sft: RoleRecipe) -> dict[str, dict[str, Any]]:
    """qid -> the teacher's cached reply that reached the gold letter (the last distillation's
    settings, the SFT model's prompt), where there is one."""
    if not cache_path().is_file():
        return {}
    teacher = last_teacher(pipe.teacher)
    shots = examples_for(questions, pipe, sft, teacher)
    out = {}
    with Ledger(cache_path()) as cache:
        for q in questions:
            record = cached_reply(cache, q, teacher, shots.get(q))
            if record and record.get("text") and record.get("agrees"):
                out[q.qid] = {**record, "model": teacher.model}
    return out


@dataclass
class Chain:
    steps: list[str] = field(default_factory=list)  # one line a step: what it did or why it skipped
    pairs: PreferenceSummary | None = None
    model: Path | None = None  # the preference-tuned model: merged, or its adapter

    def lines(self) -> list[str]:
        return self.steps


def preference_chain(role: Loaded[RoleRecipe], pipeline: Loaded[PipelineRecipe], *, answer_url: str | None = None,
                     answer_model: str | None = None, pairs_only: bool = False) -> Chain:
    """SFT set -> SFT train -> SFT merge -> samples -> pairs (-> DPO train -> DPO merge unless
    `pairs_only`), each step skipped when up to date by content."""
    sft = sft_of(role.recipe)
    if sft is None:
        raise UserError(f"{display(role.path)}: not a preference recipe; it needs train.stage: dpo and "
                        "preference.sft_recipe (see recipes/tiny-answer-dpo.yaml)")
    out = Chain()
    if not (pairs_only and answer_url):  # an endpoint that answers for it: the SFT model is not needed for pairs
        built = build_dataset(role=sft, pipeline=pipeline)
        out.steps.append(f"SFT set {built.train_path}: {built.train} samples")
        trained = train(sft)  # the SFT adapter: sampled (unless an endpoint answers) and trained on
        out.steps.append(f"SFT model {trained.paths.adapter}: " + ("up to date" if trained.up_to_date else "trained"))
        out.steps.append(f"SFT model: {merge(sft)}")  # its adapter where it serves its adapter
    out.pairs = build_pairs(role, pipeline, answer_url=answer_url, answer_model=answer_model)
    out.steps += out.pairs.lines()
    if pairs_only:
        return out
    tuned = train(role)
    out.steps.append(f"{role.recipe.train.get('stage')} model {tuned.paths.adapter}: "
                     + ("up to date" if tuned.up_to_date else "trained"))
    for when, logged in (tuned.rewards or {}).items():  # at step 1 the policy is the reference: 0 when it is the SFT model
        out.steps.append(f"  {when} logged step {logged.get('step')}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in logged.items() if k.startswith("rewards/")))
    out.model = merge(role)
    out.steps.append(f"model: {out.model}")
    return out
