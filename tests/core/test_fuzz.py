"""Hostile input: any input is a valid object or a UserError, never a traceback. The
competition-data reader gets arbitrary bytes, arbitrary JSON per line and near-valid problems
with one field mutated; the recipe loader gets arbitrary YAML, mappings and `--set` strings,
including alias bombs; templates try to leave the sandbox; the ledger gets any text and is cut
at any byte (tests/core/common/test_ledger.py)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import FUZZ

from orchestrator.core.common.errors import UserError
from orchestrator.core.data.competition import Dataset, read_dataset
from orchestrator.core.recipes.loading import Loaded, load
from orchestrator.core.recipes.overrides import parse_override
from orchestrator.core.recipes.schema import PipelineRecipe, RoleRecipe


GOOD = {"id": "p1", "problem": "有一些事实。", "questions": [{"question": "选择题 1：\n谁?", "options": ["甲", "乙", "丙"], "answer": "B"}]}

# ---------------------------------------------------------------- competition data

BIG = "<big number>"  # dumped as a 5000-digit literal (a Python int that big has no repr)


def dumps(value: Any, ensure_ascii: bool = True) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii).replace(json.dumps(BIG), "-" + "9" * 5000)


# values that break readers: wrong types, empty, huge, nested, odd numbers and text
ODD_TEXT = st.sampled_from(
    ["", " ", "\ufeff", "\u2028", "\x85", "a\r\nb", "\x00", "\ud800", "𝔘", "A", "b", "AB", "ß", "('1', '2')", "[1, [2]]",
     "{[]: 1}", "{{}}", "[" * 300, "9" * 5000, "x" * 10_000, "NaN"]
)
ODD_NUMBER = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.just(BIG))
JSON_LEAF = st.one_of(st.none(), st.booleans(), ODD_NUMBER, st.text(max_size=30), ODD_TEXT)
JSON_VALUE = st.recursive(
    JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=8), st.dictionaries(st.text(max_size=10), inner, max_size=6)), max_leaves=30
)
NESTED = st.integers(min_value=1, max_value=5000).map(lambda n: "[" * n + "]" * n)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place inside `obj` a mutation can go."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def near_valid(draw: st.DrawFn) -> str:
    """GOOD with one field replaced, removed or given a sibling; dumped with odd literals kept."""
    obj = json.loads(json.dumps(GOOD))
    path = draw(st.sampled_from(_paths(obj)[1:]))
    parent = obj
    for part in path[:-1]:
        parent = parent[part]
    action = draw(st.sampled_from(["replace", "delete", "extra"]))
    if action == "delete":
        del parent[path[-1]]
    elif action == "extra" and isinstance(parent, list):
        parent.append(draw(JSON_VALUE))
    else:
        parent[path[-1]] = draw(JSON_VALUE)
    return dumps(obj, ensure_ascii=draw(st.booleans()))  # NaN/Infinity literals stay in


LINE = st.one_of(near_valid(), JSON_VALUE.map(dumps), NESTED, st.just(json.dumps(GOOD, ensure_ascii=False)), st.text(max_size=50))


@st.composite
def jsonl_file(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(LINE, min_size=0, max_size=6))
    sep = draw(st.sampled_from(["\n", "\r\n"]))
    data = sep.join(lines).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.booleans()):  # a stray byte that is not UTF-8
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) + data[at:]
    return data


WHOLE_FILE = [r"no problems in the file \(it is empty\)", r"no valid problems \(every line is bad\)",
              r"not UTF-8 \(\d+ lines\): it looks like GBK .*"]


def check_read(path: Path, skip_invalid: bool) -> None:
    """read_dataset gives a Dataset or a UserError of `PATH:LINE: reason` lines, nothing else."""
    line_re = re.compile(rf"^{re.escape(str(path))}:\d+: \S.*$")
    file_re = re.compile(rf"^{re.escape(str(path))}: ({'|'.join(WHOLE_FILE)})$")
    try:
        ds = read_dataset(path, skip_invalid=skip_invalid)
    except UserError as e:
        assert e.lines
        for line in e.lines:
            assert line_re.match(line) or file_re.match(line), line
        return
    assert isinstance(ds, Dataset) and ds.problems
    assert all(line_re.match(line) for line in ds.errors)
    for q in ds.questions:  # what later stages rely on
        assert q.problem and q.question and 2 <= len(q.options) <= 7
        assert q.answer is None or q.answer in q.letters and len(q.answer) == 1
        json.dumps([q.problem, q.question, q.options, q.problem_id], ensure_ascii=False).encode("utf-8")
    if not skip_invalid:
        assert not ds.errors


@FUZZ
@given(data=st.binary(max_size=400), skip=st.booleans())
def test_arbitrary_bytes(tmp_path: Path, data: bytes, skip: bool) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    check_read(path, skip)


@FUZZ
@given(data=jsonl_file(), skip=st.booleans())
def test_json_lines_and_near_valid_problems(tmp_path: Path, data: bytes, skip: bool) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    check_read(path, skip)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=jsonl_file(), skip=st.booleans())
def test_cli_data_check_exits_0_or_2(tmp_path: Path, capsys: pytest.CaptureFixture, data: bytes, skip: bool) -> None:
    from orchestrator.cli import run

    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    code = run(["data", "check", str(path), *(["--skip-invalid"] if skip else [])])
    out, err = capsys.readouterr()
    assert code in (0, 2)
    assert all(line.startswith(("Error: ", "skipped ", "repaired ")) for line in err.splitlines()), err
    assert (code == 0) == bool(out) and (code == 2) == err.startswith("Error: ")


# Each case found a crash or a silently wrong result before the fix in orchestrator/core/data/competition.py.
FOUND = [
    ('{"id": %s, "problem": "p", "questions": [{"question": "q", "options": ["a", "b"]}]}' % ("9" * 5000),
     "not valid JSON (Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits; use sys.set_int_max_str_digits() to increase the limit)"),
    ('{"problem": "p", "questions": [{"question": "q", "options": "{[]: 1}"}]}', "questions[0].options is text that is not a list"),
    ('{"problem": "p", "questions": [{"question": "q", "options": ["a", "b", "c"], "answer": "AB"}]}',
     "questions[0].answer 'AB' is not one of the offered letters ABC"),
    ('{"problem": "p\\ud800", "questions": [{"question": "q", "options": ["a", "b"]}]}', "text has an unpaired \\uXXXX surrogate escape"),
    ('{"problem": "p", "questions": [{"question": "q", "options": [NaN, "b"]}]}', "NaN is not a JSON number"),
    ('{"problem": "p", "questions": [{"question": "q", "options": ["a", 1e400]}]}', "number 1e400 is out of range"),
    (b'{"problem": "p\xff", "questions": [{"question": "q", "options": ["a", "b"]}]}',
     "not valid UTF-8 (byte 0xff at byte 15); save the file as UTF-8"),
]


@pytest.mark.parametrize("line, reason", FOUND)
def test_found_by_fuzzing(tmp_path: Path, line: str | bytes, reason: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + (line if isinstance(line, bytes) else line.encode()))
    with pytest.raises(UserError) as info:
        read_dataset(path)
    assert info.value.lines == [f"{path}:2: {reason}"]


def test_line_separators_inside_strings_do_not_split_lines(tmp_path: Path) -> None:
    # U+2028, U+2029 and U+0085 are legal unescaped in JSON strings; only \n ends a line
    obj = {**GOOD, "problem": "一\u2028二\u2029三\x85四"}
    path = tmp_path / "in.jsonl"
    path.write_bytes((json.dumps(obj, ensure_ascii=False) + "\r\n" + json.dumps({**GOOD, "id": "p2"})).encode())
    ds = read_dataset(path)
    assert [p.line for p in ds.problems] == [1, 2]
    assert ds.problems[0].problem == "一\u2028二\u2029三\x85四"


# ---------------------------------------------------------------- --skip-invalid


def test_skip_invalid_keeps_good_lines_and_lists_bad(tmp_path: Path, cli) -> None:
    good2 = {**GOOD, "id": "p2", "questions": GOOD["questions"] * 2}
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b"\n".join([
            json.dumps(GOOD).encode(), b"{broken", json.dumps({**GOOD, "problem": ""}).encode(),
            b"", b'{"problem": "p\xff"}', json.dumps(good2).encode(), json.dumps(GOOD).encode(),
        ])
    )
    ds = read_dataset(path, skip_invalid=True)
    assert [(p.id, p.line, len(p.questions)) for p in ds.problems] == [("p1", 1, 1), ("p2", 6, 2)]
    assert ds.errors == [
        f"{path}:2: not valid JSON (Expecting property name enclosed in double quotes, column 2)",
        f"{path}:3: problem must be a non-empty string",
        f"{path}:5: not valid UTF-8 (byte 0xff at byte 15); save the file as UTF-8",
        f"{path}:7: id 'p1' repeats line 1",
    ]
    code, out, err = cli("data", "check", path, "--skip-invalid")
    assert code == 0
    assert out.strip() == f"{path}: 2 problems, 3 questions, 3 with answers, 4 bad lines skipped"
    assert err.splitlines() == [f"skipped {line}" for line in ds.errors]


def test_skip_invalid_with_no_good_line_is_an_error(tmp_path: Path, cli) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("nope\n[]\n")
    code, out, err = cli("data", "check", path, "--skip-invalid")
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"Error: {path}:1: not valid JSON (Expecting value, column 1)",
        f"Error: {path}:2: a line must be a JSON object",
        f"Error: {path}: no valid problems (every line is bad)",
    ]


# ---------------------------------------------------------------- recipes

YAML_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.sampled_from(["../x", "/abs", "a/b", ".hidden", "x.json", "", "a\x00b", "~", "C:\\x", "🙂", "1e400", ".nan", ".inf"]),
)
YAML_VALUE = st.recursive(
    YAML_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4)),
    max_leaves=12,
)
KEYS = {
    RoleRecipe: ["role", "name", "model", "dataset", "train", "merge", "serve", "distributed", "extends", "model.path", "model.source",
                 "dataset.name", "dataset.val_size", "serve.port", "serve.args", "serve.startup_timeout", "distributed.deepspeed", "train.lora_rank"],
    PipelineRecipe: ["data", "teacher", "inference", "data.train", "teacher.preload", "teacher.temperature", "teacher.concurrency",
                     "inference.mode", "inference.votes", "inference.timeout"],
}


def _nest(dotted: str, value: Any) -> dict:
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def check_load(path: Path, cls: type, overrides: list[str] = ()) -> None:
    try:
        loaded = load(path, cls, overrides)
    except UserError as e:
        assert e.lines and all(line.strip() and "\n" not in line for line in e.lines), e.lines
        return
    assert isinstance(loaded, Loaded) and isinstance(loaded.recipe, cls)
    json.dumps(loaded.raw, ensure_ascii=False, default=str).encode("utf-8")  # what manifests write


@FUZZ
@given(text=st.text(max_size=300))
def test_arbitrary_yaml_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check_load(path, RoleRecipe)


@FUZZ
@given(cls=st.sampled_from([RoleRecipe, PipelineRecipe]), data=st.data())
def test_arbitrary_mappings(tmp_path: Path, cls: type, data: st.DataObject) -> None:
    mapping: dict = {"role": "answer"} if cls is RoleRecipe and data.draw(st.booleans()) else {}
    for dotted in data.draw(st.lists(st.one_of(st.sampled_from(KEYS[cls]), st.text(max_size=8)), max_size=4)):
        mapping = {**mapping, **_nest(dotted, data.draw(YAML_VALUE))} if dotted else mapping
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(mapping, allow_unicode=True), encoding="utf-8", errors="surrogatepass")
    check_load(path, cls)


SET_ITEM = st.one_of(
    st.text(max_size=40),
    st.tuples(st.sampled_from(KEYS[RoleRecipe] + ["", ".", "a..b", "role.x"]), st.text(max_size=30)).map("=".join),
    st.tuples(st.sampled_from(KEYS[RoleRecipe]), YAML_VALUE.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip())).map("=".join),
)


@FUZZ
@given(items=st.lists(SET_ITEM, max_size=4))
def test_arbitrary_set_overrides(tmp_path: Path, items: list[str]) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("role: answer\n")
    for item in items:
        try:
            key, _ = parse_override(item)
        except UserError as e:
            assert len(e.lines) == 1 and e.lines[0].startswith("--set ")
        else:
            assert key and all(key.split("."))
    check_load(path, RoleRecipe, items)


def _bomb(levels: int, width: int = 10) -> str:
    lines = ["a0: &a0 [x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(["role: answer", "train:", *(f"  {line}" for line in lines)]) + "\n"


BOMBS = [
    ("billion laughs", _bomb(12), "aliases expand it beyond"),
    ("self-reference", "role: answer\ntrain:\n  x: &a [*a]\n", "an alias refers to itself"),
    ("mapping self-reference", "role: answer\nserve:\n  args: &a {k: *a}\n", "an alias refers to itself"),
]


@pytest.mark.parametrize("text, reason", [(t, r) for _, t, r in BOMBS], ids=[n for n, _, _ in BOMBS])
def test_alias_bombs_are_refused_quickly(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    start = time.process_time()  # CPU seconds of this process: other load on the machine does not count
    with pytest.raises(UserError) as info:
        load(path, RoleRecipe)
    assert time.process_time() - start < 2
    assert len(info.value.lines) == 1 and reason in info.value.lines[0] and info.value.lines[0].startswith(str(path))


@pytest.mark.parametrize(
    "item, reason",
    [("train.x=&a [*a]", "an alias refers to itself"), ("train.x=" + "[" * 2000, None), ("train.x=!!python/object:os.system x", None)],
)
def test_hostile_set_values(tmp_path: Path, item: str, reason: str | None) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("role: answer\n")
    try:
        loaded = load(path, RoleRecipe, [item])
    except UserError as e:
        assert reason is not None and reason in e.lines[0] and e.lines[0].startswith("--set")
    else:  # not YAML: kept as the text typed
        assert reason is None and loaded.recipe.train["x"] == item.partition("=")[2]


def test_benign_anchors_still_work(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("role: answer\ntrain:\n  learning_rate: &lr 1.0e-4\nmerge:\n  x: *lr\n")
    assert load(path, RoleRecipe).recipe.merge == {"x": 1.0e-4}


@pytest.mark.parametrize(
    "extends, reason",
    [
        ('"a\\0b"', "extends 'a\\x00b', which is not a usable path (embedded null byte)"),
        ("x" * 300, "which is not a usable path ([Errno 36] File name too long"),
        ("[1]", "extends must be the path of a parent recipe"),
        ("r.yaml", "extends itself"),
    ],
)
def test_odd_extends(tmp_path: Path, extends: str, reason: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(f"extends: {extends}\nrole: answer\n")
    with pytest.raises(UserError) as info:
        load(path, RoleRecipe)
    assert len(info.value.lines) == 1 and reason in info.value.lines[0]


# ---------------------------------------------------------------- templates: sandboxed and strict

ESCAPING_TEMPLATES = [
    ("{{ ''.__class__.__mro__ }}", "access to attribute '__class__' of 'str' object is unsafe."),
    ("{{ ''|attr('__class__') }}", "access to attribute '__class__' of 'str' object is unsafe."),
    ("{{ '{0.__class__}'.format('') }}", "access to attribute '__class__' of 'str' object is unsafe."),
    ("{{ cycler.__init__.__globals__ }}", "access to attribute '__init__' of 'type' object is unsafe."),
    ("{{ options.append('x') }}", "access to attribute 'append' of 'list' object is unsafe."),
    ("{{ range(10**9)|list|length }}", "OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000)."),
    ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
]


@pytest.mark.parametrize("text, reason", ESCAPING_TEMPLATES)
def test_template_cannot_escape_the_sandbox(tmp_path: Path, text: str, reason: str) -> None:
    from orchestrator.core.common.render import render

    (tmp_path / "t.j2").write_text(text)
    with pytest.raises(UserError) as info:
        render("t.j2", templates_dir=tmp_path, options=["a"])
    assert info.value.lines == [f"templates/t.j2: {reason}"]


def test_template_missing_value_names_it(tmp_path: Path) -> None:
    from orchestrator.core.common.render import render

    (tmp_path / "t.j2").write_text("{{ problem }}\n{{ questoin }}\n")
    with pytest.raises(UserError) as info:
        render("t.j2", templates_dir=tmp_path, problem="p", question="q")
    assert info.value.lines == ["templates/t.j2: 'questoin' is undefined (the template uses a value that is not given)"]


def test_template_values_are_not_templates(tmp_path: Path) -> None:
    from orchestrator.core.common.render import render

    (tmp_path / "t.j2").write_text("{{ problem }}")
    assert render("t.j2", templates_dir=tmp_path, problem="{{ 7 * 7 }}{% raw %}") == "{{ 7 * 7 }}{% raw %}"


@pytest.mark.parametrize("writer", ["json", "jsonl"])
def test_atomic_json_writers_keep_any_text(tmp_path: Path, writer: str) -> None:
    from orchestrator.core.common.files import atomic_write_json, atomic_write_jsonl

    row = {"reply": "半个表情\ud83d", "\\": "\\\udc00"}  # before the fix: UnicodeEncodeError, nothing written
    path = tmp_path / f"out.{writer}"
    if writer == "json":
        atomic_write_json(path, row)
        assert json.loads(path.read_bytes()) == row
    else:
        atomic_write_jsonl(path, [row, row])
        assert [json.loads(line) for line in path.read_bytes().splitlines()] == [row, row]
    assert not list(tmp_path.glob(".*.tmp"))
