"""`orchestrator eval`: the held-out problems answered and scored, and a changed split refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from helpers import write_file

from orchestrator.core.common.files import file_hash
from orchestrator.core.recipes.loading import load_role

SHAPE = [2, 1, 3]  # p000 p001 p002


def variant(role: str) -> str:
    """The run folder of the role's model under HOLD_OUT: a --set of dataset.val_size is a variant
    (runs/<role>@<hash>/, never the recipe's own model), trained and evaluated with the same --set."""
    return load_role(role, None, [HOLD_OUT[1]]).recipe.run_name


def val_file() -> str:
    """The variant's own held-out problems (datasets/val.<hash>.jsonl, its built sets' hash): a
    --set variant never rewrites the recipe's datasets/val.jsonl."""
    return f"datasets/val.{load_role('answer', None, [HOLD_OUT[1]]).recipe.dataset_variant}.jsonl"


def setup_split(project: Path, held: list[str], splits: dict[str, dict | None]) -> Path:
    """The variant's val file holding `held` problems, and a manifest per role's variant with its split."""
    val = write_file(project / val_file(), SHAPE, {f"p{i:03d}#{j}": "A" for i, n in enumerate(SHAPE)
                                                           for j in range(n)})
    lines = [line for line in val.read_text().splitlines() if json.loads(line)["id"] in held]
    val.write_text("\n".join(lines) + "\n")
    for role, split in splits.items():
        (project / "runs" / variant(role)).mkdir(parents=True, exist_ok=True)
        manifest = {"role": role, "data": {"dataset": {"dataset": f"train_{role}_instruct", "split": split}}}
        (project / "runs" / variant(role) / "manifest.json").write_text(json.dumps(manifest))
    return val


def split(held: list[str], val: Path | None = None, seed: int = 0) -> dict:
    record = {"val_size": 0.2, "seed": seed, "val_problems": held}
    return record | ({"val_hash": file_hash(val)} if val else {})


HELD = ["p000", "p002"]
HOLD_OUT = ("--set", "dataset.val_size=0.2")  # the shipped answer.yaml holds none out

# (what the manifests say, what the error says)
REFUSALS = [
    pytest.param("no-val", "{val} does not exist: no problems were held out; set dataset.val_size",
                 id="no-val-file"),
    pytest.param({"answer": split(HELD)}, "runs/{evaluate}/manifest.json does not exist: train the evaluate model",
                 id="untrained"),
    pytest.param({"answer": None, "evaluate": split(HELD)},
                 "the answer model (runs/{answer}/manifest.json) was trained without held-out problems", id="no-split"),
    pytest.param({"answer": split(HELD), "evaluate": split(["p000", "p001"], seed=4)},
                 "{val} changed since the evaluate model (runs/{evaluate}/manifest.json) was trained "
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
        (project / val_file()).unlink()
    else:
        setup_split(project, HELD, manifests)
    code, _, err = cli("eval", *HOLD_OUT, "--set", "inference.answer_url=http://127.0.0.1:9/v1")
    message = message.format(answer=variant("answer"), evaluate=variant("evaluate"), val=val_file())
    assert code == 2 and err.startswith("Error: ") and message in err, err
    assert not (project / "runs/eval").exists()  # refused before anything ran


def test_eval_answers_and_scores_the_held_out_problems(project: Path, cli) -> None:
    val = setup_split(project, HELD, {})
    setup_split(project, HELD, {"answer": split(HELD, val), "evaluate": split(HELD, val)})
    with FakeOpenAI(models=("ans",), reply=lambda p, r: "答案是：A") as answer, FakeOpenAI(models=("ev",)) as ev:
        code, out, err = cli("eval", *HOLD_OUT, "--set", f"inference.answer_url={answer.url}",
                             "--set", f"inference.evaluate_url={ev.url}")
    assert code == 0, err
    run = project / f"runs/eval@{variant('answer').partition('@')[2]}"  # the --set variant's models' own
    assert f"[eval] in {run.relative_to(project)}: the models of a --set variant" in err
    submission = [json.loads(line) for line in (run / "submission.jsonl").read_text().splitlines()]
    assert [p["id"] for p in submission] == HELD
    by_question = next(line.split() for line in out.splitlines() if line.startswith("by question"))
    assert by_question[3] == "5"  # the 5 held-out questions, scored against their own answers
    assert (run / "report.md").exists() and not (project / "runs/eval").exists()
    assert json.loads((run / "score.json").read_text())["gold"] == val_file()  # project-relative


# recipe values (--set, or recipes of one's own) -> eval --check-only's answer; the same Error
# eval gives, with no model trained and no val.jsonl
CHECKS = [
    pytest.param([], None, None, "Error: recipes/answer.yaml: dataset.val_size is 0 for the answer model, so no "
                 "problems are held out to evaluate on; set dataset.val_size (e.g. 0.1)", id="shipped-recipes"),
    pytest.param(["--set", "dataset.val_size=0"], None, None, "Error: --set: dataset.val_size is 0 for the answer "
                 "model (recipes/answer.yaml)", id="set-to-0"),
    pytest.param(HOLD_OUT, None, "dataset: {seed: 7}", "Error: the models would hold out different problems "
                 "(recipes/answer.yaml val_size 0.2 seed 0, my-evaluate.yaml val_size 0.2 seed 7)", id="other-seed"),
    pytest.param([], "dataset: {val_size: 0.1}", "dataset: {seed: 0}", "Error: recipes/answer.yaml: dataset.val_size is 0 for the "
                 "evaluate model (my-evaluate.yaml)", id="evaluate-holds-none-out"),
    pytest.param([], "dataset: {val_size: 0.1}", "dataset: {val_size: 0.1}", "eval can run: the models hold out "
                 "problems (dataset.val_size 0.1, seed 0)", id="own-recipes"),
    pytest.param(HOLD_OUT, None, None, "eval can run: the models hold out problems (dataset.val_size 0.2, seed 0)",
                 id="set"),
]


@pytest.mark.parametrize("sets, answer, evaluate, message", CHECKS)
def test_check_only_refuses_what_eval_would(project: Path, cli, sets: tuple, answer: str | None,
                                            evaluate: str | None, message: str) -> None:
    extra: list[str] = []
    if answer:
        (project / "my-answer.yaml").write_text(f"extends: recipes/answer.yaml\n{answer}\n")
        extra += ["--answer-recipe", "my-answer.yaml"]
    if evaluate:
        (project / "my-evaluate.yaml").write_text(f"extends: recipes/evaluate.yaml\n{evaluate}\n")
        extra += ["--evaluate-recipe", "my-evaluate.yaml"]
    code, out, err = cli("eval", "--check-only", *sets, *extra)
    assert code == (0 if message.startswith("eval can run") else 2), err
    assert message in (out if code == 0 else err), err
    assert err.count("\n") <= 1 and "Traceback" not in err
    if code == 2:  # eval itself says the same before looking for trained models
        assert cli("eval", *sets, *extra)[2] == err
    assert not (project / "runs").exists() and not (project / "datasets/val.jsonl").exists()


def test_check_only_checks_the_split_of_trained_models(project: Path, cli) -> None:
    """Models trained already: --check-only refuses what eval would refuse next, not `eval can run`."""
    for role in ("answer", "evaluate"):
        (project / "runs" / variant(role)).mkdir(parents=True)
        (project / "runs" / variant(role) / "manifest.json").write_text('{"data": {}}')
    code, out, err = cli("eval", "--check-only", *HOLD_OUT)
    assert (code, out) == (2, "")
    assert err.startswith(f"Error: {val_file()} does not exist: no problems were held out")
    assert cli("eval", *HOLD_OUT)[2] == err


def test_a_variants_eval_goes_beside_the_recipes_own(project: Path) -> None:
    """`eval --set` of a role key: the variant's models, scored into runs/eval@<hash> by default, as
    the planner's variant calls are; runs/eval stays the recipes' own."""
    from orchestrator.core.recipes.loading import load_pipeline
    from orchestrator.core.serving.inference_models import resolve_models
    from orchestrator.stages.evaluate import default_out_dir

    def out_dir(*sets: str) -> str:
        return default_out_dir(resolve_models(load_pipeline(None), sets, trained=True))

    assert out_dir() == "runs/eval"
    assert out_dir(HOLD_OUT[1]) == f"runs/eval@{variant('answer').partition('@')[2]}"
