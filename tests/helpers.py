"""What several test modules share: competition files, teacher flags, submissions."""

from __future__ import annotations

import json
from pathlib import Path

from fake_openai import expected_letter

REPO = Path(__file__).resolve().parent.parent


def make_train(path: Path, problems: int = 4, per_problem: int = 3) -> Path:
    """Questions whose gold letter is what the fake server's default reply will say."""
    from orchestrator.core.competition import Question
    from orchestrator.core.prompts import answer_prompt

    lines = []
    for p in range(problems):
        questions = []
        for i in range(per_problem):
            options = [f"选项{p}-{i}-{k}" for k in range(4)]
            q = Question(f"t{p}", i, f"题目 {p}：一些事实。", f"选择题 {i + 1}：\n问题 {p}-{i}?", tuple(options))
            questions.append({"question": q.question, "options": options, "answer": expected_letter(answer_prompt(q))})
        lines.append(json.dumps({"id": f"t{p}", "problem": f"题目 {p}：一些事实。", "questions": questions}, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def teacher_flags(url: str, **extra: object) -> tuple[str, ...]:
    sets = {"teacher.base_url": url, "teacher.model": "fake-model", "teacher.preload": "[]", "teacher.concurrency": 4, **extra}
    return tuple(f"{k}={v}" for k, v in sets.items())


SHAPE = [[4], [3, 5], [4, 4, 4], [2], [7, 3]]


def write_competition(path: Path, shape: list[list[int]] = SHAPE) -> list[str]:
    """A competition file; question j of problem i reads `问题i-j` (a marker faults can target)."""
    lines = []
    for i, options in enumerate(shape):
        questions = [
            {"question": f"选择题 {j + 1}:\n问题{i}-{j}：谁说了真话？", "options": [f"选项{i}{j}{k}" for k in range(n)]}
            for j, n in enumerate(options)
        ]
        problem = {"id": f"p{i:03d}", "problem": f"题目{i}：甲乙丙三人各说一句话。", "questions": questions}
        lines.append(json.dumps(problem, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [f"p{i:03d}#{j}" for i, options in enumerate(shape) for j in range(len(options))]


def marker(qid: str) -> str:
    """The text only question `qid` of write_competition has."""
    problem, index = qid.split("#")
    return f"问题{int(problem[1:])}-{index}："


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_id(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in read_jsonl(path)}


def qids(shape: list[int]) -> list[str]:
    return [f"p{i:03d}#{j}" for i, n in enumerate(shape) for j in range(n)]


def write_file(path: Path, shape: list[int], answers: dict[str, str | None]) -> Path:
    """A competition file (4 options a question) with `answers` by question id."""
    lines = []
    for i, n in enumerate(shape):
        questions = [{"question": f"问题{i}-{j}", "options": list("甲乙丙丁"), "answer": answers.get(f"p{i:03d}#{j}")}
                     for j in range(n)]
        lines.append(json.dumps({"id": f"p{i:03d}", "problem": f"题目{i}", "questions": questions},
                                ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path

