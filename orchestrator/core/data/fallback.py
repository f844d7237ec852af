"""The fallback letter: what a question left without an answer gets (`inference.fallback`):
the most frequent gold letter of the training file (its prior, after fixes), a fixed letter,
or none."""

from __future__ import annotations

from pathlib import Path

from orchestrator.core.common.paths import project_root
from orchestrator.core.common.progress import say
from orchestrator.core.data.competition import letter_counts
from orchestrator.core.data.fixes import fixes_path, read_training
from orchestrator.core.recipes.schema import PipelineRecipe


def prior_letter(train: str | Path, fixes: str | Path | None, stage: str) -> str:
    """The most frequent gold letter of the training file (after fixes), said with its count.
    No training file: `A`, said too, so inference against an endpoint still runs."""
    if not Path(train).exists():
        say(stage, f"fallback: no training file {train} to take the prior from; using A "
                   "(set inference.fallback to a letter, or null, to choose)")
        return "A"
    dataset, _ = read_training(train, fixes, stage)
    counts = letter_counts(dataset.questions)
    if not counts:
        say(stage, f"fallback: {train} has no gold letters; using A")
        return "A"
    letter, n = next(iter(counts.items()))
    total = sum(counts.values())
    say(stage, f"fallback: {letter}, the most frequent gold letter of {train} ({n} of {total}, {n / total:.0%})")
    return letter


def fallback_letter(recipe: PipelineRecipe, stage: str = "infer") -> str | None:
    """A pipeline recipe's `inference.fallback` as a letter: the training prior, a fixed letter, or None."""
    setting = recipe.inference.fallback
    if setting != "prior":
        return setting
    return prior_letter(project_root() / recipe.data.train, fixes_path(recipe.data), stage)
