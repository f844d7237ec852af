"""Generator of the sample data the project ships (`make sample`; not part of the package): synthetic closed-world logic and arithmetic problems in
the competition format, with worked teacher solutions.

`generate_sample(out_dir)` writes
  train.jsonl      30 problems with `answer`
  test.jsonl       10 problems without `answer`
  test_gold.jsonl  the test problems with `answer`
  teacher.jsonl    one cached teacher reply per training question, in exactly the record
                   format distillation caches, so later stages run without a teacher API.

Ten families of problems (powers, factorials, kinship, heights, race, clubs, roads, sequence,
gcd, food web), four problems each; the fourth of each family goes to the test split. Every
correct option is computed from the stated facts; the distractors always include the value a
typical mistake reaches (an off-by-one exponent, parent taken for grandparent, an open-world
"无法确定", one-way roads taken as two-way, ...).

About 8% of the teacher replies are deliberately WRONG: their reasoning makes that typical
mistake and ends on its letter (`letter` != `gold`, `agrees: false`, and `status: "rejected"`
as distillation records a miss), so rejection sampling and the keep policy have something to do.

Deterministic: each problem draws from its own `random.Random("<seed>:<family>:<i>")` (a
string seed is hashed with SHA-512, not Python's randomised `hash`), nothing reads the clock
or iterates a set, so the same seed gives the same bytes on every run and a change to one
family leaves the others' problems unchanged.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.common.files import atomic_write_jsonl, atomic_write_text
from orchestrator.core.common.ledger import text_hash
from orchestrator.core.data.competition import LETTERS, read_dataset
from orchestrator.core.data.prompts import answer_prompt
from orchestrator.stages.distill import teacher_key

DEFAULT_SAMPLING: dict[str, Any] = {"temperature": 0.0, "max_tokens": 1024}
PROBLEMS_PER_FAMILY = 4
TEST_INDEX = 3  # the last problem of each family is a test problem
WRONG_SHARE = 0.08  # share of training questions whose teacher reply is deliberately wrong
OPTION_COUNTS = (3, 4, 4, 4, 5, 5, 6, 7)
QUESTION_COUNTS = (2, 3, 3, 4, 4, 5)
SOURCE = "sample-generator"

MALE = ("张伟", "王强", "李明", "刘洋", "陈刚", "杨帆", "赵磊", "黄涛", "周杰", "吴斌", "徐鹏", "孙浩")
FEMALE = ("王芳", "李娜", "张敏", "刘静", "陈丽", "杨雪", "赵婷", "黄琳", "周燕", "吴霞", "徐颖", "孙悦")
PEOPLE = MALE + FEMALE


@dataclass
class Item:
    """One generated question: its options, the correct one, and two worked solutions."""

    question: str
    options: list[str]
    answer: int  # index of the correct option
    steps: list[str]  # reasoning that reaches the correct option
    wrong: int  # index of the option a typical mistake reaches
    wrong_steps: list[str]  # reasoning that makes that mistake


Maker = Callable[[random.Random, Any], "Item | None"]


class TooFewOptions(Exception):
    """This problem offers too few distinct distractors for the question; ask another."""


def item(
    rng: random.Random,
    question: str,
    correct: object,
    mistake: object,
    others: tuple | list,
    steps: list[str],
    wrong_steps: list[str],
    fixed: list[str] | None = None,
    n: int | None = None,
) -> Item:
    """Options = the correct value, the mistaken value and some `others` (distinct, shuffled),
    or exactly `fixed` in that order. A last step naming the letter closes each reasoning."""
    correct, mistake = str(correct), str(mistake)
    assert correct != mistake, question
    if fixed is not None:
        options = list(fixed)
    else:
        pool: list[str] = []
        for o in map(str, others):
            if o not in (correct, mistake) and o not in pool:
                pool.append(o)
        n = min(n or rng.choice(OPTION_COUNTS), 2 + len(pool), len(LETTERS))
        if n < 3:
            raise TooFewOptions(question)
        options = [correct, mistake] + rng.sample(pool, n - 2)
        rng.shuffle(options)
    a, w = options.index(correct), options.index(mistake)
    assert len(steps) <= 4 and len(wrong_steps) <= 4, question
    return Item(
        question,
        options,
        a,
        steps + [f"对照选项，“{correct}”是选项 {LETTERS[a]}。"],
        w,
        wrong_steps + [f"对照选项，“{mistake}”是选项 {LETTERS[w]}。"],
    )


def ask(rng: random.Random, makers: tuple[Maker, ...], world: Any) -> list[Item]:
    """2-5 distinct questions about one problem, from the family's question makers in turn (a
    maker returns None when this problem offers it nothing to ask)."""
    want = rng.choice(QUESTION_COUNTS)
    order = list(makers)
    rng.shuffle(order)
    items: list[Item] = []
    for attempt in range(60):
        if len(items) == want:
            break
        try:
            got = order[attempt % len(order)](rng, world)
        except TooFewOptions:
            continue
        if got is not None and all(got.question != i.question for i in items):
            items.append(got)
    assert len(items) >= 2
    return items


def par(x: int) -> str:
    """A number in a formula: negatives in brackets."""
    return f"({x})" if x < 0 else str(x)


# --- powers ----------------------------------------------------------------------------------

EQUAL_POWERS = ((2, 6, 4, 3), (2, 6, 8, 2), (3, 4, 9, 2), (2, 8, 4, 4), (2, 8, 16, 2),
                (2, 9, 8, 3), (3, 6, 9, 3), (2, 10, 4, 5), (5, 4, 25, 2), (2, 12, 8, 4))


def powers_list(a: int, b: int) -> str:
    return ", ".join(str(a**k) for k in range(1, b + 1))


def power_value(rng: random.Random, _: Any) -> Item:
    a = rng.randint(2, 12)
    b = rng.randint(2, 9 if a < 10 else 6)
    v = a**b
    q = rng.choice((f"若数 {a} 将自己乘 {b} 次，最终结果是多少？", f"{a} 的 {b} 次幂是多少？"))
    return item(
        rng, q, v, a ** (b + 1),
        (a ** (b - 1), a * b, b**a, v + a, (a + 1) ** b, v * 2),
        [f"按题目的定义，这是求 {a} 的 {b} 次幂，即 {b} 个 {a} 连乘：{a}^{b}。",
         f"逐次相乘，{a} 的 1 到 {b} 次幂依次为：{powers_list(a, b)}。",
         f"所以 {a}^{b} = {v}。"],
        [f"在 {a} 的基础上再乘 {b} 次，共 {b + 1} 个 {a} 连乘：{a}^{b + 1}。",
         f"逐次相乘：{powers_list(a, b + 1)}。",
         f"所以结果是 {a ** (b + 1)}。"],
    )


def power_base(rng: random.Random, _: Any) -> Item:
    a, b = rng.randint(2, 9), rng.randint(4, 6)
    v = a**b
    return item(
        rng, f"哪个数的 {b} 次幂等于 {v}？", a, v // b,
        (a + 1, a + 2, a - 1 if a > 2 else a + 3, b, 2 * a),
        [f"设这个数为 x，需要 x^{b} = {v}。",
         f"试算：{a - 1}^{b} = {(a - 1) ** b}，{a}^{b} = {v}，{a + 1}^{b} = {(a + 1) ** b}。",
         f"只有 {a}^{b} 恰好等于 {v}，所以 x = {a}。"],
        [f"求 {b} 次幂等于 {v} 的数，就是把 {v} 平均分成 {b} 份。",
         f"{v} ÷ {b} 取整得 {v // b}。"],
    )


def power_zero(rng: random.Random, _: Any) -> Item:
    if rng.random() < 0.5:
        k = rng.randint(2, 9)
        return item(
            rng, f"若数 0 将自己乘 {k} 次，最终结果应为多少？", 0, 1, (k, "无效的计算", -1),
            [f"按定义，这是 0 的 {k} 次幂，即 {k} 个 0 连乘。",
             "任何数乘以 0 都等于 0，每一次相乘的结果都是 0。",
             "所以结果是 0。"],
            ["任何数的幂都至少为 1。", "所以结果是 1。"],
        )
    x = rng.randint(2, 20)
    return item(
        rng, f"数 {x} 的 0 次幂是多少？", 1, 0, (x, "无效的计算", -1),
        ["题目规定任何非零数的 0 次幂都等于 1。", f"{x} 不为 0，所以 {x}^0 = 1。"],
        ["0 次幂就是乘以 0。", f"{x} × 0 = 0。"],
    )


def power_compare(rng: random.Random, _: Any) -> Item:
    if rng.random() < 0.25:
        a, b, c, d = rng.choice(EQUAL_POWERS)
    else:
        while True:  # unequal, and the exponent or the base alone points the wrong way
            a, b, c, d = rng.randint(2, 9), rng.randint(2, 8), rng.randint(2, 9), rng.randint(2, 8)
            A, C = a**b, c**d
            if A != C and a != c and b != d and ((b > d) != (A > C) or (a > c) != (A > C)):
                break
    A, C = a**b, c**d
    left, right, same = f"{a}^{b} 更大", f"{c}^{d} 更大", "两者相等"
    correct = left if A > C else right if C > A else same
    if A == C or (b > d) != (A > C):
        why, x, y = "指数", b, d
    else:
        why, x, y = "底数", a, c
    mistake = left if x > y else right
    verdict = (f"{A} > {C}，所以 {a}^{b} 更大。" if A > C else
               f"{A} < {C}，所以 {c}^{d} 更大。" if A < C else f"两者都等于 {A}，所以相等。")
    return item(
        rng, f"{a}^{b} 与 {c}^{d} 相比，哪个更大？", correct, mistake, (),
        [f"计算 {a}^{b} = {A}。", f"计算 {c}^{d} = {C}。", verdict],
        [f"比较两个幂只需比较{why}：{a}^{b} 的{why}是 {x}，{c}^{d} 的{why}是 {y}。",
         f"{why}大的幂更大，所以{mistake}。"],
        fixed=[left, right, same, "无法比较"],
    )


def fam_powers(rng: random.Random) -> tuple[str, list[Item]]:
    text = ("有几种不同的方法来计算数字的幂。在这里，“数 a 将自己乘 b 次”指 a 的 b 次幂 a^b，"
            "即 b 个 a 连乘；任何非零数的 0 次幂都等于 1，0 的任何正整数次幂都等于 0。"
            "请根据不同的计算步骤确定相应的结果。")
    return text, ask(rng, (power_value, power_base, power_zero, power_compare), None)


# --- factorials ------------------------------------------------------------------------------


def fact_value(rng: random.Random, prolog: bool) -> Item:
    n = rng.randint(4, 12)
    v, s = math.factorial(n), n * (n + 1) // 2
    q = f"查询 factorial({n}, F) 时，F 的值是多少？" if prolog else f"{n} 的阶乘是多少？"
    first = (f"按规则递归展开：factorial({n}, F) 先求 factorial({n - 1}, F1)，一直到事实 "
             f"factorial(0, 1)，再逐层乘回去。" if prolog else
             f"按定义 {n}! = {n} × {n - 1} × … × 1。")
    return item(
        rng, q, v, s,
        (math.factorial(n - 1), math.factorial(n + 1), n * n, 2**n, v + n, v // 2),
        [first,
         "依次得到 1! 到 {}!：{}。".format(n, ", ".join(str(math.factorial(k)) for k in range(1, n + 1))),
         f"所以 {n}! = {v}。"],
        [f"{n} 的阶乘就是从 1 累加到 {n}：1 + 2 + … + {n}。",
         f"计算得 {n} × {n + 1} ÷ 2 = {s}。"],
    )


def fact_zero(rng: random.Random, prolog: bool) -> Item:
    if prolog:
        q = "查询 factorial(0, F) 时，F 的值是多少？"
        steps = ["事实 factorial(0, 1). 直接给出 F = 1。",
                 "规则 factorial(N, F) 要求 N > 0，对 0 不适用，所以只有这一个结果。"]
    else:
        q = "0 的阶乘是多少？"
        steps = ["定义中明确规定 0 的阶乘为 1。", "这是递归的起点，不需要再计算。"]
    return item(rng, q, 1, 0, ("无定义", -1), steps,
                ["0 乘任何数都得 0，所以 0 的阶乘也是 0。"])


def fact_inverse(rng: random.Random, _: bool) -> Item:
    m = rng.randint(4, 10)
    v = math.factorial(m)
    return item(
        rng, f"哪个正整数的阶乘等于 {v}？", m, m - 1, (m + 1, m + 2, m - 2, v // m),
        ["从 1 开始依次计算阶乘：{}。".format(
            "，".join(f"{k}! = {math.factorial(k)}" for k in range(1, m + 1))),
         f"{m}! 恰好等于 {v}，所以答案是 {m}。"],
        [f"用 {v} 依次除以 2, 3, …, {m}，共除了 {m - 1} 次得到 1。",
         f"除法的次数就是所求的数，即 {m - 1}。"],
    )


def fact_ratio(rng: random.Random, _: bool) -> Item:
    n = rng.randint(6, 12)
    k = rng.randint(2, n - 3)
    v = math.factorial(n) // math.factorial(k)
    wrong = math.factorial(n - k)
    return item(
        rng, f"{n}! ÷ {k}! 等于多少？", v, wrong,
        (math.factorial(n) // math.factorial(k + 1), math.factorial(n) // math.factorial(k - 1),
         n * (n - k), v * 2),
        [f"{n}! ÷ {k}! 中，{k}! 的因数 1 到 {k} 都被约掉。",
         "剩下 {}。".format(" × ".join(str(i) for i in range(k + 1, n + 1))),
         f"计算得 {v}。"],
        [f"{n}! ÷ {k}! = ({n} - {k})! = {n - k}!。", f"计算得 {wrong}。"],
    )


def fact_zeros(rng: random.Random, _: bool) -> Item:
    n = rng.randint(10, 40)
    z = n // 5 + n // 25
    count = f"1 到 {n} 中 5 的倍数有 {n // 5} 个"
    if n >= 25:
        count += f"，其中 25 的倍数有 {n // 25} 个，各多贡献一个 5"
    return item(
        rng, f"{n}! 的末尾有多少个连续的 0？", z, n // 10, (z - 1, z + 1, z + 2, n // 5),
        ["末尾的 0 来自因数 10 = 2 × 5，而因数 2 比 5 多，所以只需数因数 5 的个数。",
         count + "。",
         f"因数 5 共 {z} 个，所以末尾有 {z} 个 0。"],
        ["只有 10 的倍数才会在末尾产生 0。",
         f"1 到 {n} 中 10 的倍数有 {n // 10} 个，所以末尾有 {n // 10} 个 0。"],
    )


def fam_factorials(rng: random.Random) -> tuple[str, list[Item]]:
    prolog = rng.random() < 0.5
    if prolog:
        text = ("下面的 Prolog 规则定义了阶乘：\n"
                "factorial(0, 1).\n"
                "factorial(N, F) :- N > 0, N1 is N - 1, factorial(N1, F1), F is N * F1.\n"
                "请根据这些规则回答下列问题。")
    else:
        text = ("阶乘的定义如下：0 的阶乘为 1；对于正整数 n，n 的阶乘 n! 等于 n 乘以 n-1 的阶乘，"
                "即 n! = n × (n-1) × … × 1。请根据这一定义回答下列问题。")
    return text, ask(rng, (fact_value, fact_zero, fact_inverse, fact_ratio, fact_zeros), prolog)


# --- kinship ---------------------------------------------------------------------------------


@dataclass
class Family:
    people: list[str]  # everyone, in the order they were created
    roots: list[str]
    parent: dict[str, str]  # child -> the one stated parent
    male: dict[str, bool]

    def kids(self, x: str) -> list[str]:
        return [c for c in self.people if self.parent.get(c) == x]

    def fact(self, p: str, c: str) -> str:
        return f"{p}是{c}的{'父亲' if self.male[p] else '母亲'}"

    def grandkids(self, x: str) -> list[str]:
        return [g for c in self.kids(x) for g in self.kids(c)]

    def siblings(self, x: str) -> list[str]:
        p = self.parent.get(x)
        return [] if p is None else [c for c in self.kids(p) if c != x]

    def cousins(self, x: str) -> list[str]:
        p = self.parent.get(x)
        return [] if p is None else [g for s in self.siblings(p) for g in self.kids(s)]

    def third_generation(self) -> list[str]:
        return [x for x in self.people if self.parent.get(self.parent.get(x, ""))]


def kin_grandparent(rng: random.Random, f: Family) -> Item:
    z = rng.choice(f.third_generation())
    p = f.parent[z]
    g = f.parent[p]
    return item(
        rng, f"根据已知事实，谁是{z}的祖父母？", g, p, [x for x in f.people if x not in (g, p, z)],
        [f"由“{f.fact(p, z)}”可知{z}的父母是{p}。",
         f"由“{f.fact(g, p)}”可知{p}的父母是{g}。",
         f"父母的父母是祖父母，所以{g}是{z}的祖父母；其他人都不是{z}父母的父母。"],
        [f"由“{f.fact(p, z)}”可知{p}是{z}的长辈。",
         f"所以{p}是{z}的祖父母。"],
    )


def kin_sibling(rng: random.Random, f: Family) -> Item | None:
    candidates = [x for x in f.people if f.siblings(x) and f.cousins(x)]
    if not candidates:
        return None
    z = rng.choice(candidates)
    p, g = f.parent[z], f.parent[f.parent[z]]
    s, c = rng.choice(f.siblings(z)), rng.choice(f.cousins(z))
    others = [x for x in f.people if x != z and x not in f.siblings(z)]
    return item(
        rng, f"下列哪一位是{z}的兄弟姐妹？", s, c, others,
        [f"由“{f.fact(p, z)}”可知{z}的父母是{p}。",
         f"{p}的子女有：{'、'.join(f.kids(p))}。",
         f"与{z}有共同父母的是{'、'.join(f.siblings(z))}，其中{s}在选项中。"
         if len(f.siblings(z)) > 1 else f"与{z}有共同父母的只有{s}。"],
        [f"{z}和{c}有共同的祖父母{g}，是同一辈人。",
         f"同一辈人就是兄弟姐妹，所以{c}是{z}的兄弟姐妹。"],
    )


def kin_count(rng: random.Random, f: Family) -> Item:
    r = rng.choice([x for x in f.roots if f.grandkids(x)])
    kids, grand = f.kids(r), f.grandkids(r)
    listing = "；".join(f"{c}：{'、'.join(f.kids(c)) or '无'}" for c in kids)
    if len(kids) != len(grand):
        mistake = len(kids)
        wrong = [f"{r}的子女有：{'、'.join(kids)}，共 {len(kids)} 人。",
                 f"这些子女就是{r}的孙辈，共 {len(kids)} 人。"]
    else:
        mistake = len(kids) + len(grand)
        wrong = [f"{r}的子女 {len(kids)} 人，孙辈 {len(grand)} 人。",
                 f"子女和孙辈都是{r}的孙辈，共 {mistake} 人。"]
    return item(
        rng, f"{r}有几个孙辈？", len(grand), mistake,
        [len(grand) + d for d in (-1, 1, 2, 3) if len(grand) + d >= 0],
        [f"{r}的子女有：{'、'.join(kids)}，共 {len(kids)} 人。",
         f"他们各自的子女：{listing}。",
         f"合计{r}的孙辈共 {len(grand)} 人。"],
        wrong,
    )


def kin_childless(rng: random.Random, f: Family) -> Item:
    c = rng.choice([x for x in f.people if not f.kids(x)])
    return item(
        rng, "根据已知事实，下列哪个人没有子女？", c, "无法确定",
        [x for x in f.people if f.kids(x)],
        ["闭世界假设下，只有列出的亲子关系成立，没有列出的都不成立。",
         f"在所有事实中，{c}从未作为父亲或母亲出现，所以{c}没有子女。",
         "选项中的其他人都在事实中作为父亲或母亲出现过，都有子女。"],
        ["题目只列出了一部分亲子关系，没有列出的关系也可能存在。",
         "因此无法判断谁没有子女，答案无法确定。"],
    )


def kin_relation(rng: random.Random, f: Family) -> Item:
    third = f.third_generation()
    kind = rng.choice(("grand", "parent", "sibling", "grandchild", "none"))
    m = ""
    if kind in ("grand", "grandchild"):
        z = rng.choice(third)
        m = f.parent[z]
        x, y = (f.parent[m], z) if kind == "grand" else (z, f.parent[m])
    elif kind == "parent":
        y = rng.choice([c for c in f.people if c in f.parent])
        x = f.parent[y]
    elif kind == "sibling":
        x = rng.choice([c for c in f.people if f.siblings(c)])
        y = rng.choice(f.siblings(x))
    else:  # cousins, or people from the two unrelated branches
        x = rng.choice(third)
        y = rng.choice(f.cousins(x) or [f.roots[1] if f.parent[f.parent[x]] == f.roots[0] else f.roots[0]])
    labels = {
        "grand": f"{x}是{y}的祖父母", "parent": f"{x}是{y}的父母",
        "sibling": f"{x}和{y}是兄弟姐妹", "grandchild": f"{x}是{y}的孙辈",
        "none": f"{x}和{y}没有上述任何关系", "unknown": "无法确定",
    }
    if kind == "grand":
        steps = [f"由“{f.fact(x, m)}”和“{f.fact(m, y)}”可知{x}是{y}父母的父母。",
                 f"所以{x}是{y}的祖父母。"]
        mistake, wrong = "parent", [f"看到“{f.fact(m, y)}”，又看到{x}是{m}的父母。",
                                    f"所以{x}是{y}的父母。"]
    elif kind == "grandchild":
        steps = [f"由“{f.fact(y, m)}”和“{f.fact(m, x)}”可知{y}是{x}的祖父母。",
                 f"反过来说，{x}是{y}的孙辈。"]
        mistake, wrong = "grand", [f"{x}和{y}之间隔着一代{m}。",
                                   f"所以{x}是{y}的祖父母。"]
    elif kind == "parent":
        steps = [f"事实“{f.fact(x, y)}”直接说明{x}是{y}的父母。"]
        mistake, wrong = "grand", [f"由“{f.fact(x, y)}”可知{x}是{y}的长辈。",
                                   f"长辈就是祖父母，所以{x}是{y}的祖父母。"]
    elif kind == "sibling":
        p = f.parent[x]
        steps = [f"由“{f.fact(p, x)}”和“{f.fact(p, y)}”可知两人有共同的父母{p}。",
                 f"{x}和{y}是两个不同的人，所以是兄弟姐妹。"]
        mistake, wrong = "none", [f"事实中没有直接写出{x}和{y}之间的关系。",
                                  "没有直接的事实，两人就没有任何关系。"]
    else:
        steps = [f"{x}和{y}之间没有亲子事实，两人也没有共同的父母，谁都不是对方父母的父母。",
                 "闭世界假设下没有列出的关系都不成立，所以两人没有上述任何关系。"]
        mistake, wrong = "unknown", [f"事实中找不到{x}和{y}之间的关系。",
                                     "没有列出的关系只是未知，所以无法确定。"]
    order = ("grand", "parent", "sibling", "grandchild", "none", "unknown")
    return item(rng, f"根据已知事实，{x}和{y}是什么关系？", labels[kind], labels[mistake], (),
                steps, wrong, fixed=[labels[k] for k in order])


def fam_kinship(rng: random.Random) -> tuple[str, list[Item]]:
    names = [(n, True) for n in MALE] + [(n, False) for n in FEMALE]
    rng.shuffle(names)
    f = Family([], [], {}, {})

    def person(parent: str | None = None) -> str:
        name, male = names.pop()
        f.people.append(name)
        f.male[name] = male
        if parent is not None:
            f.parent[name] = parent
        return name

    # Two unrelated branches; the first always has cousins in the third generation.
    plan = ([rng.randint(2, 3), rng.randint(1, 2), rng.randint(0, 1)],
            [rng.randint(0, 2), rng.randint(1, 2)])
    f.roots = [person(), person()]
    for root, grandkid_counts in zip(f.roots, plan):
        for count in grandkid_counts:
            child = person(root)
            for _ in range(count):
                person(child)
    facts = [f.fact(f.parent[c], c) + "。" for c in f.people if c in f.parent]
    rng.shuffle(facts)
    text = ("以下是一个家族中已知的亲子关系：\n" + "\n".join(facts) + "\n"
            "规则：如果 X 是 Y 的父亲或母亲，那么 X 是 Y 的父母；父母的父母是祖父母，"
            "反过来 Y 是 X 的孙辈；有共同父母的两个不同的人是兄弟姐妹。"
            "除上面列出的亲子关系外，其他亲子关系都不成立（闭世界假设）。")
    makers = (kin_grandparent, kin_sibling, kin_count, kin_childless, kin_relation)
    return text, ask(rng, makers, f)


# --- heights: a total order from pairwise comparisons ----------------------------------------


@dataclass
class Heights:
    order: list[str]  # tallest first
    facts: list[str]  # facts[i] compares order[i] and order[i+1]

    def chain(self) -> list[str]:
        return ["把每条“谁比谁高（矮）”的事实按“更高”的方向首尾相连。",
                f"得到从高到矮的顺序：{' > '.join(self.order)}。"]


def h_tallest(rng: random.Random, h: Heights) -> Item:
    o = h.order
    return item(
        rng, "谁最高？", o[0], o[1], o[2:],
        h.chain() + [f"{o[0]}排在最前面，没有人比{o[0]}高。"],
        [f"由“{h.facts[1]}”可知{o[1]}比{o[2]}高。",
         f"所以{o[1]}最高。"],
    )


def h_shortest(rng: random.Random, h: Heights) -> Item:
    o = h.order
    return item(
        rng, "谁最矮？", o[-1], o[-2], o[:-2],
        h.chain() + [f"{o[-1]}排在最后面，比所有人都矮。"],
        [f"由“{h.facts[-2]}”可知{o[-2]}比{o[-3]}矮。",
         f"所以{o[-2]}最矮。"],
    )


def h_rank(rng: random.Random, h: Heights) -> Item:
    o, n = h.order, len(h.order)
    k = rng.randint(2, n - 1)
    if n - k != k - 1:
        mistake, slip = o[n - k], f"从矮的一端数第 {k} 位是{o[n - k]}。"
    else:
        mistake, slip = o[k], f"从高到矮数第 {k} 位是{o[k]}。"
    return item(
        rng, f"从高到矮排列，第 {k} 位是谁？", o[k - 1], mistake, o,
        h.chain() + [f"从高到矮数第 {k} 位是{o[k - 1]}。"],
        h.chain() + [slip],
    )


def h_count(rng: random.Random, h: Heights) -> Item:
    o, n = h.order, len(h.order)
    i = rng.choice([i for i in range(n) if i != n - 1 - i])
    return item(
        rng, f"比{o[i]}高的有几个人？", i, n - 1 - i, [v for v in (i - 1, i + 1, i + 2, n - i) if v >= 0],
        h.chain() + [f"排在{o[i]}前面的有 {i} 人" + (f"：{'、'.join(o[:i])}。" if i else "。")],
        h.chain() + [f"比{o[i]}高的是排在{o[i]}后面的 {n - 1 - i} 人。"],
    )


def h_true(rng: random.Random, h: Heights) -> Item | None:
    o, n = h.order, len(h.order)
    shorter = [k for k in range(n - 1) if "矮" in h.facts[k]]
    if not shorter:
        return None
    k = rng.choice(shorter)
    i, j = sorted(rng.sample(range(n), 2))
    correct, mistake = f"{o[i]}比{o[j]}高", f"{o[k + 1]}比{o[k]}高"
    false = [f"{o[b]}比{o[a]}高" for a, b in itertools.combinations(range(n), 2)]
    return item(
        rng, "下列说法中正确的是哪一项？", correct, mistake, false,
        h.chain() + [f"{o[i]}排在{o[j]}前面，所以“{correct}”正确，其他选项都与这个顺序相反。"],
        [f"事实“{h.facts[k]}”说明{mistake}。", f"所以“{mistake}”正确。"],
    )


def fam_heights(rng: random.Random) -> tuple[str, list[Item]]:
    n = rng.randint(4, 6)
    order = rng.sample(PEOPLE, n)
    facts = [f"{a}比{b}高" if rng.random() < 0.6 else f"{b}比{a}矮" for a, b in itertools.pairwise(order)]
    shown = rng.sample(facts, len(facts))
    text = (f"{'、'.join(rng.sample(order, n))}共 {n} 人比较身高，已知：\n"
            + "\n".join(s + "。" for s in shown) + "\n"
            "规则：如果 X 比 Y 高，Y 比 Z 高，那么 X 比 Z 高；“Y 比 X 矮”等同于“X 比 Y 高”；没有两个人一样高。")
    return text, ask(rng, (h_tallest, h_shortest, h_rank, h_count, h_true), Heights(order, facts))


# --- race: finishing order from clues, solved by checking every permutation ------------------


@dataclass
class Race:
    order: list[str]  # first place first
    clues: list[str]

    def deduce(self) -> list[str]:
        places = "，".join(f"第{i}名{p}" for i, p in enumerate(self.order, 1))
        return [f"逐条检验全部 {len(self.clues)} 条线索，只有一种名次排列同时满足所有线索。",
                f"名次依次为：{places}。"]


def r_who_at(rng: random.Random, r: Race) -> Item:
    o, n = r.order, len(r.order)
    k = rng.randint(1, n)
    if n - k != k - 1:
        mistake, slip = o[n - k], f"从最后一名往前数第 {k} 个是{o[n - k]}，所以第 {k} 名是{o[n - k]}。"
    else:
        mistake, slip = o[k], f"所以第 {k} 名是{o[k]}。"
    return item(rng, f"第 {k} 名是谁？", o[k - 1], mistake, o,
                r.deduce() + [f"所以第 {k} 名是{o[k - 1]}。"], r.deduce() + [slip])


def r_place(rng: random.Random, r: Race) -> Item:
    o, n = r.order, len(r.order)
    p = rng.choice(o)
    pos = o.index(p) + 1
    if n + 1 - pos != pos:
        wrong_pos, slip = n + 1 - pos, f"从最后一名往前数，{p}排在第 {n + 1 - pos} 个，所以是第{n + 1 - pos}名。"
    else:
        wrong_pos, slip = pos + 1, f"所以{p}是第{pos + 1}名。"
    labels = [f"第{i}名" for i in range(1, n + 1)]
    return item(rng, f"{p}是第几名？", labels[pos - 1], labels[wrong_pos - 1], (),
                r.deduce() + [f"所以{p}是第{pos}名。"], r.deduce() + [slip], fixed=labels)


def r_after(rng: random.Random, r: Race) -> Item:
    o = r.order
    i = rng.randint(1, len(o) - 2)
    return item(
        rng, f"谁紧跟在{o[i]}之后冲过终点？", o[i + 1], o[i - 1], o[:i - 1] + o[i + 2:],
        r.deduce() + [f"{o[i]}是第{i + 1}名，紧跟其后的第{i + 2}名是{o[i + 1]}。"],
        r.deduce() + [f"{o[i]}是第{i + 1}名，紧跟在{o[i]}之后的是第{i}名{o[i - 1]}。"],
    )


def r_between(rng: random.Random, r: Race) -> Item:
    o, n = r.order, len(r.order)
    i, j = rng.choice([(i, j) for i, j in itertools.combinations(range(n), 2) if j - i >= 2])
    a, b = o[i], o[j]
    if rng.random() < 0.5:
        a, b = b, a
    return item(
        rng, f"在{a}和{b}之间冲过终点的有几人？", j - i - 1, j - i, list(range(n - 1)),
        r.deduce() + [f"两人分别是第{i + 1}名和第{j + 1}名，中间有 {j - i - 1} 人。"],
        r.deduce() + [f"两人分别是第{i + 1}名和第{j + 1}名，中间有 {j + 1} - {i + 1} = {j - i} 人。"],
    )


def race_clues(rng: random.Random, order: list[str]) -> list[tuple[str, Callable[[tuple], bool]]]:
    """Clues true of `order`: at most one fixed place, then adjacency, precedence, not-last."""
    n = len(order)

    def place(p: str, k: int) -> tuple[str, Callable[[tuple], bool]]:
        text = {1: f"{p}第一个冲过终点", n: f"{p}是最后一名"}.get(k, f"{p}是第{k}名")
        return text, lambda P: P.index(p) == k - 1

    def right_after(a: str, b: str) -> tuple[str, Callable[[tuple], bool]]:
        return f"{b}紧跟在{a}之后冲过终点", lambda P: P.index(b) == P.index(a) + 1

    def before(a: str, b: str) -> tuple[str, Callable[[tuple], bool]]:
        return f"{a}比{b}先冲过终点", lambda P: P.index(a) < P.index(b)

    def not_last(p: str) -> tuple[str, Callable[[tuple], bool]]:
        return f"{p}不是最后一名", lambda P: P[-1] != p

    pool = [right_after(a, b) for a, b in itertools.pairwise(order)]
    pool += [before(order[i], order[j]) for i, j in itertools.combinations(range(n), 2) if j > i + 1]
    pool += [not_last(p) for p in order[:-1]]
    rng.shuffle(pool)
    k = rng.randint(1, n)
    return [place(order[k - 1], k)] + pool


def fam_race(rng: random.Random) -> tuple[str, list[Item]]:
    n = rng.randint(5, 6)
    order = rng.sample(PEOPLE, n)
    perms = list(itertools.permutations(order))

    def solutions(clues: list) -> int:
        return sum(all(test(P) for _, test in clues) for P in perms)

    chosen: list = []
    for clue in race_clues(rng, order):  # add clues until one order remains...
        chosen.append(clue)
        if solutions(chosen) == 1:
            break
    for clue in list(reversed(chosen)):  # ...then drop every clue the others make redundant
        rest = [c for c in chosen if c is not clue]
        if solutions(rest) == 1:
            chosen = rest
    rng.shuffle(chosen)
    clues = [text for text, _ in chosen]
    text = (f"{'、'.join(rng.sample(order, n))}共 {n} 人参加赛跑，没有并列的名次。已知：\n"
            + "\n".join(f"{i}. {c}。" for i, c in enumerate(clues, 1)) + "\n"
            "请根据以上线索推断比赛的名次。")
    return text, ask(rng, (r_who_at, r_place, r_after, r_between), Race(order, clues))


# --- clubs: set membership under the closed world --------------------------------------------

CLUBS = ("围棋社", "篮球社", "合唱团", "摄影社", "辩论社", "机器人社")


@dataclass
class Clubs:
    clubs: list[str]
    people: list[str]
    member: dict[str, list[str]]  # person -> clubs, in club order

    def of(self, club: str) -> list[str]:
        return [p for p in self.people if club in self.member[p]]

    def shared_pairs(self) -> list[tuple[str, str]]:
        """Club pairs with exactly one member in both and someone in only one of them."""
        out = []
        for c1, c2 in itertools.combinations(self.clubs, 2):
            both = [p for p in self.people if c1 in self.member[p] and c2 in self.member[p]]
            one = [p for p in self.people if (c1 in self.member[p]) != (c2 in self.member[p])]
            if len(both) == 1 and one:
                out.append((c1, c2))
        return out


def c_which(rng: random.Random, w: Clubs) -> Item:
    p = rng.choice([p for p in w.people if len(w.member[p]) == 1])
    c = w.member[p][0]
    return item(
        rng, f"{p}参加了哪个社团？", c, "无法确定", [x for x in w.clubs if x != c] + ["没有参加任何社团"],
        ["闭世界假设下，只有列出的成员关系成立。",
         f"事实中与{p}有关的只有“{p}是{c}的成员”。",
         f"所以{p}只参加了{c}。"],
        [f"事实说{p}是{c}的成员，但没有说明{p}不是其他社团的成员。",
         "其他社团的情况未知，所以无法确定。"],
    )


def c_none(rng: random.Random, w: Clubs) -> Item:
    p = rng.choice([p for p in w.people if not w.member[p]])
    return item(
        rng, "下列哪一位没有参加任何社团？", p, "无法确定", [x for x in w.people if w.member[x]],
        ["闭世界假设下，没有列出的成员关系都不成立。",
         f"事实中没有任何一条提到{p}，所以{p}没有参加任何社团。",
         "选项中的其他人都至少是一个社团的成员。"],
        ["题目只列出了部分成员关系，没有明确说谁不参加社团。",
         "所以无法判断，答案无法确定。"],
    )


def c_count(rng: random.Random, w: Clubs) -> Item:
    c = rng.choice(w.clubs)
    ms = w.of(c)
    k = len(ms)
    if k >= 2:
        mistake, slip = k - 1, f"{c}的成员有：{'、'.join(ms[:-1])}，共 {k - 1} 人。"
    else:
        outsider = next(p for p in w.people if w.member[p] and c not in w.member[p])
        mistake = k + 1
        slip = f"{c}的成员有：{'、'.join(ms + [outsider])}，共 {k + 1} 人。"
    return item(
        rng, f"{c}有几名成员？", k, mistake, [v for v in (k + 1, k + 2, k - 2, k + 3) if v >= 0],
        [f"在事实中找出所有“是{c}的成员”的记录。",
         f"{c}的成员有：{'、'.join(ms)}。",
         f"共 {k} 人；闭世界假设下没有其他成员。"],
        [f"在事实中找出所有“是{c}的成员”的记录。", slip],
    )


def c_both(rng: random.Random, w: Clubs) -> Item:
    c1, c2 = rng.choice(w.shared_pairs())
    x = next(p for p in w.people if c1 in w.member[p] and c2 in w.member[p])
    if any(c1 in w.member[p] and c2 not in w.member[p] for p in w.people):
        first, second = c1, c2
    else:
        first, second = c2, c1
    y = next(p for p in w.people if first in w.member[p] and second not in w.member[p])
    return item(
        rng, f"同时参加{c1}和{c2}的是谁？", x, y, [p for p in w.people if p != x] + ["没有人"],
        [f"{c1}的成员有：{'、'.join(w.of(c1))}。",
         f"{c2}的成员有：{'、'.join(w.of(c2))}。",
         f"两个社团共同的成员只有{x}。"],
        [f"{first}的成员有：{'、'.join(w.of(first))}。",
         f"{y}是{first}的成员，所以同时参加{c1}和{c2}的是{y}。"],
    )


def c_yesno(rng: random.Random, w: Clubs) -> Item:
    p = rng.choice(w.people)
    c = rng.choice(w.clubs)
    if c in w.member[p]:
        return item(rng, f"{p}是{c}的成员吗？", "是", "否", (),
                    [f"事实中明确列出“{p}是{c}的成员”。"],
                    [f"事实中没有“{p}是{c}的成员”这一条。", "所以不是。"],
                    fixed=["是", "否", "无法确定"])
    return item(rng, f"{p}是{c}的成员吗？", "否", "无法确定", (),
                ["闭世界假设下，没有列出的事实都为假。",
                 f"事实中没有“{p}是{c}的成员”，所以{p}不是{c}的成员。"],
                [f"事实中没有提到{p}和{c}的关系。", "没有提到就是未知，所以无法确定。"],
                fixed=["是", "否", "无法确定"])


def fam_clubs(rng: random.Random) -> tuple[str, list[Item]]:
    clubs = rng.sample(CLUBS, rng.randint(3, 4))
    people = rng.sample(PEOPLE, rng.randint(6, 7))
    while True:  # redraw until every question maker has something to ask
        member = {p: sorted(rng.sample(clubs, rng.choice((0, 1, 1, 1, 2, 2))), key=clubs.index)
                  for p in people}
        w = Clubs(clubs, people, member)
        sizes = [len(member[p]) for p in people]
        if 0 in sizes and 1 in sizes and all(w.of(c) for c in clubs) and w.shared_pairs():
            break
    facts = [f"{p}是{c}的成员。" for p in people for c in member[p]]
    rng.shuffle(facts)
    text = (f"学校有{len(clubs)}个社团：{'、'.join(clubs)}。{'、'.join(people)}中，已知：\n"
            + "\n".join(facts) + "\n"
            "除以上列出的情况外，任何人都不是任何社团的成员（闭世界假设）。")
    return text, ask(rng, (c_which, c_none, c_count, c_both, c_yesno), w)


# --- roads: reachability in a directed graph -------------------------------------------------

CITIES = ("甲城", "乙城", "丙城", "丁城", "戊城", "己城", "庚城")


@dataclass
class Roads:
    cities: list[str]
    edges: list[tuple[str, str]]

    def layers(self, x: str, two_way: bool = False) -> list[list[str]]:
        """Breadth-first: the cities first reached after 1, 2, ... roads from x."""
        edges = self.edges + ([(b, a) for a, b in self.edges] if two_way else [])
        seen, frontier, out = [x], [x], []
        while frontier:
            nxt = []
            for u in frontier:
                for a, b in edges:
                    if a == u and b not in seen:
                        seen.append(b)
                        nxt.append(b)
            if nxt:
                out.append(nxt)
            frontier = nxt
        return out

    def reach(self, x: str, two_way: bool = False) -> list[str]:
        return [c for layer in self.layers(x, two_way) for c in layer]

    def dist(self, x: str, y: str) -> int | None:
        for d, layer in enumerate(self.layers(x), 1):
            if y in layer:
                return d
        return None

    def path(self, x: str, y: str) -> list[str]:
        back: dict[str, str] = {}
        earlier = [x]  # cities reached in fewer roads
        for layer in self.layers(x):
            for c in layer:
                back[c] = next(a for a, b in self.edges if b == c and a in earlier)
            earlier += layer
        out = [y]
        while out[-1] != x:
            out.append(back[out[-1]])
        return out[::-1]

    def bfs_text(self, x: str) -> str:
        layers = self.layers(x)
        if not layers:
            return f"从{x}出发没有任何道路"
        return "从{}出发，{}".format(x, "；".join(
            f"走 {d} 条道路可新到达{'、'.join(layer)}" for d, layer in enumerate(layers, 1)))


def g_reach(rng: random.Random, g: Roads) -> Item | None:
    starts = [x for x in g.cities if g.reach(x) and
              [c for c in g.reach(x, two_way=True) if c not in g.reach(x)]]
    if not starts:
        return None
    x = rng.choice(starts)
    reach = g.reach(x)
    m = rng.choice([c for c in g.reach(x, two_way=True) if c not in reach])
    y = rng.choice(reach)
    return item(
        rng, f"从{x}出发，沿道路可以到达下列哪座城市？", y, m,
        [c for c in g.cities if c != x and c not in reach],
        [g.bfs_text(x) + "。", f"所以从{x}可以到达的城市是：{'、'.join(reach)}。",
         f"{y}在其中，其他选项中的城市都无法到达。"],
        ["道路可以双向通行。",
         f"从{x}出发可以经过其他城市走到{m}。"],
    )


def g_unreach(rng: random.Random, g: Roads) -> Item | None:
    starts = [x for x in g.cities if len(g.layers(x)) >= 2 and len(g.reach(x)) < len(g.cities) - 1]
    if not starts:
        return None
    x = rng.choice(starts)
    reach = g.reach(x)
    y = rng.choice([c for c in g.cities if c != x and c not in reach])
    m = rng.choice([c for layer in g.layers(x)[1:] for c in layer])
    direct = "、".join(g.layers(x)[0])
    return item(
        rng, f"从{x}出发，无法到达下列哪座城市？", y, m, reach,
        [g.bfs_text(x) + "。", f"所以从{x}可以到达的城市是：{'、'.join(reach)}。",
         f"{y}不在其中，所以无法到达。"],
        [f"从{x}直接出发的道路只通往{direct}。",
         f"没有从{x}直接通往{m}的道路，所以{m}无法到达。"],
    )


def g_dist(rng: random.Random, g: Roads) -> Item | None:
    pairs = [(x, y) for x in g.cities for y in g.reach(x) if (g.dist(x, y) or 0) >= 2]
    if not pairs:
        return None
    x, y = rng.choice(pairs)
    d = g.dist(x, y)
    route = " → ".join(g.path(x, y))
    return item(
        rng, f"从{x}到{y}最少要经过几条道路？", d, d + 1, [d - 1, d + 2, d + 3, "无法到达"],
        [g.bfs_text(x) + "。",
         f"{y}在走 {d} 条道路时第一次被到达，例如 {route}。",
         f"所以最少经过 {d} 条道路。"],
        [f"找到路线 {route}。", f"路线上共有 {d + 1} 座城市，所以要经过 {d + 1} 条道路。"],
    )


def g_yesno(rng: random.Random, g: Roads) -> Item | None:
    x = rng.choice(g.cities)
    reach = g.reach(x)
    far = [c for c in reach if (g.dist(x, c) or 0) >= 2]
    out = [c for c in g.cities if c != x and c not in reach]
    options = ["能", "不能", "无法确定"]
    if far and (not out or rng.random() < 0.5):
        y = rng.choice(far)
        return item(
            rng, f"从{x}能否沿道路到达{y}？", "能", "不能", (),
            [g.bfs_text(x) + "。", f"可以沿 {' → '.join(g.path(x, y))} 到达{y}。"],
            [f"没有从{x}直接通往{y}的道路。", "所以不能到达。"],
            fixed=options,
        )
    if not out:
        return None
    y = rng.choice(out)
    two_way = y in g.reach(x, two_way=True)
    return item(
        rng, f"从{x}能否沿道路到达{y}？", "不能", "能" if two_way else "无法确定", (),
        [g.bfs_text(x) + "。", f"{y}不在其中；道路都是单向的，也没有其他道路，所以不能到达。"],
        ["道路可以双向通行。", f"沿道路可以连到{y}，所以能到达。"]
        if two_way else
        [f"已知的道路中找不到从{x}通往{y}的路线。", "但可能存在没有列出的道路，所以无法确定。"],
        fixed=options,
    )


def fam_roads(rng: random.Random) -> tuple[str, list[Item]]:
    n = rng.randint(5, 7)
    cities = list(CITIES[:n])
    while True:  # redraw until some city reaches a few, but not all, of the others
        pairs = list(itertools.permutations(cities, 2))
        size = n + rng.randint(-1, 1)
        edges: list[tuple[str, str]] = []
        for a, b in rng.sample(pairs, len(pairs)):
            if len(edges) == size:
                break
            if (b, a) not in edges:
                edges.append((a, b))
        g = Roads(cities, sorted(edges, key=lambda e: (cities.index(e[0]), cities.index(e[1]))))
        if any(2 <= len(g.reach(x)) <= n - 2 and len(g.layers(x)) >= 2 for x in cities):
            break
    facts = [f"从{a}到{b}有一条单向道路。" for a, b in rng.sample(g.edges, len(g.edges))]
    text = (f"某地区有{n}座城市：{'、'.join(cities)}。已知的道路如下：\n" + "\n".join(facts) + "\n"
            "每条道路都是单向的，只能从前一座城市开往后一座城市；除上面列出的道路外没有其他道路"
            "（闭世界假设）。")
    return text, ask(rng, (g_reach, g_unreach, g_dist, g_yesno), g)


# --- arithmetic sequences --------------------------------------------------------------------


@dataclass
class Sequence:
    a1: int
    d: int

    def term(self, n: int) -> int:
        return self.a1 + (n - 1) * self.d


def s_nth(rng: random.Random, s: Sequence) -> Item:
    n = rng.randint(6, 40)
    v, m = s.term(n), s.a1 + n * s.d
    return item(
        rng, f"这个数列的第 {n} 项是多少？", v, m,
        (s.term(n - 1), n * s.d, v + 1, v - 1, s.a1 * n),
        ["等差数列第 n 项公式：a_n = a_1 + (n - 1) × d。",
         f"代入 a_1 = {s.a1}，d = {s.d}，n = {n}：{s.a1} + {n - 1} × {par(s.d)}。",
         f"计算得 {v}。"],
        ["等差数列第 n 项公式：a_n = a_1 + n × d。", f"{s.a1} + {n} × {par(s.d)} = {m}。"],
    )


def s_sum(rng: random.Random, s: Sequence) -> Item | None:
    n = rng.randint(5, 15)
    an = s.term(n)
    total = n * (s.a1 + an) // 2
    if total == 0:
        return None
    return item(
        rng, f"这个数列前 {n} 项的和是多少？", total, n * (s.a1 + an),
        (total + an, total - s.a1, n * an, total + s.d, total - an),
        [f"第 {n} 项 a_{n} = {s.a1} + {n - 1} × {par(s.d)} = {an}。",
         "前 n 项和公式：S_n = n × (a_1 + a_n) ÷ 2。",
         f"S_{n} = {n} × ({s.a1} + {par(an)}) ÷ 2 = {total}。"],
        [f"第 {n} 项 a_{n} = {an}。",
         f"前 {n} 项和 = {n} × ({s.a1} + {par(an)}) = {n * (s.a1 + an)}。"],
    )


def s_index(rng: random.Random, s: Sequence) -> Item:
    k = rng.randint(5, 30)
    v = s.term(k)
    return item(
        rng, f"数 {v} 是这个数列的第几项？", f"第 {k} 项", f"第 {k - 1} 项",
        [f"第 {k + d} 项" for d in (1, 2, -2, 3)],
        [f"设 {v} 是第 n 项，则 {s.a1} + (n - 1) × {par(s.d)} = {v}。",
         f"n - 1 = ({v} - {par(s.a1)}) ÷ {par(s.d)} = {k - 1}。",
         f"所以 n = {k}。"],
        [f"计算 ({v} - {par(s.a1)}) ÷ {par(s.d)} = {k - 1}。", f"所以是第 {k - 1} 项。"],
    )


def s_member(rng: random.Random, s: Sequence) -> Item | None:
    if abs(s.d) < 2:
        return None
    k = rng.randint(3, 20)
    v = s.term(k)
    j = rng.randint(1, 3)
    m = s.a1 - j * s.d  # right remainder, but before the first term
    others = [s.term(rng.randint(2, 20)) + r for r in range(1, abs(s.d)) for _ in range(2)]
    return item(
        rng, "下列哪个数是这个数列中的某一项？", v, m, others,
        [(f"数列的项满足 x = {s.a1} + (n - 1) × {par(s.d)}，n 为正整数，"
         f"即 x - {par(s.a1)} 必须是 {par(s.d)} 的非负整数倍。"),
         f"{v} - {par(s.a1)} = {v - s.a1} = {k - 1} × {par(s.d)}，所以{v}是第 {k} 项。",
         "其余选项要么减去首项后不能被公差整除，要么位于首项之前。"],
        [f"只要 x - {par(s.a1)} 能被 {par(s.d)} 整除，x 就是数列中的项。",
         f"{m} - {par(s.a1)} = {m - s.a1} 能被 {par(s.d)} 整除，所以{m}是数列中的项。"],
    )


def fam_sequence(rng: random.Random) -> tuple[str, list[Item]]:
    s = Sequence(rng.randint(-10, 30), rng.choice((-5, -4, -3, -2, 2, 3, 4, 5, 6, 7, 8, 9)))
    if rng.random() < 0.5:
        text = (f"一个等差数列的首项是 {s.a1}，公差是 {s.d}，"
                f"即从第二项起，每一项都等于前一项加上 {s.d}。")
    else:
        text = (f"一个等差数列的前三项依次是 {s.a1}、{s.term(2)}、{s.term(3)}，"
                f"此后每一项与前一项的差都等于 {s.d}（公差不变）。")
    return text + "请根据这个数列回答下列问题。", ask(rng, (s_nth, s_sum, s_index, s_member), s)


# --- gcd and lcm -----------------------------------------------------------------------------


def euclid(a: int, b: int) -> str:
    lines = []
    while b:
        lines.append(f"{a} = {a // b} × {b} + {a % b}")
        a, b = b, a % b
    return "；".join(lines)


def gcd_pair(rng: random.Random) -> tuple[int, int, int]:
    g = rng.choice((4, 6, 8, 9, 10, 12, 14, 15, 16, 18, 20, 21))
    while True:
        x, y = rng.randint(2, 12), rng.randint(2, 12)
        if x > y and math.gcd(x, y) == 1:
            return g, g * x, g * y


def d_gcd(rng: random.Random, prolog: bool) -> Item:
    g, a, b = gcd_pair(rng)
    m = g // min(p for p in range(2, g + 1) if g % p == 0)  # a smaller common divisor
    q = f"查询 gcd({a}, {b}, G) 时，G 的值是多少？" if prolog else f"{a} 和 {b} 的最大公约数是多少？"
    return item(
        rng, q, g, m, (1, 2 * g, a // g, b // g, a - b, g + 1),
        [f"用辗转相除法：{euclid(a, b)}。",
         f"余数为 0 时的除数 {g} 就是最大公约数。"],
        [f"{a} 和 {b} 都能被 {m} 整除。", f"所以最大公约数是 {m}。"],
    )


def d_lcm(rng: random.Random, _: bool) -> Item:
    g, a, b = gcd_pair(rng)
    lcm = a * b // g
    return item(
        rng, f"{a} 和 {b} 的最小公倍数是多少？", lcm, a * b, (g, 2 * lcm, lcm // 2, a + b, lcm + g),
        [f"先用辗转相除法求最大公约数：{euclid(a, b)}，得 {g}。",
         f"最小公倍数 = {a} × {b} ÷ {g} = {lcm}。"],
        ["两个数的最小公倍数就是它们的乘积。", f"{a} × {b} = {a * b}。"],
    )


def d_coprime(rng: random.Random, _: bool) -> Item:
    while True:
        a, b = rng.randint(8, 60), rng.randint(8, 60)
        if a != b and math.gcd(a, b) == 1:
            break
    p = rng.choice((3, 5, 7))
    m1, m2 = p * rng.choice((3, 5, 7, 9, 11)), p * rng.choice((3, 5, 7, 9, 11, 13))
    if m1 == m2:
        m2 += 2 * p
    n = rng.choice((4, 4, 5))
    others = []
    while len(others) < n - 2:  # even pairs: they share the factor 2
        x, y = 2 * rng.randint(4, 30), 2 * rng.randint(4, 30)
        if x != y and f"{x} 和 {y}" not in others:
            others.append(f"{x} 和 {y}")
    return item(
        rng, "下列哪一组数互质？", f"{a} 和 {b}", f"{m1} 和 {m2}", others,
        [f"求 {a} 和 {b} 的最大公约数：{euclid(max(a, b), min(a, b))}，结果为 1，所以互质。",
         f"{m1} 和 {m2} 有公因数 {p}；" + "、".join(others) + " 都是偶数，有公因数 2。"],
        [f"{m1} 和 {m2} 都是奇数，没有公因数 2。", "所以它们互质。"],
        n=n,
    )


def fam_gcd(rng: random.Random) -> tuple[str, list[Item]]:
    prolog = rng.random() < 0.4
    text = ("两个正整数的最大公约数是能同时整除它们的最大正整数；最小公倍数是能同时被它们整除的"
            "最小正整数；最大公约数为 1 的两个数称为互质。")
    if prolog:
        text += ("\n下面的 Prolog 规则用辗转相除法计算最大公约数：\n"
                 "gcd(A, 0, A).\n"
                 "gcd(A, B, G) :- B > 0, R is A mod B, gcd(B, R, G).")
    return text, ask(rng, (d_gcd, d_lcm, d_coprime), prolog)


# --- food web: a Prolog program with rules ---------------------------------------------------


@dataclass
class FoodWeb:
    plants: list[str]
    animals: list[str]
    eats: list[tuple[str, str]]

    def herbivores(self) -> list[str]:
        return [x for x in self.animals if any(a == x and b in self.plants for a, b in self.eats)]

    def carnivore_facts(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in self.eats if b in self.animals]

    def carnivores(self) -> list[str]:
        return [x for x in self.animals if any(a == x for a, _ in self.carnivore_facts())]

    def chain(self, x: str) -> list[str]:
        out = []
        for a, y in self.eats:
            for b, z in self.eats:
                if a == x and b == y and z not in out:
                    out.append(z)
        return out


def f_herbivore(rng: random.Random, w: FoodWeb) -> Item | None:
    h = rng.choice(w.herbivores())
    p = next(b for a, b in w.eats if a == h and b in w.plants)
    hunters = [a for a, b in w.eats if b == h and a not in w.herbivores()]
    if not hunters:
        return None
    c = hunters[0]
    return item(
        rng, "下列哪一个满足 herbivore(X)？", h, c,
        [x for x in w.animals + w.plants if x not in w.herbivores()],
        ["herbivore(X) 要求存在 Y，使 eats(X, Y) 与 plant(Y) 都成立。",
         f"事实 eats({h}, {p}) 和 plant({p}) 都成立，所以 herbivore({h}) 成立。",
         "其他选项都没有“吃某个 plant”的事实，闭世界假设下不满足。"],
        [f"由 eats({c}, {h}) 可知 {c} 吃 {h}，而 {h} 吃植物。", f"所以 {c} 也满足 herbivore(X)。"],
    )


def f_chain(rng: random.Random, w: FoodWeb) -> Item | None:
    xs = [x for x in w.animals if any(a == x and b not in w.chain(x) and b in w.animals
                                      for a, b in w.eats) and w.chain(x)]
    if not xs:
        return None
    x = rng.choice(xs)
    z = rng.choice(w.chain(x))
    y = next(b for a, b in w.eats if a == x and (b, z) in w.eats)
    m = next(b for a, b in w.eats if a == x and b not in w.chain(x) and b in w.animals)
    return item(
        rng, f"查询 food_chain({x}, Z) 时，Z 可以是下列哪一个？", z, m,
        [v for v in w.animals + w.plants if v not in w.chain(x) and v != x],
        [f"food_chain({x}, Z) 要求存在 Y，使 eats({x}, Y) 与 eats(Y, Z) 都成立。",
         f"由 eats({x}, {y}) 和 eats({y}, {z}) 可得 food_chain({x}, {z})。",
         f"food_chain({x}, Z) 的全部解为：{'、'.join(w.chain(x))}，其他选项都不是解。"],
        [f"food_chain({x}, Z) 就是 {x} 吃 Z。", f"由 eats({x}, {m}) 得 Z = {m}。"],
    )


def f_fact(rng: random.Random, w: FoodWeb) -> Item:
    options = ["true（成立）", "false（不成立）", "无法确定"]
    if rng.random() < 0.3:
        a, b = rng.choice(w.eats)
        return item(rng, f"查询 eats({a}, {b}) 的结果是什么？", options[0], options[1], (),
                    [f"程序中有事实 eats({a}, {b}).，查询直接成立。"],
                    [f"规则中没有 eats({a}, {b})。", "所以查询不成立。"],
                    fixed=options)
    false = [(a, b) for a in w.animals for b in w.animals + w.plants
             if a != b and (a, b) not in w.eats]
    a, b = rng.choice(false)
    return item(rng, f"查询 eats({a}, {b}) 的结果是什么？", options[1], options[2], (),
                ["eats 只由事实定义，没有推出 eats 的规则。",
                 f"程序中没有事实 eats({a}, {b}).，闭世界假设下查询结果为 false。"],
                [f"程序中没有提到 eats({a}, {b})。", "没有提到就是未知，所以无法确定。"],
                fixed=options)


def f_count(rng: random.Random, w: FoodWeb) -> Item | None:
    facts = w.carnivore_facts()
    k = len(w.carnivores())
    if len(facts) == k:
        return None
    listing = "、".join(f"eats({a}, {b})" for a, b in facts)
    return item(
        rng, "满足 carnivore(X) 的不同的 X 共有几个？", k, len(facts),
        [k - 1, k + 2, len(facts) + 1, len(w.animals)],
        ["carnivore(X) 要求 X 吃某个 animal。",
         f"满足条件的 eats 事实有：{listing}。",
         f"去掉重复的 X，不同的 X 有：{'、'.join(w.carnivores())}，共 {k} 个。"],
        ["carnivore(X) 要求 X 吃某个 animal。",
         f"满足条件的 eats 事实有：{listing}。",
         f"每条事实对应一个解，共 {len(facts)} 个。"],
    )


def fam_foodweb(rng: random.Random) -> tuple[str, list[Item]]:
    plants = rng.sample(["grass", "grain", "berry"], 2)
    herb = rng.sample(["rabbit", "mouse", "deer", "insect"], rng.randint(2, 3))
    pred = rng.sample(["fox", "snake", "eagle", "wolf", "frog"], rng.randint(2, 3))
    eats = [(h, p) for h in herb for p in rng.sample(plants, rng.randint(1, 2))]
    eats += [(c, v) for c in pred for v in rng.sample(herb, rng.randint(1, 2))]
    if rng.random() < 0.5:
        eats.append((pred[0], pred[1]))  # a predator that also eats a predator
    w = FoodWeb(plants, herb + pred, eats)
    lines = ([f"plant({p})." for p in plants] + [f"animal({a})." for a in w.animals]
             + [f"eats({a}, {b})." for a, b in eats]
             + ["herbivore(X) :- eats(X, Y), plant(Y).",
                "carnivore(X) :- eats(X, Y), animal(Y).",
                "food_chain(X, Z) :- eats(X, Y), eats(Y, Z)."])
    text = ("下面是一段描述食物网的 Prolog 程序：\n" + "\n".join(lines) + "\n"
            "查询遵循闭世界假设：不能由以上事实和规则推出的都为假。")
    return text, ask(rng, (f_herbivore, f_chain, f_fact, f_count), w)


# --- the table of families and the writer ----------------------------------------------------

FAMILIES: tuple[tuple[str, Callable[[random.Random], tuple[str, list[Item]]]], ...] = (
    ("powers", fam_powers),
    ("factorials", fam_factorials),
    ("kinship", fam_kinship),
    ("heights", fam_heights),
    ("race", fam_race),
    ("clubs", fam_clubs),
    ("roads", fam_roads),
    ("sequence", fam_sequence),
    ("gcd", fam_gcd),
    ("foodweb", fam_foodweb),
)


def solution(steps: list[str], options: list[str], index: int, short: bool) -> str:
    """A worked solution in the teacher's output format."""
    letter = LETTERS[index]
    result = f"答案是：{letter}" if short else f"正确答案是 {letter}. {options[index]}"
    body = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
    return f"### 思考思路:\n{body}\n\n### 可能的结果:\n{result}"


def problem_row(pid: str, text: str, items: list[Item], answers: bool) -> dict[str, Any]:
    questions = []
    for k, it in enumerate(items, 1):
        q: dict[str, Any] = {"question": f"选择题 {k}：\n{it.question}", "options": it.options}
        if answers:
            q["answer"] = LETTERS[it.answer]
        questions.append(q)
    return {"id": pid, "problem": text, "questions": questions}


def generate_sample(
    out_dir: Path,
    seed: int = 0,
    teacher_model: str = "deepseek-chat",
    sampling: dict | None = None,
) -> dict:
    """Write train/test/test_gold/teacher .jsonl into `out_dir`; return a summary."""
    out_dir = Path(out_dir)
    sampling = dict(DEFAULT_SAMPLING if sampling is None else sampling)
    train: list[tuple[str, str, list[Item]]] = []  # (family, text, items)
    test: list[tuple[str, str, list[Item]]] = []
    for i in range(PROBLEMS_PER_FAMILY):
        for name, family in FAMILIES:
            text, items = family(random.Random(f"{seed}:{name}:{i}"))
            (test if i == TEST_INDEX else train).append((name, text, items))

    train_rows = [problem_row(f"sample_train_{k:03d}", t, its, True) for k, (_, t, its) in enumerate(train)]
    test_ids = [f"sample_test_{k:03d}" for k in range(len(test))]
    atomic_write_jsonl(out_dir / "train.jsonl", train_rows)
    atomic_write_jsonl(out_dir / "test.jsonl",
                       [problem_row(pid, t, its, False) for pid, (_, t, its) in zip(test_ids, test)])
    atomic_write_jsonl(out_dir / "test_gold.jsonl",
                       [problem_row(pid, t, its, True) for pid, (_, t, its) in zip(test_ids, test)])

    # Teacher replies, keyed by the questions as distillation will read them back.
    questions = read_dataset(out_dir / "train.jsonl").questions
    items = [it for _, _, its in train for it in its]
    assert len(questions) == len(items)
    pick = random.Random(f"{seed}:wrong")
    wrong = set(pick.sample(range(len(items)), round(WRONG_SHARE * len(items))))
    style = random.Random(f"{seed}:style")
    lines = []
    for k, (q, it) in enumerate(zip(questions, items)):
        assert q.options == tuple(it.options) and q.answer == LETTERS[it.answer]
        short = style.random() < 0.25
        index, steps = (it.wrong, it.wrong_steps) if k in wrong else (it.answer, it.steps)
        prompt = answer_prompt(q)
        record = {
            "key": teacher_key(q.qid, prompt, teacher_model, sampling),
            "qid": q.qid,
            "model": teacher_model,
            "sampling": sampling,
            "prompt_sha": text_hash(prompt),
            # As distillation records them: a reply that misses the gold letter is "rejected"
            # (re-asked when teacher.max_attempts > 1, dropped by keep: agreeing).
            "status": "ok" if index == it.answer else "rejected",
            "text": solution(steps, it.options, index, short),
            "letter": LETTERS[index],
            "gold": q.answer,
            "agrees": index == it.answer,
            "attempts": 1,
            "source": SOURCE,
        }
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    atomic_write_text(out_dir / "teacher.jsonl", "".join(lines))

    families: dict[str, dict[str, int]] = {name: {"problems": 0, "questions": 0} for name, _ in FAMILIES}
    for name, _, its in train + test:
        families[name]["problems"] += 1
        families[name]["questions"] += len(its)
    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "problems": {"train": len(train), "test": len(test)},
        "questions": {"train": len(items), "test": sum(len(its) for _, _, its in test)},
        "teacher_records": len(lines),
        "wrong_teacher_records": len(wrong),
        "families": families,
    }


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Regenerate the shipped synthetic sample.")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output folder (default: beside this file)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = generate_sample(args.out, seed=args.seed)
    for split, counts in summary.items():
        if isinstance(counts, dict) and split != "families":
            print(f"{split}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
