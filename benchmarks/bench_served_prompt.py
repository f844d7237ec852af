"""How many served prompts equal the training prompt, token for token, on the tiny model's
tokenizer: every question of the sample's test file, as the Answer prompt and as the Evaluate
prompt, rendered by `vllm serve` without --chat-template (the base tokenizer's own template, what
the adapters' server used to get) and with the one we now pass (LLaMA-Factory's template as
Jinja), against LLaMA-Factory's training encoding (Template.encode_oneturn).

    .venv/bin/python benchmarks/bench_served_prompt.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    from orchestrator.core.data.competition import read_dataset
    from orchestrator.core.data.prompts import answer_prompt, evaluate_prompt
    from orchestrator.core.llamafactory.chat_template import (
        as_jinja,
        jinja_ids,
        lf_template,
        load_tokenizer,
        training_ids,
    )
    from orchestrator.core.recipes.loading import load_role
    from orchestrator.stages.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        base = build_tiny_model(Path(tmp) / "tiny-qwen2")
        recipe = load_role("answer", ROOT / "recipes" / "tiny-answer.yaml").recipe
        tokenizer = load_tokenizer(base)
        template = lf_template(recipe, tokenizer)
        ours = as_jinja(recipe, tokenizer)
        questions = read_dataset(ROOT / "datasets" / "sample" / "test.jsonl").questions
        prompts = [answer_prompt(q) for q in questions] + [evaluate_prompt(q, "答案是：A") for q in questions]
        trained = [training_ids(template, tokenizer, p) for p in prompts]
        print(f"{len(prompts)} prompts ({len(questions)} questions, Answer and Evaluate), template {recipe.model.template}")
        for label, jinja in (("vllm serve, the base tokenizer's template", None),
                             ("vllm serve --chat-template (LLaMA-Factory's)", ours)):
            same = sum(jinja_ids(tokenizer, jinja, p) == t for p, t in zip(prompts, trained))
            print(f"  {label:48s} {same:4d} of {len(prompts)} equal to the training prompt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
