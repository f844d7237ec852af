"""What `orchestrator infer` prints at the end: how every question was answered, what was
resumed or asked again, the errors, the requests sent and the pace."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core.run_folders.trace import TraceRecord


@dataclass
class InferSummary:
    out_dir: Path
    questions: int = 0
    answered: int = 0
    resumed: int = 0  # finished by an earlier run
    stale: int = 0  # answered by an earlier run with other models or settings: asked again
    failed: int = 0  # a request failed after retries: asked again next run
    not_asked: int = 0  # cut by the deadline or a server that went away: asked again next run
    sources: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # "kind (stage)" -> count
    requests: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    # per Answer round (the first `votes`, then extra_votes): questions and Answer requests of this run
    rounds: list[tuple[int, int]] = field(default_factory=list)
    extra: str = ""  # how the extra round was chosen, e.g. "+2 votes where split"

    @property
    def questions_per_second(self) -> float:
        return (self.questions - self.resumed) / self.seconds if self.seconds else 0.0

    def count(self, records: Iterable[TraceRecord]) -> None:
        """Add the final trace records of the run's questions to the counts."""
        for r in records:
            self.answered += r.final is not None
            self.failed += r.status == "failed" and any(e.kind == "api" for e in r.errors)
            self.not_asked += any(e.kind == "not_asked" for e in r.errors)
            self.sources[r.source] += 1
            self.errors.update(f"{e.kind} ({e.stage})" for e in r.errors)  # per stage: a question can have both

    def table(self) -> str:
        rows = [
            ("questions", self.questions),
            ("answered", self.answered),
            ("  by the Evaluate Agent", self.sources["evaluate"]),
            ("  Answer letter fallback", self.sources["answer_fallback"]),
            ("  vote majority fallback", self.sources["vote_fallback"]),
            ("  fallback letter (no answer read)", self.sources["fallback"]),
            ("without an answer (null)", self.sources["none"]),
            ("finished by an earlier run", self.resumed),
            ("asked again (a model or setting changed)", self.stale),
            ("failed requests (asked again next run)", self.failed),
            ("not asked: deadline or server gone (asked again next run)", self.not_asked),
            ("errors", ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"),
            *[(f"answer round {n + 1}{f' ({self.extra})' if n else ''}", f"{q} questions, {r} requests")
              for n, (q, r) in enumerate(self.rounds) if self.extra],
            ("requests sent", self.requests),
            ("questions per second", f"{self.questions_per_second:.2f}"),
            ("submission", self.out_dir / "submission.jsonl"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
