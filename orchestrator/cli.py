"""`orchestrator`: one command per stage, each a thin shell over a plain function.

Heavy imports happen inside the commands, so `orchestrator --help` is instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.core.common.errors import UserError

if TYPE_CHECKING:
    from orchestrator.core.recipes.loading import Loaded
    from orchestrator.core.recipes.schema import RoleRecipe

ROLE = click.Choice(["answer", "evaluate"])
recipe_option = click.option(
    "--recipe", type=click.Path(dir_okay=False), help="Recipe file (default: recipes/<role>.yaml)."
)
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key, e.g. train.learning_rate=5e-5."
)
def both_set_option(example: str):
    """--set for a command that reads a role and the pipeline recipe; `example` one that applies to it."""
    return click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE",
        help=f"Override a key of the role or the pipeline recipe (by its first part), e.g. {example}.",
    )
pipeline_set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a pipeline recipe key, e.g. teacher.max_attempts=3 or inference.votes=3.",
)
skip_option = click.option(
    "--skip-invalid", is_flag=True, help="Process the good lines of a partly bad file; list the bad ones."
)
pipeline_option = click.option(
    "--recipe", "pipeline", type=click.Path(dir_okay=False), help="Pipeline recipe (default: recipes/pipeline.yaml)."
)


def echo_err(line: str) -> None:
    click.echo(line, err=True)


def _given_path(path: str | None) -> str | None:
    """A file named on the command line, as a data.* value (which is relative to the project)."""
    if path is None:
        return None
    from orchestrator.core.common.paths import project_root

    p = Path(path)
    return path if p.is_absolute() or Path.cwd().resolve() == project_root() else str(p.resolve())


def _failed_requests(counted: str, failures: list[str], errors: Path, meanwhile: str = "") -> UserError:
    """The one line for requests that failed after retries: how many, the first, where they
    are listed, and that the same command asks them again (exit code 1)."""
    more = ", ..." if len(failures) > 1 else ""
    return UserError(f"{counted} ({failures[0]}{more}); they are in {errors} and are asked again when you run "
                     f"the same command" + (f"; {meanwhile}" if meanwhile else ""), exit_code=1)


# Each command loads and validates its recipes here, once, folds its flags in, and hands the
# typed objects to the stage.


def _roles(roles: tuple[str, ...], recipe: str | None, overrides: tuple[str, ...]) -> list[Loaded[RoleRecipe]]:
    """The role recipes of `render` and `check` (all roles when none is given)."""
    from orchestrator.core.recipes.loading import load_role
    from orchestrator.core.recipes.overrides import route_overrides
    from orchestrator.core.recipes.schema import ROLES

    roles = roles or ROLES
    if recipe and len(roles) > 1:
        raise UserError("--recipe names one role's recipe: give the role too, e.g. `render answer --recipe FILE`")
    role_sets, _ = route_overrides(overrides, pipeline=False)
    return [load_role(role, recipe, role_sets) for role in roles]


def _role(role: str, recipe: str | None, overrides: tuple[str, ...]) -> Loaded[RoleRecipe]:
    """The role recipe of a command that reads no pipeline recipe."""
    from orchestrator.core.recipes.loading import load_role
    from orchestrator.core.recipes.overrides import route_overrides

    role_sets, _ = route_overrides(overrides, pipeline=False)
    return load_role(role, recipe, role_sets)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show the traceback of errors.")
@click.option("-v", "--verbose", is_flag=True, help="Stream all of llamafactory-cli's output (default: losses, warnings, errors).")
@click.version_option(package_name="orchestrator")
def cli(debug: bool, verbose: bool) -> None:
    """LLaMA-Factory recipes for the Answer + Evaluate reasoning pipeline."""
    # --debug is read by run(), around click: an error raised before this group runs is shown too
    if verbose:
        from orchestrator.core.common.progress import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"


# ---------------------------------------------------------------- configs


@cli.command()
@click.argument("roles", nargs=-1, type=ROLE)
@recipe_option
@set_option
def render(roles: tuple[str, ...], recipe: str | None, overrides: tuple[str, ...]) -> None:
    """Write runs/<name>/train.yaml, merge.yaml and datasets/dataset_info.json (<name>: the recipe's name).

    \b
    orchestrator render                      # both roles
    orchestrator render answer --set train.lora_rank=16
    """
    from orchestrator.stages.check import render as run_render

    for line in run_render(_roles(roles, recipe, overrides)):
        click.echo(line)


@cli.command()
@click.argument("roles", nargs=-1, type=ROLE)
@recipe_option
@set_option
def check(roles: tuple[str, ...], recipe: str | None, overrides: tuple[str, ...]) -> None:
    """Render and validate every config with LLaMA-Factory's own parser (no GPU, no model).

    \b
    orchestrator check
    orchestrator check answer --recipe recipes/tiny-answer.yaml
    """
    from orchestrator.core.recipes.loading import load_pipeline
    from orchestrator.stages.check import check as run_check

    result = run_check(_roles(roles, recipe, overrides), load_pipeline().recipe)
    for line in result.lines:
        click.echo(line)
    for line in result.warnings:
        echo_err(f"Warning: {line}")


# ---------------------------------------------------------------- data


@cli.group()
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


@cli.command("tiny-model")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--quantize", type=click.Choice(["gptq"]),
              help="Quantize it for real: 4-bit GPTQ calibrated on the sample (needs `make setup-quant`).")
def tiny_model(directory: str, quantize: str | None) -> None:
    """Build the tiny Qwen2-architecture model the CPU recipes, demo and tests use.

    \b
    orchestrator tiny-model models/tiny-qwen2
    orchestrator tiny-model models/tiny-qwen2-gptq --quantize gptq
    """
    from orchestrator.stages.tiny_model import build_quantized_tiny_model, build_tiny_model

    click.echo(build_quantized_tiny_model(Path(directory), quantize) if quantize else build_tiny_model(Path(directory)))


# ---------------------------------------------------------------- distillation and datasets


@cli.command()
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
    loaded = with_flags(load_pipeline(pipeline, pipeline_sets), {
        "teacher.base_url": ("--teacher-url", teacher_url),
        "teacher.model": ("--teacher-model", teacher_model),
        "teacher.concurrency": ("--concurrency", concurrency),
        "data.train": ("--input", _given_path(input_path)),
    })
    # the Answer recipes' fewshot settings: their prompts with worked examples are distilled too
    answers = [load_role("answer", path).recipe for m in loaded.recipe.inference.answer_models
               if m.recipe and (path := project_root() / m.recipe).is_file()]
    summary = run_distill(pipeline=loaded, limit=limit, skip_invalid=skip_invalid,
                          answers=answers)
    click.echo(summary.table())
    if summary.failing > summary.allowed:
        some = summary.failing < summary.questions  # not a teacher that answers nothing
        raise _failed_requests(f"{summary.failing} of {summary.questions} questions failed", summary.failures,
                               errors_path(), "to go on without them, allow them in the pipeline recipe: "
                               "teacher.max_failed (a count, or a fraction such as 0.05)" if some else "")
    if summary.failing:
        max_failed = loaded.recipe.teacher.max_failed
        echo_err(f"Warning: {summary.failing} of {summary.questions} questions failed (teacher.max_failed {max_failed} "
                 f"allows {summary.allowed}): they are left out of the datasets, listed in {errors_path()}, and asked "
                 f"again by the next distill")


@cli.command()
@click.argument("role", type=ROLE)
@recipe_option
@both_set_option("teacher.keep=all")
@click.option("--pipeline", type=click.Path(dir_okay=False), help="Pipeline recipe (default: recipes/pipeline.yaml).")
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
    """
    from orchestrator.core.recipes.loading import load_pipeline, load_role, with_flags
    from orchestrator.core.recipes.overrides import route_overrides
    from orchestrator.stages.dataset import build_dataset

    role_sets, pipeline_sets = route_overrides(overrides)
    pipe = with_flags(load_pipeline(pipeline, pipeline_sets), {"data.train": ("--input", _given_path(input_path))})
    summary = build_dataset(role=load_role(role, recipe, role_sets), pipeline=pipe,
                            tokenizer=tokenizer, answer_url=answer_url, answer_model=answer_model)
    for line in summary.lines():
        click.echo(line)


@cli.command("pseudo-label")
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


# ---------------------------------------------------------------- models


@cli.command()
@click.argument("role", type=ROLE)
@recipe_option
@set_option
def download(role: str, recipe: str | None, overrides: tuple[str, ...]) -> None:
    """Fetch the role's base model from modelscope (skipped when a complete copy exists).

    \b
    orchestrator download answer
    """
    from orchestrator.stages.download import download as run_download

    click.echo(run_download(_role(role, recipe, overrides)))


@cli.command()
@click.argument("role", type=ROLE)
@recipe_option
@set_option
@click.option("--fresh", is_flag=True, help="Start over instead of resuming from the last checkpoint.")
def train(role: str, recipe: str | None, overrides: tuple[str, ...], fresh: bool) -> None:
    """Train the role's LoRA adapter with llamafactory-cli (resumes from checkpoints).

    \b
    orchestrator train answer
    orchestrator train evaluate --recipe recipes/tiny-evaluate.yaml
    orchestrator train answer --set train.learning_rate=5e-5 --fresh
    """
    from orchestrator.stages.train import train as run_train

    from orchestrator.core.llamafactory.launch import describe

    loaded = _role(role, recipe, overrides)
    result = run_train(loaded, fresh=fresh)
    if result.up_to_date:
        click.echo(f"up to date: {result.paths.adapter} (--fresh trains again)")
        return
    ran = f"; {describe(result.distributed)}" if result.distributed else ""
    if not result.saved_here:
        ds = loaded.recipe.distributed
        click.echo(f"trained this node's share in {result.seconds:.0f} s{ran}")
        click.echo(f"rank 0 (node 0, {ds.master_addr}) saved the model in its runs/{loaded.recipe.run_name}/adapter; "
                   "this node holds no adapter and no manifest")
        return
    loss = f", last logged loss {result.final_loss:.4f}" if result.final_loss is not None else ""
    click.echo(f"trained {result.paths.adapter} in {result.seconds:.0f} s{loss}{ran}")
    click.echo(f"manifest: {result.paths.manifest}")


@cli.command()
@click.argument("role", type=ROLE)
@recipe_option
@both_set_option("merge.export_device=cpu")
def merge(role: str, recipe: str | None, overrides: tuple[str, ...]) -> None:
    """Merge the trained adapter into the base model (runs/<name>/merged/); skipped when the
    role serves its adapter (serve.weights adapter, or auto on a quantized base).

    \b
    orchestrator merge answer
    """
    from orchestrator.core.recipes.loading import load_pipeline, load_role
    from orchestrator.core.recipes.overrides import route_overrides
    from orchestrator.stages.merge import merge as run_merge, needs_calibration

    role_sets, pipeline_sets = route_overrides(overrides)
    loaded = load_role(role, recipe, role_sets)
    # a quantized export calibrates on the pipeline recipe's training questions
    calibration = load_pipeline(None, pipeline_sets).recipe.data.train if needs_calibration(loaded) else None
    click.echo(run_merge(loaded, calibration_data=calibration))


# ---------------------------------------------------------------- serving, inference, scoring


@cli.command("make-vars", hidden=True)
@click.argument("given", nargs=-1, metavar="NAME=VALUE...")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The makefile fragment to write.")
@click.option("--ignore-kept", is_flag=True, help="Neither read nor write the kept values (make demo).")
@click.option("--models", is_flag=True, help="The make call builds or serves models: a role recipe must load.")
@click.option("--eval-check", is_flag=True, help="The make call runs eval: stop where eval would refuse.")
def make_vars(given, out, ignore_kept, models, eval_check) -> None:
    """For the Makefile, once per make call: the variables given to it over those kept from the
    last one, the data files they name, each role's recipe, the recipe files it extends, its run
    folder, training set and served weights, as a fragment to include (OUT), every command
    argument quoted for the shell; the kept values are said, and the Error lines where make stops."""
    from orchestrator.stages.make_vars import make_vars as run_make_vars

    pairs = dict(item.partition("=")[::2] for item in given)
    result = run_make_vars(pairs, Path(out), ignore_kept, models=models, eval_check=eval_check)
    for line in result.notes():
        echo_err(line)
    for line in result.errors:
        echo_err(f"Error: {line}")


@cli.command()
@click.argument("role", type=ROLE)
@recipe_option
@set_option
def weights(role: str, recipe: str | None, overrides: tuple[str, ...]) -> None:
    """Print what serving the role loads: `merged` or `adapter` (the base + the adapter).

    serve.weights decides; auto is `adapter` when the base's config.json declares a
    quantization (LLaMA-Factory cannot merge into it): where `make answer-model` ends (make-vars asks the same).

    \b
    orchestrator weights answer --recipe recipes/answer-32b-gptq.yaml
    """
    from orchestrator.stages.weights import weights as run_weights

    click.echo(run_weights(_role(role, recipe, overrides)))


@cli.command()
@click.argument("role", type=ROLE)
@recipe_option
@set_option
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: serve.port; 0: any free port).")
@click.option("--host", help="Interface to listen on (default: serve.host, 127.0.0.1).")
@click.option("--api-key-env", metavar="NAME", help="Require the key held in this environment variable.")
def serve(role, recipe, overrides, port, host, api_key_env) -> None:
    """Serve the role's model (merged, or base + adapter) over the OpenAI API until Ctrl-C.

    \b
    orchestrator serve answer
    orchestrator serve evaluate --recipe recipes/tiny-evaluate.yaml --port 8012
    SERVE_KEY=... orchestrator serve answer --host 0.0.0.0 --api-key-env SERVE_KEY
    """
    from orchestrator.stages.serve import serve as run_serve

    run_serve(_role(role, recipe, overrides), port=port, host=host, api_key_env=api_key_env)


@cli.command()
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
                            flags={"data.test": ("INPUT", _given_path(input_path)),
                                   "inference.mode": ("--mode", mode),
                                   "inference.evaluate_url": ("--evaluate-url", evaluate_url),
                                   "inference.evaluate_model": ("--evaluate-model", evaluate_model),
                                   "inference.concurrency": ("--concurrency", concurrency),
                                   "inference.votes": ("--votes", votes)})
    test = models.pipeline.data_file("data.test")
    if input_path is None:  # not typed here: say which file, and who chose it
        echo_err(f"[infer] {models.pipeline.data_line('data.test')}")
    # an Answer endpoint is asked the prompts (fewshot) of the recipe taken to have trained it
    trained_from = project_root() / models.pipeline.recipe.inference.answer_recipe
    endpoint_recipe = load_role("answer", trained_from, role_sets) \
        if None in models.answers and trained_from.is_file() else None
    summary = run_infer(pipeline=models.pipeline, input_path=test, out_dir=out_dir, answers=models.answers,
                        evaluate=models.evaluate, limit=limit, skip_invalid=skip_invalid,
                        endpoint_recipe=endpoint_recipe)
    click.echo(summary.table())
    if summary.failed:
        raise _failed_requests(f"{summary.failed} questions had a failed request", summary.failures,
                               Path(out_dir) / "errors.jsonl")


@cli.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The image folder to write (new, or one made by package).")
@click.option("--wheels/--no-wheels", default=True, show_default=True,
              help="Put a wheel of every requirement (for package.python) into DIR/wheels: the image builds "
                   "with no network. --no-wheels: `docker build` downloads them.")
@pipeline_option
@both_set_option("inference.votes=3")
def package(out: str, wheels: bool, pipeline: str | None, overrides: tuple[str, ...]) -> None:
    """Write the submission image's folder: the models inference serves, the wheel, Dockerfile, run.sh.

    \b
    orchestrator package --out runs/image
    orchestrator package --out runs/tiny-image --recipe recipes/tiny-pipeline.yaml
    docker build -t submission runs/image
    """
    from orchestrator.core.recipes.loading import load_pipeline
    from orchestrator.core.recipes.overrides import route_overrides
    from orchestrator.core.serving.inference_models import resolve_models
    from orchestrator.stages.package import package as run_package

    role_sets, pipeline_sets = route_overrides(overrides)
    models = resolve_models(load_pipeline(pipeline, pipeline_sets), role_sets)
    summary = run_package(pipeline=models.pipeline, answers=models.answers, evaluate=models.evaluate, out=out,
                          wheels=wheels)
    for line in summary.lines():
        click.echo(line)


@cli.command()
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
        loaded = with_flags(load_pipeline(pipeline, pipeline_sets), {"data.gold": ("GOLD", _given_path(gold))})
        if loaded.recipe.data.gold is None:
            raise UserError(f"{loaded.where('data.gold')}: data.gold is null: name the gold file (score SUBMISSION GOLD)")
        gold_file = loaded.data_file("data.gold")
        if gold is None:  # not typed here: say which file, and who chose it
            echo_err(f"[score] {loaded.data_line('data.gold')}")
    result = run_score(submission, gold_file, trace, out_dir, subset=subset)
    for line in result.terminal_findings():
        echo_err(line)
    click.echo(result.table())


@cli.command("eval")
@click.option("--out-dir", type=click.Path(file_okay=False), default="runs/eval", show_default=True,
              help="Where trace, submission and report go.")
@pipeline_option
@pipeline_set_option
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
    orchestrator eval --recipe recipes/tiny-pipeline.yaml --out-dir runs/tiny-eval \\
        --answer-recipe recipes/tiny-answer.yaml --evaluate-recipe recipes/tiny-evaluate.yaml
    orchestrator eval --check-only      # no training needed: are problems held out?
    """
    from orchestrator.core.recipes.loading import load_pipeline
    from orchestrator.core.recipes.overrides import route_overrides
    from orchestrator.core.serving.inference_models import resolve_models
    from orchestrator.stages.evaluate import evaluate

    role_sets, pipeline_sets = route_overrides(overrides)
    # the role recipes name the trained models, served here or already serving at an inference URL
    models = resolve_models(load_pipeline(pipeline, pipeline_sets), role_sets,
                            answer_recipes=[answer_recipe] if answer_recipe else [], evaluate_recipe=evaluate_recipe,
                            trained=True)
    result = evaluate(models, out_dir, check_only=check_only, limit=limit)
    if result.inferred is None or result.scored is None:
        click.echo(f"eval can run: the models hold out problems (dataset.val_size {result.val_size}, "
                   f"seed {result.seed})" + ("" if result.trained else "; once trained, their split is checked"))
        return
    click.echo(result.inferred.table())
    for line in result.scored.terminal_findings():
        echo_err(line)
    click.echo(result.scored.table())
    if result.inferred.failed:
        raise _failed_requests(f"{result.inferred.failed} questions had a failed request", result.inferred.failures,
                               Path(out_dir) / "errors.jsonl", "the score counts their fallback answers meanwhile")


@cli.command()
@click.argument("run_dirs", metavar="RUN_DIR RUN_DIR...", nargs=-1, required=True,
                type=click.Path(file_okay=False))
@click.option("--gold", type=click.Path(dir_okay=False),
              help="Gold answers (default: the file the runs were scored against; none: agreement only).")
@click.option("--out-dir", type=click.Path(file_okay=False), help="Where compare.md and compare.png go (default: runs/compare).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
def compare(run_dirs, gold, out_dir, as_json) -> None:
    """Compare infer runs: accuracy with 95% intervals, flips and McNemar p-value per pair.

    \b
    orchestrator compare runs/eval-a runs/eval-b
    orchestrator compare runs/infer runs/infer-votes3 --gold datasets/sample/test_gold.jsonl
    orchestrator compare runs/infer runs/strong-model          # no gold: agreement only
    """
    import json

    from orchestrator.stages.compare import compare as run_compare, table

    result = run_compare(list(run_dirs), gold=gold, out_dir=out_dir)
    click.echo(json.dumps(result.to_json(), ensure_ascii=False) if as_json else table(result))


@cli.command()
@click.argument("role", type=ROLE, default="answer")
@recipe_option
@set_option
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
def webui(role, recipe, overrides, port, host) -> None:
    """LlamaBoard (LLaMA-Factory's web UI) prefilled from the role's recipe, until Ctrl-C.

    \b
    orchestrator webui                       # the Answer recipe at http://127.0.0.1:7860/
    orchestrator webui evaluate --port 7861 --set train.learning_rate=5e-5
    """
    from orchestrator.stages.webui import launch_webui

    launch_webui(_role(role, recipe, overrides), port=port, host=host)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds every `with Server(...)` and running subprocess


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; our errors become `Error:` lines and an exit code, never a traceback."""
    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=args, prog_name="orchestrator", standalone_mode=False)
    except UserError as e:
        if "--debug" in args:
            raise
        for line in e.lines:
            echo_err(f"Error: {line}")
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        echo_err("Interrupted.")
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    return 0


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(run())
