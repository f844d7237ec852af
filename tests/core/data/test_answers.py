from __future__ import annotations

import random

import pytest

from orchestrator.core.data.answers import extract_choice
from orchestrator.core.data.competition import LETTERS

ANSWER_9_POW_9 = """### 思考思路:
1. 题目要求计算 9^9 的值。
2. 9^2 = 81，9^3 = 729，9^9 = (9^3)^3 = 729^3。
3. 729^3 = 387420489，与选项比对。
### 可能的结果:
根据计算 9^9 的结果，正确答案是 B. 3486784401。"""

ANSWER_BARE_OPTION = """### 思考思路:
1. 根据闭世界假设，未观测到的事实都为假。
2. 题目中没有任何事实能推出 X 成立，所以计数为 0。
3. 选项B、C、D 都需要额外的事实。
### 可能的结果:
A. 0"""

R1_STYLE = """<think>
好的，我先看题目。A person 说了谎，BMI 与此无关。选项A看起来不对，也许答案是A？
不，再算一遍：如果答案是B，那么甲和乙矛盾。所以应该排除B。
</think>

**答案：C**

解析：只有 C 满足全部条件。"""

CASES = [
    # Evaluate-model style.
    ("答案是:B", 4, "B"),
    ("答案是：B", 4, "B"),
    ("答案是：C。", 4, "C"),
    ("**答案是：B**", 4, "B"),
    ("答案是：Ｂ", 4, "B"),
    ("答案是 b", 4, "B"),
    ("答案是：E", 4, None),
    ("答案是：E", 5, "E"),
    ("答案是：G", 7, "G"),
    ("答案是:A\n", 2, "A"),
    ("经过分析，将每个选项带入题目后：\n答案是：D", 4, "D"),
    ("答案是A……经检查，答案是：C", 4, "C"),
    ("答案是A。不对，重新检查一遍：答案是C。", 4, "C"),
    ("参考结果是A，但是A与条件2矛盾。\n答案是：B", 3, "B"),
    ("最终输出格式如下\n答案是：X\n例如：答案是：A", 4, None),
    ("例如：答案是：A\n答案是：D", 4, "D"),
    # Answer-model style, reading the likely-result section.
    (ANSWER_9_POW_9, 4, "B"),
    (ANSWER_BARE_OPTION, 4, "A"),
    ("### 思考思路:\n1. 如果答案是A，则矛盾。\n2. 故选C。\n### 可能的结果:\n选项B", 4, "B"),
    ("### 思考思路:\n1. A和B都有可能。\n### 可能的结果:\nC. 两者都不对", 3, "C"),
    (
        "### 思考思路：\n1. 逐一排除。\n### 可能的结果：\n根据分析，C 符合题意，其他选项都不符合。",
        4,
        "C",
    ),
    ("### 思考思路:\n1. 分析条件。\n### 可能的结果:\nA和B都有可能", 4, None),
    ("### 思考思路:\n1. 分析条件。\n### 可能的结果:\n无法确定", 4, None),
    ("### 思考思路:\n1. 选项A不正确。\n### 可能的结果:\n选项A不正确", 4, None),
    ("### 思考思路:\n1. 计算。\n### 可能的结果:\n(D) 12", 4, "D"),
    ("### 思考思路:\n1. 列出事实。\n### 可能的结果:\n**答案为【A】**", 4, "A"),
    ("### 思考思路:\n1. 推理。\n### 可能的结果:\nF. 以上都不是", 5, None),
    # Bare option lines and one-line texts.
    ("A. 0", 4, "A"),
    ("B", 4, "B"),
    ("(C)", 4, "C"),
    ("选项B", 4, "B"),
    ("我觉得是 D", 4, "D"),
    ("正确答案是 B. 3486784401", 4, "B"),
    ("A和B都有可能", 4, None),
    ("A person walks into the room.", 4, None),
    ("BMI 指数与本题无关", 4, None),
    # Chinese claims.
    ("故选C", 4, "C"),
    ("综上所述，故选：C。", 4, "C"),
    ("因此应该选择选项 B。", 4, "B"),
    ("不应选A，应选D。", 4, "D"),
    ("正确的选项是 C", 4, "C"),
    ("经验证，选项B正确。", 4, "B"),
    ("不过，答案是C。", 4, "C"),
    ("答案是A或B", 4, None),
    ("答案是A吗？", 4, None),
    # English claims.
    ("The answer is C", 4, "C"),
    ("Answer: (B)", 4, "B"),
    ("After checking every option, the correct answer is (b).", 4, "B"),
    ("Final Answer: **D**", 4, "D"),
    ("Therefore, the answer is $\\boxed{D}$.", 4, "D"),
    ("$$\\boxed{\\text{A}}$$", 4, "A"),
    ("Option C is correct because the others contradict rule 2.", 4, "C"),
    ("I would choose B.", 4, "B"),
    ("The answer is a bit unclear here.", 4, None),
    ("If the answer were A, rule 3 fails. If the answer is B, rule 1 fails.", 4, None),
    ("A person who lies is a knave, and a BMI over 30 is obese.", 4, None),
    # DeepSeek-R1-like think blocks.
    (R1_STYLE, 4, "C"),
    ("<think>\n让我想想……答案是A。\n</think>\n\n答案是：D", 4, "D"),
    ("<think>\n逐个检验，最后确定答案是B。\n</think>\n\n", 4, "B"),
    ("<think>\nA和B都可能，再看C\n</think>\nThe answer is C.", 3, "C"),
    ("<think>\n答案是A\n</think>\n答案是：E", 4, None),
    # Nothing to read.
    ("", 4, None),
    ("   \n  ", 4, None),
    ("我需要更多信息才能回答这个问题。", 4, None),
    ("### 思考思路:\n1. 题目信息不足。\n### 可能的结果:\n", 4, None),
    ("答案是：A", 0, None),
]


@pytest.mark.parametrize(("text", "n_options", "expected"), CASES)
def test_extract_choice(text: str, n_options: int, expected: str | None) -> None:
    assert extract_choice(text, n_options) == expected


def test_never_raises_on_junk() -> None:
    rng = random.Random(20240601)
    pieces = [
        "答案是",
        "：",
        "</think>",
        "<think>",
        "### 可能的结果:",
        "故选",
        "\\boxed{",
        "选项",
        "\n",
    ]
    for _ in range(500):
        parts = []
        for _ in range(rng.randint(0, 30)):
            if rng.random() < 0.2:
                parts.append(rng.choice(pieces))
            elif rng.random() < 0.3:
                parts.append(rng.choice(LETTERS + "abcdefgHXZ .,()*"))
            else:
                parts.append(chr(rng.randint(0, 0x10FFFF)))
        n_options = rng.randint(-1, 8)
        letter = extract_choice("".join(parts), n_options)
        assert letter is None or letter in LETTERS[: max(n_options, 0)]
