"""Fixed votes against adaptive votes (inference.extra_votes), through the real `infer`.

    .venv/bin/python benchmarks/bench_votes.py [--questions 1328] [--teams 5] [--seeds 5]

A loopback server plays one Answer model that "samples" by drawing one of several answer sets
(synthetic teams, generated here from a seed; no competition file is read) for every sample
it is asked, and answers with that team's letter. Questions are easy (every team right) or
hard (each team right with its own probability, else mostly a shared trap letter), so about
70% are unanimous, as five published answer sets were on the real test set. For each seed the
same questions are answered with votes 1, 3, 5 and 3 + 2 extra where split; accuracy is the
Answer vote (trace answer.letter) against the synthetic gold, samples are the Answer samples
asked (the requests of an endpoint without `n`), requests what went over HTTP with `n` honoured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

CONFIGS = [("votes 1", 1, 0), ("votes 3", 3, 0), ("votes 5", 5, 0), ("votes 3 + 2 where split", 3, 2)]


def synthetic_sets(questions: int, teams: int, seed: int) -> tuple[list[dict], list[list[str]]]:
    """Problems (competition format, with gold) and each team's letters, question by question."""
    rng = random.Random(seed)
    skill = [rng.uniform(0.55, 0.7) for _ in range(teams)]  # a team's chance on a hard question
    problems, letters = [], []
    for n in range(questions):
        k = rng.choice([4, 4, 5, 5, 6])
        gold = "ABCDEFG"[rng.randrange(k)]
        trap = rng.choice([x for x in "ABCDEFG"[:k] if x != gold])
        hard = rng.random() < 0.30
        row = []
        for t in range(teams):
            if not hard or rng.random() < skill[t]:
                row.append(gold)
            else:
                row.append(trap if rng.random() < 0.7 else rng.choice([x for x in "ABCDEFG"[:k] if x != gold]))
        letters.append(row)
        options = [f"选项{n}-{i}" for i in range(k)]
        problems.append({"id": f"syn{n:05d}", "problem": f"合成题目{n}：甲乙丙三人各说一句话。",
                         "questions": [{"question": f"问题{n}：谁说了真话？", "options": options, "answer": gold}]})
    return problems, letters


class Teams:
    """A reply function: each sample is one randomly drawn team's letter for the question asked.
    The k-th sample of a question draws the same team in every configuration (common random
    numbers), so the configurations differ by their rule, not by luck."""

    def __init__(self, letters: list[list[str]], seed: int):
        self.letters, self.seed, self.seen, self.lock = letters, seed, {}, threading.Lock()

    def __call__(self, prompt: str, request: dict) -> str:
        n = int(prompt.rpartition("问题")[2].partition("：")[0])
        with self.lock:
            k = self.seen[n] = self.seen.get(n, -1) + 1
        letter = random.Random(f"{self.seed}:{n}:{k}").choice(self.letters[n])
        return f"### 思考思路:\n1. 推理\n### 可能的结果:\n答案是：{letter}"


def run_one(home: Path, test: Path, name: str, votes: int, extra: int, seed: int, letters: list[list[str]],
            honour_n: bool) -> dict:
    from fake_openai import FakeOpenAI

    from orchestrator.cli import run

    out = home / "runs" / f"{name.replace(' ', '_')}-{seed}-{honour_n}"
    with FakeOpenAI(reply=Teams(letters, seed), honour_n=honour_n,
                    models=("ans",)) as answer, FakeOpenAI(models=("ev",)) as evaluate:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            code = run(["infer", str(test), "--out-dir", str(out), "--answer-url", answer.url, "--evaluate-url",
                        evaluate.url, "--votes", str(votes), "--concurrency", "64",
                        "--set", f"inference.extra_votes={extra}", "--set", "inference.max_retries=1"])
        if code != 0:
            raise SystemExit(f"infer failed for {name}")
        requests = answer.completions
    trace = [json.loads(line) for line in (out / "trace.jsonl").read_text(encoding="utf-8").splitlines()]
    gold = {f"{p['id']}#0": p["questions"][0]["answer"] for p in map(json.loads, test.read_text().splitlines())}
    return {"correct": sum(r["answer"]["letter"] == gold[r["id"]] for r in trace),
            "samples": sum(len(r["answer"]["samples"]) for r in trace),
            "extra": sum(r["answer"]["extra_rounds"] for r in trace), "requests": requests, "questions": len(trace)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1328)
    parser.add_argument("--teams", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-votes-"))
    try:
        shutil.copytree(REPO / "recipes", home / "recipes")
        shutil.copytree(REPO / "datasets" / "sample", home / "datasets" / "sample")
        os.environ["ORCHESTRATOR_HOME"] = str(home)
        os.chdir(home)
        totals: dict[str, dict[str, int]] = {}
        unanimous = 0
        for seed in range(args.seeds):
            problems, letters = synthetic_sets(args.questions, args.teams, seed)
            unanimous += sum(len(set(row)) == 1 for row in letters)
            test = home / f"synthetic-{seed}.jsonl"
            test.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in problems), encoding="utf-8")
            for name, votes, extra in CONFIGS:
                got = run_one(home, test, name, votes, extra, seed, letters, honour_n=False)
                # with `n` (seed 0 only): the same samples, fewer requests
                with_n = run_one(home, test, name, votes, extra, seed, letters, honour_n=True) if seed == 0 else {}
                total = totals.setdefault(name, {})
                for key, value in {**got, "requests_n": with_n.get("requests", 0)}.items():
                    total[key] = total.get(key, 0) + value
        n = args.questions * args.seeds
        print(f"{args.seeds} seeds x {args.questions} questions, {args.teams} synthetic answer sets, "
              f"{unanimous / n:.0%} of questions unanimous across the sets")
        five = totals["votes 5"]
        print(f"{'':<26}{'accuracy':>9}{'samples':>9}{'vs 5':>7}{'extra q':>9}{'requests (n, seed 0)':>22}")
        for name, t in totals.items():
            print(f"{name:<26}{t['correct'] / n:>9.4f}{t['samples'] // args.seeds:>9}"
                  f"{t['samples'] / five['samples']:>7.0%}{t['extra'] // args.seeds:>9}"
                  f"{t['requests_n']:>22}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
