"""Several Answer models vote: loopback endpoints with fixed replies, the vLLM server that holds
several adapters of one base (its command, and a stand-in `vllm` that serves on loopback)."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import make, with_makefile
from fake_openai import FailPrompts, FakeOpenAI
from helpers import (
    adapter_variant,
    by_id,
    marker,
    read_jsonl,
    training_encoder,
    vllm_calls,
    vllm_prompts,
    write_competition,
)

from orchestrator.core.data.competition import read_dataset
from orchestrator.core.data.prompts import answer_prompt
from orchestrator.core.recipes.loading import load_role
from orchestrator.core.serving.servers import vllm_lora_command, vllm_lora_env

FAIL = "fail"  # an endpoint that answers 500 to everything
SHAPE = [[4], [3, 5]]


def fixed(letter: str | None):
    """A reply function that always gives `letter` (None: a reply with no letter in it)."""
    result = f"答案是：{letter}" if letter else "无法确定。"
    return lambda prompt, request: f"### 思考思路:\n1. 模型{letter}的推理。\n### 可能的结果:\n{result}"


def no_letter(prompt: str, request: dict) -> str:
    return "我不知道。"


def answer_servers(letters: list[str | None]) -> list[FakeOpenAI]:
    return [FakeOpenAI(models=(f"m{i}",), reply=fixed(None if x == FAIL else x),
                       faults=FailPrompts("选择题") if x == FAIL else None) for i, x in enumerate(letters)]


def vote_args(project: Path, answers: list[FakeOpenAI], evaluate: FakeOpenAI, *extra: str) -> list:
    urls = [arg for a in answers for arg in ("--answer-url", a.url)]
    return ["infer", project / "test.jsonl", "--out-dir", project / "out", *urls, "--evaluate-url", evaluate.url,
            "--evaluate-model", "ev", "--set", "inference.max_retries=0", *extra]


# (each listed model's letter, or FAIL; the final answer; the index of the model whose text is read)
VOTES = [
    pytest.param(["A", "B", "B"], "B", 1, id="majority"),
    pytest.param(["C", "C", "C"], "C", 0, id="unanimous"),
    pytest.param(["A", "B", "C"], "A", 0, id="three-way-tie-to-the-first-listed"),
    pytest.param(["C", "B", "A"], "C", 0, id="same-tie-listed-in-reverse"),
    pytest.param([None, "B", "C"], "B", 1, id="unparseable-first-then-tie"),
    pytest.param(["B", FAIL, "C"], "B", 0, id="one-model-failing"),
    pytest.param([FAIL, "C", "B"], "C", 1, id="failing-first-then-tie"),
    pytest.param([None, None, "A"], "A", 2, id="two-unparseable"),
    pytest.param([FAIL, None, FAIL], None, 1, id="nothing-to-vote-on"),
]


@pytest.mark.parametrize("letters, winner, read", VOTES)
def test_three_endpoints_vote(project, cli, letters, winner, read):
    qids = write_competition(project / "test.jsonl", SHAPE)
    servers = answer_servers(letters)
    with servers[0], servers[1], servers[2], FakeOpenAI(models=("ev",), reply=no_letter) as e:
        code, _, err = cli(*vote_args(project, servers, e))
        evaluate_prompts = e.prompts
    failing = FAIL in letters
    assert code == (1 if failing else 0), err
    labels = ["m0", "m1", "m2"]
    trace = by_id(project / "out" / "trace.jsonl")
    for qid in qids:
        answer = trace[qid]["answer"]
        assert answer["models"] == labels and answer["model"] == "m0+m1+m2"
        assert [s["model"] for s in answer["samples"]] == labels
        assert [s.get("letter") for s in answer["samples"]] == [None if x == FAIL else x for x in letters]
        assert answer["votes"] == dict(Counter(x for x in letters if x and x != FAIL))
        assert answer["by_model"] == {m: (None if x == FAIL else x) for m, x in zip(labels, letters, strict=True)}
        assert answer["letter"] == winner
        if winner:  # the Evaluate Agent gave no letter: the vote is final
            assert trace[qid]["final"] == winner
        assert answer["chosen"] == read
        asked = [p for p in evaluate_prompts if marker(qid) in p]
        # the Evaluate Agent read the first sample agreeing with the majority (any text, without one)
        assert answer["samples"][read]["text"] in asked[0]
        assert trace[qid]["source"] == ("vote_fallback" if winner else "fallback")  # nothing voted: the prior
        assert trace[qid]["status"] == ("failed" if failing else "done")
    errors = read_jsonl(project / "out" / "errors.jsonl")
    api = [(x["id"], x["model"], x["sample"]) for x in errors if x["kind"] == "api"]
    assert api == [(qid, f"m{i}", i) for qid in qids for i, x in enumerate(letters) if x == FAIL]
    unparseable = [(x["model"], x["sample"]) for x in errors if x["kind"] == "unparseable" and x["stage"] == "answer"]
    assert unparseable == [(f"m{i}", i) for _ in qids for i, x in enumerate(letters) if x is None]
    if failing:
        assert "(answer m" in err  # the failure names the model


@pytest.mark.parametrize("mode", ["staged", "pipelined"])
@pytest.mark.parametrize("order, winner", [((0, 1), "A"), ((1, 0), "B")])
def test_a_tie_across_models_goes_to_the_first_listed(project, cli, order, winner, mode):
    """Two samples each, A A from one model and B B from the other: 2 against 2."""
    qids = write_competition(project / "test.jsonl", SHAPE)
    models = [FakeOpenAI(models=("ma",), reply=fixed("A")), FakeOpenAI(models=("mb",), reply=fixed("B"))]
    listed = [models[i] for i in order]
    with models[0], models[1], FakeOpenAI(models=("ev",), reply=no_letter) as e:
        code, _, err = cli(*vote_args(project, listed, e, "--votes", "2", "--mode", mode))
        assert (models[0].completions, models[1].completions, e.completions) == (2 * len(qids), 2 * len(qids), len(qids))
    assert code == 0, err
    for qid in qids:
        answer = by_id(project / "out" / "trace.jsonl")[qid]["answer"]
        assert answer["votes"] == {"A": 2, "B": 2} and answer["letter"] == winner
        assert [s["model"] for s in answer["samples"]] == [m for i in order for m in [("ma", "mb")[i]] * 2]


def test_adding_a_model_reuses_the_first_ones_samples(project, cli):
    qids = write_competition(project / "test.jsonl", SHAPE)
    first, second = FakeOpenAI(models=("m0",), reply=fixed("A")), FakeOpenAI(models=("m1",), reply=fixed("B"))
    with first, second, FakeOpenAI(models=("ev",)) as e:
        assert cli(*vote_args(project, [first], e))[0] == 0
        one_model = read_jsonl(project / "out" / "trace.jsonl")
        assert all(r["answer"]["models"] == ["m0"] and r["answer"]["model"] == "m0" for r in one_model)

        # the same model written as a one-entry answer_models list is the same run: nothing asked
        first.reset_counts(), e.reset_counts()
        listed = f'inference.answer_models=[{{url: "{first.url}"}}]'
        code, _, err = cli("infer", project / "test.jsonl", "--out-dir", project / "out", "--evaluate-url", e.url,
                             "--evaluate-model", "ev", "--set", "inference.max_retries=0", "--set", listed)
        assert code == 0, err
        assert (first.completions, e.completions) == (0, 0)

        first.reset_counts(), e.reset_counts()
        code, _, err = cli(*vote_args(project, [first, second], e))
        assert code == 0, err
        # the new model answers everything, the first nothing; the vote changed, so Evaluate reads again
        assert (first.completions, second.completions, e.completions) == (0, len(qids), len(qids))
        trace = read_jsonl(project / "out" / "trace.jsonl")
        assert len(trace) == len(qids)
        for before, after in zip(one_model, trace, strict=True):
            assert after["answer"]["samples"][0]["text"] == before["answer"]["samples"][0]["text"]
            assert after["answer"]["models"] == ["m0", "m1"] and after["answer"]["votes"] == {"A": 1, "B": 1}

        second.reset_counts(), e.reset_counts()
        assert cli(*vote_args(project, [first, second], e))[0] == 0
        assert (first.completions, second.completions, e.completions) == (0, 0, 0)


def test_same_model_name_at_two_endpoints_is_labelled_by_address(project, cli):
    qids = write_competition(project / "test.jsonl", [[4]])
    a, b = FakeOpenAI(models=("same",), reply=fixed("A")), FakeOpenAI(models=("same",), reply=fixed("B"))
    with a, b, FakeOpenAI(models=("ev",)) as e:
        assert cli(*vote_args(project, [a, b], e))[0] == 0
    [record] = read_jsonl(project / "out" / "trace.jsonl")
    assert record["id"] == qids[0]
    assert record["answer"]["models"] == [f"same@127.0.0.1:{a.port}", f"same@127.0.0.1:{b.port}"]


def test_answer_models_are_paired_with_their_names_in_order(project, cli):
    write_competition(project / "test.jsonl", [[4]])
    a, b = FakeOpenAI(models=("x", "y"), reply=fixed("A")), FakeOpenAI(models=("z", "w"), reply=fixed("B"))
    with a, b, FakeOpenAI(models=("ev",)) as e:
        code, _, err = cli(*vote_args(project, [a, b], e, "--answer-model", "y", "--answer-model", "z"))
        assert code == 0, err
    [record] = read_jsonl(project / "out" / "trace.jsonl")
    assert record["answer"]["models"] == ["y", "z"]


def test_the_command_line_replaces_the_recipes_list(project, cli):
    """A recipe lists two endpoints; one --answer-url on the command line is the only model;
    --answer-model alone names the recipe's models, in order."""
    write_competition(project / "test.jsonl", [[4]])
    a, b = FakeOpenAI(models=("x", "y"), reply=fixed("A")), FakeOpenAI(models=("z", "w"), reply=fixed("B"))
    with a, b, FakeOpenAI(models=("ev",)) as e:
        (project / "recipes" / "vote.yaml").write_text(
            f"extends: pipeline.yaml\ninference:\n  answer_models:\n    - {{url: '{a.url}', model: x}}\n"
            f"    - {{url: '{b.url}', model: z}}\n", encoding="utf-8")
        base = ["infer", project / "test.jsonl", "--pipeline", "recipes/vote.yaml", "--evaluate-url", e.url,
                "--evaluate-model", "ev"]
        models = {}
        for name, extra in [("listed", []), ("one-url", ["--answer-url", b.url, "--answer-model", "w"]),
                            ("renamed", ["--answer-model", "y", "--answer-model", "w"])]:
            code, _, err = cli(*base, "--out-dir", project / name, *extra)
            assert code == 0, err
            models[name] = read_jsonl(project / name / "trace.jsonl")[0]["answer"]["models"]
    assert models == {"listed": ["x", "z"], "one-url": ["w"], "renamed": ["y", "w"]}


BAD = [
    pytest.param(["--answer-url", "http://127.0.0.1:9/v1", "--answer-url", "http://127.0.0.1:8/v1",
                  "--answer-model", "a"],
                 "Error: --answer-model given 1 times for 2 Answer models: give one per model, in the same order "
                 "(or none: each endpoint's own)", id="names-not-paired"),
    pytest.param(["--answer-url", "http://127.0.0.1:9/v1", "--answer-recipe", "recipes/tiny-answer.yaml"],
                 "Error: give the Answer models as --answer-url or as --answer-recipe, not both", id="url-and-recipe"),
    pytest.param(["--answer-model", "a", "--answer-model", "b"],
                 "Error: --answer-model given 2 times for one Answer model: give one --answer-url per model, "
                 "in the same order", id="names-without-urls"),
    pytest.param(["--set", "inference.answer_models=[{url: http://127.0.0.1:9/v1, recipe: recipes/answer.yaml}]"],
                 "Error: --set: inference.answer_models.0 an Answer model is either {recipe: PATH} or "
                 "{url: URL, model: NAME}", id="url-and-recipe-in-one-entry"),
    pytest.param(["--set", "inference.answer_models=[{url: http://127.0.0.1:9/v1, model: a}]",
                  "--set", "inference.answer_url=http://127.0.0.1:8/v1"],
                 "Error: --set: inference.answer_models lists the Answer models: leave answer_url and answer_model null "
                 "(or list one model)",
                 id="list-and-single"),
    pytest.param(["--set", ("inference.answer_models=[{url: http://127.0.0.1:9/v1, model: a}, "
                            "{url: http://127.0.0.1:9/v1, model: a}]")],
                 "Error: inference.answer_models: http://127.0.0.1:9/v1 (a) is listed twice; list each model once "
                 "(inference.votes asks each for several samples)", id="listed-twice"),
]


@pytest.mark.parametrize("args, expected", BAD)
def test_bad_answer_model_lists_are_one_error_line(project, cli, args, expected):
    write_competition(project / "test.jsonl", [[4]])
    code, _, err = cli("infer", project / "test.jsonl", "--out-dir", project / "out",
                         "--evaluate-url", "http://127.0.0.1:9/v1", "--evaluate-model", "ev", *args)
    assert code == 2 and err.strip() == expected


def test_score_reports_each_model_the_vote_and_the_final_answer(project, cli):
    """m0 right on every question, m1 and m2 always wrong with different letters: the vote
    follows m0 by the tie rule; the Evaluate Agent always says A."""
    qids = write_competition(project / "test.jsonl", SHAPE)
    gold = {qid: "A" for qid in qids}
    gold_lines = []
    for line in (project / "test.jsonl").read_text(encoding="utf-8").splitlines():
        problem = json.loads(line)
        for q in problem["questions"]:
            q["answer"] = "A"
        gold_lines.append(json.dumps(problem, ensure_ascii=False))
    (project / "gold.jsonl").write_text("\n".join(gold_lines) + "\n", encoding="utf-8")
    servers = answer_servers(["A", "B", "C"])
    with servers[0], servers[1], servers[2], FakeOpenAI(models=("ev",), reply=fixed("A")) as e:
        assert cli(*vote_args(project, servers, e))[0] == 0
    code, out, err = cli("score", project / "out" / "submission.jsonl", project / "gold.jsonl")
    assert code == 0, err
    n = len(gold)
    rows = {line[:28].strip(): line[28:].split() for line in out.splitlines()[1:] if line[:1] != " " and "report" not in line}
    assert rows["Answer model m0"] == [str(n), str(n), "1.0000"]
    assert rows["Answer model m1"] == rows["Answer model m2"] == ["0", str(n), "0.0000"]
    assert rows["Answer vote (all models)"] == [str(n), str(n), "1.0000"]
    assert rows["by question"] == [str(n), str(n), "1.0000"]
    report = (project / "out" / "report.md").read_text(encoding="utf-8")
    assert f"| Answer model m1 | 0 | {n} | 0.0000 |" in report and f"| Answer vote (all models) | {n} | {n} | 1.0000 |" in report


# ---------------------------------------------------------------- several adapters, one vLLM server


def test_vllm_command_serves_every_adapter_of_one_base(tiny_project, fake_vllm):
    project = tiny_project
    paths = [adapter_variant(project, "vote-a", 4, vllm_maxlen=4096), adapter_variant(project, "vote-b", 24)]
    loadeds = [load_role("answer", p) for p in paths]
    cmd = vllm_lora_command(loadeds, "127.0.0.1", 8123)
    assert cmd[1:] == [
        "-m", "vllm.entrypoints.openai.api_server", "--model", str((project / "models" / "tiny-qwen2").resolve()),
        "--host", "127.0.0.1", "--port", "8123",
        "--trust-remote-code", "--chat-template", f"{project}/runs/vote-a/chat_template.jinja",
        "--dtype", "float32", "--max-model-len", "4096", "--disable-uvicorn-access-log",
        "--enable-lora", "--max-loras", "2", "--max-lora-rank", "32",
        "--lora-modules", f"vote-a={project}/runs/vote-a/adapter", f"vote-b={project}/runs/vote-b/adapter",
    ]
    assert cmd[0] == os.environ["ORCHESTRATOR_VLLM_PYTHON"]
    assert vllm_lora_env(None) == {"PYTHONPATH": "", "VLLM_CPU_KVCACHE_SPACE": "1"}  # no GPU here
    assert vllm_lora_env("sk-1")["VLLM_API_KEY"] == "sk-1"


def test_adapters_of_one_base_share_one_vllm_server(tiny_project, cli, fake_vllm):
    """Staged: one `vllm serve` holds both adapters; each request names its adapter; a third
    model on the huggingface backend would be served on its own, so it is an endpoint here."""
    project = tiny_project
    qids = write_competition(project / "test.jsonl", SHAPE)
    adapter_variant(project, "vote-a", 8), adapter_variant(project, "vote-b", 8)
    with FakeOpenAI(models=("m2",), reply=fixed("B")) as third, FakeOpenAI(models=("ev",), reply=no_letter) as e:
        listed = ('inference.answer_models=[{recipe: recipes/vote-a.yaml}, {recipe: recipes/vote-b.yaml}, '
                  f'{{url: "{third.url}"}}]')
        args = ["infer", project / "test.jsonl", "--out-dir", project / "out", "--evaluate-url", e.url,
                "--evaluate-model", "ev", "--set", listed]
        code, _, err = cli(*args)
        assert code == 0, err
        calls = [json.loads(line) for line in fake_vllm.read_text(encoding="utf-8").splitlines()]
        assert len(calls) == 1 and calls[0][calls[0].index("--max-loras") + 1] == "2"
        asked = Counter(json.loads(x) for x in fake_vllm.with_name("vllm-calls-models.jsonl").read_text().splitlines())
        assert asked == {"vote-a": len(qids), "vote-b": len(qids)}
        trace = read_jsonl(project / "out" / "trace.jsonl")
        for r in trace:  # vote-a says A, vote-b B, m2 B
            assert r["answer"]["models"] == ["vote-a", "vote-b", "m2"]
            assert r["answer"]["by_model"] == {"vote-a": "A", "vote-b": "B", "m2": "B"}
            assert r["final"] == "B"
        assert "2 adapters" in err and "in one vLLM server" in err

        code, _, err = cli(*args)  # everything cached: no server started
        assert code == 0 and len(fake_vllm.read_text(encoding="utf-8").splitlines()) == 1


def test_adapters_must_be_trained_and_share_a_base(project, cli, fake_vllm):
    write_competition(project / "test.jsonl", [[4]])
    adapter_variant(project, "vote-a", 8), adapter_variant(project, "vote-b", 8)
    (project / "runs" / "vote-b" / "adapter" / "adapter_config.json").unlink()
    listed = 'inference.answer_models=[{recipe: recipes/vote-a.yaml}, {recipe: recipes/vote-b.yaml}]'
    code, _, err = cli("infer", project / "test.jsonl", "--out-dir", project / "out",
                         "--evaluate-url", "http://127.0.0.1:9/v1", "--evaluate-model", "ev", "--set", listed)
    assert code == 2
    assert err.strip() == (f"Error: {project}/runs/vote-b/adapter has no trained adapter: "
                           "run `orchestrator train answer --recipe recipes/vote-b.yaml` first")
    assert not fake_vllm.exists()



ADAPTER = {"weights": "adapter"}


@pytest.mark.parametrize("answers", [["one-a"], ["one-a", "one-b"]], ids=["one-answer", "two-answers"])
def test_answer_and_evaluate_adapters_of_one_base_share_one_vllm_server(tiny_project, cli, fake_vllm, answers):
    """Every model an adapter of the tiny base on vLLM: one `vllm serve` holds the Answer and the
    Evaluate adapters, the run is pipelined on it, and no other server starts; the stand-in
    renders every request as vLLM does, and each is LLaMA-Factory's training prompt, token for token."""
    project = tiny_project
    qids = write_competition(project / "test.jsonl", SHAPE)
    for name, rank in (("one-a", 8), ("one-b", 16)):
        adapter_variant(project, name, rank, serve=ADAPTER)
    adapter_variant(project, "one-ev", 4, extends="tiny-evaluate.yaml", serve=ADAPTER)
    listed = "[" + ", ".join(f"{{recipe: recipes/{a}.yaml}}" for a in answers) + "]"
    args = ["infer", project / "test.jsonl", "--out-dir", project / "out", "--mode", "staged",
            "--evaluate-recipe", "recipes/one-ev.yaml", "--set", f"inference.answer_models={listed}"]
    code, _, err = cli(*args)
    assert code == 0, err
    [call], asked = vllm_calls(fake_vllm)
    models = [*answers, "one-ev"]
    start = call.index("--lora-modules") + 1
    assert call[start:start + len(models)] == [f"{m}={project}/runs/{m}/adapter" for m in models]
    assert call[call.index("--max-loras") + 1] == str(len(models))
    assert call[call.index("--max-lora-rank") + 1] == ("16" if "one-b" in answers else "8")
    assert Counter(asked) == {m: len(qids) for m in models}
    letters = dict(zip(models, "ABC", strict=False))  # the stand-in's letter for each adapter
    for r in read_jsonl(project / "out" / "trace.jsonl"):
        assert r["answer"]["models"] == answers and r["evaluate"]["model"] == "one-ev"
        assert r["final"] == letters["one-ev"] and r["source"] == "evaluate"
    base = (project / "models" / "tiny-qwen2").resolve()  # model.path, resolved
    assert f"loading {len(models)} adapters that share the base {base} in one vLLM server" in err
    assert "mode pipelined on one vLLM server" in err
    logs = sorted(str(p.relative_to(project)) for p in project.glob("runs/*/serve*.log"))
    assert logs == [f"runs/{answers[0]}/serve-lora.log"]  # no llamafactory-cli api, no second vLLM
    trained = {m: training_encoder(f"recipes/{m}.yaml", "evaluate" if m == "one-ev" else "answer") for m in models}
    rendered = vllm_prompts(fake_vllm)
    assert len(rendered) == len(asked) and {r["model"] for r in rendered} == set(models)
    assert all(r["ids"] == trained[r["model"]](r["user"]) for r in rendered)

    code, _, err = cli(*args)  # everything cached: no server started
    assert code == 0 and len(vllm_calls(fake_vllm)[0]) == 1


# (what the Evaluate recipe changes from the Answer adapters' vllm + serve.weights adapter; one server?)
ONE_SERVER = [
    pytest.param([], True, id="same-base-backend-and-weights"),
    pytest.param(["serve.infer_backend=huggingface"], False, id="evaluate-on-huggingface"),
    pytest.param(["serve.weights=merged"], False, id="evaluate-served-merged"),
    pytest.param(["serve.weights=auto"], False, id="auto-on-a-plain-base-is-merged"),
    pytest.param(["model.path=models/other"], False, id="another-base"),
    pytest.param(["model.template=llama3"], False, id="another-template"),
    pytest.param(["train.default_system=你是逻辑专家。"], False, id="another-system-prompt"),
]


@pytest.mark.parametrize("changes, shared", ONE_SERVER)
def test_one_server_only_for_adapters_of_one_base(project, changes, shared):
    from orchestrator.core.serving.grouping import one_server

    answer = load_role("answer", adapter_variant(project, "one-a", 8, serve=ADAPTER))
    evaluate = load_role("evaluate", adapter_variant(project, "one-ev", 8, extends="tiny-evaluate.yaml",
                                                     serve=ADAPTER), changes)
    assert one_server([answer.recipe, evaluate.recipe]) is shared


def test_the_shipped_gptq_recipes_share_one_server(project):
    from orchestrator.core.serving.grouping import one_server

    recipes = [load_role(role, f"recipes/{role}-32b-gptq.yaml").recipe for role in ("answer", "evaluate")]
    assert one_server(recipes)


# ---------------------------------------------------------------- variants to vote over


def _subsample_recipe(project: Path, name: str, seed: int, fraction: float = 0.5, dataset: str | None = None) -> str:
    recipe = {"extends": "answer.yaml", "name": name, "dataset": {"subsample": fraction, "seed": seed}}
    recipe["dataset"]["name"] = dataset or f"train_{name.replace('-', '_')}"
    (project / "recipes" / f"{name}.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return f"recipes/{name}.yaml"


def _problems(project: Path, dataset: str) -> set[str]:
    by_prompt = {answer_prompt(q): q.problem_id for q in read_dataset(project / "datasets/sample/train.jsonl").questions}
    rows = json.loads((project / "datasets" / f"{dataset}.json").read_text(encoding="utf-8"))
    return {by_prompt[r["instruction"]] for r in rows}


def test_subsample_gives_each_variant_its_own_problems(project, cli):
    assert cli("distill")[0] == 0
    assert cli("dataset", "answer")[0] == 0
    everything = _problems(project, "train_answer_instruct")
    seen = {}
    for name, seed in (("answer-a", 1), ("answer-b", 2), ("answer-a2", 1)):
        code, out, err = cli("dataset", "answer", "--recipe", _subsample_recipe(project, name, seed))
        assert code == 0, err
        seen[name] = _problems(project, f"train_{name.replace('-', '_')}")
        assert f"subsample: {len(seen[name])} of {len(everything)} problems" in out
        assert seen[name] < everything and len(seen[name]) == round(len(everything) / 2)
    assert seen["answer-a"] != seen["answer-b"]  # another seed, other problems
    assert seen["answer-a"] == seen["answer-a2"]  # the same seed, the same problems
    # the full set is still there, untouched
    assert _problems(project, "train_answer_instruct") == everything


def test_subsample_under_the_shared_dataset_name_is_refused(project, cli):
    recipe = _subsample_recipe(project, "answer-c", 1, dataset="train_answer_instruct")
    code, _, err = cli("dataset", "answer", "--recipe", recipe)
    assert code == 2
    assert err.strip() == ("Error: recipes/answer-c.yaml: dataset.subsample 0.5 needs a dataset.name of its own "
                           "(e.g. train_answer_c), so this variant's subset does not overwrite "
                           "train_answer_instruct")


@pytest.mark.parametrize("value", [0, 1.5, -0.1])
def test_subsample_is_a_fraction(project, cli, value):
    code, _, err = cli("check", "answer", "--set", f"dataset.subsample={value}")
    assert code == 2 and "dataset.subsample" in err


def test_make_answer_model_trains_a_variant_recipe(project):
    """`make -n`: the plan names the variant's recipe, run folder and training set."""
    plan = make(with_makefile(project), "-n", "answer-model", "RECIPE=recipes/tiny-answer-b.yaml", timeout=120)
    assert plan.returncode == 0, plan.stderr
    lines = [line.removeprefix("$ ").strip() for line in plan.stdout.splitlines()]
    assert "orchestrator dataset answer --recipe recipes/tiny-answer-b.yaml --pipeline recipes/pipeline.yaml" in lines
    assert "orchestrator train answer --recipe recipes/tiny-answer-b.yaml" in lines
    assert "orchestrator merge answer --recipe recipes/tiny-answer-b.yaml --pipeline recipes/pipeline.yaml" in lines
    assert "orchestrator download answer --recipe recipes/tiny-answer-b.yaml" in lines  # its own base

    bad = make(project, "-n", "answer-model", "RECIPE=recipes/nope.yaml", timeout=120)
    assert bad.returncode != 0
    assert "Error: recipes/nope.yaml: no such recipe" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_two_tiny_answer_models_served_one_after_another(project, cli, tiny_model_dir):
    """Staged, nothing but recipes: each Answer model is served by llamafactory-cli api in turn,
    stopped before the next starts, then the Evaluate model."""
    for name in ("tiny-answer", "tiny-evaluate"):
        (project / "runs" / name).mkdir(parents=True)
        os.symlink(tiny_model_dir, project / "runs" / name / "merged")
    # the second Answer model another one by identity (infer's cache knows a model by it: the same
    # weights twice would be asked once)
    shutil.copytree(tiny_model_dir, project / "runs" / "tiny-answer-b" / "merged")
    (project / "runs" / "tiny-answer-b" / "merged" / "orchestrator.json").write_text('{"identity": "answer-b"}')
    qids = write_competition(project / "test.jsonl", [[4, 3], [2]])
    args = ["infer", project / "test.jsonl", "--out-dir", project / "out", "--pipeline", "recipes/tiny-pipeline.yaml",
            "--answer-recipe", "recipes/tiny-answer.yaml", "--answer-recipe", "recipes/tiny-answer-b.yaml",
            "--set", "inference.max_tokens=8"]
    code, _, err = cli(*args)
    assert code == 0, err
    trace = read_jsonl(project / "out" / "trace.jsonl")
    assert [r["id"] for r in trace] == qids and all(r["status"] == "done" for r in trace)
    for r in trace:
        assert r["answer"]["models"] == ["tiny-answer", "tiny-answer-b"]
        assert [s["model"] for s in r["answer"]["samples"]] == ["tiny-answer", "tiny-answer-b"]
        assert r["evaluate"]["model"] == "tiny-evaluate"
    events = [line for line in err.splitlines() if "ready: http" in line or "stopped" in line or "loading" in line]
    served = [line.split("]")[0].removeprefix("[serve ") for line in events if "ready: http" in line]
    assert served == ["tiny-answer", "tiny-answer-b", "tiny-evaluate"]  # one after another, in order
    code, _, err = cli(*args)  # resumed: nothing to ask, no model served
    assert code == 0 and "ready:" not in err
