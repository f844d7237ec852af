"""One way to override: every flag that names a recipe key is the `--set` docs/commands.md says it
is, every command that reads a recipe takes `--set`, and `--recipe` is the role recipe everywhere."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest

from helpers import REPO
from orchestrator.cli import cli as root
from orchestrator.cli.aliases import ALIASES, MODEL_FLAGS, flag_of, given_aliases

# a value for each key the aliases set, as click hands it over (typed), and as `--set` text
VALUES: dict[str, Any] = {
    "data.train": "datasets/sample/test.jsonl",
    "data.test": "datasets/sample/train.jsonl",
    "data.gold": "datasets/sample/train.jsonl",
    "teacher.base_url": "http://127.0.0.1:9/v1",
    "teacher.model": "my-teacher",
    "teacher.concurrency": 3,
    "inference.mode": "pipelined",
    "inference.evaluate_url": "http://127.0.0.1:9/v1",
    "inference.evaluate_model": "judge",
    "inference.concurrency": 5,
    "inference.votes": 3,
    "serve.port": 8123,
    "serve.host": "0.0.0.0",
}
# what each command needs besides the flag to parse (no work is done: only its arguments are read)
BASE: dict[str, list[str]] = {"distill": [], "dataset": ["answer"], "infer": ["--out-dir", "out"],
                              "score": ["runs/x/submission.jsonl"], "serve": ["answer"]}
CASES = [(command, flag, key) for command, table in ALIASES.items() for flag, key in table.items()]


def commands(group: click.Group = root, prefix: str = "") -> dict[str, click.Command]:
    """Every command of the CLI by its full name (`data check`, `runs prune`, ...)."""
    out: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out.update(commands(command, f"{prefix}{name} "))
        out[f"{prefix}{name}"] = command
    return out


def flags(command: click.Command) -> set[str]:
    return {flag_of(p) for p in command.params}


def dotted(recipe: Any, key: str) -> Any:
    value = recipe
    for part in key.split("."):
        value = getattr(value, part)
    return value


def recipe_of(key: str, sets: tuple[str, ...] = ()):
    from orchestrator.core.recipes.loading import load_pipeline, load_role
    from orchestrator.core.recipes.schema import RoleRecipe

    if key.split(".")[0] in RoleRecipe.model_fields:
        return load_role("answer", "recipes/tiny-answer.yaml", sets)
    return load_pipeline("recipes/tiny-pipeline.yaml", sets)


@pytest.mark.parametrize(("command", "flag", "key"), CASES, ids=[f"{c} {f}" for c, f, _ in CASES])
def test_each_alias_is_the_set_it_documents(project: Path, command: str, flag: str, key: str) -> None:
    from orchestrator.core.recipes.loading import with_flags

    value = VALUES[key]
    cmd = commands()[command]
    args = [*BASE[command], str(value)] if flag.isupper() else [*BASE[command], flag, str(value)]
    with cmd.make_context(command, args) as ctx, ctx.scope():
        folded = given_aliases()
    assert set(folded) == {key}
    by_flag = with_flags(recipe_of(key), folded)
    by_set = recipe_of(key, (f"{key}={value}",))
    assert dotted(by_flag.recipe, key) == dotted(by_set.recipe, key) == value
    assert by_flag.origin[key] == flag and by_set.origin[key] == "--set"


@pytest.mark.parametrize(("command", "table"), [*ALIASES.items(), *MODEL_FLAGS.items()])
def test_each_alias_is_a_flag_of_its_command(command: str, table: dict[str, str]) -> None:
    assert set(table) <= flags(commands()[command])


@pytest.mark.parametrize("command", ALIASES)
def test_each_command_with_aliases_folds_them_through_the_table(command: str) -> None:
    import inspect

    callback = commands()[command].callback
    assert callback is not None and "given_aliases(" in inspect.getsource(inspect.unwrap(callback))


# the commands that read a recipe but take no --set, and why
NO_SET = {"recipe import": "its --recipe is the recipe the one it writes extends, read as it is"}


def test_every_command_that_reads_a_recipe_takes_set() -> None:
    reading = {name for name, command in commands().items() if flags(command) & {"--recipe", "--pipeline"}}
    assert {"render", "check", "distill", "dataset", "preference", "train", "merge", "serve", "webui", "chat",
            "weights", "download", "infer", "eval", "score", "package", "run", "recipe import"} <= reading
    assert {name for name in reading if "--set" not in flags(commands()[name])} == set(NO_SET)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["render", "answer", "--set", "teacher.keep=all"], "a key of the other kind of recipe"),
        (["train", "answer", "--set", "inference.votes=3"], "a key of the other kind of recipe"),
        (["score", "x.jsonl", "--set", "train.learning_rate=1"], "a key of the other kind of recipe"),
        (["check", "answer", "--set", "teachr.keep=all"], "did you mean teacher?"),
    ],
)
def test_a_key_of_a_recipe_the_command_does_not_read_is_refused(project: Path, cli, args: list[str], said: str) -> None:
    code, _, err = cli(*args)
    assert code == 2 and err.startswith("Error: --set ") and said in err


TABLE_ROW = re.compile(r"^\| `([a-z ]+)` \| `([^ `]+)[^`]*` \| (.*) \|$")


def test_the_docs_table_is_the_code_table() -> None:
    text = (REPO / "docs" / "commands.md").read_text(encoding="utf-8")
    section = text[text.index("### Flags that are a `--set`"):text.index("\n## ", text.index("### Flags that are"))]
    rows = [TABLE_ROW.match(line) for line in section.splitlines() if line.startswith("| `")]
    assert rows and all(rows)
    documented = {}
    for row in rows:
        set_ = re.match(r"`--set ([a-z_.]+)=", row.group(3))
        if set_ is None:
            assert row.group(1) == "run"  # run --recipe: make's RECIPE=, no key
            continue
        documented[(row.group(1), row.group(2))] = set_.group(1)
    code = {(c, f): k for tables in (ALIASES, MODEL_FLAGS) for c, table in tables.items() for f, k in table.items()}
    assert documented == code


@pytest.mark.parametrize("command", ["distill", "infer", "score", "eval", "package"])
def test_recipe_where_it_named_the_pipeline_recipe_says_to_spell_it_pipeline(project: Path, cli, command: str) -> None:
    args = {"infer": ["--out-dir", "out"], "score": ["x.jsonl"], "package": ["--out", "out"]}.get(command, [])
    # a key no recipe has: the command stops once it has read its recipes, having done nothing
    code, _, err = cli(command, *args, "--recipe", "recipes/tiny-pipeline.yaml", "--set", "teacher.nope=1")
    assert err.splitlines()[0] == (f"[{command}] --recipe names the pipeline recipe here: spell it --pipeline "
                                   "(--recipe will mean the role recipe)")
    assert code == 2 and "Error: " in err and "teacher.nope" in err
    code, _, err = cli(command, *args, "--recipe", "recipes/tiny-pipeline.yaml", "--pipeline", "recipes/pipeline.yaml")
    assert code == 2 and err == (f"Error: --recipe and --pipeline both name the pipeline recipe of {command}: "
                                 "give --pipeline alone\n")


MODEL_CASES = [  # (flag, the resolve_models argument it is, value)
    ("--answer-url", "answer_urls", "http://127.0.0.1:9/v1"),
    ("--answer-model", "answer_names", "served-name"),
    ("--answer-recipe", "answer_recipes", "recipes/tiny-answer-b.yaml"),
    ("--evaluate-recipe", "evaluate_recipe", "recipes/evaluate.yaml"),
]


@pytest.mark.parametrize(("flag", "argument", "value"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_each_model_flag_given_once_is_its_set(project: Path, flag: str, argument: str, value: str) -> None:
    from orchestrator.core.recipes.loading import load_pipeline
    from orchestrator.core.serving.inference_models import resolve_models

    def models(inference: Any) -> list[tuple[Any, ...]]:  # a recipe file as the file it names
        def file(name: str | None) -> Path | None:
            return None if name is None else (project / name).resolve()
        return [*((m.url, m.model, file(m.recipe)) for m in inference.answer_models), file(inference.evaluate_recipe)]

    key = MODEL_FLAGS["infer"][flag]
    given = [value] if argument != "evaluate_recipe" else value
    by_flag = resolve_models(load_pipeline("recipes/tiny-pipeline.yaml"), (), **{argument: given})
    by_set = resolve_models(load_pipeline("recipes/tiny-pipeline.yaml", (f"{key}={value}",)), ())
    assert models(by_flag.pipeline.recipe.inference) == models(by_set.pipeline.recipe.inference)
    assert value in str(models(by_flag.pipeline.recipe.inference))
