"""A submission read as the competition reads it, and matched against the test (or gold) file.

A submission is the test file with an `answer` in every question (extra keys tolerated), or
the minimal `{"id", "questions": [{"answer"}]}`. Reading never refuses a file for its answers:
a letter not offered, null, a missing or extra question or problem, another order, are
*findings* that scoring counts wrong (or leaves uncounted) and `data check --against` lists.
Only a file that is not the competition format at all (a line that is not a JSON object with
an id and a questions list) is an error.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.data.competition import Dataset, Problem, _Bad, _short, jsonl_lines, parse_problem, read_dataset

MAX_LISTED = 10  # bad lines named before the rest are counted

# Findings that do not stop an upload: the answers still line up with the test file.
WARNINGS = ("problem_text", "question_text", "extra_keys", "no_final_newline")
KIND_TEXT = {
    "not_offered": "answers not offered by the question (counted wrong)",
    "no_answer": "questions without an answer (counted wrong)",
    "missing_question": "questions missing (counted wrong)",
    "missing_problem": "problems missing (their questions counted wrong)",
    "extra_question": "questions not in the test file (not counted)",
    "extra_problem": "problems not in the test file (not counted)",
    "repeated_problem": "problems listed twice (the first counted)",
    "order": "lines in another order than the test file",
    "problem_text": "problem texts that differ from the test file",
    "question_text": "question texts that differ from the test file",
    "extra_keys": "extra keys on the questions (ignored)",
    "no_final_newline": "no newline at the end of the file",
    "unreadable": "lines that are not a problem with its questions and options (left out)",
    "gold_not_offered": "gold answers that are not an offered letter (counted, never right)",
}
ONCE_PER_FILE = ("extra_keys", "no_final_newline")  # one finding per file: summed up without a count
LISTED_IDS = 5  # missing problems named on the terminal; the report lists them all


@dataclass
class Entry:
    """One submitted line: its id, its line number and the raw question objects."""

    id: str
    line: int
    questions: list[Any]
    problem: Any = None


@dataclass
class Submission:
    path: Path
    entries: list[Entry]
    final_newline: bool = True


@dataclass(frozen=True)
class Finding:
    kind: str
    text: str  # "FILE:LINE: ..." as shown to people
    item: str = ""  # the problem id, where the finding is about one

    @property
    def is_warning(self) -> bool:
        return self.kind in WARNINGS


@dataclass
class Match:
    """The submitted letter of every reference question (None: no usable answer) and the findings."""

    answers: dict[str, str | None]
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.is_warning]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.is_warning]


def summarise(findings: list[Finding], wrong: str = "counted wrong") -> list[str]:
    """One line per kind of finding: the count and what it means (`wrong`: what an unusable
    answer counts as)."""
    counts = Counter(f.kind for f in findings)
    return [KIND_TEXT[kind] if kind in ONCE_PER_FILE else f"{n} {KIND_TEXT[kind].replace('counted wrong', wrong)}"
            for kind, n in counts.items()]


def read_gold(path: str | Path) -> Dataset:
    """A gold file: every line readable and every question with its letter. A letter its
    question does not offer (a slip in hand-made labels) is kept: no answer can match it, so
    the question counts and is never right; `gold_findings` lists each."""
    gold = read_dataset(path, keep_unoffered=True)
    missing = [q.qid for q in gold.questions if q.answer is None]
    if missing:
        few = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise UserError(f"{gold.path}: {len(missing)} questions have no answer ({few}); a gold file needs all")
    return gold


def gold_findings(gold: Dataset) -> list[Finding]:
    """One finding per gold answer that is not an offered letter (file, line, question)."""
    return [Finding("gold_not_offered", f"{text}: counted, never right") for text in gold.unoffered]


def terminal_lines(findings: list[Finding], full_list: str) -> list[str]:
    """The findings as said on the terminal: each one, but missing problems (an unfinished or
    cut run leaves hundreds) as one line with the first few ids; `full_list` says where all are."""
    missing = [f for f in findings if f.kind == "missing_problem"]
    lines = [f"{'warning' if f.is_warning else 'scored'}: {f.text}" for f in findings if f.kind != "missing_problem"]
    if missing:
        few = ", ".join(f.item for f in missing[:LISTED_IDS]) + (", ..." if len(missing) > LISTED_IDS else "")
        lines.append(f"scored: {len(missing)} problems are missing from the submission ({few}); {full_list}")
    return lines


def own_reference(submission: Submission) -> Dataset:
    """The questions a submission holds, read from its own lines with the answers set aside:
    what to match it against when there is no test or gold file. A line without the problem,
    question texts and options cannot say which letters are offered: it is listed in `errors`
    and left out (as is a repeated id: the first counts)."""
    problems: list[Problem] = []
    errors: list[str] = []
    seen: set[str] = set()
    for e in submission.entries:
        if e.id in seen:
            continue
        seen.add(e.id)
        bare = [{k: v for k, v in q.items() if k != "answer"} if isinstance(q, dict) else q for q in e.questions]
        try:
            problems.append(parse_problem({"id": e.id, "problem": e.problem, "questions": bare}, e.line))
        except _Bad as why:
            errors.append(f"{submission.path}:{e.line}: {e.id}: {why}; left out")
    return Dataset(submission.path, problems, errors)


def read_submission(path: str | Path) -> Submission:
    """The lines of a submission; a line that is not a JSON object with an id and a list of
    questions makes the file unreadable (every such line listed)."""
    path = Path(path)
    entries: list[Entry] = []
    errors: list[str] = []
    lines = jsonl_lines(path)
    for lineno, raw in lines:
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            errors.append(f"{path}:{lineno}: not valid UTF-8; save the file as UTF-8")
            continue
        if not text:
            continue
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as e:
            errors.append(f"{path}:{lineno}: not valid JSON ({getattr(e, 'msg', e)})")
            continue
        pid = obj.get("id") if isinstance(obj, dict) else None
        if not isinstance(pid, (str, int)) or isinstance(pid, bool) or not str(pid).strip():
            errors.append(f"{path}:{lineno}: not a submission line (a JSON object with an id)")
        elif not isinstance(obj.get("questions"), list):
            errors.append(f"{path}:{lineno}: {pid}: questions must be a list")
        else:
            entries.append(Entry(str(pid).strip(), lineno, obj["questions"], obj.get("problem")))
    if errors:
        shown = errors[:MAX_LISTED] + ([f"... and {len(errors) - MAX_LISTED} more such lines"] if len(errors) > MAX_LISTED else [])
        raise UserError(*shown, f"{path} is not in the competition format (one JSON object per line with id and questions)")
    if not entries:
        raise UserError(f"{path}: no lines (the file is empty)")
    return Submission(path, entries, final_newline=lines[-1][1] == b"")  # the text after the last \n


def _letter(raw: Any) -> str | None:
    return raw.strip().upper() if isinstance(raw, str) and raw.strip() else None


def match(submission: Submission, reference: Dataset) -> Match:
    """Line `submission` up with `reference` question by question (`id#i`)."""
    sub, ref = submission.path, reference.path
    result = Match({q.qid: None for q in reference.questions})
    add = result.findings.append
    known = {p.id: p for p in reference.problems}
    by_id: dict[str, Entry] = {}
    extra_keys: Counter = Counter()
    for e in submission.entries:
        if e.id in by_id:
            add(Finding("repeated_problem", f"{sub}:{e.line}: {e.id} repeats line {by_id[e.id].line}; ignored"))
        elif e.id not in known:
            add(Finding("extra_problem", f"{sub}:{e.line}: {e.id} is not in {ref}; not counted"))
        else:
            by_id[e.id] = e

    present = [e.id for e in submission.entries if by_id.get(e.id) is e]
    expected = [p.id for p in reference.problems if p.id in by_id]
    if present != expected:
        k = next(i for i, (a, b) in enumerate(zip(present, expected)) if a != b)
        add(Finding("order", f"{sub}:{by_id[present[k]].line}: {present[k]} stands where {ref} has "
                             f"{expected[k]}: the lines are in another order than the test file"))

    for p in reference.problems:
        entry = by_id.get(p.id)
        if entry is None:
            n = len(p.questions)
            add(Finding("missing_problem", f"{ref}:{p.line}: {p.id} ({n} question{'' if n == 1 else 's'}) "
                                           "is missing from the submission", p.id))
            continue
        e = entry
        where = f"{sub}:{e.line}"
        if isinstance(e.problem, str) and e.problem.strip() != p.problem:
            add(Finding("problem_text", f"{where}: {p.id}: problem text differs from {ref}:{p.line}"))
        for i in range(len(p.questions), len(e.questions)):
            add(Finding("extra_question", f"{where}: questions[{i}]: {p.id} has {len(p.questions)} questions "
                                          f"in {ref}; not counted"))
        for q in p.questions:
            if q.index >= len(e.questions):
                add(Finding("missing_question", f"{where}: questions[{q.index}]: missing "
                                                f"({p.id} has {len(p.questions)} questions in {ref})"))
                continue
            rq = e.questions[q.index]
            if not isinstance(rq, dict):
                add(Finding("no_answer", f"{where}: questions[{q.index}]: not an object, so no answer"))
                continue
            extra_keys.update(k for k in rq if k not in ("question", "options", "answer"))
            text = rq.get("question")
            if isinstance(text, str) and text.strip() != q.question:
                add(Finding("question_text", f"{where}: questions[{q.index}]: question text differs from "
                                             f"{ref}:{p.line}"))
            raw = rq.get("answer")
            letter = _letter(raw)
            if letter is None:
                add(Finding("no_answer", f"{where}: questions[{q.index}]: no answer "
                                         f"({'no answer key' if 'answer' not in rq else json.dumps(raw, ensure_ascii=False)[:40]})"))
            elif letter not in tuple(q.letters):  # one letter, not "AB"
                add(Finding("not_offered", f"{where}: questions[{q.index}]: answer {_short(letter)} is not one "
                                           f"of the offered letters {q.letters}"))
            else:
                result.answers[q.qid] = letter
    if extra_keys:
        keys = ", ".join(sorted(extra_keys))
        add(Finding("extra_keys", f"{sub}: questions carry keys the competition ignores: {keys}"))
    if not submission.final_newline:
        add(Finding("no_final_newline", f"{sub}: no newline after the last line (read anyway)"))
    return result


def check_submission(path: str | Path, test: str | Path) -> Match:
    """A submission matched against the test file it answers (read with the same repairs)."""
    return match(read_submission(path), read_dataset(test))
