"""The ledger, the resume point of distill and infer: what was computed is kept, a torn tail
is cut, the last record of a key wins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core.common.ledger import Ledger, read_records, stable_key


ANY_TEXT = st.one_of(st.text(max_size=20), st.text(st.characters(categories=["Cs", "L", "So"]), max_size=5))  # lone surrogates too
RECORD_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), ANY_TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(ANY_TEXT, inner, max_size=3)),
    max_leaves=8,
)


@FUZZ
@given(values=st.lists(RECORD_VALUE, min_size=1, max_size=5), cut=st.integers(min_value=0))
def test_ledger_keeps_every_complete_record(tmp_path: Path, values: list[Any], cut: int) -> None:
    """Any reply text survives a write and a re-read (before the fix a lone surrogate raised
    UnicodeEncodeError in append); a crash mid-line loses that line only."""
    path = tmp_path / "ledger.jsonl"
    path.unlink(missing_ok=True)
    sizes = []
    with Ledger(path) as ledger:
        for i, value in enumerate(values):
            ledger.append({"key": f"k{i}", "value": value})
            sizes.append(path.stat().st_size)
    assert {k: r["value"] for k, r in Ledger(path).records.items()} == {f"k{i}": v for i, v in enumerate(values)}
    cut %= sizes[-1] + 1  # a crash after `cut` bytes
    with path.open("rb+") as f:
        f.truncate(cut)
    complete = sum(size <= cut for size in sizes)
    reopened = Ledger(path)
    assert sorted(reopened.records) == sorted(f"k{i}" for i in range(complete))
    reopened.append({"key": "after", "value": 1})  # appends go on a clean line
    assert "after" in Ledger(path).records and len(Ledger(path)) == complete + 1


@pytest.mark.parametrize("content, records", [
    (b"", []),
    (b'{"key": "a", "v": 1}\n', [{"key": "a", "v": 1}]),
    (b'{"key": "a", "v": 1}\n{"key": "b"', [{"key": "a", "v": 1}]),  # a torn tail
    (b'not json\n[1, 2]\n{"key": "a"}\n', [{"key": "a"}]),  # a line that is not an object
    (b'{"key": "a", "v": 1}\n{"key": "a", "v": 2}\n', [{"key": "a", "v": 1}, {"key": "a", "v": 2}]),
])
def test_read_records(tmp_path: Path, content: bytes, records: list[dict]) -> None:
    path = tmp_path / "l.jsonl"
    path.write_bytes(content)
    assert list(read_records(path)) == records


def test_the_last_record_of_a_key_wins_and_a_torn_tail_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    path.write_bytes(b'{"key": "a", "v": 1}\n{"key": "a", "v": 2}\n{"id": "x"}\n{"key": "b", "v"')
    ledger = Ledger(path)
    assert ledger.records == {"a": {"key": "a", "v": 2}} and "a" in ledger and ledger.get("b") is None
    assert path.read_bytes().endswith(b'{"id": "x"}\n')  # the torn line is gone from the file too
    by_id = Ledger(path, key_field="id")
    assert list(by_id.records) == ["x"]


def test_stable_key_ignores_the_order_of_its_parts() -> None:
    assert stable_key(a=1, b=[2, "x"]) == stable_key(b=[2, "x"], a=1) != stable_key(a=1, b=[2, "y"])
