"""The competition format: quirks tolerated, every bad line reported with its number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.core.common.errors import UserError
from orchestrator.core.data.competition import read_dataset, write_submission

GOOD = {"id": "p1", "problem": "有一些事实。", "questions": [{"question": "选择题 1：\n谁?", "options": ["甲", "乙"], "answer": "B"}]}


def write_lines(path: Path, lines: list[str], *, bom: bool = False, crlf: bool = False) -> Path:
    text = ("\r\n" if crlf else "\n").join(lines) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_quirks_are_tolerated(tmp_path: Path) -> None:
    no_id = {k: v for k, v in GOOD.items() if k != "id"}
    tuple_like = {**GOOD, "id": "p3", "questions": [{"question": "q", "options": "('1', '2', '3')", "answer": " c "}]}
    extra = {**GOOD, "id": "p4", "extra": 1, "problem": "  spaced  "}
    path = write_lines(
        tmp_path / "in.jsonl",
        [json.dumps(GOOD, ensure_ascii=False), "", "   ", json.dumps(no_id, ensure_ascii=False),
         json.dumps(tuple_like, ensure_ascii=False), json.dumps(extra, ensure_ascii=False)],
        bom=True, crlf=True,
    )
    ds = read_dataset(path)
    assert [p.id for p in ds.problems] == ["p1", "line4", "p3", "p4"]
    assert ds.problems[2].questions[0].options == ("1", "2", "3")
    assert ds.problems[2].questions[0].answer == "C"
    assert ds.problems[3].problem == "spaced"
    assert ds.summary().endswith("4 problems, 4 questions, 4 with answers")


BAD_LINES = [
    ("not json", "not valid JSON (Expecting value, column 1)"),
    ("[1, 2]", "a line must be a JSON object"),
    ('{"problem": "", "questions": []}', "problem must be a non-empty string"),
    ('{"problem": "p", "questions": []}', "questions must be a non-empty list"),
    ('{"problem": "p", "questions": [{"question": "q", "options": ["a"]}]}', "questions[0] has 1 options; 2 to 7 (A-G) are allowed"),
    ('{"problem": "p", "questions": [{"question": "q", "options": ["1","2","3","4","5","6","7","8"]}]}', "questions[0] has 8 options; 2 to 7 (A-G) are allowed"),
    ('{"problem": "p", "questions": [{"question": "q", "options": ["a", "b"], "answer": "C"}]}', "questions[0].answer 'C' is not one of the offered letters AB"),
    ('{"problem": "p", "questions": [{"question": "q", "options": "oops"}]}', "questions[0].options is text that is not a list"),
    ('{"problem": "p", "questions": [{"options": ["a", "b"]}]}', "questions[0].question must be a non-empty string"),
    ('{"problem": "p", "questions": [{"question": "q", "options": [["x"], "b"]}]}', "questions[0].options[0] must be text"),
    ('{"id": true, "problem": "p", "questions": [{"question": "q", "options": ["a", "b"]}]}', "id must be text"),
    # a pseudo-label file in alpaca form given as a competition file
    ('{"instruction": "i", "input": "x", "output": "A"}', "a training record (instruction, input, output), not a "
     "competition problem (id, problem, questions); an alpaca or sharegpt file goes under dataset.extra of a role "
     "recipe (docs/more-data.md)"),
]


@pytest.mark.parametrize("line, reason", BAD_LINES)
def test_bad_line_reason(tmp_path: Path, line: str, reason: str) -> None:
    path = write_lines(tmp_path / "in.jsonl", [json.dumps(GOOD), line])
    with pytest.raises(UserError) as info:
        read_dataset(path)
    assert info.value.lines == [f"{path}:2: {reason}"]


def test_every_bad_line_is_reported_and_cli_exits_2(tmp_path: Path, cli) -> None:
    path = write_lines(tmp_path / "in.jsonl", ["nope", json.dumps(GOOD), "[]", json.dumps(GOOD)])
    code, out, err = cli("data", "check", path)
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"Error: {path}:1: not valid JSON (Expecting value, column 1)",
        f"Error: {path}:3: a line must be a JSON object",
        f"Error: {path}:4: id 'p1' repeats line 2",
    ]
    code, out, err = cli("data", "check", path, "--skip-invalid")
    assert code == 0
    assert out.strip() == f"{path}: 1 problems, 1 questions, 1 with answers, 3 bad lines skipped"
    assert err.count("skipped ") == 3


def test_a_file_of_bad_lines_names_ten_then_counts(tmp_path: Path, cli) -> None:
    """A whole file in another format (an alpaca pseudo-label set: 1,328 lines) is not 1,328 Errors."""
    path = write_lines(tmp_path / "in.jsonl", [json.dumps(GOOD)] + ['{"instruction": "i", "output": "A"}'] * 15)
    code, out, err = cli("data", "check", path)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 11 and lines[0].startswith(f"Error: {path}:2: a training record (instruction, output)")
    assert lines[-1] == f"Error: ... and 5 more bad lines (`orchestrator data check {path} --skip-invalid` lists each)"
    code, _, err = cli("data", "check", path, "--skip-invalid")
    assert code == 0 and err.count("skipped ") == 15


@pytest.mark.parametrize("content, reason", [(None, "no such file"), (b"", "no problems in the file (it is empty)")])
def test_missing_or_empty_file(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "x.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_dataset(path)
    assert info.value.lines == [f"{path}: {reason}"]


def test_submission_fills_answers_and_keeps_lines(tmp_path: Path) -> None:
    test_line = {"id": "t1", "problem": "p", "questions": [{"question": "q1", "options": ["a", "b"]}, {"question": "q2", "options": ["a", "b", "c"]}]}
    ds = read_dataset(write_lines(tmp_path / "test.jsonl", [json.dumps(test_line)]))
    out = write_submission(tmp_path / "sub.jsonl", ds, {"t1#0": "B", "t1#1": None})
    row = json.loads(out.read_text(encoding="utf-8"))
    assert [q["answer"] for q in row["questions"]] == ["B", None]
    assert read_dataset(out).problems[0].questions[0].answer == "B"


def test_shipped_sample_is_valid(cli) -> None:
    root = Path(__file__).resolve().parents[3] / "datasets" / "sample"
    for name in ("train.jsonl", "test.jsonl", "test_gold.jsonl"):
        code, out, err = cli("data", "check", root / name)
        assert code == 0, err


# ---------------------------------------------------------------- quirks of the real competition files
# Each case is made up here; it mirrors a quirk listed in the competition's SOURCES.md.

# (options as stored, options as read); only a last option whose lines `X.` continue the letters splits
SPLITS = [
    pytest.param(["北京", "上海\nC.广州\nD. 深圳"], ("北京", "上海", "广州", "深圳"), id="two-swallowed"),
    pytest.param(["是", "否\nC.不确定"], ("是", "否", "不确定"), id="one-swallowed"),
    pytest.param(["甲", "乙", "丙\nD、丁"], ("甲", "乙", "丙", "丁"), id="comma-mark-after-C"),
    pytest.param(["甲", "乙\n C ．丙"], ("甲", "乙", "丙"), id="full-width-dot-and-spaces"),
    pytest.param(["红色", "蓝色\nD. 绿色"], ("红色", "蓝色\nD. 绿色"), id="letter-out-of-sequence"),
    pytest.param(["甲\nB. 乙", "丙"], ("甲\nB. 乙", "丙"), id="not-the-last-option"),
    pytest.param(["甲", "乙\nC.丙\nE. 戊"], ("甲", "乙\nC.丙\nE. 戊"), id="gap-in-letters"),
    pytest.param(["甲", "乙\nC."], ("甲", "乙\nC."), id="no-text-after-letter"),
    pytest.param(["A和B都对", "C和D都对"], ("A和B都对", "C和D都对"), id="mentions-letters"),
    pytest.param(["甲", "选C.因为丙"], ("甲", "选C.因为丙"), id="letter-mid-line"),
    pytest.param(["甲", "乙\nC是错的"], ("甲", "乙\nC是错的"), id="letter-without-dot"),
    pytest.param(["甲", "乙\nCPU. 快"], ("甲", "乙\nCPU. 快"), id="word-starting-with-letter"),
    pytest.param(["1. 左\n2. 右", "1. 右\n2. 左"], ("1. 左\n2. 右", "1. 右\n2. 左"), id="numbered-steps-stay"),
    pytest.param(["一", "二", "三", "四", "五", "六\nG. 七\nH. 八"], ("一", "二", "三", "四", "五", "六\nG. 七\nH. 八"),
                 id="beyond-G"),
]


@pytest.mark.parametrize("stored, read", SPLITS)
def test_merged_options_split_only_by_the_rule(tmp_path: Path, stored: list[str], read: tuple[str, ...]) -> None:
    line = {"id": "m", "problem": "题", "questions": [{"question": "选择题 1：\n问", "options": stored}]}
    ds = read_dataset(write_lines(tmp_path / "in.jsonl", [json.dumps(line, ensure_ascii=False)]))
    assert ds.questions[0].options == read
    held = ", ".join("ABCDEFG"[len(stored) : len(read)])
    note = f"{ds.path}:1: questions[0]: options[{len(stored) - 1}] held options {held}; split into {len(read)} options"
    assert ds.repairs == ([note] if len(read) > len(stored) else [])


def test_repairs_are_reported_by_data_check_and_the_gold_letter_is_kept(tmp_path: Path, cli) -> None:
    merged = {"id": "m", "problem": "题", "questions": [
        {"question": "选择题 1：\n哪座城市?", "options": ["北京", "上海\nC.广州\nD. 深圳"], "answer": "C"},
        {"question": "选择题 2：\n对吗?", "options": ["是", "不是  \n\\n"], "answer": "B"},
        {"question": "选择题 3：\n哪个?", "options": ["红色", "蓝色\nD. 绿色"], "answer": "B"}]}
    path = write_lines(tmp_path / "in.jsonl", [json.dumps(merged, ensure_ascii=False)])
    code, out, err = cli("data", "check", path)
    assert code == 0, err
    assert err.splitlines() == [
        f"repaired {path}:1: questions[0]: options[1] held options C, D; split into 4 options",
        f"repaired {path}:1: questions[1]: options[1] ended in a literal '\\n'; removed",
        f"check {path}:1: questions[2]: options[1] holds a line starting 'D'. like a swallowed option; left as it is",
    ]
    assert out.strip() == f"{path}: 1 problems, 3 questions, 3 with answers, 2 questions repaired, 1 to check"
    q0, q1, _ = read_dataset(path).questions
    assert (q0.answer, q0.letters, q1.options) == ("C", "ABCD", ("是", "不是"))


QUIRKS = [
    # printed number differs from the position: the list index decides, the text is kept
    pytest.param({"question": "选择题 2：\n谁?", "options": ["甲", "乙"], "answer": "A"}, "选择题 2：\n谁?",
                 ("甲", "乙"), id="printed-number-not-position"),
    # duplicate options are both kept, each with its letter (the gold may name the second)
    pytest.param({"question": "选择题 1：\n哪个?", "options": ["红", "蓝", "绿", "蓝"], "answer": "D"}, "选择题 1：\n哪个?",
                 ("红", "蓝", "绿", "蓝"), id="duplicate-options"),
    # half-width colon, no newline after it
    pytest.param({"question": "选择题 1:谁?", "options": ["甲", "乙"], "answer": "B"}, "选择题 1:谁?", ("甲", "乙"),
                 id="half-width-colon-no-newline"),
    # Markdown leftovers and blank lines after the prefix
    pytest.param({"question": "选择题 1：**\n\n谁?", "options": ["甲", "乙"], "answer": "B"}, "选择题 1：**\n\n谁?",
                 ("甲", "乙"), id="markdown-leftovers"),
    # five options: E is a real answer
    pytest.param({"question": "选择题 1：\n几?", "options": list("12345"), "answer": "E"}, "选择题 1：\n几?",
                 tuple("12345"), id="five-options-E"),
]


@pytest.mark.parametrize("question, text, options", QUIRKS)
def test_quirks_read_as_they_are(tmp_path: Path, question: dict, text: str, options: tuple[str, ...]) -> None:
    line = {"problem": "回答以下选择题：", "questions": [question], "id": "q_000"}  # a stub problem
    ds = read_dataset(write_lines(tmp_path / "in.jsonl", [json.dumps(line, ensure_ascii=False)]))
    (q,) = ds.questions
    assert (q.qid, q.problem, q.question, q.options, q.answer) == ("q_000#0", "回答以下选择题：", text, options,
                                                                  question["answer"])
    assert ds.repairs == [] and ds.doubts == []


def test_no_trailing_newline_keeps_the_last_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(GOOD, ensure_ascii=False) + "\n" + json.dumps({**GOOD, "id": "p2"}), encoding="utf-8")
    assert [p.id for p in read_dataset(path).problems] == ["p1", "p2"]


# ---------------------------------------------------------------- the whole file's encoding


def test_a_utf8_file_cut_inside_a_character_says_so(tmp_path: Path, cli) -> None:
    good = json.dumps(GOOD, ensure_ascii=False).encode()
    path = tmp_path / "cut.jsonl"
    path.write_bytes(good + b"\n" + good[:20] + "题".encode()[:2])  # the last line cut inside 题
    code, out, err = cli("data", "check", path)
    assert code == 2
    assert err.splitlines() == [f"Error: {path}:2: the file ends inside a UTF-8 character: it is UTF-8, cut short "
                                "(an interrupted copy or download?); copy the whole file again"]


def test_a_gbk_file_is_one_error_naming_the_encoding(tmp_path: Path, cli) -> None:
    path = tmp_path / "gbk.jsonl"
    rows = [json.dumps({**GOOD, "id": f"p{i}", "problem": "甲乙丙三人各说一句话"}, ensure_ascii=False) for i in range(30)]
    path.write_bytes("\n".join(rows).encode("gbk") + b"\n")
    code, out, err = cli("data", "check", path)
    assert code == 2
    assert err.splitlines() == [f"Error: {path}: not UTF-8 (30 lines): it looks like GBK (GB18030), a Chinese "
                                f"Windows encoding; convert it, e.g. `iconv -f GB18030 -t UTF-8 {path} > utf8.jsonl`, "
                                "then use that file"]


def test_bom_and_crlf_repairs_are_said(tmp_path: Path, cli) -> None:
    path = tmp_path / "win.jsonl"
    rows = [json.dumps(GOOD, ensure_ascii=False), json.dumps({**GOOD, "id": "p2"}, ensure_ascii=False)]
    path.write_bytes(b"\xef\xbb\xbf" + "".join(row + "\r\n" for row in rows).encode())
    code, out, err = cli("data", "check", path)
    assert code == 0, err
    assert err.splitlines() == [f"repaired {path}: a UTF-8 byte-order mark (BOM) at its start, dropped",
                                f"repaired {path}: 2 lines end in CRLF (Windows line ends), read as LF"]
    assert out.strip() == f"{path}: 2 problems, 2 questions, 2 with answers"


@pytest.mark.parametrize("text, doubt", [
    ('选择题 1：\n"answer": "G？', "questions[0].question holds '\"answer\":', a piece of a JSON line, not a question"),
    ('选择题 1：\n谁说"答案": 甲？', None),  # quotes and a colon, but no key of the format
])
def test_a_question_holding_a_json_fragment_is_worth_a_check(tmp_path: Path, cli, text: str, doubt: str | None) -> None:
    """A train line corrupted by an edit: its question text replaced by a piece of JSON (options
    and answer intact). Read as it is, named under `check`."""
    line = {**GOOD, "questions": [{**GOOD["questions"][0], "question": text}]}
    path = write_lines(tmp_path / "in.jsonl", [json.dumps(line, ensure_ascii=False)])
    code, out, err = cli("data", "check", path)
    assert code == 0 and out.startswith(f"{path}: 1 problems, 1 questions, 1 with answers")
    if doubt:
        assert err.splitlines() == [f"check {path}:1: {doubt}; left as it is"] and out.rstrip().endswith("1 to check")
    else:
        assert err == "" and "to check" not in out
