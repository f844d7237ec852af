"""The prompt a served model sees is the prompt it was trained on, token for token, on every
serving path: `vllm serve` with the --chat-template we pass, `llamafactory-cli api` with the
serve.yaml we render, and the merged model's own saved tokenizer; each against LLaMA-Factory's
training encoding (Template.encode_oneturn of the rendered train.yaml), on the tiny model's
tokenizer, for the Answer prompt (with worked examples and without) and the Evaluate prompt.
A real merge's folder is held to it in test_answer_replies.py::test_from_the_tiny_answer_model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from helpers import REPO, training_encoder

from orchestrator.core.data.competition import Question
from orchestrator.core.data.prompts import Example, answer_prompt, evaluate_prompt

Q = Question("p#0", 0, "题目：甲、乙、丙三人中只有一人说真话。甲说：乙说谎。", "选择题 1：\n谁说了真话？", ("甲", "乙", "丙"), "A")
SHOTS = [Example(f"s{i}#0", f"题目{i}：丁说'戊在说谎'。", "谁说谎？", ("丁", "戊"), "### 可能的结果:\n答案是：B")
         for i in range(2)]
PROMPTS = {
    "answer": answer_prompt(Q),
    "answer-fewshot": answer_prompt(Q, examples=SHOTS),
    "evaluate": evaluate_prompt(Q, "### 思考思路:\n1. 甲说真话。\n### 可能的结果:\n答案是：A"),
}


def shipped_templates() -> set[str]:
    """model.template of every shipped role recipe."""
    found = set()
    for path in (REPO / "recipes").glob("*.yaml"):
        text = yaml.safe_load(path.read_text(encoding="utf-8"))
        if text.get("model", {}).get("template"):
            found.add(text["model"]["template"])
    return found


def vllm_way(tokenizer_dir: Path, chat_template: str | None, user: str) -> list[int]:
    """vLLM's OpenAI server: the messages through the chat template, generation prompt on, the
    text tokenized without special tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    text = tokenizer.apply_chat_template([{"role": "user", "content": user}], chat_template=chat_template,
                                         add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def api_way(serve_yaml: dict, user: str) -> list[int]:
    """`llamafactory-cli api` (chat/hf_engine.py and vllm_engine.py): the serve YAML parsed by
    get_infer_args, its tokenizer and template, then encode_oneturn of the messages and an
    empty assistant turn, no system given."""
    from llamafactory.model import load_tokenizer

    from orchestrator.core.llamafactory.chat_template import fixed_template
    from orchestrator.core.llamafactory.parser import import_parser

    model_args, data_args, *_ = import_parser().get_infer_args(serve_yaml)
    tokenizer = load_tokenizer(model_args)["tokenizer"]
    template = fixed_template(tokenizer, data_args)  # the server's own process: the registry as shipped
    prompt, _ = template.encode_oneturn(tokenizer, [{"role": "user", "content": user}, {"role": "assistant", "content": ""}])
    return list(prompt)


SYSTEMS = [pytest.param(None, id="default-system"), pytest.param("你是逻辑推理专家。", id="train.default_system")]


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("template", sorted(shipped_templates()))
def test_every_serving_path_renders_the_training_prompt(tiny_project: Path, template: str, system: str | None) -> None:
    from orchestrator.core.llamafactory.chat_template import save_template, vllm_template_file
    from orchestrator.core.llamafactory.configs import flat
    from orchestrator.core.recipes.loading import load_role
    from orchestrator.core.run_folders.role_paths import role_paths
    from orchestrator.core.serving.servers import serve_sections

    base = tiny_project / "models" / "tiny-qwen2"
    for role, extends in (("answer", "tiny-answer.yaml"), ("evaluate", "tiny-evaluate.yaml")):
        recipe = {"extends": extends, "name": f"t-{role}", "model": {"template": template},
                  "serve": {"infer_backend": "vllm", "weights": "adapter"},
                  **({"train": {"default_system": system}} if system else {})}
        path = tiny_project / "recipes" / f"t-{role}.yaml"
        path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
        loaded = load_role(role, path)
        trained = training_encoder(path, role)

        jinja = vllm_template_file(loaded).read_text(encoding="utf-8")  # what `vllm serve` is passed
        served = {k: v for k, v in flat(serve_sections(loaded.recipe, role_paths(loaded.recipe))).items()
                  if k != "adapter_name_or_path"}  # the adapter changes weights, not the prompt
        served["infer_backend"] = "huggingface"  # its vllm engine encodes alike (vllm_engine.py), needs vllm
        merged = tiny_project / "runs" / f"t-{role}" / "tokenizer"  # a saved tokenizer, as merge leaves it
        shutil.copytree(base, merged, ignore=shutil.ignore_patterns("*.safetensors"))
        assert save_template(loaded.recipe, merged)
        for name, user in PROMPTS.items():
            if name.startswith("answer") != (role == "answer"):
                continue
            want = trained(user)
            assert vllm_way(base, jinja, user) == want, (role, name, "vllm serve --chat-template")
            assert api_way(served, user) == want, (role, name, "llamafactory-cli api")
            assert vllm_way(merged, None, user) == want, (role, name, "the merged tokenizer's own template")
            # the skew this prevents: the base tokenizer's own template (Qwen2-Instruct's system)
            assert vllm_way(base, None, user) != want


# The stand-in vLLM's rendering is gone: the real engine's own /tokenize is compared with the
# training encoding in tests/e2e/test_vllm_engine.py.


# ---------------------------------------------------------------- check


def test_check_passes_the_shipped_tiny_recipes_on_each_serving_path(tiny_project: Path, cli) -> None:
    for sets, path in (([], "the chat template `merge` writes into"),
                       (["serve.weights=adapter"], "llamafactory-cli api"),
                       (["serve.weights=adapter", "serve.infer_backend=vllm"], "`vllm serve` with")):
        args = [x for s in sets for x in ("--set", s)]
        code, out, err = cli("check", "evaluate", "--recipe", "recipes/tiny-evaluate.yaml", *args)
        assert code == 0, err
        assert "ok  evaluate: served prompt = training prompt, token for token (" + path in out, out


def test_check_fails_a_merged_model_with_its_bases_template_until_merge_writes_ours(tiny_project: Path, cli) -> None:
    from orchestrator.core.llamafactory.chat_template import save_template
    from orchestrator.core.recipes.loading import load_role

    merged = tiny_project / "runs" / "tiny-answer" / "merged"  # as LF's export leaves it: the base's template
    shutil.copytree(tiny_project / "models" / "tiny-qwen2", merged)
    code, out, err = cli("check", "answer", "--recipe", "recipes/tiny-answer.yaml")
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith("Error: recipes/answer.yaml: model.template qwen: the merged model's own chat template (")
    assert ("renders another prompt than the answer model was trained on (from token 7: served ' a helpful assistant.<|im_end|>\\n'..., "
            "trained ' Qwen, created by Alibaba Cloud.'...)") in line, line
    assert line.endswith("run `orchestrator merge answer --recipe recipes/tiny-answer.yaml` again "
                         "(it writes LLaMA-Factory's template into it)")
    assert save_template(load_role("answer", "recipes/tiny-answer.yaml").recipe, merged)  # what merge does
    code, out, err = cli("check", "answer", "--recipe", "recipes/tiny-answer.yaml")
    assert code == 0 and "token for token (the merged model's own chat template" in out, err


def test_check_fails_vllm_serving_of_a_template_lf_cannot_give_as_jinja(tiny_project: Path, cli) -> None:
    code, out, err = cli("check", "answer", "--recipe", "recipes/tiny-answer.yaml", "--set", "model.template=chatglm3",
                         "--set", "serve.weights=adapter", "--set", "serve.infer_backend=vllm")
    assert code == 2
    assert err.strip() == ("Error: --set: model.template chatglm3: LLaMA-Factory cannot give it as a Jinja chat "
                           "template (Dict is not supported.); serve it with llamafactory-cli api "
                           "(serve.infer_backend huggingface)")
