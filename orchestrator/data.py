"""The competition format: one problem per line, each with single-choice questions.

`{"id": "round1_train_data_000", "problem": "...", "questions": [{"question": "...",
"options": ["...", "..."], "answer": "B"}]}`. Test files have no `answer`.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError
from orchestrator.files import atomic_write_jsonl

LETTERS = "ABCDEFG"
MAX_OPTIONS = len(LETTERS)


@dataclass(frozen=True)
class Question:
    problem_id: str
    index: int
    problem: str
    question: str
    options: tuple[str, ...]
    answer: str | None = None

    @property
    def qid(self) -> str:
        return f"{self.problem_id}#{self.index}"

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.options)]


@dataclass
class Problem:
    id: str
    problem: str
    questions: list[Question]
    line: int
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class Dataset:
    path: Path
    problems: list[Problem]
    errors: list[str] = field(default_factory=list)  # "FILE:LINE: reason" of skipped lines

    @property
    def questions(self) -> list[Question]:
        return [q for p in self.problems for q in p.questions]

    def summary(self) -> str:
        qs = self.questions
        answered = sum(q.answer is not None for q in qs)
        return (
            f"{self.path}: {len(self.problems)} problems, {len(qs)} questions, "
            f"{answered} with answers"
        )


class _Bad(Exception):
    pass


def _short(value: str, limit: int = 40) -> str:
    """repr of `value`, cut so that one error line stays one readable line."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"{what} must be a non-empty string")
    return value.strip()


def _options(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):  # a tuple-like list stored as text: "('1', '2')"
        try:
            value = ast.literal_eval(value.strip())
        # TypeError: an unhashable set member or dict key such as "{[]: 1}"
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise _Bad(f"{where}.options is text that is not a list") from None
    if not isinstance(value, (list, tuple)):
        raise _Bad(f"{where}.options must be a list")
    if not 2 <= len(value) <= MAX_OPTIONS:
        raise _Bad(f"{where} has {len(value)} options; 2 to {MAX_OPTIONS} (A-G) are allowed")
    out = []
    for i, opt in enumerate(value):
        if isinstance(opt, bool) or not isinstance(opt, (str, int, float)):
            raise _Bad(f"{where}.options[{i}] must be text")
        out.append(str(opt).strip())
    return tuple(out)


def parse_problem(obj: Any, line: int) -> Problem:
    """One decoded line into a Problem; raises _Bad with the reason."""
    if not isinstance(obj, dict):
        raise _Bad("a line must be a JSON object")
    pid = obj.get("id")
    if pid is None or (isinstance(pid, str) and not pid.strip()):
        pid = f"line{line}"
    elif not isinstance(pid, (str, int)) or isinstance(pid, bool):
        raise _Bad("id must be text")
    pid = str(pid).strip()
    problem = _text(obj.get("problem"), "problem")
    raw_questions = obj.get("questions")
    if not isinstance(raw_questions, list) or not raw_questions:
        raise _Bad("questions must be a non-empty list")
    questions = []
    for i, rq in enumerate(raw_questions):
        where = f"questions[{i}]"
        if not isinstance(rq, dict):
            raise _Bad(f"{where} must be an object")
        text = _text(rq.get("question"), f"{where}.question")
        options = _options(rq.get("options"), where)
        answer = rq.get("answer")
        if answer is not None:
            if not isinstance(answer, str):
                raise _Bad(f"{where}.answer must be a letter")
            answer = answer.strip().upper()
            if answer == "":
                answer = None
            elif answer not in tuple(LETTERS[: len(options)]):  # one letter, not "AB"
                raise _Bad(
                    f"{where}.answer {_short(answer)} is not one of the offered letters "
                    f"{LETTERS[: len(options)]}"
                )
        questions.append(Question(pid, i, problem, text, options, answer))
    return Problem(pid, problem, questions, line, obj)


def _constant(name: str) -> Any:
    raise _Bad(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Bad(f"number {text[:20]} is out of range")
    return value


def _text_line(raw: bytes) -> str:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Bad(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1}); save the file as UTF-8") from None
    return line.strip().lstrip("\ufeff")


def _json(line: str) -> Any:
    try:
        obj = json.loads(line, parse_constant=_constant, parse_float=_float)
    except json.JSONDecodeError as e:
        raise _Bad(f"not valid JSON ({e.msg}, column {e.colno})") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise _Bad(f"not valid JSON ({e})") from None
    try:
        # a lone surrogate ("\ud800") cannot be written out again as UTF-8
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad("text has an unpaired \\uXXXX surrogate escape") from None
    return obj


def read_dataset(path: str | Path, skip_invalid: bool = False) -> Dataset:
    """Read a competition .jsonl. Every bad line is reported (`FILE:LINE: reason`), not only
    the first; with `skip_invalid` the good lines are kept and the bad ones listed."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a .jsonl file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    problems: list[Problem] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    # Lines end at \n only: U+2028, U+0085 and the like are legal inside JSON strings.
    for lineno, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        try:
            line = _text_line(raw)
            if not line:
                continue
            problem = parse_problem(_json(line), lineno)
            if problem.id in seen:
                raise _Bad(f"id {_short(problem.id)} repeats line {seen[problem.id]}")
            seen[problem.id] = lineno
            problems.append(problem)
        except _Bad as e:
            errors.append(f"{path}:{lineno}: {e}")
        except RecursionError:
            errors.append(f"{path}:{lineno}: nested too deeply")
    if errors and not skip_invalid:
        raise UserError(*errors)
    if not problems and not errors:
        raise UserError(f"{path}: no problems in the file (it is empty)")
    if not problems:
        raise UserError(*errors, f"{path}: no valid problems (every line is bad)")
    return Dataset(path, problems, errors)


def read_reporting(path: str | Path, stage: str, skip_invalid: bool = False) -> Dataset:
    """read_dataset for a stage: with `skip_invalid`, each skipped line is said under the stage."""
    dataset = read_dataset(path, skip_invalid=skip_invalid)
    if dataset.errors:
        from orchestrator.progress import say

        for line in dataset.errors:
            say(stage, f"skipped {line}")
    return dataset


def write_submission(path: Path, dataset: Dataset, answers: dict[str, str | None]) -> Path:
    """The input lines in competition format with every question's answer filled."""
    rows = []
    for p in dataset.problems:
        row = dict(p.raw)
        row["id"] = p.id
        qs = []
        for q, rq in zip(p.questions, p.raw["questions"]):
            rq = dict(rq)
            rq["options"] = list(q.options)
            rq["answer"] = answers.get(q.qid)
            qs.append(rq)
        row["questions"] = qs
        rows.append(row)
    return atomic_write_jsonl(path, rows)


def gold_answers(dataset: Dataset) -> dict[str, str]:
    return {q.qid: q.answer for q in dataset.questions if q.answer is not None}
