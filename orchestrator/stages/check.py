"""Stages `render` and `check`, one module because `check` is `render` followed by
LLaMA-Factory's own parser: write runs/<role>/train.yaml, merge.yaml and
datasets/dataset_info.json from the role recipes; `check` also validates every file (no GPU,
no model) and warns where a few-shot prompt outgrows train.cutoff_len or the base model is not
there yet, and fails where the prompt the model would be served differs from the one it is
trained on (core/llamafactory/chat_template.py; it needs the base's tokenizer only), or where
vLLM cannot serve it here (core/serving/servers.py: vllm_problems)."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import display
from orchestrator.core.data.fewshot import longest_prompt
from orchestrator.core.llamafactory.chat_template import served_prompt
from orchestrator.core.llamafactory.checks import check_roles
from orchestrator.core.llamafactory.configs import render_roles
from orchestrator.core.llamafactory.reference import reference_line
from orchestrator.core.recipes.loading import Loaded, command_for
from orchestrator.core.recipes.schema import PipelineRecipe, RoleRecipe
from orchestrator.core.run_folders.role_paths import model_path, sft_of
from orchestrator.core.serving.servers import vllm_problems


def render(loaded: list[Loaded[RoleRecipe]]) -> list[str]:
    """Each role's train.yaml and merge.yaml, then dataset_info.json: the files written."""
    rendered = render_roles(loaded)
    return [str(p) for r in rendered for p in (r.paths.train_yaml, r.paths.merge_yaml)] + \
        [str(rendered[-1].dataset_info)]


@dataclass
class Checked:
    lines: list[str] = field(default_factory=list)  # one `ok` line per role
    warnings: list[str] = field(default_factory=list)


def check(loaded: list[Loaded[RoleRecipe]], pipeline: PipelineRecipe) -> Checked:
    """Render and check every role's configs (all problems at once, as one UserError)."""
    result = Checked()
    problems = []
    for r in check_roles(loaded):
        recipe = r.loaded.recipe
        result.lines.append(f"ok  {recipe.role}: {r.paths.train_yaml} and {r.paths.merge_yaml} accepted by LLaMA-Factory")
        if line := reference_line(recipe):
            result.lines.append(f"    {line}")
        base = model_path(recipe)
        if not (base / "config.json").is_file() and (sft := sft_of(recipe)):
            result.warnings.append(f"{recipe.role}: the SFT model {base} it starts from is not built yet: "
                                   f"`orchestrator preference --recipe {display(r.loaded.path)}` builds it (from "
                                   f"{sft.path.name}), then the pairs, the {recipe.train.get('stage')} model and its merge")
        elif not (base / "config.json").is_file():  # not needed to check, but to train: say so
            key = "model.path" if recipe.model.path else "model.source"
            result.warnings.append(f"{recipe.role}: no base model in {base} ({key}, from {r.loaded.where(key)}): "
                                   f"`{command_for(r.loaded, 'download')}` fetches it, or fix {key}; "
                                   "the served prompt is checked against the training prompt once its tokenizer is there")
        else:
            served = served_prompt(r.loaded)
            result.lines += served.lines
            result.warnings += served.warnings
            problems += served.problems
        if recipe.serve.infer_backend == "vllm":  # what vLLM cannot run here, before hours of training
            engine = vllm_problems(r.loaded)
            problems += engine
            if not engine:
                result.lines.append(f"ok  {recipe.role}: vLLM can serve it here (serve.infer_backend vllm)")
        longest = longest_prompt(pipeline, recipe)
        assert r.resolved is not None  # checked
        cutoff = r.resolved.train["cutoff_len"]
        if longest and longest[0] > cutoff:
            n, unit, qid = longest
            result.warnings.append(
                f"{r.loaded.where('fewshot.k')}: with fewshot.k={recipe.fewshot.k} the longest Answer prompt ({qid}) "
                f"is {n} {unit}, over train.cutoff_len {cutoff}: training cuts it; lower fewshot.k or raise "
                "train.cutoff_len")
    if problems:
        raise UserError(*problems)
    return result
