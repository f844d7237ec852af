"""`orchestrator run TARGET... [NAME=VALUE...]`: the one planner (stages/run.py): every stage the
targets need, in one process, each run only when its inputs changed by content, saying why."""

from __future__ import annotations

import shlex
from contextlib import nullcontext

import click

from orchestrator.cli.options import echo_err


@click.command("run")
@click.argument("targets", nargs=-1, required=True, metavar="TARGET... [NAME=VALUE...]")
@click.option("--dry-run", is_flag=True, help="Print the plan and why each stage runs; write nothing.")
@click.option("--recipe", help="The recipe set (tiny) or one Answer recipe file: RECIPE=.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key for every stage that reads it (by its first part: role or pipeline recipe).")
@click.option("--ignore-state", is_flag=True, help="Neither read nor write the project state (make demo).")
def run(targets: tuple[str, ...], dry_run: bool, recipe: str | None, overrides: tuple[str, ...],
        ignore_state: bool) -> None:
    """Plan the stages the targets need and run those whose inputs changed (by content).

    TARGET: answer-model, evaluate-model, infer, score, all, eval, package, check, webui, or one
    stage (distill, dataset-answer, train-evaluate, merge-answer...). NAME=VALUE: RECIPE,
    ANSWER_RECIPE, EVALUATE_RECIPE, PIPELINE, TRAIN, TEST, GOLD, TEACHER_URL, TEACHER_MODEL,
    TEACHER_KEY_ENV, LIMIT (kept in .orchestrator/state.yaml for the next call; NAME= for the
    recipe's own), OUT, ROLE, PORT (this call only).

    \b
    orchestrator run all RECIPE=tiny
    orchestrator run answer-model --dry-run       # what would run, and why
    orchestrator run all TRAIN=data/train.jsonl TEACHER_URL=http://127.0.0.1:8000/v1 LIMIT=3
    """
    from orchestrator.cli import cli
    from orchestrator.core.project.plan import finished, judge
    from orchestrator.core.project.state import SETTINGS, ignoring, resolve, state_path, using, write_state, SHOWN
    from orchestrator.core.recipes.overrides import MAKE_VARIABLES_ENV
    from orchestrator.stages.run import before_running, make_call, output_identity, plan

    names = [t for t in targets if "=" not in t]
    given = dict(t.partition("=")[::2] for t in targets if "=" in t)
    if recipe is not None:
        given["RECIPE"] = recipe
    if not names:
        raise click.UsageError("name a target, e.g. `orchestrator run all RECIPE=tiny`")
    with ignoring() if ignore_state else nullcontext():
        settings, keep = resolve(given, ignore=ignore_state)
        on_file = None if ignore_state else (settings_kept(state_path()) or {})
        for note in settings.notes():
            echo_err(f"[run] {note}")
        import os

        origins = " ".join(f"{key}={name}" for name, key in SETTINGS.items() if name in settings.given)
        before = os.environ.get(MAKE_VARIABLES_ENV)
        os.environ[MAKE_VARIABLES_ENV] = origins
        try:
            with using(keep) if not ignore_state else nullcontext():
                call = make_call(settings, overrides)
                stages = plan(names, call)
                # kept once the recipes load and the plan stands: a refused call keeps nothing
                if on_file is not None and keep != on_file:
                    if dry_run:
                        echo_err(f"[run] would keep in {SHOWN}: " + (" ".join(f"{k}={v}" for k, v in keep.items())
                                                                     or "nothing"))
                    else:
                        write_state(keep)
                running: set[str] = set()
                for stage in stages:
                    decision = judge(stage, running if dry_run else set(), output_identity)
                    click.echo(f"[run] {decision.line()}")
                    if decision.runs and (moved := before_running(decision, dry_run)) is not None:
                        click.echo(f"[run] {moved}")  # an infer or eval folder's run kept, or one brought back
                        decision = decision if dry_run else judge(stage, set(), output_identity)
                    if not decision.runs:
                        continue
                    running.add(stage.id)
                    click.echo(f"$ orchestrator {shlex.join(stage.command)}")
                    if dry_run:
                        continue
                    cli.main(args=list(stage.command), prog_name="orchestrator", standalone_mode=False)
                    if not (stage.always or stage.present):
                        finished(decision, output_identity)
        finally:
            if before is None:
                os.environ.pop(MAKE_VARIABLES_ENV, None)
            else:
                os.environ[MAKE_VARIABLES_ENV] = before


def settings_kept(path) -> dict[str, str] | None:
    """The state as the file holds it (None: no file)."""
    from orchestrator.core.project.state import read_state

    return read_state() if path.is_file() else None


COMMANDS = [run]
