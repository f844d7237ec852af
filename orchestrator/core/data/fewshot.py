"""Few-shot retrieval: the k training problems most like a question, each with its worked
solution, put into the Answer prompt (`fewshot: {k, pool}` in the Answer recipe).

The pool (`pool: train`) is the gold training file's questions whose teacher reply (to the
plain Answer prompt, as the last `distill` cached it) reached the gold letter, less the
held-out problems of the recipe's split and any problem whose text is in data.test or
data.gold. A question never retrieves its own problem (same id or same text). Ranking is BM25
over character bigrams: Chinese has no spaces, bigrams need no dictionary and catch the names
and relations these puzzles repeat; ties go to the earlier pool entry. The index is built
once per pool and kept under runs/fewshot/<pool hash>/.

distill, dataset and infer all call `examples_for` and render through `answer_prompt`, so a
question's prompt is the same text in all three.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from orchestrator.core.common.ledger import Ledger, read_records, stable_key
from orchestrator.core.common.paths import project_root, runs_dir
from orchestrator.core.data.competition import Question, read_dataset
from orchestrator.core.data.heldout import split_by_problem
from orchestrator.core.data.prompts import Example, answer_prompt
from orchestrator.core.data.sources import read_sources, training_sources
from orchestrator.core.data.teacher_cache import cache_path, cached_reply, last_teacher
from orchestrator.core.recipes.schema import FewshotSection, PipelineRecipe, RoleRecipe, TeacherSection
from orchestrator.core.run_folders.role_paths import model_path

K1, B = 1.5, 0.75
TOKENS = "alnum-lower-char-bigrams-v1"  # what `bigrams` does: change it when bigrams changes
INDEX_KEY = hashlib.sha256(json.dumps([K1, B, TOKENS]).encode()).hexdigest()[:12]
CHUNK = 256  # queries scored at once (a CHUNK x pool matrix of floats)


def bigrams(text: str) -> list[str]:
    """Character bigrams of the letters and digits of `text` (punctuation and spaces dropped)."""
    chars = [c for c in text.lower() if c.isalnum()]
    return [a + b for a, b in zip(chars, chars[1:], strict=False)] or chars


def _query_text(problem: str, question: str) -> str:
    return f"{problem}\n{question}"


def _norm(text: str) -> str:
    return "".join(text.split())


class Retriever:
    """BM25 over character bigrams of (problem, question), with scipy sparse matrices."""

    def __init__(self, examples: Sequence[Example], cache_dir: Path | None = None):
        import numpy as np
        from scipy import sparse

        self.examples = list(examples)
        # a query's own problem, by id and by text: the entries it may never retrieve
        self._same: dict[str, list[int]] = {}
        for i, e in enumerate(self.examples):
            for key in {f"id:{e.problem_id}", f"text:{_norm(e.problem)}"}:
                self._same.setdefault(key, []).append(i)
        self.vocab: dict[str, int] = {}
        # the cache is named by the retrieval's own parameters too: another k1, b or tokenisation
        # builds its own index
        index = cache_dir / f"index-{INDEX_KEY}.npz" if cache_dir else None
        vocab_file = cache_dir / f"vocab-{INDEX_KEY}.json" if cache_dir else None
        if index and vocab_file and index.exists() and vocab_file.exists():
            self.weights = sparse.load_npz(index).tocsr()
            self.vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
            return
        rows: list[int] = []
        cols: list[int] = []
        tfs: list[int] = []
        lengths: list[int] = []
        for d, e in enumerate(self.examples):
            counts = Counter(bigrams(_query_text(e.problem, e.question)))
            lengths.append(sum(counts.values()))
            for term, count in counts.items():
                rows.append(d)
                cols.append(self.vocab.setdefault(term, len(self.vocab)))
                tfs.append(count)
        n = len(self.examples)
        tf = np.array(tfs, dtype=np.float64)
        doc_len = np.array(lengths, dtype=np.float64)[np.array(rows, dtype=np.int64)]
        avg = max(float(np.mean(lengths)) if lengths else 1.0, 1.0)
        df = np.bincount(np.array(cols, dtype=np.int64), minlength=len(self.vocab)).astype(np.float64)
        idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
        col = np.array(cols, dtype=np.int64)
        w = idf[col] * tf * (K1 + 1) / (tf + K1 * (1 - B + B * doc_len / avg))
        self.weights = sparse.csr_matrix((w, (rows, cols)), shape=(n, len(self.vocab)))
        if index and vocab_file:
            import io

            atomic_write_json(vocab_file, self.vocab, indent=None)
            buffer = io.BytesIO()
            sparse.save_npz(buffer, self.weights)
            atomic_write_bytes(index, buffer.getvalue())  # last: the pair is complete once it exists

    def search(self, queries: Sequence[tuple[str, str, str]], k: int) -> list[list[Example]]:
        """For each (problem id, problem, question): the k best examples of other problems."""
        import numpy as np
        from scipy import sparse

        out: list[list[Example]] = []
        if k <= 0 or not self.examples:
            return [[] for _ in queries]
        for start in range(0, len(queries), CHUNK):
            chunk = queries[start:start + CHUNK]
            rows, cols, vals = [], [], []
            for r, (_, problem, question) in enumerate(chunk):
                for term, c in Counter(bigrams(_query_text(problem, question))).items():
                    if term in self.vocab:
                        rows.append(r)
                        cols.append(self.vocab[term])
                        vals.append(float(c))
            q = sparse.csr_matrix((vals, (rows, cols)), shape=(len(chunk), len(self.vocab)))
            scores = (q @ self.weights.T).toarray()
            n = len(self.examples)
            take = min(k, n)
            for r, (pid, problem, _) in enumerate(chunk):
                row = scores[r]
                row[self._same.get(f"id:{pid}", []) + self._same.get(f"text:{_norm(problem)}", [])] = -math.inf
                # the k best; among equal scores the earlier entry (ties stable)
                kth = np.partition(row, n - take)[n - take]
                above, equal = np.flatnonzero(row > kth), np.flatnonzero(row == kth)
                chosen = np.concatenate([above, equal[: take - len(above)]])
                top = chosen[np.lexsort((chosen, -row[chosen]))]
                out.append([self.examples[i] for i in top if row[i] > -math.inf])
        return out


# ---------------------------------------------------------------- the pool


def _problem_texts(files: Iterable[str | None]) -> set[str]:
    texts: set[str] = set()
    for file in files:
        path = project_root() / file if file else None
        if path and path.is_file():
            texts |= {_norm(p.problem) for p in read_dataset(path, skip_invalid=True).problems}
    return texts


def train_pool(pipe: PipelineRecipe, role: RoleRecipe, teacher: TeacherSection | None = None) -> list[Example]:
    """The worked examples of `pool: train` (see the module docstring), in training-file order;
    `teacher`: the settings whose replies to read (default: the last distillation's)."""
    teacher = teacher or last_teacher(pipe.teacher)
    gold = [q for q in training_sources(pipe.data, None, "fewshot")[0].questions if q.answer is not None]
    held = split_by_problem(gold, role.dataset.val_size, role.dataset.seed)[1]
    banned = _problem_texts([pipe.data.test, pipe.data.gold]) | {_norm(q.problem) for q in held}
    held_ids = {q.problem_id for q in held}
    pool = []
    with Ledger(cache_path()) as cache:
        for q in gold:
            if q.problem_id in held_ids or _norm(q.problem) in banned:
                continue
            record = cached_reply(cache, q, teacher)
            if record and record.get("agrees") and record.get("text"):
                pool.append(Example(q.qid, q.problem, q.question, q.options, record["text"].strip()))
    return pool


def pool_hash(pool: Sequence[Example]) -> str:
    return stable_key(pool=[asdict(e) for e in pool])


def pool_dir(pool: Sequence[Example]) -> Path:
    return runs_dir() / "fewshot" / pool_hash(pool)


_RETRIEVERS: dict[str, Retriever] = {}


def retriever(pool: Sequence[Example]) -> Retriever:
    """The pool's index: from this process, else from runs/fewshot/<hash>/, else built there."""
    key = pool_hash(pool)
    if key not in _RETRIEVERS:
        directory = pool_dir(pool)
        directory.mkdir(parents=True, exist_ok=True)
        if not (directory / "pool.jsonl").exists():
            atomic_write_text(directory / "pool.jsonl",
                              "".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in pool))
        _RETRIEVERS[key] = Retriever(pool, directory)
    return _RETRIEVERS[key]


@dataclass
class Fewshot:
    """What `examples_for` found: examples per question id, and the pool they came from."""

    setting: FewshotSection
    examples: dict[str, tuple[Example, ...]]
    pool: int = 0
    pool_hash: str | None = None

    def get(self, q: Question) -> tuple[Example, ...]:
        return self.examples.get(q.qid, ())

    def ids(self, q: Question) -> list[str]:
        return [e.qid for e in self.get(q)]

    def record(self) -> dict[str, Any]:
        """For a sources record or run.json: the setting and the pool."""
        return {"k": self.setting.k, "pool": self.setting.pool, "pool_size": self.pool, "pool_hash": self.pool_hash}


def trained_pool(role: RoleRecipe) -> list[Example] | None:
    """The pool the role's built training set drew its examples from (its sources record names
    it by hash, kept under runs/fewshot/), or None when there is none to read."""
    recorded = ((read_sources(role.dataset_name) or {}).get("fewshot") or {}).get("pool_hash")
    path = runs_dir() / "fewshot" / str(recorded) / "pool.jsonl"
    if not recorded or not path.is_file():
        return None
    pool = [Example(r["qid"], r["problem"], r["question"], tuple(r["options"]), r["solution"])
            for r in read_records(path)]
    return pool if pool_hash(pool) == recorded else None


def examples_for(questions: Sequence[Question], pipe: PipelineRecipe, role: RoleRecipe | None,
                 teacher: TeacherSection | None = None, trained: bool = False) -> Fewshot:
    """The worked examples of each question under `role`'s `fewshot` (none when k is 0). With
    `trained` (inference), from the pool the role's training set used, so a question's prompt is
    the one it had in training whatever file is answered now (infer's INPUT is data.test)."""
    setting = role.fewshot if role is not None and role.role == "answer" else FewshotSection()
    if setting.k == 0:
        return Fewshot(setting, {})
    pool = (trained and role is not None and trained_pool(role)) or (train_pool(pipe, role, teacher) if role else [])
    if not pool:
        raise UserError(f"fewshot.k is {setting.k} but the pool has no worked example: no teacher reply that "
                        f"reached the gold letter is cached for {pipe.data.train}; run `orchestrator distill` first")
    found = retriever(pool).search([(q.problem_id, q.problem, q.question) for q in questions], setting.k)
    return Fewshot(setting, {q.qid: tuple(ex) for q, ex in zip(questions, found, strict=True)},
                   len(pool), pool_hash(pool))


def longest_prompt(pipe: PipelineRecipe, role: RoleRecipe) -> tuple[int, str, str] | None:
    """(length, unit, question id) of the longest Answer prompt of data.train with its worked
    examples, in the base model's tokens when its tokenizer is there, else in characters; None
    when fewshot.k is 0 or nothing is distilled yet."""
    if role.role != "answer" or role.fewshot.k == 0:
        return None
    questions = [q for q in training_sources(pipe.data, None, "check")[0].questions if q.answer is not None]
    try:
        shots = examples_for(questions, pipe, role)
    except UserError:
        return None
    prompts = [(answer_prompt(q, examples=shots.get(q)), q.qid) for q in questions]
    base = model_path(role)
    if (base / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(base))
        n, qid = max((len(tokenizer(p)["input_ids"]), qid) for p, qid in prompts)
        return n, "tokens", qid
    n, qid = max((len(p), qid) for p, qid in prompts)
    return n, "characters", qid
