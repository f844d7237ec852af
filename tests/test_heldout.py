"""`orchestrator eval`: the held-out problems answered and scored, and a changed split refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from test_compare import write_file

from orchestrator.files import file_hash

SHAPE = [2, 1, 3]  # p000 p001 p002


def setup_split(project: Path, held: list[str], splits: dict[str, dict | None]) -> Path:
    """datasets/val.jsonl holding `held` problems, and a manifest per role with its split."""
    val = write_file(project / "datasets/val.jsonl", SHAPE, {f"p{i:03d}#{j}": "A" for i, n in enumerate(SHAPE)
                                                           for j in range(n)})
    lines = [line for line in val.read_text().splitlines() if json.loads(line)["id"] in held]
    val.write_text("\n".join(lines) + "\n")
    for role, split in splits.items():
        (project / "runs" / role).mkdir(parents=True, exist_ok=True)
        manifest = {"role": role, "data": {"dataset": {"dataset": f"train_{role}_instruct", "split": split}}}
        (project / "runs" / role / "manifest.json").write_text(json.dumps(manifest))
    return val


def split(held: list[str], val: Path | None = None, seed: int = 0) -> dict:
    record = {"val_size": 0.2, "seed": seed, "val_problems": held}
    return record | ({"val_hash": file_hash(val)} if val else {})


HELD = ["p000", "p002"]

# (what the manifests say, what the error says)
REFUSALS = [
    pytest.param("no-val", "datasets/val.jsonl does not exist: no problems were held out; set dataset.val_size",
                 id="no-val-file"),
    pytest.param({"answer": split(HELD)}, "runs/evaluate/manifest.json does not exist: train the evaluate model",
                 id="untrained"),
    pytest.param({"answer": None, "evaluate": split(HELD)},
                 "the answer model (runs/answer/manifest.json) was trained without held-out problems", id="no-split"),
    pytest.param({"answer": split(HELD), "evaluate": split(["p000", "p001"], seed=4)},
                 "datasets/val.jsonl changed since the evaluate model (runs/evaluate/manifest.json) was trained "
                 "(held out 2 problems with seed 4, val_size 0.2; the file now holds 2, 1 of them trained on)",
                 id="other-seed"),
    pytest.param({"answer": split(HELD) | {"val_hash": "0" * 16}, "evaluate": split(HELD)},
                 "(same problems, other content)", id="edited-file"),
]


@pytest.mark.parametrize("manifests, message", REFUSALS)
def test_changed_split_is_refused_with_the_reason(project: Path, cli, manifests, message: str) -> None:
    if manifests == "no-val":
        manifests = {"answer": split(HELD), "evaluate": split(HELD)}
        setup_split(project, HELD, manifests)
        (project / "datasets/val.jsonl").unlink()
    else:
        setup_split(project, HELD, manifests)
    code, _, err = cli("eval", "--set", "inference.answer_url=http://127.0.0.1:9/v1")
    assert code == 2 and err.startswith("Error: ") and message in err, err
    assert not (project / "runs/eval").exists()  # refused before anything ran


def test_eval_answers_and_scores_the_held_out_problems(project: Path, cli) -> None:
    val = setup_split(project, HELD, {})
    setup_split(project, HELD, {"answer": split(HELD, val), "evaluate": split(HELD, val)})
    with FakeOpenAI(models=("ans",), reply=lambda p, r: "答案是：A") as answer, FakeOpenAI(models=("ev",)) as ev:
        code, out, err = cli("eval", "--set", f"inference.answer_url={answer.url}",
                             "--set", f"inference.evaluate_url={ev.url}")
    assert code == 0, err
    submission = [json.loads(line) for line in (project / "runs/eval/submission.jsonl").read_text().splitlines()]
    assert [p["id"] for p in submission] == HELD
    by_question = next(line.split() for line in out.splitlines() if line.startswith("by question"))
    assert by_question[3] == "5"  # the 5 held-out questions, scored against their own answers
    assert (project / "runs/eval/report.md").exists()
    assert json.loads((project / "runs/eval/score.json").read_text())["gold"] == str(val.resolve())
