"""The commands for the two-stage inference, the submission image, scoring, eval and compare."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.core.common.errors import UserError
from orchestrator.cli.aliases import given_aliases
from orchestrator.cli.options import both_set_option, pipeline_set_option, skip_option, pipeline_option, echo_err, failed_requests, kept_limit


@click.command()
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(dir_okay=False))
@click.option("--out-dir", required=True, type=click.Path(file_okay=False), help="Where trace, errors and submission go.")
@pipeline_option
@both_set_option("inference.votes=3")
@click.option("--mode", type=click.Choice(["staged", "pipelined"]), help="staged: one model up at a time; pipelined: both.")
@click.option("--answer-url", multiple=True,
              help="Answer endpoint (OpenAI base URL); given: not served. Repeat it: the models vote.")
@click.option("--evaluate-url", help="Evaluate endpoint; given: the Evaluate model is not served.")
@click.option("--answer-model", multiple=True,
              help="Model name at the Answer endpoint (default: the one it lists); one per --answer-url, in order.")
@click.option("--evaluate-model", help="Model name at the Evaluate endpoint (default: the one it lists).")
@click.option("--answer-recipe", multiple=True, type=click.Path(dir_okay=False),
              help="Answer role recipe to serve; repeat it: the models vote.")
@click.option("--evaluate-recipe", type=click.Path(dir_okay=False), help="Evaluate role recipe to serve.")
@click.option("--concurrency", type=click.IntRange(1, 1024), help="Requests in flight per endpoint.")
@click.option("--votes", type=click.IntRange(1), help="Answer samples per question, majority-voted.")
@click.option("--limit", type=click.IntRange(1), help="Only the first N problems.")
@skip_option
def infer(input_path, out_dir, pipeline, overrides, mode, answer_url, evaluate_url, answer_model, evaluate_model,
          answer_recipe, evaluate_recipe, concurrency, votes, limit, skip_invalid) -> None:
    """Answer every question of INPUT (default: data.test) with the Answer and Evaluate agents (resumable).

    \b
    orchestrator infer datasets/sample/test.jsonl --out-dir runs/infer
    orchestrator infer test.jsonl --out-dir runs/infer --mode pipelined --votes 3
    orchestrator infer test.jsonl --out-dir runs/remote \\
        --answer-url http://gpu1:8000/v1 --evaluate-url http://gpu2:8000/v1
    orchestrator infer test.jsonl --out-dir runs/vote --answer-url U1 --answer-url U2 \\
        --answer-url U3 --evaluate-url U4           # three Answer models vote; ties to U1
    """
    from orchestrator.core.common.paths import project_root
    from orchestrator.core.recipes.loading import load_pipeline, load_role
    from orchestrator.core.recipes.overrides import route_overrides
    from orchestrator.core.serving.inference_models import resolve_models
    from orchestrator.stages.infer import infer as run_infer

    role_sets, pipeline_sets = route_overrides(overrides)
    models = resolve_models(load_pipeline(pipeline, pipeline_sets), role_sets, answer_urls=answer_url,
                            answer_names=answer_model, answer_recipes=answer_recipe, evaluate_recipe=evaluate_recipe,
                            flags=given_aliases())  # INPUT, --mode, --votes...: each a --set (cli/aliases.py)
    test = models.pipeline.data_file("data.test")
    if input_path is None:  # not typed here: say which file, and who chose it
        echo_err(f"[infer] {models.pipeline.data_line('data.test')}")
    # an Answer endpoint is asked the prompts (fewshot) of the recipe taken to have trained it
    trained_from = project_root() / models.pipeline.recipe.inference.answer_recipe
    endpoint_recipe = load_role("answer", trained_from, role_sets) \
        if None in models.answers and trained_from.is_file() else None
    summary = run_infer(pipeline=models.pipeline, input_path=test, out_dir=out_dir, answers=models.answers,
                        evaluate=models.evaluate, limit=kept_limit(limit, "infer"), skip_invalid=skip_invalid,
                        endpoint_recipe=endpoint_recipe)
    click.echo(summary.table())
    if summary.failed:
        raise failed_requests(f"{summary.failed} questions had a failed request", summary.failures,
                               Path(out_dir) / "errors.jsonl")


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The image folder to write (new, or one made by package).")
@click.option("--wheels/--no-wheels", default=True, show_default=True,
              help="Put a wheel of every requirement (for package.python) into DIR/wheels: the image builds "
                   "with no network. --no-wheels: `docker build` downloads them.")
@pipeline_option
@both_set_option("inference.votes=3")
@click.option("--answer-recipe", multiple=True, type=click.Path(dir_okay=False),
              help="Answer role recipe, or a NAME of `orchestrator runs`, to serve; repeat it: the models vote.")
@click.option("--evaluate-recipe", type=click.Path(dir_okay=False),
              help="Evaluate role recipe, or a NAME of `orchestrator runs`, to serve.")
def package(out: str, wheels: bool, pipeline: str | None, overrides: tuple[str, ...], answer_recipe: tuple[str, ...],
            evaluate_recipe: str | None) -> None:
    """Write the submission image's folder: the models inference serves, the wheel, Dockerfile, run.sh.

    \b
    orchestrator package --out runs/image
    orchestrator package --out runs/tiny-image --pipeline recipes/tiny-pipeline.yaml
    orchestrator package --out runs/image-b --answer-recipe tiny-answer@5e6f7a8b   # an experiment, by name
    docker build -t submission runs/image
    """
    from orchestrator.core.recipes.loading import load_pipeline
    from orchestrator.core.recipes.overrides import route_overrides
    from orchestrator.core.serving.inference_models import resolve_models
    from orchestrator.stages.package import package as run_package

    role_sets, pipeline_sets = route_overrides(overrides)
    models = resolve_models(load_pipeline(pipeline, pipeline_sets), role_sets, answer_recipes=answer_recipe,
                            evaluate_recipe=evaluate_recipe)
    summary = run_package(pipeline=models.pipeline, answers=models.answers, evaluate=models.evaluate, out=out,
                          wheels=wheels)
    for line in summary.lines():
        click.echo(line)


@click.command()
@click.argument("submission", type=click.Path(dir_okay=False))
@click.argument("gold", metavar="[GOLD]", required=False, type=click.Path(dir_okay=False))
@pipeline_option
@pipeline_set_option
@click.option("--trace", type=click.Path(dir_okay=False), help="Inference trace (default: trace.jsonl beside SUBMISSION).")
@click.option("--out-dir", type=click.Path(file_okay=False), help="Where report.md and report.png go (default: beside SUBMISSION).")
@click.option("--subset", is_flag=True, help="Score only the submission's questions (an `infer --limit` run).")
def score(submission, gold, pipeline, overrides, trace, out_dir, subset) -> None:
    """Accuracy by question and by problem against GOLD (default: data.gold); with a trace, a
    report of what each agent did.

    \b
    orchestrator score runs/infer/submission.jsonl datasets/sample/test_gold.jsonl
    orchestrator score runs/infer/submission.jsonl --set data.gold=data/gold.jsonl
    """
    from orchestrator.core.recipes.loading import load_pipeline, with_flags
    from orchestrator.core.recipes.overrides import route_overrides
    from orchestrator.stages.score import score as run_score

    if gold is not None and pipeline is None and not overrides:
        gold_file = Path(gold)  # both files typed: no project or pipeline recipe needed
    else:
        _, pipeline_sets = route_overrides(overrides, role=False)
        loaded = with_flags(load_pipeline(pipeline, pipeline_sets), given_aliases())
        if loaded.recipe.data.gold is None:
            raise UserError(f"{loaded.where('data.gold')}: data.gold is null: name the gold file (score SUBMISSION GOLD)")
        gold_file = loaded.data_file("data.gold")
        if gold is None:  # not typed here: say which file, and who chose it
            echo_err(f"[score] {loaded.data_line('data.gold')}")
    result = run_score(submission, gold_file, trace, out_dir, subset=subset)
    for line in result.terminal_findings():
        echo_err(line)
    click.echo(result.table())


@click.command("eval")
@click.option("--out-dir", type=click.Path(file_okay=False),
              help="Where trace, submission and report go (default: runs/eval; a --set variant's: runs/eval@<hash>).")
@pipeline_option
@both_set_option("inference.votes=3")
@click.option("--answer-recipe", type=click.Path(dir_okay=False), help="Answer role recipe to serve.")
@click.option("--evaluate-recipe", type=click.Path(dir_okay=False), help="Evaluate role recipe to serve.")
@click.option("--check-only", is_flag=True,
              help="Only check the recipes hold problems out (what `make eval` runs before training), then stop.")
@click.option("--limit", type=click.IntRange(1), help="Only the first N held-out problems (scored as a subset).")
def eval_(out_dir, pipeline, overrides, answer_recipe, evaluate_recipe, check_only, limit) -> None:
    """Answer and score the held-out problems (datasets/val.jsonl) with the trained models.

    Refused when the split changed since the models were trained (they would be scored on
    problems they saw). The held-out problems come from dataset.val_size > 0.

    \b
    orchestrator eval
    orchestrator eval --pipeline recipes/tiny-pipeline.yaml --out-dir runs/tiny-eval \\
        --answer-recipe recipes/tiny-answer.yaml --evaluate-recipe recipes/tiny-evaluate.yaml
    orchestrator eval --check-only      # no training needed: are problems held out?
    """
    from orchestrator.core.recipes.loading import load_pipeline
    from orchestrator.core.recipes.overrides import route_overrides
    from orchestrator.core.serving.inference_models import resolve_models
    from orchestrator.stages.evaluate import default_out_dir, evaluate

    role_sets, pipeline_sets = route_overrides(overrides)
    # the role recipes name the trained models, served here or already serving at an inference URL
    models = resolve_models(load_pipeline(pipeline, pipeline_sets), role_sets,
                            answer_recipes=[answer_recipe] if answer_recipe else [], evaluate_recipe=evaluate_recipe,
                            trained=True)
    out_dir = out_dir or default_out_dir(models)
    result = evaluate(models, out_dir, check_only=check_only, limit=None if check_only else kept_limit(limit, "eval"))
    if result.inferred is None or result.scored is None:
        click.echo(f"eval can run: the models hold out problems (dataset.val_size {result.val_size}, "
                   f"seed {result.seed})" + ("" if result.trained else "; once trained, their split is checked"))
        return
    click.echo(result.inferred.table())
    for line in result.scored.terminal_findings():
        echo_err(line)
    click.echo(result.scored.table())
    if "@" in Path(out_dir).name:
        echo_err(f"[eval] in {out_dir}: the models of a --set variant (runs/eval stays the recipes' own)")
    if result.inferred.failed:
        raise failed_requests(f"{result.inferred.failed} questions had a failed request", result.inferred.failures,
                               Path(out_dir) / "errors.jsonl", "the score counts their fallback answers meanwhile")


@click.command()
@click.argument("run_dirs", metavar="RUN_DIR RUN_DIR...", nargs=-1, required=True, type=click.Path())
@click.option("--gold", type=click.Path(dir_okay=False),
              help="Gold answers (default: the file the runs were scored against; none: agreement only).")
@click.option("--out-dir", type=click.Path(file_okay=False), help="Where compare.md and compare.png go (default: runs/compare).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
def compare(run_dirs, gold, out_dir, as_json) -> None:
    """Compare infer runs: accuracy with 95% intervals, flips and McNemar p-value per pair. A RUN of
    `orchestrator runs` is that infer or eval run (a kept one too); a NAME stands for the latest
    scored infer or eval run that used that model; a submission file (.jsonl) is compared by its
    answers alone.

    \b
    orchestrator compare runs/eval-a runs/eval-b
    orchestrator compare runs/infer runs/infer-votes3 --gold datasets/sample/test_gold.jsonl
    orchestrator compare runs/infer runs/strong-model          # no gold: agreement only
    orchestrator compare a.jsonl b.jsonl --gold data/gold.jsonl # two submission files
    """
    import json

    from orchestrator.stages.compare import compare as run_compare, table

    result = run_compare([_run_dir(name) for name in run_dirs], gold=gold, out_dir=out_dir)
    click.echo(json.dumps(result.to_json(), ensure_ascii=False) if as_json else table(result))


def _run_dir(name: str) -> str:
    """An output folder as given, an infer or eval run by its name (tiny-infer, tiny-infer~1a2b3c4d,
    tiny-infer@5e6f7a8b), else the latest scored run of the experiment `name`."""
    from pathlib import Path

    from orchestrator.core.common.errors import UserError
    from orchestrator.core.run_folders.kept_runs import run_named
    from orchestrator.stages.runs import named, scored_runs_of

    if Path(name).exists():
        return name
    if (run := run_named(name)) is not None:
        return str(run.folder)
    if named(name) is None:
        return name
    found = scored_runs_of(name)
    if not found:
        raise UserError(f"{name}: no scored infer or eval run used this model yet: `orchestrator eval --answer-recipe {name}` makes one")
    return str(found[0])


COMMANDS = [infer, package, score, eval_, compare]
