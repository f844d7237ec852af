"""The competition format: one problem per line, each with single-choice questions.

`{"id": "round1_train_data_000", "problem": "...", "questions": [{"question": "...",
"options": ["...", "..."], "answer": "B"}]}`. Test files have no `answer`.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_jsonl
from orchestrator.core.common.progress import say

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
    repairs: list[str] = field(default_factory=list)  # "questions[i]: what was repaired"
    doubts: list[str] = field(default_factory=list)  # "questions[i]: what looks wrong but was left"
    unoffered: list[str] = field(default_factory=list)  # "questions[i]: ..." kept answers that are not offered


@dataclass
class Dataset:
    path: Path
    problems: list[Problem]
    errors: list[str] = field(default_factory=list)  # "FILE:LINE: reason" of skipped lines
    file_repairs: list[str] = field(default_factory=list)  # "FILE: ..." of the whole file (BOM, CRLF)

    @property
    def repairs(self) -> list[str]:
        """`FILE: ...` for the file, then `FILE:LINE: questions[i]: what was repaired`, for every
        repaired question."""
        return [*self.file_repairs, *(f"{self.path}:{p.line}: {r}" for p in self.problems for r in p.repairs)]

    @property
    def doubts(self) -> list[str]:
        """`FILE:LINE: questions[i]: ...` for what looks like a quirk but was left as it is."""
        return [f"{self.path}:{p.line}: {r}" for p in self.problems for r in p.doubts]

    @property
    def unoffered(self) -> list[str]:
        """`FILE:LINE: ID questions[i]: answer 'D' is not ...`: answers kept by `keep_unoffered`."""
        return [f"{self.path}:{p.line}: {p.id} {r}" for p in self.problems for r in p.unoffered]

    @property
    def questions(self) -> list[Question]:
        return [q for p in self.problems for q in p.questions]

    def summary(self) -> str:
        qs = self.questions
        answered = sum(q.answer is not None for q in qs)
        repaired = sum(len(p.repairs) for p in self.problems)
        return (
            f"{self.path}: {len(self.problems)} problems, {len(qs)} questions, "
            f"{answered} with answers" + (f", {repaired} questions repaired" if repaired else "")
            + (f", {len(self.doubts)} to check" if self.doubts else "")
        )


# keys of an alpaca or sharegpt line (a training set, not a competition file)
TRAINING_RECORD_KEYS = ("instruction", "input", "output", "conversations", "messages")
MAX_ERRORS = 10  # bad lines named in an Error before the rest are counted


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


# A line inside an option that starts a further option: a newline, a letter, `.` (or `．`, `、`)
# and text, as in '上海\nC.广州\nD. 深圳'.
_NEXT_OPTION = re.compile(r"\n[ \t]*([A-Z])[ \t]*[.．、][ \t]*(?=\S)")
# A competition key in quotes inside a question's text: the line was corrupted by an edit
# ('选择题 1：\n"answer": "G？').
_JSON_KEY = re.compile(r'"(?:answer|options|question|questions|problem|id)"\s*:')
# Trailing whitespace and literal backslash-n sequences ('不是  \n\\n').
_LITERAL_NEWLINES = re.compile(r"(?:\s|\\n)*\\n(?:\s|\\n)*$")


def split_merged_options(options: tuple[str, ...]) -> tuple[tuple[str, ...], str | None]:
    """Options with a swallowed tail split apart, and what was done (None: nothing; see
    `merged_option_doubt` for lines that look like options but were left).

    Only the LAST option is split, and only when every line it starts with `X.` names the
    letters that continue the list in order (B holding `\nC.` then `\nD.`) and each part
    keeps some text. So an option that merely mentions a letter (`C和D都对`, `选C`), names
    letters out of sequence, or sits before other options is never touched.
    """
    last = options[-1]
    starts = list(_NEXT_OPTION.finditer(last))
    if not starts:
        return options, None
    n = len(options)
    expected = LETTERS[n : n + len(starts)]
    if "".join(m[1] for m in starts) != expected or n + len(starts) > MAX_OPTIONS:
        return options, None
    ends = [m.start() for m in starts[1:]] + [len(last)]
    parts = [last[: starts[0].start()], *(last[m.end() : end] for m, end in zip(starts, ends))]
    if any(not part.strip() for part in parts):
        return options, None
    split = (*options[:-1], *(part.strip() for part in parts))
    return split, f"options[{n - 1}] held options {', '.join(expected)}; split into {len(split)} options"


def merged_option_doubt(options: tuple[str, ...]) -> str | None:
    """A line in some option that starts like an option (`\nD. 绿色`) which the split rule
    left alone (out of sequence, not the last option): worth a look, never changed."""
    for i, opt in enumerate(options):
        m = _NEXT_OPTION.search(opt)
        if m:
            return f"options[{i}] holds a line starting {m[1]!r}. like a swallowed option; left as it is"
    return None


def clean_literal_newlines(options: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """Options without trailing literal `\\n` text (an escaped newline stored as two characters)."""
    out, notes = [], []
    for i, opt in enumerate(options):
        cleaned = _LITERAL_NEWLINES.sub("", opt)
        if cleaned != opt and cleaned:
            notes.append(f"options[{i}] ended in a literal '\\n'; removed")
            opt = cleaned
        out.append(opt)
    return tuple(out), notes


def repair_options(options: tuple[str, ...]) -> tuple[tuple[str, ...], list[str], str | None]:
    """The options as the question meant them, a note per repair, and a doubt (or None)."""
    options, notes = clean_literal_newlines(options)
    options, split = split_merged_options(options)
    return options, notes + ([split] if split else []), None if split else merged_option_doubt(options)


def parse_problem(obj: Any, line: int, keep_unoffered: bool = False) -> Problem:
    """One decoded line into a Problem; raises _Bad with the reason. With `keep_unoffered`, an
    answer that is not an offered letter is kept (a gold label no answer can match) and listed."""
    if not isinstance(obj, dict):
        raise _Bad("a line must be a JSON object")
    pid = obj.get("id")
    if pid is None or (isinstance(pid, str) and not pid.strip()):
        pid = f"line{line}"
    elif not isinstance(pid, (str, int)) or isinstance(pid, bool):
        raise _Bad("id must be text")
    pid = str(pid).strip()
    if "problem" not in obj and any(k in obj for k in TRAINING_RECORD_KEYS):
        raise _Bad(f"a training record ({', '.join(k for k in obj if k in TRAINING_RECORD_KEYS)}), not a competition "
                   "problem (id, problem, questions); an alpaca or sharegpt file goes under dataset.extra of a "
                   "role recipe (docs/more-data.md)")
    problem = _text(obj.get("problem"), "problem")
    raw_questions = obj.get("questions")
    if not isinstance(raw_questions, list) or not raw_questions:
        raise _Bad("questions must be a non-empty list")
    questions = []
    repairs, doubts, unoffered = [], [], []
    for i, rq in enumerate(raw_questions):
        where = f"questions[{i}]"
        if not isinstance(rq, dict):
            raise _Bad(f"{where} must be an object")
        text = _text(rq.get("question"), f"{where}.question")
        options, notes, doubt = repair_options(_options(rq.get("options"), where))
        repairs += [f"{where}: {note}" for note in notes]
        doubts += [f"{where}: {doubt}"] if doubt else []
        fragment = _JSON_KEY.search(text)
        doubts += [f"{where}.question holds {fragment[0]!r}, a piece of a JSON line, not a question; left as it is"
                   ] if fragment else []
        answer = rq.get("answer")
        if answer is not None:
            if not isinstance(answer, str):
                raise _Bad(f"{where}.answer must be a letter")
            answer = answer.strip().upper()
            if answer == "":
                answer = None
            elif answer not in tuple(LETTERS[: len(options)]):  # one letter, not "AB"
                why = f"{where}.answer {_short(answer)} is not one of the offered letters {LETTERS[: len(options)]}"
                if not keep_unoffered:
                    raise _Bad(why)
                unoffered.append(why)
        questions.append(Question(pid, i, problem, text, options, answer))
    return Problem(pid, problem, questions, line, obj, repairs, doubts, unoffered)


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


def jsonl_lines(path: Path) -> list[tuple[int, bytes]]:
    """(line number, raw bytes) of each line of a .jsonl file, a BOM dropped; a file that cannot
    be read is one Error line. Lines end at \n only: U+2028, U+0085 and the like are legal
    inside JSON strings."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a .jsonl file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    return list(enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1))


def _encoding(path: Path, lines: list[tuple[int, bytes]]) -> tuple[list[str], int | None]:
    """What the whole file's bytes say: the repairs of a BOM and CRLF line ends, and the line a
    file cut inside a UTF-8 character ends on (None: not cut); a file in GBK is one Error line."""
    data = b"\n".join(raw for _, raw in lines)
    repairs = []
    if path.read_bytes().startswith(b"\xef\xbb\xbf"):
        repairs.append(f"{path}: a UTF-8 byte-order mark (BOM) at its start, dropped")
    crlf = sum(raw.endswith(b"\r") for _, raw in lines)
    if crlf:
        repairs.append(f"{path}: {crlf} lines end in CRLF (Windows line ends), read as LF")
    try:
        data.decode("utf-8")
        return repairs, None
    except UnicodeDecodeError as e:
        if e.reason == "unexpected end of data" and e.end == len(data.rstrip(b"\r\n\t ")):
            return repairs, lines[-1][0] if lines[-1][1].strip() else lines[-2][0]
    bad = [raw for _, raw in lines if not _decodes(raw, "utf-8")]
    if (len(bad) * 2 > sum(1 for _, raw in lines if raw.strip()) and all(raw.startswith(b"{") for raw in bad)
            and _decodes(data, "gb18030")
            and len(re.findall("[\u4e00-\u9fff]", data.decode("gb18030"))) >= 2 * len(bad)):  # Chinese text in JSON lines
        raise UserError(f"{path}: not UTF-8 ({len(bad)} lines): it looks like GBK (GB18030), a Chinese Windows "
                        f"encoding; convert it, e.g. `iconv -f GB18030 -t UTF-8 {path} > utf8.jsonl`, then use that file")
    return repairs, None


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def read_dataset(path: str | Path, skip_invalid: bool = False, keep_unoffered: bool = False) -> Dataset:
    """Read a competition .jsonl. Every bad line is reported (`FILE:LINE: reason`), not only
    the first; with `skip_invalid` the good lines are kept and the bad ones listed;
    `keep_unoffered`: see parse_problem."""
    path = Path(path)
    problems: list[Problem] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    lines = jsonl_lines(path)
    file_repairs, cut = _encoding(path, lines)
    for lineno, raw in lines:
        try:
            if lineno == cut:
                raise _Bad("the file ends inside a UTF-8 character: it is UTF-8, cut short (an interrupted "
                           "copy or download?); copy the whole file again")
            line = _text_line(raw)
            if not line:
                continue
            problem = parse_problem(_json(line), lineno, keep_unoffered)
            if problem.id in seen:
                raise _Bad(f"id {_short(problem.id)} repeats line {seen[problem.id]}")
            seen[problem.id] = lineno
            problems.append(problem)
        except _Bad as e:
            errors.append(f"{path}:{lineno}: {e}")
        except RecursionError:
            errors.append(f"{path}:{lineno}: nested too deeply")
    if errors and not skip_invalid:
        raise UserError(*errors[:MAX_ERRORS], *([f"... and {len(errors) - MAX_ERRORS} more bad lines "
                                                   f"(`orchestrator data check {path} --skip-invalid` lists each)"]
                                                 if len(errors) > MAX_ERRORS else []))
    if not problems and not errors:
        raise UserError(f"{path}: no problems in the file (it is empty)")
    if not problems:
        raise UserError(*errors, f"{path}: no valid problems (every line is bad)")
    return Dataset(path, problems, errors, file_repairs)


_SAID: set[tuple[str, str]] = set()  # (file, line) said in this process: once per `orchestrator run`


def read_reporting(path: str | Path, stage: str, skip_invalid: bool = False) -> Dataset:
    """read_dataset for a stage: with `skip_invalid`, each skipped line is said under the stage;
    each repair and skip of a file is said once per process (the stages of one run read it again)."""
    dataset = read_dataset(path, skip_invalid=skip_invalid)
    for line in [f"skipped {e}" for e in dataset.errors] + [f"repaired {r}" for r in dataset.repairs]:
        key = (str(Path(path).resolve()), line)
        if key not in _SAID:
            _SAID.add(key)
            say(stage, line)
    return dataset


def write_submission(path: Path, dataset: Dataset, answers: dict[str, str | None]) -> Path:
    """The input lines in competition format with every question's answer filled."""
    rows = []
    for p in dataset.problems:
        row = dict(p.raw)
        row["id"] = p.id
        qs = []
        for q in p.questions:
            rq = dict(p.raw["questions"][q.index])
            if not isinstance(rq.get("options"), list):  # a tuple-like text becomes a list; a list stays as given
                rq["options"] = list(q.options)
            rq["answer"] = answers.get(q.qid)
            qs.append(rq)
        row["questions"] = qs
        rows.append(row)
    return atomic_write_jsonl(path, rows)


def gold_answers(dataset: Dataset) -> dict[str, str]:
    return {q.qid: q.answer for q in dataset.questions if q.answer is not None}


def letter_counts(questions: list[Question]) -> Counter[str]:
    """How often each gold letter occurs, most frequent first (a tie: the earlier letter)."""
    counts = Counter(q.answer for q in questions if q.answer is not None)
    return Counter(dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))
