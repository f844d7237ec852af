"""Label corrections kept as a small file of their own, applied whenever training data is read.

A fixes file is a YAML mapping; each key is a problem id or a question (`id#i`, 0-based, the
form the trace uses), each value a letter or `drop`:

    round1_train_data_048#1: B        # the gold answer of question 1 becomes B
    round1_train_data_177: drop       # the whole problem leaves the training data
    round1_train_data_410#2: drop     # one question leaves it

An entry that names no problem, question or offered letter is an error naming the fixes file
and its line. Dropped questions keep their neighbours' `id#i`, so cached replies stay valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import project_root
from orchestrator.core.common.progress import say
from orchestrator.core.data.competition import LETTERS, Dataset, Problem, read_reporting

_KEY = re.compile(r"(?P<pid>[^#\s]+)(?:#(?P<index>\d+))?")
DROP = "drop"


@dataclass(frozen=True)
class Fix:
    problem_id: str
    index: int | None  # None: the whole problem
    action: str  # a letter, or "drop"
    line: int


@dataclass
class FixSummary:
    path: Path
    corrected: int = 0
    already: int = 0  # the fix names the letter the file already has
    dropped_problems: int = 0
    dropped_questions: int = 0

    def line(self) -> str:
        def n(count: int, word: str) -> str:
            return f"{count} {word}{'' if count == 1 else 's'}"

        text = (f"{self.path}: {n(self.corrected, 'answer')} corrected, {n(self.dropped_problems, 'problem')} "
                f"and {n(self.dropped_questions, 'question')} dropped")
        return text + (f" ({self.already} already had the fixed letter)" if self.already else "")

    def record(self) -> dict[str, Any]:
        """What a manifest keeps: the file, its content hash and the counts."""
        return {"path": str(self.path), "sha256": hashlib.sha256(self.path.read_bytes()).hexdigest(),
                "corrected": self.corrected, "already": self.already,
                "dropped_problems": self.dropped_problems, "dropped_questions": self.dropped_questions}


def load_fixes(path: str | Path) -> list[Fix]:
    """The entries of a fixes file, each with its line; every bad entry reported at once."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"data.fixes: {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise UserError(f"data.fixes: cannot read {path} ({e})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML "
                        f"({getattr(e, 'problem', None) or e})") from None
    if node is None:
        return []
    if not isinstance(node, yaml.MappingNode):
        raise UserError(f"{path}:{node.start_mark.line + 1}: a fixes file is a mapping such as `ID#0: B` or `ID: drop`")
    fixes: list[Fix] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        where = f"{path}:{line}"
        if not isinstance(key_node, yaml.ScalarNode) or not isinstance(value_node, yaml.ScalarNode):
            errors.append(f"{where}: each entry is `ID: drop` or `ID#i: LETTER` on one line")
            continue
        key, value = key_node.value.strip(), value_node.value.strip()
        m = _KEY.fullmatch(key)
        action = value if value == DROP else value.upper()
        if not m:
            errors.append(f"{where}: {key!r} is not a problem id or a question ID#i (0-based)")
        elif action != DROP and not (len(action) == 1 and action in LETTERS):
            errors.append(f"{where}: {key}: {value!r} is neither a letter A-G nor drop")
        elif m["index"] is None and action != DROP:
            errors.append(f"{where}: {key}: a problem can only be dropped; correct a question as {key}#i: {action}")
        elif key in seen:
            errors.append(f"{where}: {key} is already fixed on line {seen[key]}")
        else:
            seen[key] = line
            index = None if m["index"] is None else int(m["index"])
            fixes.append(Fix(m["pid"], index, action, line))
    if errors:
        raise UserError(*errors)
    return fixes


def apply_fixes(dataset: Dataset, fixes: list[Fix], path: str | Path) -> tuple[Dataset, FixSummary]:
    """`dataset` with the fixes applied; an entry naming nothing in it is an error."""
    path = Path(path)
    summary = FixSummary(path)
    by_id = {p.id: p for p in dataset.problems}
    errors = []
    for fix in fixes:
        where = f"{path}:{fix.line}"
        problem = by_id.get(fix.problem_id)
        if problem is None:
            errors.append(f"{where}: no problem {fix.problem_id!r} in {dataset.path}")
            continue
        if fix.index is None:
            continue
        if fix.index >= len(problem.questions):
            errors.append(f"{where}: {fix.problem_id} has {len(problem.questions)} questions "
                          f"(#0 to #{len(problem.questions) - 1}), not #{fix.index}")
            continue
        letters = problem.questions[fix.index].letters
        if fix.action != DROP and fix.action not in letters:
            errors.append(f"{where}: {fix.problem_id}#{fix.index} offers {letters}, not {fix.action}")
    if errors:
        raise UserError(*errors)

    dropped = {f.problem_id for f in fixes if f.index is None}
    per_question = {(f.problem_id, f.index): f.action for f in fixes if f.index is not None}
    problems: list[Problem] = []
    for p in dataset.problems:
        if p.id in dropped:
            summary.dropped_problems += 1
            continue
        questions = []
        for q in p.questions:
            action = per_question.get((p.id, q.index))
            if action == DROP:
                summary.dropped_questions += 1
                continue
            if action is not None:
                if action == q.answer:
                    summary.already += 1
                else:
                    summary.corrected += 1
                    q = dataclasses.replace(q, answer=action)
            questions.append(q)
        if questions:
            problems.append(dataclasses.replace(p, questions=questions))
    return Dataset(dataset.path, problems, dataset.errors), summary


def read_training(
    path: str | Path, fixes: str | Path | None, stage: str, skip_invalid: bool = False
) -> tuple[Dataset, FixSummary | None]:
    """The training file as every stage reads it: repaired, then corrected by the fixes file
    (when given), with one summary line said under `stage`."""
    dataset = read_reporting(path, stage, skip_invalid)
    if fixes is None:
        return dataset, None
    dataset, summary = apply_fixes(dataset, load_fixes(fixes), fixes)
    say(stage, summary.line())
    return dataset, summary


def fixes_path(data: Any) -> Path | None:
    """The recipe's `data.fixes` as a path under the project, or None."""
    return project_root() / data.fixes if data.fixes else None


