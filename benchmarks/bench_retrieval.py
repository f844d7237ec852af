"""Few-shot retrieval speed: BM25 over character bigrams (orchestrator/core/data/fewshot.py), 1,328
queries (the test set's question count) over pools of 1,421 and 20,000 worked examples.

    .venv/bin/python benchmarks/bench_retrieval.py [--queries 1328] [--pools 1421,20000]

The text is synthetic, of the competition's shape and length (a problem of 150-600 Chinese
characters built from names, places and relations, a question of 15-40): no competition file
is read. Printed: building the index, loading it back from runs/fewshot/ (the cache), and
ranking every query (k = 2), each the best of 3 runs.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

NAMES = list("甲乙丙丁戊己庚辛壬癸") + ["张三", "李四", "王五", "赵六", "钱七", "孙八", "周九", "吴十"]
WORDS = ["喜欢", "不喜欢", "住在", "认识", "是", "不是", "比", "高", "矮", "早到", "晚到", "朋友", "医生", "老师",
         "北京", "上海", "广州", "深圳", "红色", "蓝色", "绿色", "苹果", "香蕉", "如果", "那么", "并且", "或者",
         "所有", "有些", "没有", "说了真话", "说了假话", "参加", "比赛", "第一", "第二", "城市", "道路", "连接"]


def text(rng: random.Random, low: int, high: int) -> str:
    out: list[str] = []
    size = rng.randint(low, high)
    while sum(map(len, out)) < size:
        out += [rng.choice(NAMES), rng.choice(WORDS), rng.choice(NAMES), rng.choice(WORDS), "，" if rng.random() < .7 else "。"]
    return "".join(out)[:size]


def examples(n: int, seed: int):
    from orchestrator.core.data.prompts import Example

    rng = random.Random(seed)
    return [Example(f"pool{i:06d}#0", text(rng, 150, 600), text(rng, 15, 40), ("甲", "乙", "丙", "丁"), "解答")
            for i in range(n)]


def best(fn, runs: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1328)
    parser.add_argument("--pools", default="1421,20000")
    args = parser.parse_args()
    rng = random.Random(7)
    queries = [(f"q{i}", text(rng, 150, 600), text(rng, 15, 40)) for i in range(args.queries)]
    print(f"{'pool':>7}{'build s':>9}{'load s':>8}{'rank s':>8}{'queries/s':>11}")
    for size in map(int, args.pools.split(",")):
        build_s, load_s, rank_s = measure(examples(size, size), queries)
        print(f"{size:>7}{build_s:>9.2f}{load_s:>8.2f}{rank_s:>8.2f}{args.queries / rank_s:>11.0f}")


def measure(pool: list, queries: list) -> tuple[float, float, float]:
    """Seconds to build the index, load it back from its cache folder, and rank every query."""
    from orchestrator.core.data.fewshot import Retriever

    with tempfile.TemporaryDirectory() as tmp:
        def build() -> Retriever:
            for f in Path(tmp).iterdir():
                f.unlink()
            return Retriever(pool, Path(tmp))

        build_s, _ = best(build)
        load_s, retriever = best(lambda: Retriever(pool, Path(tmp)))
        assert isinstance(retriever, Retriever)
        rank_s, found = best(lambda: retriever.search(queries, 2))
    assert isinstance(found, list) and all(len(f) == 2 for f in found)
    return build_s, load_s, rank_s

if __name__ == "__main__":
    main()
