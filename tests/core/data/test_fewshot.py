"""Few-shot retrieval: BM25 over character bigrams on a synthetic pool, and the pool itself
(never a held-out or test problem, never the question's own problem)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import read_jsonl

from orchestrator.core.data.fewshot import INDEX_KEY, Retriever, bigrams, examples_for, train_pool
from orchestrator.core.data.prompts import Example
from orchestrator.core.recipes.loading import load_pipeline, load_role


def ex(qid: str, problem: str, question: str = "问题？") -> Example:
    return Example(qid, problem, question, ("甲", "乙"), f"解答 {qid}")


POOL = [
    ex("a#0", "张三、李四和王五在北京开会，谁是医生？"),
    ex("b#0", "一个盒子里有红球和蓝球，取出两个球。"),
    ex("c#0", "赵六和钱七在上海参加比赛，谁得了第一？"),
    ex("d#0", "一个盒子里有红球和蓝球，取出两个球。"),  # the same text as b: a tie, b first
    ex("e#0", "张三、李四和王五在北京开会，谁是医生？", "另一个问题？"),  # a's text under another id
    ex("a#1", "张三、李四和王五在北京开会，谁是医生？", "第二问？"),  # a sibling of a#0
    ex("f#0", "一个盒子里有绿球和黄球，取出一个。"),  # b's next neighbour
    ex("g#0", "张三和李四在北京开会，谁是老师？"),  # a's next neighbour
]


@pytest.mark.parametrize(("query", "expected"), [
    pytest.param(("x", "赵六和钱七在上海比赛", "问题？"), ["c#0"], id="the-right-neighbour-first"),
    pytest.param(("x", "盒子里有红球和蓝球", "问题？"), ["b#0", "d#0"], id="ties-stable-in-pool-order"),
    pytest.param(("b", "一个盒子里有红球和蓝球，取出两个球。", "问题？"), ["f#0"],
                 id="own-problem-and-its-text-excluded"),
    pytest.param(("a", "张三、李四和王五在北京开会，谁是医生？", "问题？"), ["g#0"],
                 id="siblings-and-the-same-text-under-another-id-excluded"),
    pytest.param(("x", "完全无关的文字", "？"), ["a#0", "b#0"], id="nothing-shared-still-k-in-pool-order"),
])
def test_retrieval(query: tuple[str, str, str], expected: list[str]) -> None:
    found = Retriever(POOL).search([query], k=len(expected))[0]
    assert [e.qid for e in found] == expected


def test_index_cached_on_disk_gives_the_same_ranking(tmp_path: Path) -> None:
    queries = [("x", p.problem, p.question) for p in POOL]
    built = Retriever(POOL, tmp_path).search(queries, 3)
    assert (tmp_path / f"index-{INDEX_KEY}.npz").exists()  # named by k1, b and the tokenisation
    assert Retriever(POOL, tmp_path).search(queries, 3) == built


@pytest.mark.parametrize(("text", "grams"), [
    ("甲说：乙在说谎。", ["甲说", "说乙", "乙在", "在说", "说谎"]),
    ("A B", ["ab"]),
    ("甲", ["甲"]),
    ("", []),
])
def test_bigrams_drop_punctuation_and_spaces(text: str, grams: list[str]) -> None:
    assert bigrams(text) == grams


# ---------------------------------------------------------------- the pool, planted problems


def _distilled(project: Path, cli) -> None:
    """The sample's worked solutions in the teacher cache (preloaded, nothing asked)."""
    assert cli("distill")[0] == 0


def _plant_test_problem(project: Path) -> str:
    """A test problem's text copied into the training file with a cached agreeing reply."""
    train = project / "datasets" / "sample" / "train.jsonl"
    test_problem = read_jsonl(project / "datasets" / "sample" / "test.jsonl")[0]
    rows = read_jsonl(train)
    planted = dict(rows[0], id="planted_test_copy", problem=test_problem["problem"])
    train.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [*rows, planted]), encoding="utf-8")
    cache = project / "runs" / "distill" / "teacher.jsonl"
    from orchestrator.core.common.ledger import text_hash
    from orchestrator.core.data.competition import read_dataset
    from orchestrator.core.data.teacher_cache import sampling_of, teacher_key, teacher_prompt

    teacher = load_pipeline().recipe.teacher
    with cache.open("a", encoding="utf-8") as f:
        for q in read_dataset(train).problems[-1].questions:
            prompt = teacher_prompt(q, teacher)
            f.write(json.dumps({"key": teacher_key(q.qid, prompt, teacher.model, sampling_of(teacher)),
                                "qid": q.qid, "status": "ok", "text": f"### 可能的结果:\n{q.answer}",
                                "letter": q.answer, "agrees": True, "attempts": 1,
                                "prompt_sha": text_hash(prompt)}, ensure_ascii=False) + "\n")
    return test_problem["problem"]


def test_the_pool_never_holds_a_held_out_or_test_problem(project: Path, cli) -> None:
    _distilled(project, cli)
    test_text = _plant_test_problem(project)
    role = load_role("answer", "recipes/tiny-answer.yaml").recipe  # val_size 0.2
    pipe = load_pipeline().recipe
    pool = train_pool(pipe, role)
    from orchestrator.core.data.competition import read_dataset
    from orchestrator.core.data.heldout import split_by_problem

    gold = [q for q in read_dataset(project / "datasets" / "sample" / "train.jsonl").questions if q.answer]
    held = {q.problem for q in split_by_problem(gold, role.dataset.val_size, role.dataset.seed)[1]}
    assert held and pool
    assert not {e.problem for e in pool} & (held | {test_text})
    assert "planted_test_copy" not in {e.problem_id for e in pool}
    # a question of the planted problem retrieves others, and none of its own
    shots = examples_for(gold, pipe, role)
    assert all(e.problem_id != q.problem_id for q in gold for e in shots.get(q))


def test_fewshot_k2_training_prompts_show_two_other_training_problems(project: Path, cli) -> None:
    _distilled(project, cli)
    test_text = _plant_test_problem(project)
    code, out, err = cli("dataset", "answer", "--recipe", "recipes/tiny-answer.yaml", "--set", "fewshot.k=2")
    assert code != 0 and "with fewshot.k=2 examples: run `orchestrator distill` first" in err
    # the few-shot prompts' replies: a teacher on loopback answering each prompt's own gold letter
    from fake_openai import FakeOpenAI

    recipe = project / "recipes" / "fewshot-answer.yaml"
    recipe.write_text("extends: tiny-answer.yaml\nfewshot:\n  k: 2\n", encoding="utf-8")
    pipeline = project / "recipes" / "fewshot-pipeline.yaml"
    pipeline.write_text("extends: tiny-pipeline.yaml\ninference:\n  answer_recipe: recipes/fewshot-answer.yaml\n",
                        encoding="utf-8")
    from orchestrator.core.data.competition import read_dataset

    train = read_dataset(project / "datasets" / "sample" / "train.jsonl").questions
    gold = {q.question + "\n" + "\n".join(q.options): q.answer for q in train}

    def reply(prompt: str, request: dict) -> str:
        asked = prompt.rpartition("### 问题:\n")[2]
        letter = next(a for key, a in gold.items() if asked.startswith(key.split("\n")[0]))
        return f"### 思考思路:\n1. 推理\n### 可能的结果:\n{letter}"

    with FakeOpenAI(reply=reply) as teacher:
        code, out, err = cli("distill", "--pipeline", pipeline, "--set", f"teacher.base_url={teacher.url}")
        assert code == 0, err
        asked = list(teacher.prompts)
    assert asked and all(p.count("的解答:\n") == 2 for p in asked)
    code, out, err = cli("dataset", "answer", "--recipe", recipe, "--pipeline", pipeline)
    assert code == 0, err
    rows = json.loads((project / "datasets" / "train_answer_instruct.json").read_text(encoding="utf-8"))
    sources = json.loads((project / "datasets" / "train_answer_instruct.sources.json").read_text(encoding="utf-8"))
    assert rows and all(r["instruction"].count("的解答:\n") == 2 for r in rows)
    assert {r["instruction"] for r in rows} <= set(asked)  # what the teacher was asked is what is trained on
    shots = sources["fewshot"]
    val_rows = json.loads((project / "datasets" / "val_answer_instruct.json").read_text(encoding="utf-8"))
    assert shots["k"] == 2 and shots["pool_hash"] and len(shots["examples"]) == len(rows) + len(val_rows)
    held = {p["id"] for p in read_jsonl(project / "datasets" / "val.jsonl")}
    val_texts = {p["problem"] for p in read_jsonl(project / "datasets" / "val.jsonl")}
    for qid, ids in shots["examples"].items():
        assert len(ids) == 2 and all(i.rpartition("#")[0] != qid.rpartition("#")[0] for i in ids)
        assert not {i.rpartition("#")[0] for i in ids} & (held | {"planted_test_copy"})
    for r in rows:
        examples_part = r["instruction"].rpartition("### 题目:")[0]
        assert test_text not in examples_part and not any(t in examples_part for t in val_texts)

    # infer asks the Answer model the very prompts the set trains on, and traces the same examples
    with FakeOpenAI(models=("ans",)) as answer, FakeOpenAI(models=("ev",)) as evaluate:
        # the held-out problems: retrieval reads the pool the training set used, whatever file is answered
        code, out, err = cli("infer", project / "datasets" / "val.jsonl", "--out-dir", project / "out",
                             "--pipeline", pipeline, "--answer-url", answer.url, "--evaluate-url", evaluate.url)
        assert code == 0, err
        inferred = set(answer.prompts)
    assert "fewshot.k 2" in err
    assert val_rows and {r["instruction"] for r in val_rows} <= inferred
    trace = {r["id"]: r for r in read_jsonl(project / "out" / "trace.jsonl")}
    both = set(trace) & set(shots["examples"])
    assert both and all(trace[qid]["answer"]["few_shot"] == {"ans": shots["examples"][qid]} for qid in both)

    # the Evaluate set from the Answer model's own replies asks it the prompts its training set has
    with FakeOpenAI(models=("ans",)) as answer:
        code, out, err = cli("dataset", "evaluate", "--pipeline", pipeline, "--answer-url", answer.url,
                             "--set", "dataset.evaluate_source=answer_model", "--set", "dataset.evaluate_samples=1")
        assert code == 0, err
        replied = list(answer.prompts)
    assert {r["instruction"] for r in rows + val_rows} <= set(replied)
    assert all(p.count("的解答:\n") == 2 for p in replied)


@pytest.mark.parametrize(("cutoff", "warned"), [(64, True), (100000, False)])
def test_check_warns_when_the_longest_fewshot_prompt_exceeds_cutoff_len(tiny_project: Path, cli, cutoff: int,
                                                                         warned: bool) -> None:
    _distilled(tiny_project, cli)
    code, out, err = cli("check", "answer", "--recipe", "recipes/tiny-answer.yaml",
                         "--set", "fewshot.k=2", "--set", f"train.cutoff_len={cutoff}")
    assert code == 0, err
    assert ("tokens, over train.cutoff_len 64: training cuts it" in err) is warned
