"""`orchestrator runs` and `orchestrator runs prune`: the kept experiments (stages/runs.py)."""

from __future__ import annotations

import click


@click.group("runs", invoke_without_command=True)
@click.pass_context
def runs(ctx: click.Context) -> None:
    """Every trained model kept: NAME (what `--recipe`, `--answer-recipe`, `compare`, `serve`, `infer`
    and `package` accept), its recipe, the keys it differs by from the recipe now, when, accuracy, size;
    then every infer and eval run kept: RUN (what `compare` accepts), its models, accuracy, size.

    \b
    orchestrator runs
    orchestrator infer --answer-recipe tiny-answer~1a2b3c4d ...   # a kept one, served again
    orchestrator compare tiny-answer tiny-answer@5e6f7a8b         # their latest scored runs
    orchestrator compare tiny-infer tiny-infer~1a2b3c4d tiny-infer@5e6f7a8b   # runs by name
    orchestrator runs prune --keep-last 3 --merged-only
    """
    if ctx.invoked_subcommand is None:
        from orchestrator.stages.runs import rows, run_rows, runs_table, table

        click.echo(table(rows()))
        if shown := runs_table(run_rows()):  # the infer and eval runs, by the names compare takes
            click.echo("\n" + shown)


@runs.command("prune")
@click.argument("names", nargs=-1, metavar="[NAME...]")
@click.option("--older-than", "older_than_days", type=click.FloatRange(min=0), metavar="DAYS",
              help="The kept experiments trained more than DAYS ago.")
@click.option("--keep-last", type=click.IntRange(min=0), metavar="N", help="All but the newest N kept per run folder.")
@click.option("--all-but-current", is_flag=True, help="Every kept experiment (the current model of each recipe stays).")
@click.option("--merged-only", is_flag=True, help="Only their merged copies (merged again from the adapter when needed).")
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
def prune(names: tuple[str, ...], older_than_days: float | None, keep_last: int | None, all_but_current: bool,
          merged_only: bool, dry_run: bool) -> None:
    """Remove kept experiments: by NAME, by age, by count, or all but the current (merged copies first)."""
    from orchestrator.core.common.paths import display
    from orchestrator.core.run_folders.kept import human
    from orchestrator.stages.runs import prune as run_prune

    if not (names or older_than_days is not None or keep_last is not None or all_but_current):
        raise click.UsageError("name what goes: NAME..., --older-than DAYS, --keep-last N or --all-but-current")
    gone = run_prune(names=list(names), older_than_days=older_than_days, keep_last=keep_last,
                     all_but_current=all_but_current, merged_only=merged_only, dry_run=dry_run)
    for pruned in gone:
        click.echo(f"{'would remove' if dry_run else 'removed'} {display(pruned.path)} ({human(pruned.bytes)})")
    if not gone:
        click.echo("nothing to remove")


COMMANDS = [runs]
