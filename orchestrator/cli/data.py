"""The commands for the competition's files, the teacher's solutions and the training sets."""

from __future__ import annotations


import click

from orchestrator.core.common.errors import UserError
from orchestrator.cli.aliases import given_aliases
from orchestrator.cli.options import ROLE, recipe_option, both_set_option, pipeline_set_option, skip_option, pipeline_option, pipeline_file_option, echo_err, failed_requests, kept_limit


@click.group()
def data() -> None:
    """Competition data files."""


@data.command("check")
@click.argument("file", type=click.Path())
@skip_option
@click.option("--against", type=click.Path(dir_okay=False), metavar="TEST",
              help="Check FILE as a submission for TEST: same ids, order, question counts, offered letters.")
def data_check(file: str, skip_invalid: bool, against: str | None) -> None:
    """Validate a competition .jsonl and print a summary line; repairs go to stderr.

    \b
    orchestrator data check datasets/sample/train.jsonl
    orchestrator data check runs/infer/submission.jsonl --against datasets/sample/test.jsonl
    """
    from orchestrator.stages.data import check_file

    result = check_file(file, skip_invalid=skip_invalid, against=against)
    for line in result.notes:
        echo_err(line)
    if result.refusal:
        raise UserError(result.refusal, exit_code=2)
    click.echo(result.summary)


@click.command()
@click.option("--input", "input_path", type=click.Path(dir_okay=False), help="Competition file (default: data.train).")
@pipeline_option
@pipeline_set_option
@click.option("--teacher-url", help="OpenAI-compatible base URL (default: teacher.base_url).")
@click.option("--teacher-model", help="Model name (default: teacher.model).")
@click.option("--concurrency", type=click.IntRange(1, 1024), help="Requests in flight (default: teacher.concurrency).")
@click.option("--limit", type=click.IntRange(1), help="Only the first N problems (as infer counts).")
@skip_option
def distill(input_path, pipeline, overrides, teacher_url, teacher_model, concurrency, limit, skip_invalid) -> None:
    """Ask the teacher for a worked solution to every training question (cached, resumable).

    \b
    DEEPSEEK_API_KEY=... orchestrator distill
    orchestrator distill --teacher-url http://127.0.0.1:8000/v1 --teacher-model local --limit 20
    orchestrator distill --set teacher.max_attempts=3      # re-ask when the teacher misses
    """
    from orchestrator.core.common.paths import project_root
    from orchestrator.core.recipes.loading import load_pipeline, load_role, with_flags
    from orchestrator.core.recipes.overrides import route_overrides
    from orchestrator.stages.distill import distill as run_distill, errors_path

    _, pipeline_sets = route_overrides(overrides, role=False)
    # --input, --teacher-url, --teacher-model, --concurrency: the --set each is (cli/aliases.py)
    loaded = with_flags(load_pipeline(pipeline, pipeline_sets), given_aliases())
    # the Answer recipes' fewshot settings: their prompts with worked examples are distilled too
    answers = [load_role("answer", path).recipe for m in loaded.recipe.inference.answer_models
               if m.recipe and (path := project_root() / m.recipe).is_file()]
    limit = kept_limit(limit, "distill", times=10)
    summary = run_distill(pipeline=loaded, limit=limit, skip_invalid=skip_invalid,
                          answers=answers)
    click.echo(summary.table())
    if summary.failing > summary.allowed:
        some = summary.failing < summary.questions  # not a teacher that answers nothing
        raise failed_requests(f"{summary.failing} of {summary.questions} questions failed", summary.failures,
                               errors_path(), "to go on without them, allow them in the pipeline recipe: "
                               "teacher.max_failed (a count, or a fraction such as 0.05)" if some else "")
    if summary.failing:
        max_failed = loaded.recipe.teacher.max_failed
        echo_err(f"Warning: {summary.failing} of {summary.questions} questions failed (teacher.max_failed {max_failed} "
                 f"allows {summary.allowed}): they are left out of the datasets, listed in {errors_path()}, and asked "
                 f"again by the next distill")


@click.command()
@click.argument("role", type=ROLE)
@recipe_option
@both_set_option("teacher.keep=all")
@pipeline_file_option
@click.option("--input", "input_path", type=click.Path(dir_okay=False), help="Competition file (default: data.train).")
@click.option("--tokenizer", help="A tokenizer path, to report prompt lengths in tokens.")
@click.option("--answer-url", help="Answer endpoint for dataset.evaluate_source: answer_model (else it is served).")
@click.option("--answer-model", help="Model name at the Answer endpoint (default: the one it lists).")
def dataset(role, recipe, overrides, pipeline, input_path, tokenizer, answer_url, answer_model) -> None:
    """Build the role's alpaca training set and register it in dataset_info.json.

    \b
    orchestrator dataset answer
    orchestrator dataset evaluate --set dataset.val_size=0.1
    orchestrator dataset answer --set teacher.keep=all
    orchestrator dataset evaluate --set dataset.evaluate_source=answer_model   # the Answer model's replies
    orchestrator dataset answer --recipe recipes/tiny-answer-dpo.yaml   # preference pairs (SFT model first)
    """
    from orchestrator.core.recipes.loading import load_pipeline, load_role, with_flags
    from orchestrator.core.recipes.overrides import route_overrides
    from orchestrator.stages.dataset import build_dataset

    role_sets, pipeline_sets = route_overrides(overrides)
    pipe = with_flags(load_pipeline(pipeline, pipeline_sets), given_aliases("pipeline"))
    loaded = load_role(role, recipe, role_sets)
    if loaded.recipe.is_preference:  # its set is pairs of the SFT model's replies: the chain up to them
        from orchestrator.stages.preference import preference_chain

        if input_path or tokenizer:
            raise UserError("--input and --tokenizer are not for a preference set (train.stage dpo): its questions "
                            "are data.train's")
        for line in preference_chain(loaded, pipe, answer_url=answer_url, answer_model=answer_model,
                                     pairs_only=True).lines():
            click.echo(line)
        return
    summary = build_dataset(role=loaded, pipeline=pipe,
                            tokenizer=tokenizer, answer_url=answer_url, answer_model=answer_model)
    for line in summary.lines():
        click.echo(line)


@click.command()
@recipe_option
@both_set_option("preference.samples=8")
@pipeline_file_option
@click.option("--answer-url", help="Sample this endpoint instead of serving the SFT model.")
@click.option("--answer-model", help="Model name at the endpoint (default: the one it lists).")
@click.option("--pairs-only", is_flag=True, help="Stop after the preference set (make trains and merges next).")
def preference(recipe, overrides, pipeline, answer_url, answer_model, pairs_only) -> None:
    """Preference-tune the Answer model on its own right and wrong replies (train.stage: dpo).

    The chain: the SFT model of preference.sft_recipe (trained, merged), its replies to the
    training questions (cached), the pairs (a right reply chosen, a wrong one rejected), the DPO
    training with the SFT model as the reference, its merge. Each step is skipped when up to date.

    \b
    orchestrator preference --recipe recipes/tiny-answer-dpo.yaml
    orchestrator preference --recipe recipes/answer-dpo.yaml --set preference.samples=8
    orchestrator preference --recipe recipes/answer-dpo.yaml --answer-url http://gpu:8000/v1 --pairs-only
    """
    from orchestrator.core.recipes.loading import load_pipeline, load_role
    from orchestrator.core.recipes.overrides import route_overrides
    from orchestrator.stages.preference import preference_chain

    if recipe is None:
        raise UserError("--recipe names the preference recipe, e.g. --recipe recipes/tiny-answer-dpo.yaml")
    role_sets, pipeline_sets = route_overrides(overrides)
    chain = preference_chain(load_role("answer", recipe, role_sets), load_pipeline(pipeline, pipeline_sets),
                             answer_url=answer_url, answer_model=answer_model, pairs_only=pairs_only)
    for line in chain.lines():
        click.echo(line)


@click.command("pseudo-label")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--min-agree", required=True, type=click.IntRange(1), help="Votes that must agree on one letter.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Competition-format file to write.")
def pseudo_label(run_dir: str, min_agree: int, out: str) -> None:
    """Label the questions of an infer run whose Answer samples agree at least K times.

    Writes OUT in competition format and OUT's .provenance.jsonl (per question: the models,
    their letters, the count). Add OUT to data.extra_train to train on it.

    \b
    orchestrator infer datasets/sample/test.jsonl --out-dir runs/infer --votes 5
    orchestrator pseudo-label runs/infer --min-agree 4 --out datasets/pseudo.jsonl
    """
    from orchestrator.stages.pseudo_label import pseudo_label as run_pseudo_label

    click.echo(run_pseudo_label(run_dir, min_agree=min_agree, out=out).table())


COMMANDS = [data, distill, dataset, preference, pseudo_label]
