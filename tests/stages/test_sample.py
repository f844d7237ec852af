"""The shipped sample data: deterministic, well-formed, cached teacher replies keyed like
distillation, and every gold answer re-derived here by an independent solver per family."""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.core.common.ledger import text_hash
from orchestrator.core.data.answers import extract_choice
from orchestrator.core.data.competition import LETTERS, read_dataset
from orchestrator.core.data.prompts import answer_prompt
from orchestrator.stages.distill import teacher_key

SHIPPED = Path(__file__).resolve().parents[2] / "datasets" / "sample"
sys.path.insert(0, str(SHIPPED))  # the generator lives beside the data it makes, outside the package
from make_sample import DEFAULT_SAMPLING, FAMILIES, generate_sample  # noqa: E402
FILES = ("train.jsonl", "test.jsonl", "test_gold.jsonl", "teacher.jsonl")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sample")
    return out, generate_sample(out)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- determinism and shape -------------------------------------------------------------------


def test_generation_is_byte_identical(tmp_path: Path, sample: tuple[Path, dict]) -> None:
    first, _ = sample
    generate_sample(tmp_path / "again")
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (first / name).read_bytes(), name
    generate_sample(tmp_path / "other", seed=1)
    assert (tmp_path / "other" / "train.jsonl").read_bytes() != (first / "train.jsonl").read_bytes()


def test_shipped_sample_equals_a_fresh_generation(sample: tuple[Path, dict]) -> None:
    """datasets/sample is exactly `generate_sample(seed=0)`: regenerate it after changing the
    generator, the Answer prompt template or teacher_key."""
    fresh, _ = sample
    for name in FILES:
        assert (SHIPPED / name).read_bytes() == (fresh / name).read_bytes(), (
            f"datasets/sample/{name} drifted from the generator"
        )


def test_counts_splits_and_summary(sample: tuple[Path, dict]) -> None:
    out, summary = sample
    train = read_dataset(out / "train.jsonl")
    test = read_dataset(out / "test.jsonl")
    gold = read_dataset(out / "test_gold.jsonl")
    problems = len(train.problems) + len(test.problems)
    questions = len(train.questions) + len(test.questions)
    assert problems >= 40 and questions >= 120
    assert len(train.problems) == 30 and len(test.problems) == 10
    assert summary["problems"] == {"train": 30, "test": 10}
    assert summary["questions"] == {"train": len(train.questions), "test": len(test.questions)}
    assert set(summary["families"]) == {name for name, _ in FAMILIES}
    assert sum(f["problems"] for f in summary["families"].values()) == problems
    assert sum(f["questions"] for f in summary["families"].values()) == questions

    assert [p.id for p in train.problems] == [f"sample_train_{i:03d}" for i in range(30)]
    assert [p.id for p in test.problems] == [f"sample_test_{i:03d}" for i in range(10)]
    assert all(q.answer is not None for q in train.questions)
    for row in records(out / "test.jsonl"):
        assert all("answer" not in q for q in row["questions"])
    assert [p.id for p in gold.problems] == [p.id for p in test.problems]
    for t, g in zip(test.questions, gold.questions):
        assert (t.qid, t.problem, t.question, t.options) == (g.qid, g.problem, g.question, g.options)
        assert t.answer is None and g.answer is not None

    all_questions = train.questions + gold.questions
    for p in train.problems + gold.problems:
        assert 2 <= len(p.questions) <= 5
        for k, q in enumerate(p.questions, 1):
            assert q.question.startswith(f"选择题 {k}：\n")
            assert 3 <= len(q.options) <= 7 and len(set(q.options)) == len(q.options)
    sizes = {len(q.options) for q in all_questions}
    assert {3, 4, 5, 6, 7} <= sizes  # letters E-G occur


# --- teacher records -------------------------------------------------------------------------


def test_one_teacher_record_per_training_question(sample: tuple[Path, dict]) -> None:
    out, summary = sample
    questions = read_dataset(out / "train.jsonl").questions
    recs = records(out / "teacher.jsonl")
    by_qid = {r["qid"]: r for r in recs}
    assert len(recs) == len(by_qid) == len(questions) == summary["teacher_records"]
    assert len({r["key"] for r in recs}) == len(recs)
    for q in questions:
        r = by_qid[q.qid]
        prompt = answer_prompt(q)
        assert r["key"] == teacher_key(q.qid, prompt, "deepseek-chat", DEFAULT_SAMPLING)
        assert r["prompt_sha"] == text_hash(prompt)
        assert r["model"] == "deepseek-chat" and r["sampling"] == DEFAULT_SAMPLING
        assert r["attempts"] == 1 and r["source"] == "sample-generator"
        assert r["status"] == ("ok" if r["agrees"] else "rejected")  # as distillation records a miss
        assert r["gold"] == q.answer
        assert r["letter"] in q.letters
        assert r["agrees"] == (r["letter"] == r["gold"])
        head, sep, result = r["text"].partition("\n\n### 可能的结果:\n")
        assert head.startswith("### 思考思路:\n1. ") and sep and result.strip()
        steps = head.splitlines()[1:]
        assert 1 <= len(steps) <= 5
        assert [s.split(". ", 1)[0] for s in steps] == [str(i) for i in range(1, len(steps) + 1)]
    # Compact JSON, one object a line, as the ledger writes it.
    first = (out / "teacher.jsonl").read_text(encoding="utf-8").splitlines()[0]
    assert first == json.dumps(recs[0], ensure_ascii=False, separators=(",", ":"))


def test_a_few_teacher_replies_are_deliberately_wrong(sample: tuple[Path, dict]) -> None:
    out, summary = sample
    recs = records(out / "teacher.jsonl")
    wrong = [r for r in recs if not r["agrees"]]
    assert len(wrong) == summary["wrong_teacher_records"]
    assert 0.05 <= len(wrong) / len(recs) <= 0.12
    assert all(r["letter"] != r["gold"] for r in wrong)


def test_custom_model_and_sampling_change_the_keys(tmp_path: Path) -> None:
    sampling = {"temperature": 0.7, "max_tokens": 512}
    generate_sample(tmp_path, teacher_model="qwen-max", sampling=sampling)
    questions = {q.qid: q for q in read_dataset(tmp_path / "train.jsonl").questions}
    for r in records(tmp_path / "teacher.jsonl"):
        assert r["model"] == "qwen-max" and r["sampling"] == sampling
        assert r["key"] == teacher_key(r["qid"], answer_prompt(questions[r["qid"]]), "qwen-max", sampling)


def test_extract_choice_reads_every_teacher_reply(sample: tuple[Path, dict]) -> None:
    out, _ = sample
    n_options = {q.qid: len(q.options) for q in read_dataset(out / "train.jsonl").questions}
    for r in records(out / "teacher.jsonl"):
        letter = extract_choice(r["text"], n_options[r["qid"]])
        assert letter == r["letter"], r["text"]
        if r["agrees"]:
            assert letter == r["gold"]


# --- every gold answer, re-derived independently ---------------------------------------------
# A checker gets the problem and the question text and returns a predicate over option texts;
# exactly one option may satisfy it, and it must be the gold one.

Check = Callable[[str], bool]


def check_powers(problem: str, q: str) -> Check | None:
    if m := re.search(r"若数 (\d+) 将自己乘 (\d+) 次|^(\d+) 的 (\d+) 次幂是多少", q):
        a, b = (int(x) for x in m.groups() if x is not None)
        return lambda o: o == str(a**b)
    if m := re.search(r"哪个数的 (\d+) 次幂等于 (\d+)", q):
        b, v = int(m[1]), int(m[2])
        return lambda o: o.isdigit() and int(o) ** b == v
    if re.search(r"数 \d+ 的 0 次幂", q):
        return lambda o: o == "1"
    if m := re.search(r"(\d+)\^(\d+) 与 (\d+)\^(\d+) 相比", q):
        a, b, c, d = map(int, m.groups())
        want = f"{a}^{b} 更大" if a**b > c**d else f"{c}^{d} 更大" if c**d > a**b else "两者相等"
        return lambda o: o == want
    return None


def check_factorials(problem: str, q: str) -> Check | None:
    if m := re.search(r"^(\d+) 的阶乘是多少|factorial\((\d+), F\)", q):
        n = int(m[1] or m[2])
        return lambda o: o == str(math.factorial(n))
    if m := re.search(r"阶乘等于 (\d+)", q):
        v = int(m[1])
        return lambda o: o.isdigit() and math.factorial(int(o)) == v
    if m := re.search(r"(\d+)! ÷ (\d+)! 等于多少", q):
        n, k = int(m[1]), int(m[2])
        return lambda o: o == str(math.factorial(n) // math.factorial(k))
    if m := re.search(r"(\d+)! 的末尾有多少个连续的 0", q):
        digits = str(math.factorial(int(m[1])))
        return lambda o: o == str(len(digits) - len(digits.rstrip("0")))
    return None


def check_kinship(problem: str, q: str) -> Check | None:
    parent = {c: p for p, c, _ in re.findall(r"^(\S+?)是(\S+?)的(父亲|母亲)。$", problem, re.MULTILINE)}
    people = set(parent) | set(parent.values())
    up = lambda x: parent.get(x)
    if m := re.search(r"谁是(\S+?)的祖父母", q):
        return lambda o: o == up(up(m[1]))
    if m := re.search(r"下列哪一位是(\S+?)的兄弟姐妹", q):
        return lambda o: o != m[1] and o in parent and up(o) == up(m[1])
    if m := re.search(r"(\S+?)有几个孙辈", q):
        return lambda o: o == str(sum(up(up(c)) == m[1] for c in people))
    if "没有子女" in q:
        return lambda o: o in people and o not in parent.values()
    if m := re.search(r"，(\S+?)和(\S+?)是什么关系", q):
        x, y = m[1], m[2]
        if up(up(y)) == x:
            want = f"{x}是{y}的祖父母"
        elif up(y) == x:
            want = f"{x}是{y}的父母"
        elif up(x) is not None and up(x) == up(y):
            want = f"{x}和{y}是兄弟姐妹"
        elif up(up(x)) == y:
            want = f"{x}是{y}的孙辈"
        else:
            want = f"{x}和{y}没有上述任何关系"
        return lambda o: o == want
    return None


def check_heights(problem: str, q: str) -> Check | None:
    taller: dict[str, set[str]] = {}
    for a, b, word in re.findall(r"^(\S+?)比(\S+?)(高|矮)。$", problem, re.MULTILINE):
        hi, lo = (a, b) if word == "高" else (b, a)
        taller.setdefault(hi, set()).add(lo)
        taller.setdefault(lo, set())

    def below(x: str) -> set[str]:
        return set().union(*({y} | below(y) for y in taller[x])) if taller[x] else set()

    order = sorted(taller, key=lambda x: -len(below(x)))
    assert [len(below(x)) for x in order] == list(range(len(order) - 1, -1, -1))  # a total order
    if "谁最高" in q:
        return lambda o: o == order[0]
    if "谁最矮" in q:
        return lambda o: o == order[-1]
    if m := re.search(r"第 (\d+) 位是谁", q):
        return lambda o: o == order[int(m[1]) - 1]
    if m := re.search(r"比(\S+?)高的有几个人", q):
        return lambda o: o == str(order.index(m[1]))
    if "正确的是哪一项" in q:
        return lambda o: (r := re.fullmatch(r"(\S+?)比(\S+?)高", o)) is not None and r[2] in below(r[1])
    return None


def check_race(problem: str, q: str) -> Check | None:
    names = re.match(r"(.+?)共 \d+ 人参加赛跑", problem)[1].split("、")
    tests = []
    for clue in re.findall(r"^\d+\. (.+)。$", problem, re.MULTILINE):
        if m := re.fullmatch(r"(\S+?)第一个冲过终点", clue):
            tests.append(lambda P, p=m[1]: P[0] == p)
        elif m := re.fullmatch(r"(\S+?)不是最后一名", clue):  # before "是最后一名"
            tests.append(lambda P, p=m[1]: P[-1] != p)
        elif m := re.fullmatch(r"(\S+?)是最后一名", clue):
            tests.append(lambda P, p=m[1]: P[-1] == p)
        elif m := re.fullmatch(r"(\S+?)是第(\d+)名", clue):
            tests.append(lambda P, p=m[1], k=int(m[2]): P.index(p) == k - 1)
        elif m := re.fullmatch(r"(\S+?)紧跟在(\S+?)之后冲过终点", clue):
            tests.append(lambda P, b=m[1], a=m[2]: P.index(b) == P.index(a) + 1)
        elif m := re.fullmatch(r"(\S+?)比(\S+?)先冲过终点", clue):
            tests.append(lambda P, a=m[1], b=m[2]: P.index(a) < P.index(b))
        else:
            raise AssertionError(f"unknown clue {clue!r}")
    solutions = [P for P in itertools.permutations(names) if all(t(P) for t in tests)]
    assert len(solutions) == 1, problem
    order = solutions[0]
    if m := re.search(r"第 (\d+) 名是谁", q):
        return lambda o: o == order[int(m[1]) - 1]
    if m := re.search(r"(\S+?)是第几名", q):
        return lambda o: o == f"第{order.index(m[1]) + 1}名"
    if m := re.search(r"谁紧跟在(\S+?)之后冲过终点", q):
        return lambda o: o in order and order.index(o) == order.index(m[1]) + 1
    if m := re.search(r"在(\S+?)和(\S+?)之间冲过终点的有几人", q):
        return lambda o: o == str(abs(order.index(m[1]) - order.index(m[2])) - 1)
    return None


def check_clubs(problem: str, q: str) -> Check | None:
    member = set(re.findall(r"^(\S+?)是(\S+?)的成员。$", problem, re.MULTILINE))
    people = re.search(r"。(\S+?)中，已知", problem)[1].split("、")
    clubs_of = lambda p: [c for x, c in member if x == p]
    if m := re.search(r"(\S+?)参加了哪个社团", q):
        return lambda o: [o] == clubs_of(m[1])
    if "没有参加任何社团" in q:
        return lambda o: o in people and not clubs_of(o)
    if m := re.search(r"(\S+?)有几名成员", q):
        return lambda o: o == str(sum(c == m[1] for _, c in member))
    if m := re.search(r"同时参加(\S+?)和(\S+?)的是谁", q):
        return lambda o: (o, m[1]) in member and (o, m[2]) in member
    if m := re.search(r"(\S+?)是(\S+?)的成员吗", q):
        return lambda o: o == ("是" if (m[1], m[2]) in member else "否")
    return None


def check_roads(problem: str, q: str) -> Check | None:
    edges = re.findall(r"^从(\S+?)到(\S+?)有一条单向道路。$", problem, re.MULTILINE)

    def dist(x: str) -> dict[str, int]:
        out, frontier, d = {x: 0}, [x], 0
        while frontier:
            d += 1
            frontier = [b for a, b in edges if a in frontier and b not in out]
            out.update({b: d for b in frontier})
        return out

    if m := re.search(r"从(\S+?)出发，沿道路可以到达下列哪座城市", q):
        return lambda o: o != m[1] and o in dist(m[1])
    if m := re.search(r"从(\S+?)出发，无法到达下列哪座城市", q):
        return lambda o: o != m[1] and o not in dist(m[1])
    if m := re.search(r"从(\S+?)到(\S+?)最少要经过几条道路", q):
        return lambda o: o == str(dist(m[1])[m[2]])
    if m := re.search(r"从(\S+?)能否沿道路到达(\S+?)？", q):
        return lambda o: o == ("能" if m[2] in dist(m[1]) else "不能")
    return None


def check_sequence(problem: str, q: str) -> Check | None:
    if m := re.search(r"首项是 (-?\d+)，公差是 (-?\d+)", problem):
        a1, d = int(m[1]), int(m[2])
    else:
        m = re.search(r"前三项依次是 (-?\d+)、(-?\d+)、(-?\d+)", problem)
        a1, d = int(m[1]), int(m[2]) - int(m[1])
        assert int(m[3]) - int(m[2]) == d
    terms = [a1 + i * d for i in range(500)]  # terms[i] is the (i+1)-th term
    if m := re.search(r"第 (\d+) 项是多少", q):
        return lambda o: o == str(terms[int(m[1]) - 1])
    if m := re.search(r"前 (\d+) 项的和", q):
        return lambda o: o == str(sum(terms[: int(m[1])]))
    if m := re.search(r"数 (-?\d+) 是这个数列的第几项", q):
        return lambda o: o == f"第 {terms.index(int(m[1])) + 1} 项"
    if "数列中的某一项" in q:
        return lambda o: int(o) in terms
    return None


def check_gcd(problem: str, q: str) -> Check | None:
    if m := re.search(r"(\d+) 和 (\d+) 的最大公约数|gcd\((\d+), (\d+), G\)", q):
        a, b = (int(x) for x in m.groups() if x is not None)
        return lambda o: o == str(math.gcd(a, b))
    if m := re.search(r"(\d+) 和 (\d+) 的最小公倍数", q):
        return lambda o: o == str(math.lcm(int(m[1]), int(m[2])))
    if "互质" in q:
        return lambda o: math.gcd(*map(int, o.split(" 和 "))) == 1
    return None


def check_foodweb(problem: str, q: str) -> Check | None:
    plants = set(re.findall(r"^plant\((\w+)\)\.$", problem, re.MULTILINE))
    animals = set(re.findall(r"^animal\((\w+)\)\.$", problem, re.MULTILINE))
    eats = set(re.findall(r"^eats\((\w+), (\w+)\)\.$", problem, re.MULTILINE))
    if "herbivore(X)" in q:
        return lambda o: any(a == o and b in plants for a, b in eats)
    if m := re.search(r"food_chain\((\w+), Z\)", q):
        return lambda o: any((m[1], y) in eats and (y, o) in eats for y in plants | animals)
    if m := re.search(r"查询 eats\((\w+), (\w+)\) 的结果", q):
        return lambda o: o == ("true（成立）" if (m[1], m[2]) in eats else "false（不成立）")
    if "carnivore(X)" in q:
        return lambda o: o == str(len({a for a, b in eats if b in animals}))
    return None


CHECKERS: dict[str, Callable[[str, str], Check | None]] = {
    "将自己乘": check_powers,
    "阶乘": check_factorials,
    "亲子关系": check_kinship,
    "比较身高": check_heights,
    "参加赛跑": check_race,
    "社团": check_clubs,
    "单向道路": check_roads,
    "等差数列": check_sequence,
    "最大公约数": check_gcd,
    "食物网": check_foodweb,
}


def test_every_gold_answer_is_right(sample: tuple[Path, dict]) -> None:
    out, _ = sample
    used: dict[str, int] = {}
    for path in ("train.jsonl", "test_gold.jsonl"):
        for problem in read_dataset(out / path).problems:
            (marker,) = [k for k in CHECKERS if k in problem.problem]
            used[marker] = used.get(marker, 0) + 1
            for q in problem.questions:
                text = q.question.split("\n", 1)[1]
                check = CHECKERS[marker](problem.problem, text)
                assert check is not None, f"no checker for {q.qid}: {text}"
                right = [LETTERS[i] for i, o in enumerate(q.options) if check(o)]
                assert right == [q.answer], (q.qid, text, q.options, q.answer)
    assert used == {k: 4 for k in CHECKERS}  # every family, four problems each


def test_spot_checks_by_hand(sample: tuple[Path, dict]) -> None:
    """A few facts the independent checkers rely on, worked out by hand."""
    out, _ = sample
    rows = {q.qid: q for p in ("train.jsonl", "test_gold.jsonl") for q in read_dataset(out / p).questions}
    powers = [q for q in rows.values() if "将自己乘" in q.question and "若数 0" not in q.question]
    for q in powers:
        a, b = map(int, re.search(r"若数 (\d+) 将自己乘 (\d+) 次", q.question).groups())
        assert int(q.options[LETTERS.index(q.answer)]) == a**b
    assert check_powers("", "若数 9 将自己乘 9 次，最终结果是多少？")("387420489")
    assert check_factorials("", "20! 的末尾有多少个连续的 0？")("4")
    assert check_gcd("", "40 和 12 的最大公约数是多少？")("4")
    assert check_gcd("", "28 和 8 的最小公倍数是多少？")("56")
    assert check_sequence("一个等差数列的首项是 21，公差是 3。", "这个数列前 10 项的和是多少？")("345")
