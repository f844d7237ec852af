"""Stage: score a submission against gold answers, and, from the inference trace, report what
each agent contributed: report.md with a picture, report.png."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_text
from orchestrator.core.common.paths import project_relative
from orchestrator.core.common.report import md_table, save_png
from orchestrator.core.data.competition import Dataset
from orchestrator.core.data.submission import (
    Finding,
    gold_findings,
    match,
    read_gold,
    read_submission,
    summarise,
    terminal_lines,
)
from orchestrator.core.run_folders.records import RunRecord, ScoreRecord, read_record, write_record
from orchestrator.core.run_folders.trace import read_trace

PERCENTILES = (50, 90, 99)


@dataclass
class Report:
    """What the trace tells about the agents, over the traced questions."""

    traced: int = 0
    answer_correct: int = 0  # the Answer Agent's letter (vote majority) alone
    # each Answer model's own letter (the majority of its samples), by label in the order listed
    model_correct: dict[str, int] = field(default_factory=dict)
    model_traced: dict[str, int] = field(default_factory=dict)
    fixed: int = 0  # Answer wrong, the Evaluate Agent's final letter right
    broken: int = 0  # Answer right, the Evaluate Agent's final letter wrong
    fallback_right: int = 0  # no letter from either agent: the fallback letter right
    sources: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # (kind, stage) -> count
    latency: dict[str, list[float]] = field(default_factory=lambda: {"answer": [], "evaluate": []})
    # Answer rounds (inference.extra_votes): [first round, extra round] each as (questions, samples, vote right)
    rounds: list[list[int]] = field(default_factory=lambda: [[0, 0, 0], [0, 0, 0]])

    def rounds_line(self) -> str | None:
        """The questions and samples of each Answer round; None when no question had extra votes."""
        (q1, s1, ok1), (q2, s2, ok2) = self.rounds
        if not q2:
            return None
        return (f"Answer rounds: {q1} questions got {s1} first samples; {q2} ({q2 / q1:.0%}) left open got "
                f"{s2} extra samples, their vote then right on {ok2} ({ok2 / q2:.0%})")


@dataclass
class ScoreResult:
    questions: int
    correct: int
    problems: int
    problems_correct: int
    unanswered: int
    findings: list[Finding] = field(default_factory=list)  # every case the submission departs from gold
    report: Report | None = None
    report_path: Path | None = None
    subset_reason: str | None = None  # why only the submitted problems were scored, when not asked by --subset

    @property
    def accuracy(self) -> float:
        return self.correct / self.questions if self.questions else 0.0

    @property
    def problem_accuracy(self) -> float:
        return self.problems_correct / self.problems if self.problems else 0.0

    def rows(self) -> list[tuple[str, int, int]]:
        rows = [("by question", self.correct, self.questions), ("by problem", self.problems_correct, self.problems)]
        report = self.report
        if report and len(report.model_correct) > 1:  # an ensemble: each model alone, then their vote
            rows += [(f"Answer model {m}", ok, report.model_traced[m]) for m, ok in report.model_correct.items()]
            rows.append(("Answer vote (all models)", report.answer_correct, report.traced))
        elif report:
            rows.append(("Answer Agent alone", report.answer_correct, report.traced))
        return rows

    def terminal_findings(self) -> list[str]:
        """The findings for stderr; a long list of missing problems is one line."""
        where = f"all are listed in {self.report_path}" if self.report_path else \
            "`orchestrator data check SUBMISSION --against TEST` lists them all"
        notes = [f"scored: {self.subset_reason}"] if self.subset_reason else []
        return notes + terminal_lines(self.findings, where)

    def table(self) -> str:
        rows = self.rows()
        width = max(20, *(len(name) + 2 for name, _, _ in rows))
        lines = [f"{'':<{width}}{'correct':>9}{'total':>8}{'accuracy':>10}"]
        lines += [f"{name:<{width}}{ok:>9}{total:>8}{ok / total if total else 0:>10.4f}" for name, ok, total in rows]
        lines += summarise(self.findings)
        if self.report:
            lines.append(f"Evaluate Agent fixed {self.report.fixed}, broke {self.report.broken}")
            if fallbacks := self.report.sources["fallback"]:
                lines.append(f"fallback letter (no answer read) right {self.report.fallback_right} of {fallbacks}")
            lines += [line for line in [self.report.rounds_line()] if line]
        if self.report_path:
            lines.append(f"report: {self.report_path}")
        return "\n".join(lines)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def build_report(trace: Path, truth: dict[str, str], final: dict[str, str | None]) -> Report:
    """Read the trace (the last record of each question id) against the gold letters."""
    records = {qid: r for qid, r in read_trace(trace).items() if qid in truth}
    report = Report(traced=len(records))
    for qid, r in records.items():
        answer_right, final_right = r.answer.letter == truth[qid], final[qid] == truth[qid]
        report.answer_correct += answer_right
        for label, letter in r.answer.by_model.items():
            report.model_correct[label] = report.model_correct.get(label, 0) + (letter == truth[qid])
            report.model_traced[label] = report.model_traced.get(label, 0) + 1
        fixed, broke = r.evaluate_effect(truth[qid], final[qid])
        report.fixed += fixed
        report.broken += broke
        report.fallback_right += r.source == "fallback" and final_right
        report.sources[r.source] += 1
        report.errors.update((e.kind, e.stage) for e in r.errors)
        report.latency["answer"] += [s.latency for s in r.answer.samples if s.latency is not None]
        for n in range(1 + r.answer.extra_rounds):
            report.rounds[n][0] += 1
            report.rounds[n][1] += sum(s.round == n for s in r.answer.samples)
            report.rounds[n][2] += answer_right
        if r.evaluate and r.evaluate.latency is not None:
            report.latency["evaluate"].append(r.evaluate.latency)
    return report


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"



def _accuracy_table(result: ScoreResult) -> list[str]:
    """The report's accuracy rows (by question, by problem, the Answer Agent alone ...) as Markdown."""
    return md_table(["", "correct", "total", "accuracy"],
                    [[name, str(ok), str(total), f"{ok / total if total else 0:.4f}"] for name, ok, total in result.rows()],
                    "lrrr")


def report_markdown(result: ScoreResult, paths: dict[str, Path], picture: str) -> str:
    report = result.report
    if report is None:
        return _untraced_markdown(result, paths, picture)
    lines = [
        "# Inference report",
        "",
        (
            f"Submission `{paths['submission']}`, gold `{paths['gold']}`, trace `{paths['trace']}` "
            f"({report.traced} of {result.questions} questions traced)."
        ),
        "",
        f"![accuracy, Evaluate Agent effect, errors and latency]({picture})",
        "",
        "## Accuracy",
        "",
        *_accuracy_table(result),
        "",
        (
            "A problem counts when all its questions are right. The Answer Agent alone is its letter "
            "(the vote majority with several samples) before the Evaluate Agent; with several Answer "
            "models, each model alone is the majority of its own samples, and the vote is over all of them."
        ),
        "",
        *([f"{report.rounds_line()} (inference.extra_votes).", ""] if report.rounds_line() else []),
        "## Submission cases",
        "",
        *([f"- {f.text}" for f in result.findings] or ["None: every question has an offered letter."]),
        "",
        "## What the Evaluate Agent did",
        "",
        f"- fixed {report.fixed} answers (Answer Agent wrong, its final answer right)",
        f"- broke {report.broken} answers (Answer Agent right, its final answer wrong)",
        *([f"- the fallback letter (no answer read from either agent) was right for {report.fallback_right} of "
           f"{report.sources['fallback']}"] if report.sources["fallback"] else []),
        "- final answer from: " + ", ".join(f"{k} {v}" for k, v in sorted(report.sources.items())),
        "",
        "## Errors by kind",
        "",
    ]
    if report.errors:
        lines += md_table(["kind", "stage", "count"],
                          [[kind, stage, str(n)] for (kind, stage), n in sorted(report.errors.items(), key=str)], "llr")
    else:
        lines.append("None.")
    lines += ["", "## Latency per request (seconds)", ""]
    lines += md_table(["stage", "requests", *(f"p{p}" for p in PERCENTILES)],
                      [[stage, str(len(values)), *(_fmt(percentile(values, p)) for p in PERCENTILES)]
                       for stage, values in report.latency.items()], "lrrrr")
    return "\n".join(lines) + "\n"


def _untraced_markdown(result: ScoreResult, paths: dict[str, Path], picture: str) -> str:
    """The report of a submission without a trace: the accuracy and the submission cases only."""
    lines = [
        "# Inference report",
        "",
        f"Submission `{paths['submission']}`, gold `{paths['gold']}`. No trace (trace.jsonl beside the "
        "submission, or --trace): what each agent did, the errors and the latency are left out.",
        "",
        f"![accuracy]({picture})",
        "",
        "## Accuracy",
        "",
        *_accuracy_table(result),
        "",
        "## Submission cases",
        "",
        *([f"- {f.text}" for f in result.findings] or ["None: every question has an offered letter."]),
    ]
    return "\n".join(lines) + "\n"


def report_picture(result: ScoreResult, path: Path) -> Path:
    """The report's numbers as three panels (one without a trace), drawn with matplotlib's Agg
    canvas (no display)."""
    from matplotlib.figure import Figure

    report = result.report
    if report is None:
        fig = Figure(figsize=(5, 4), layout="constrained")
        acc = fig.subplots()
        values = [result.accuracy, result.problem_accuracy]
        acc.bar(["final (question)", "final (problem)"], values, color=["#2f6fb0", "#184a7a"])
        acc.set_ylim(0, 1)
        acc.set_title("Accuracy")
        for x, v in enumerate(values):
            acc.text(x, v + 0.02, f"{v:.3f}", ha="center")
        return save_png(fig, path)
    fig = Figure(figsize=(13, 4), layout="constrained")
    acc, effect, latency = fig.subplots(1, 3)

    several = len(report.model_correct) > 1
    models = list(report.model_correct) if several else []
    names = [*models, "Answer vote" if several else "Answer alone", "final (question)", "final (problem)"]
    values = [*[report.model_correct[m] / report.model_traced[m] for m in models],
              report.answer_correct / report.traced if report.traced else 0, result.accuracy, result.problem_accuracy]
    acc.bar(names, values, color=["#c9cfd6"] * len(models) + ["#9aa5b1", "#2f6fb0", "#184a7a"])
    acc.tick_params(axis="x", labelsize=8 if several else 10)
    acc.set_ylim(0, 1)
    acc.set_title("Accuracy")
    for x, v in enumerate(values):
        acc.text(x, v + 0.02, f"{v:.3f}", ha="center")

    labels = ["fixed", "broke", *[f"{kind}\n({stage})" for kind, stage in sorted(report.errors, key=str)]]
    counts = [report.fixed, report.broken, *[report.errors[k] for k in sorted(report.errors, key=str)]]
    effect.bar(labels, counts, color=["#3a9a5b", "#c0504d"] + ["#d99a3d"] * len(report.errors))
    effect.set_title("Evaluate Agent effect and errors")
    effect.tick_params(axis="x", labelsize=8)

    width = 0.35
    top = 0.0
    for i, (stage, vals) in enumerate(report.latency.items()):
        ys = [percentile(vals, p) or 0 for p in PERCENTILES]
        top = max(top, *ys)
        latency.bar([x + i * width for x in range(len(PERCENTILES))], ys, width, label=stage)
    latency.set_xticks([x + width / 2 for x in range(len(PERCENTILES))], [f"p{p}" for p in PERCENTILES])
    latency.set_ylim(0, top * 1.4 or 1)  # room above the tallest bar (p99) for the legend
    latency.set_ylabel("seconds per request")
    latency.set_title("Latency")
    latency.legend(loc="upper left")

    return save_png(fig, path)


def _run_limit(folder: Path) -> int | None:
    """The `--limit` an infer run was cut to (None: all of its input, or no run.json)."""
    record = read_record(folder, RunRecord)
    return record.limit if record else None


def score(
    submission: str | Path,
    gold: str | Path,
    trace: str | Path | None = None,
    out_dir: str | Path | None = None,
    subset: bool = False,
) -> ScoreResult:
    """Accuracy by question and by problem, as the competition counts: a question without an
    offered letter is wrong, a problem or question the gold lacks is not counted, and each such
    case is a finding. With `subset`, only the submitted problems are scored. With a trace
    (default: trace.jsonl beside the submission, when there), also write report.md and
    report.png into `out_dir` (default: the submission's directory); without one, given `out_dir`,
    a report of the submission alone (accuracy and cases, no agent tables). A run cut by `infer --limit`
    (its run.json says so) is scored as a subset by itself."""
    ours, reference = read_submission(submission), read_gold(gold)
    limit = _run_limit(Path(submission).parent)
    reason = None
    if limit and not subset:
        subset = True
        reason = (f"only the submitted problems, as a subset: the run answered the first {limit} "
                  f"(infer --limit {limit}, in its run.json)")
    if subset:
        submitted = {e.id for e in ours.entries}
        reference = Dataset(reference.path, [p for p in reference.problems if p.id in submitted])
        if not reference.problems:
            raise UserError(f"{ours.path} holds none of the problems of {gold}: nothing to score")
    matched = match(ours, reference)
    truth = {q.qid: q.answer for q in reference.questions if q.answer is not None}  # all, by read_gold
    final = matched.answers
    right = {qid: final[qid] == letter for qid, letter in truth.items()}
    result = ScoreResult(
        questions=len(truth),
        correct=sum(right.values()),
        problems=len(reference.problems),
        problems_correct=sum(all(right[q.qid] for q in p.questions) for p in reference.problems),
        unanswered=sum(final[qid] is None for qid in truth),
        findings=gold_findings(reference) + matched.findings,
        subset_reason=reason,
    )

    trace_path = Path(trace) if trace else Path(submission).parent / "trace.jsonl"
    if trace and not trace_path.exists():
        raise UserError(f"--trace {trace_path}: no such file")
    if trace_path.exists() or out_dir:  # no trace: a report of the submission alone, where asked for one
        if trace_path.exists():
            result.report = build_report(trace_path, truth, final)
        out = Path(out_dir) if out_dir else Path(submission).parent
        out.mkdir(parents=True, exist_ok=True)
        picture = report_picture(result, out / "report.png")
        paths: dict[str, Any] = {"submission": submission, "gold": gold, "trace": trace_path if result.report else None}
        result.report_path = atomic_write_text(out / "report.md", report_markdown(result, paths, picture.name))
        # the gold this run was scored against, which `compare` uses by default
        write_record(out, ScoreRecord(submission=project_relative(submission), gold=project_relative(gold),
                                      accuracy=result.accuracy))
    return result
