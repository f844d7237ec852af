"""The tables and the picture `score` and `compare` write."""

from __future__ import annotations

import pytest

from orchestrator.core.common.report import md_table, save_png, text_table


@pytest.mark.parametrize("align, rule", [("", "|---|---|"), ("lr", "|---|---:|"), ("r", "|---:|---|")])
def test_md_table(align, rule):
    assert md_table(["a", "b"], [["x", "1"]], align) == ["| a | b |", rule, "| x | 1 |"]


def test_text_table_aligns_the_first_column_left_and_the_others_right():
    assert text_table(["run", "n"], [["a", "10"], ["bbb", "2"]]) == ["run   n", "a    10", "bbb   2"]


def test_save_png_writes_the_whole_picture_and_no_temporary_file(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().bar(["a"], [1])
    path = save_png(fig, tmp_path / "out" / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["p.png"]
