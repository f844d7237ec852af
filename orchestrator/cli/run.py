"""`orchestrator run TARGET... [NAME=VALUE...]`: the one planner (stages/run.py): every stage the
targets need, in one process, each run only when its inputs changed by content, saying why."""

from __future__ import annotations

import click

from orchestrator.cli.options import echo_err


@click.command("run")
@click.argument("targets", nargs=-1, required=True, metavar="TARGET... [NAME=VALUE...]")
@click.option("--dry-run", is_flag=True, help="Print the plan and why each stage runs; write nothing.")
@click.option("--recipe", help="The recipe set (tiny) or one Answer recipe file: RECIPE=.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key for every stage that reads it (by its first part: role or pipeline recipe).")
@click.option("--ignore-state", is_flag=True, help="Neither read nor write the project state (make demo).")
@click.option("--question", is_flag=True,
              help="Exit 0 when nothing would run, 1 when a stage would; print and write nothing (make -q).")
def run(targets: tuple[str, ...], dry_run: bool, recipe: str | None, overrides: tuple[str, ...],
        ignore_state: bool, question: bool) -> None:
    """Plan the stages the targets need and run those whose inputs changed (by content).

    TARGET: answer-model, evaluate-model, infer, score, all, eval, package, check, webui, or one
    stage (distill, dataset-answer, train-evaluate, merge-answer...). NAME=VALUE: RECIPE,
    ANSWER_RECIPE, EVALUATE_RECIPE, PIPELINE, TRAIN, TEST, GOLD, TEACHER_URL, TEACHER_MODEL,
    TEACHER_KEY_ENV, LIMIT (kept in .orchestrator/state.yaml for the next call; NAME= for the
    recipe's own), OUT, ROLE, PORT (this call only).

    \b
    orchestrator run all RECIPE=tiny
    orchestrator run answer-model --dry-run       # what would run, and why
    orchestrator run all --question               # exit 0: nothing to run (make -q all)
    orchestrator run all TRAIN=data/train.jsonl TEACHER_URL=http://127.0.0.1:8000/v1 LIMIT=3
    """
    from orchestrator.cli import cli
    from orchestrator.stages.run import run_targets

    names = [t for t in targets if "=" not in t]
    given = dict(t.partition("=")[::2] for t in targets if "=" in t)
    if recipe is not None:
        given["RECIPE"] = recipe
    if not names:
        raise click.UsageError("name a target, e.g. `orchestrator run all RECIPE=tiny`")
    decisions = run_targets(
        names, given, overrides, dry_run=dry_run or question, ignore_state=ignore_state,
        say=quiet if question else click.echo, note=quiet if question else echo_err,
        run_stage=lambda command: cli.main(args=command, prog_name="orchestrator", standalone_mode=False))
    if question and any(decision.runs for decision in decisions):
        click.get_current_context().exit(1)


def quiet(line: str) -> None:
    """--question prints nothing (its answer is the exit code; an error is still its Error line)."""


COMMANDS = [run]
