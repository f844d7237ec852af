"""One source of the chat template: LLaMA-Factory's template of the recipe (model.template,
with train.default_system and the like), the one it trains with, on every path that serves
the model.

`llamafactory-cli api` applies that template itself. Everything else renders a Jinja chat
template, so it gets LLaMA-Factory's own template as Jinja (`Template._get_jinja_template`):
`vllm serve` is passed it as --chat-template (runs/<name>/chat_template.jinja), and `merge`
writes it into the merged model's tokenizer, which otherwise keeps the base tokenizer's
template (Qwen2-Instruct's `You are a helpful assistant.`, not LF's qwen system).

`served_prompt` is what `check` runs: the prompt each serving path would feed the
model, rendered as that path renders it, against LLaMA-Factory's training encoding
(`Template.encode_oneturn`). It needs only the tokenizer.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_json, atomic_write_text
from orchestrator.core.data.competition import Question
from orchestrator.core.data.prompts import Example, answer_prompt, evaluate_prompt
from orchestrator.core.llamafactory.parser import import_parser
from orchestrator.core.llamafactory.quantization import served_weights
from orchestrator.core.recipes.loading import Loaded, command_for
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.run_folders.role_paths import model_path, role_paths

# train: keys that change the template LLaMA-Factory trains with (data/template.py:
# get_template_and_fix_tokenizer)
TEMPLATE_ARGS = ("default_system", "enable_thinking", "preserve_thinking", "tool_format")
JINJA_FILE = "chat_template.jinja"  # where transformers keeps a tokenizer's template


def template_args(recipe: RoleRecipe) -> dict[str, Any]:
    """The recipe's settings LLaMA-Factory builds its template from."""
    return {"template": recipe.model.template,
            **{k: recipe.train[k] for k in TEMPLATE_ARGS if recipe.train.get(k) is not None}}


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=True)


def lf_template(recipe: RoleRecipe, tokenizer: Any) -> Any:
    """LLaMA-Factory's Template for the recipe, `tokenizer` fixed as training fixes it (its own
    get_template_and_fix_tokenizer, on a copy: its registry stays as it was)."""
    import_parser()  # quiet logging
    from llamafactory.hparams import DataArguments

    return fixed_template(tokenizer, DataArguments(**template_args(recipe)))


def fixed_template(tokenizer: Any, data_args: Any) -> Any:
    """LLaMA-Factory's get_template_and_fix_tokenizer on a copy of the registry's entry: it sets
    default_system on the entry itself, which would leak into every later call in this process."""
    from llamafactory.data import template as lf

    saved = lf.TEMPLATES[data_args.template]
    lf.TEMPLATES[data_args.template] = copy.deepcopy(saved)
    try:
        return lf.get_template_and_fix_tokenizer(tokenizer, data_args)
    finally:
        lf.TEMPLATES[data_args.template] = saved


def as_jinja(recipe: RoleRecipe, tokenizer: Any) -> str:
    """LLaMA-Factory's template of the recipe as a Jinja chat template for `tokenizer`."""
    template = lf_template(recipe, tokenizer)
    try:
        return template._get_jinja_template(tokenizer)
    except ValueError as e:  # e.g. a template with token slots ("Dict is not supported.")
        raise UserError(f"model.template {recipe.model.template}: LLaMA-Factory cannot give it as a Jinja chat "
                        f"template ({e}); serve it with llamafactory-cli api (serve.infer_backend huggingface)") from None


def training_ids(template: Any, tokenizer: Any, user: str) -> list[int]:
    """The prompt tokens LLaMA-Factory trains on (and `llamafactory-cli api` feeds) for one user turn."""
    prompt, _ = template.encode_oneturn(tokenizer, [{"role": "user", "content": user},
                                                    {"role": "assistant", "content": ""}])
    return list(prompt)


def jinja_ids(tokenizer: Any, chat_template: str | None, user: str) -> list[int]:
    """The prompt tokens a Jinja engine feeds: vLLM's OpenAI server renders the request's messages
    with its --chat-template (else the tokenizer's), generation prompt on, then tokenizes the
    text without adding special tokens."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": user}], chat_template=chat_template,
                                         add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def base_tokenizer_dir(recipe: RoleRecipe) -> Path:
    return model_path(recipe)


def vllm_template_file(loaded: Loaded[RoleRecipe]) -> Path:
    """runs/<name>/chat_template.jinja: LLaMA-Factory's template for the base's tokenizer, the
    --chat-template of `vllm serve`."""
    recipe = loaded.recipe
    base = base_tokenizer_dir(recipe)
    if not (base / "tokenizer_config.json").is_file():
        raise UserError(f"no base model in {base} to serve the adapters on: run `{command_for(loaded, 'download')}`")
    return atomic_write_text(role_paths(recipe).run_dir / JINJA_FILE, as_jinja(recipe, load_tokenizer(base)))


def saved_template(folder: Path) -> str | None:
    """The chat template a saved tokenizer carries (what any engine loading `folder` applies)."""
    jinja = folder / JINJA_FILE
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    try:
        found = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def save_template(recipe: RoleRecipe, folder: Path) -> bool:
    """Make the tokenizer saved in `folder` (a merged model) carry LLaMA-Factory's template of the
    recipe; False when it already does. Each file is replaced whole."""
    jinja = as_jinja(recipe, load_tokenizer(folder))
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if saved_template(folder) == jinja and config.get("chat_template") in (None, jinja):
        return False
    atomic_write_text(folder / JINJA_FILE, jinja)
    if "chat_template" in config:  # an older transformers keeps it here: the same text in both
        atomic_write_json(config_path, {**config, "chat_template": jinja})
    return True


# ---------------------------------------------------------------- what `check` reports

PROBE_PROBLEM = "甲、乙、丙三人中只有一人说了真话。甲说：乙在说谎。乙说：丙在说谎。丙说：甲和乙都在说谎。"
PROBE_REASONING = "### 思考思路:\n1. 假设甲说真话，则乙说谎。\n### 可能的结果:\n答案是：B"


def probe_prompts(recipe: RoleRecipe) -> list[str]:
    """The role's own prompt for a probe question: the Answer prompt (with a worked example when
    fewshot.k > 0) or the Evaluate prompt; they cross every line of the template."""
    q = Question("probe", 0, PROBE_PROBLEM, "选择题 1：\n谁说了真话？", ("甲", "乙", "丙"), "B")
    if recipe.role == "evaluate":
        return [evaluate_prompt(q, PROBE_REASONING)]
    shots = [Example("shot#0", PROBE_PROBLEM, q.question, q.options, PROBE_REASONING)] if recipe.fewshot.k else []
    return [answer_prompt(q, examples=shots)]


def first_difference(tokenizer: Any, served: list[int], trained: list[int]) -> str:
    at = next((i for i, (a, b) in enumerate(zip(served, trained, strict=False)) if a != b), min(len(served), len(trained)))
    return (f"from token {at}: served {tokenizer.decode(served[at:at + 12])[:32]!r}..., "
            f"trained {tokenizer.decode(trained[at:at + 12])[:32]!r}...")


@dataclass
class Served:
    """What `check` found for one role: `ok` lines, problems (it fails), warnings."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _served_ids(loaded: Loaded[RoleRecipe]) -> tuple[str, Callable[[str], list[int]]]:
    """What serves the role's model, and how it turns a user text into prompt tokens."""
    recipe = loaded.recipe
    base = base_tokenizer_dir(recipe)
    merged = role_paths(recipe).merged
    if served_weights(recipe) == "merged" and saved_template(merged) is not None:
        own = load_tokenizer(merged)  # what any engine loading the folder applies
        return (f"the merged model's own chat template ({merged}, on any engine)",
                lambda user: jinja_ids(own, None, user))
    if served_weights(recipe) == "merged" or recipe.serve.infer_backend == "vllm":
        tokenizer = load_tokenizer(base)
        jinja = as_jinja(recipe, tokenizer)
        what = (f"the chat template `merge` writes into {merged}" if served_weights(recipe) == "merged"
                else f"`vllm serve` with {role_paths(recipe).run_dir / JINJA_FILE}")  # adapters of one base
        return what, lambda user: jinja_ids(tokenizer, jinja, user)
    tokenizer = load_tokenizer(base)
    template = lf_template(recipe, tokenizer)
    return "llamafactory-cli api", lambda user: training_ids(template, tokenizer, user)


def served_prompt(loaded: Loaded[RoleRecipe]) -> Served:
    """Whether the role's serving path feeds the model its training prompt, token for token."""
    recipe = loaded.recipe
    where = loaded.where("model.template")
    tokenizer = load_tokenizer(base_tokenizer_dir(recipe))
    template = lf_template(recipe, tokenizer)
    try:
        what, served_ids = _served_ids(loaded)
    except UserError as e:  # no Jinja form of the template
        if served_weights(recipe) == "merged":  # llamafactory-cli api still applies LF's template
            return Served(warnings=[f"{where}: {e.lines[0]}; the merged model keeps its base's chat template"])
        return Served(problems=[f"{where}: {e.lines[0]}"])
    for prompt in probe_prompts(recipe):
        trained, served = training_ids(template, tokenizer, prompt), served_ids(prompt)
        if served != trained:
            fix = (f"run `{command_for(loaded, 'merge')}` again (it writes LLaMA-Factory's template into it)"
                   if what.startswith("the merged model") else "serve it with llamafactory-cli api")
            return Served(problems=[
                f"{where}: model.template {recipe.model.template}: {what} renders another prompt than the "
                f"{recipe.role} model was trained on ({first_difference(tokenizer, served, trained)}): {fix}"])
    return Served(lines=[f"ok  {recipe.role}: served prompt = training prompt, token for token ({what}, "
                         f"model.template {recipe.model.template})"])
