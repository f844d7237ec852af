"""The project remembers its data: `make -n` plans (the recipes' files read by `orchestrator
make-vars`, nothing trained) after an own-data call, a bare call, an edit of a data file."""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml
from helpers import make, make_train, with_makefile

OWN = ("TRAIN=data/train.jsonl", "TEST=data/test.jsonl", "GOLD=data/gold.jsonl",
       "TEACHER_URL=http://127.0.0.1:9/v1", "TEACHER_MODEL=mine", "LIMIT=3")


def own_project(project: Path) -> Path:
    with_makefile(project)
    (project / "data").mkdir()
    for name in ("train", "test", "gold"):
        make_train(project / f"data/{name}.jsonl", problems=2)
    return project


def plan(project: Path, *args: str) -> tuple[str, str]:
    done = make(project, "-n", *args, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr


def test_a_bare_call_keeps_the_data_of_the_last_one(project: Path) -> None:
    own_project(project)
    out, err = plan(project, "all", "RECIPE=tiny", *OWN)
    assert ("orchestrator distill --recipe recipes/tiny-pipeline.yaml --set data.train=data/train.jsonl "
            "--set data.test=data/test.jsonl --set data.gold=data/gold.jsonl") in out
    assert "--limit 30" in out  # LIMIT=3: the first 30 training problems
    assert "orchestrator infer --out-dir runs/tiny-infer-test " in out  # named by its test file
    assert "last make call" not in err

    out, err = plan(project, "package", "RECIPE=tiny")  # the README's package line, nothing given
    assert ("make: TRAIN=data/train.jsonl TEST=data/test.jsonl GOLD=data/gold.jsonl "
            "TEACHER_URL=http://127.0.0.1:9/v1 TEACHER_MODEL=mine LIMIT=3 (from the last make call; "
            "give NAME=VALUE to change one, NAME= for the recipe's own)") in err
    assert "orchestrator package --out runs/tiny-image --recipe recipes/tiny-pipeline.yaml --set data.train=data/train.jsonl" in out
    assert "datasets/sample" not in out

    out, err = plan(project, "all", "RECIPE=tiny", "TRAIN=", "LIMIT=")  # back to the recipe's training file
    assert "make: TRAIN= LIMIT= given: the recipe's own value from now on (it was TRAIN=data/train.jsonl LIMIT=3)" in err
    assert "--set data.train" not in out and "--limit" not in out
    assert "--set data.test=data/test.jsonl" in out  # still kept

    out, err = plan(project, "all", "RECIPE=tiny", "PIPELINE=recipes/tiny-pipeline.yaml")  # a recipe names its data
    assert ("make: PIPELINE=recipes/tiny-pipeline.yaml names its own data and teacher: TEST=data/test.jsonl "
            "GOLD=data/gold.jsonl TEACHER_URL=http://127.0.0.1:9/v1 TEACHER_MODEL=mine of the last make call "
            "no longer apply") in err
    assert "--set" not in out and "orchestrator infer --out-dir runs/tiny-infer " in out  # the sample's folder


def test_a_data_file_that_is_not_there_is_not_kept(project: Path) -> None:
    own_project(project)
    plan(project, "all", "RECIPE=tiny", "TRAIN=data/train.jsonl")
    # a typo: this call names it (the distil's error will say so), the next call does not
    out, err = plan(project, "all", "RECIPE=tiny", "TRAIN=data/trian.jsonl", "GOLD=data/gold.jsonl")
    assert "make: TRAIN=data/trian.jsonl: no such file, so not kept for the next make call" in err
    assert "--set data.train=data/trian.jsonl" in out
    out, err = plan(project, "all", "RECIPE=tiny")
    assert "make: TRAIN=data/train.jsonl GOLD=data/gold.jsonl (from the last make call;" in err
    assert "trian" not in out + err


def test_the_demo_reads_the_sample_and_keeps_the_project_data(project: Path) -> None:
    own_project(project)
    plan(project, "all", "RECIPE=tiny", *OWN)
    out, err = plan(project, "demo")
    assert "--set" not in out and "orchestrator infer --out-dir runs/tiny-infer " in out
    assert "last make call" not in err
    # the base model before `check` reads it: no "no base model" warning
    assert out.index("orchestrator tiny-model") < out.index("orchestrator check answer")
    out, _ = plan(project, "all", "RECIPE=tiny")
    assert "--set data.train=data/train.jsonl" in out


def stamp(project: Path, files: list[str], start: float) -> None:
    for i, name in enumerate(files):
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.utime(path, (start + i, start + i))


# make all RECIPE=tiny's targets, in the order make builds them
TARGETS = [".make/train", ".make/test", ".make/gold", "runs/distill/.done", "datasets/train_answer_instruct.json",
           "datasets/train_evaluate_instruct.json", "models/tiny-qwen2/config.json",
           "runs/tiny-answer/adapter/adapter_model.safetensors", "runs/tiny-evaluate/adapter/adapter_model.safetensors",
           "runs/tiny-answer/merged/config.json", "runs/tiny-evaluate/merged/config.json",
           "runs/tiny-infer/submission.jsonl", "runs/tiny-infer/report.md"]


def test_an_edit_of_a_data_file_the_recipe_names_re_runs_what_reads_it(project: Path) -> None:
    with_makefile(project)
    (project / "fixes.yaml").write_text("t0#0: drop\n", encoding="utf-8")
    (project / "extra.jsonl").write_text('{"instruction": "q", "input": "", "output": "a"}\n', encoding="utf-8")
    pipeline = project / "recipes/tiny-pipeline.yaml"
    pipeline.write_text(pipeline.read_text() + "data:\n  fixes: fixes.yaml\n", encoding="utf-8")
    answer = project / "recipes/tiny-answer.yaml"
    recipe = yaml.safe_load(answer.read_text(encoding="utf-8"))
    recipe.setdefault("dataset", {})["extra"] = {"more": "extra.jsonl"}
    answer.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    old = time.time() - 1000
    for path in [*project.glob("recipes/*.yaml"), *project.glob("datasets/sample/*"), *project.glob("*.yaml"),
                 *project.glob("*.jsonl")]:
        os.utime(path, (old, old))
    plan(project, "all", "RECIPE=tiny")  # writes .make/*
    stamp(project, TARGETS, old + 100)
    out, _ = plan(project, "all", "RECIPE=tiny")
    assert "orchestrator" not in out  # all up to date

    edits = {  # file -> the first command its edit re-runs, and one it must not
        "datasets/sample/test_gold.jsonl": ("orchestrator score", "orchestrator infer"),
        "datasets/sample/test.jsonl": ("orchestrator infer", "orchestrator train"),
        "fixes.yaml": ("orchestrator distill", None),
        "extra.jsonl": ("orchestrator train answer", "orchestrator distill"),
        "datasets/sample/train.jsonl": ("orchestrator distill", None),
    }
    for name, (runs, not_runs) in edits.items():
        stamp(project, TARGETS, old + 100)
        stamp(project, [name], old + 200)
        out, _ = plan(project, "all", "RECIPE=tiny")
        assert runs in out, name
        assert not_runs is None or not_runs not in out, name
        os.utime(project / name, (old, old))
