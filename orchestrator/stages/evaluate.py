"""Stage: `eval`, answer and score the held-out problems (datasets/val.jsonl) with the trained
models, refused when the split changed since they were trained (they would be scored on
problems they saw).

The one stage built of others: it runs `infer`, then `score` on what infer wrote, declared as
the exception to "stages do not import each other" in pyproject.toml.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.data.heldout import check_before_training, check_recipes, check_split
from orchestrator.core.serving.inference_models import Models
from orchestrator.stages.infer import InferSummary, infer
from orchestrator.stages.score import ScoreResult, score


@dataclass
class EvalResult:
    val_size: float  # the held-out share and its seed, the same in every recipe
    seed: int
    inferred: InferSummary | None = None  # None: --check-only
    scored: ScoreResult | None = None
    trained: bool = False  # --check-only: the models are trained, and their split was checked too


def default_out_dir(models: Models) -> str:
    """runs/eval, or runs/eval@<hash> when the models are a --set variant's (runs/<name>@<hash>/):
    scored beside the recipes' own, as the planner's variant calls are."""
    variants = sorted({r.recipe.run_name.partition("@")[2] for r in models.trained if "@" in r.recipe.run_name})
    return "runs/eval" + (f"@{variants[0]}" if variants else "")


def evaluate(models: Models, out_dir: str | Path, *, check_only: bool = False, limit: int | None = None) -> EvalResult:
    """Check the recipes hold problems out (before anything is trained: `check_only`), then
    answer the held-out problems with `models` (each with its training recipe, `trained=True`)
    into `out_dir` and score them there (the first `limit` problems only: scored as a subset)."""
    dataset = models.trained[-1].recipe.dataset
    result = EvalResult(dataset.val_size, dataset.seed)
    if check_only:
        result.trained = check_before_training(models.trained)
        return result
    check_recipes(models.trained)
    val = check_split([m.recipe for m in models.trained])
    result.inferred = infer(pipeline=models.pipeline, input_path=val, out_dir=out_dir, answers=models.answers,
                            evaluate=models.evaluate, limit=limit)
    result.scored = score(Path(out_dir) / "submission.jsonl", val, out_dir=out_dir)
    return result
