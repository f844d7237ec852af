"""Stage: pseudo-labels from an `infer` run.

A question whose Answer samples (every vote of every Answer model) agree on one letter at least
`min_agree` times is written in competition format with that letter; the others are left out.
Beside the output, FILE.provenance.jsonl says for each question which models voted what, so a
pseudo-label is never taken for gold. Name the output in the pipeline recipe's
`data.extra_train` to train on it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_jsonl
from orchestrator.core.data.competition import read_dataset
from orchestrator.core.data.sources import provenance_path
from orchestrator.core.run_folders.trace import read_trace


@dataclass
class PseudoSummary:
    out: Path
    provenance: Path
    questions: int = 0
    written: int = 0
    problems: int = 0
    below: int = 0  # the top letter had fewer than min_agree votes
    tied: int = 0  # two letters shared the top count
    untraced: int = 0  # no trace record (the run did not finish that question)
    letters: Counter = field(default_factory=Counter)

    def table(self) -> str:
        rows = [
            ("questions in the run", self.questions),
            ("written (reached the agreement)", f"{self.written}, in {self.problems} problems"),
            ("below the agreement", self.below),
            ("tied between letters", self.tied),
            ("not traced", self.untraced),
            ("letters", ", ".join(f"{k} {v}" for k, v in sorted(self.letters.items())) or "none"),
            ("pseudo-labels", self.out),
            ("provenance", self.provenance),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def agreement(votes: dict[str, list[str | None]]) -> tuple[str | None, int, bool]:
    """(top letter, its count, whether another letter has the same count) over all samples."""
    counts = Counter(letter for letters in votes.values() for letter in letters if letter)
    if not counts:
        return None, 0, False
    (top, n), *rest = counts.most_common()
    return top, n, bool(rest) and rest[0][1] == n


def pseudo_label(run_dir: str | Path, *, min_agree: int, out: str | Path) -> PseudoSummary:
    run, out = Path(run_dir), Path(out)
    trace_path, submission = run / "trace.jsonl", run / "submission.jsonl"
    for path in (trace_path, submission):
        if not path.is_file():
            raise UserError(f"{run} has no {path.name}: give the --out-dir of a finished `orchestrator infer` run")
    if min_agree < 1:
        raise UserError(f"--min-agree {min_agree}: at least 1 vote must agree")
    if out.resolve() in (submission.resolve(), trace_path.resolve()):
        raise UserError(f"--out {out} would overwrite the run's own {out.name}; choose another file")
    traces = read_trace(trace_path)
    dataset = read_dataset(submission)
    most = max((len(traces[q.qid].answer.samples)
                for q in dataset.questions if q.qid in traces), default=0)
    if min_agree > most:
        raise UserError(f"--min-agree {min_agree}: the run has at most {most} Answer samples per question "
                        "(votes x models); choose a smaller number")

    summary = PseudoSummary(out, provenance_path(out), questions=len(dataset.questions))
    rows, provenance = [], []
    for problem in dataset.problems:
        kept: list[dict[str, Any]] = []
        for q, raw in zip(problem.questions, problem.raw["questions"], strict=True):
            record = traces.get(q.qid)
            if record is None:
                summary.untraced += 1
                continue
            votes = record.answer.letters_by_model()
            letter, count, tie = agreement(votes)
            if letter is None or count < min_agree:
                summary.below += 1
                continue
            if tie:
                summary.tied += 1
                continue
            new_id = f"{problem.id}#{len(kept)}"  # questions left out shift the index
            kept.append({**raw, "options": list(q.options), "answer": letter})
            provenance.append({
                "id": new_id, "source_id": q.qid, "letter": letter, "count": count,
                "samples": sum(len(v) for v in votes.values()), "models": list(votes),
                "letters": votes, "final": record.final, "run": str(run), "min_agree": min_agree,
            })
            summary.letters[letter] += 1
        if kept:
            rows.append({**problem.raw, "id": problem.id, "questions": kept})
    summary.written, summary.problems = len(provenance), len(rows)
    if not rows:
        raise UserError(f"no question of {run} reached {min_agree} agreeing votes "
                        f"({summary.below} below, {summary.tied} tied); nothing written")
    atomic_write_jsonl(out, rows)
    atomic_write_jsonl(summary.provenance, provenance)
    return summary
