"""Stage: `chat ROLE`: the role's trained model in the terminal (what `llamafactory-cli chat` is
to LLaMA-Factory's users), served as `serve` and `infer` serve it (core/serving/servers.py: the
merged model or the base + adapter, with the recipe's chat template). A competition line typed or
pasted (`{"problem": ..., "questions": [...]}`) is asked in the training prompt, one question at a
time (the Answer prompt; the Evaluate prompt with the line's `think` text, if any); any other
line goes as it is. Each message is asked on its own, as infer asks: the models were trained on
single turns."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable

from orchestrator.core.common.process import free_port
from orchestrator.core.data.competition import _Bad, parse_problem
from orchestrator.core.data.prompts import answer_prompt, evaluate_prompt
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import RoleRecipe
from orchestrator.core.serving.endpoints import Endpoint
from orchestrator.core.serving.servers import served

QUIT = ("/quit", "/exit")


def prompts_for(role: str, line: str) -> tuple[list[str], str | None]:
    """The prompts a typed line asks (one per question of a competition line), and a note."""
    text = line.strip()
    if not text.startswith("{"):
        return [text], None
    try:
        obj = json.loads(text)
        problem = parse_problem(obj, 1)
    except (ValueError, _Bad) as e:
        return [text], f"not a competition line ({e}): sent as it is"
    think = str(obj.get("think") or "")
    if role == "answer":
        return [answer_prompt(q) for q in problem.questions], None
    return [evaluate_prompt(q, think) for q in problem.questions], None if think else \
        "no \"think\" in the line: the Evaluate prompt is asked without the Answer model's reasoning"


def chat(loaded: Loaded[RoleRecipe], lines: Iterable[str], show: Callable[[str], None], *,
         max_tokens: int = 512, temperature: float = 0.0) -> int:
    """Serve the role's model and answer each line of `lines` (until /quit or their end); the replies go to `show`.
    Returns the number of replies."""
    role = loaded.recipe.role
    replies = 0
    with served(loaded, free_port()) as serving:
        show(f"chatting with {serving.model} ({role} model, template {loaded.recipe.model.template}); "
             "a competition line is asked in the training prompt; /quit ends")

        async def ask(endpoint: Endpoint, prompt: str) -> str:
            return (await endpoint.complete(prompt, temperature=temperature, max_tokens=max_tokens)).text

        loop = asyncio.new_event_loop()
        endpoint = Endpoint(serving.url, serving.model, "", concurrency=1, timeout=600.0, max_retries=2)
        try:
            for line in lines:
                if line.strip() in QUIT:
                    break
                if not line.strip():
                    continue
                prompts, note = prompts_for(role, line)
                if note:
                    show(f"({note})")
                for prompt in prompts:
                    show(loop.run_until_complete(ask(endpoint, prompt)))
                    replies += 1
        finally:
            loop.run_until_complete(endpoint.aclose())
            loop.close()
    return replies
