"""Stage: compare `infer` runs on the same questions: is run B more accurate than run A, and
is the difference real?

Per run: accuracy by question and by problem, each with a 95% bootstrap interval over problems
(seeded, so a report is reproducible), and from the trace the Answer Agent alone and what the
Evaluate Agent fixed and broke. Per pair: the questions fixed (A wrong, B right) and broken,
the exact McNemar p-value and how often the two agree. Without gold: agreement only (the
offline proxy: agreement with a strong model's answers tracks the test score). A submission
is read and matched as `score` reads it (orchestrator/core/data/submission.py): with gold, a letter the
question does not offer, null or a missing question is wrong; without gold it is no answer.
Runs are compared on the questions they all hold (and the gold file has). What differed between the
runs comes from each run's run.json (inference settings, and the recipes of the models it
served, copied from their training manifests).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_text
from orchestrator.core.common.paths import display, project_root, runs_dir
from orchestrator.core.common.report import md_table, save_png, text_table
from orchestrator.core.common.stats import bootstrap_interval, mcnemar_exact
from orchestrator.core.data.competition import Dataset, gold_answers
from orchestrator.core.data.submission import (
    KIND_TEXT,
    Finding,
    Submission,
    gold_findings,
    match,
    own_reference,
    read_gold,
    read_submission,
    summarise,
)
from orchestrator.core.run_folders.records import RunRecord, ScoreRecord, read_record
from orchestrator.core.run_folders.trace import TraceRecord, read_trace

# run.json keys that differ between any two runs without telling how they differ
_NOISE = ("trained", "manifest", "split.val_problems", "split.val_file", "split.val_hash", "split.source")


@dataclass
class Run:
    """What an `infer` output folder holds; `answers` and `findings` once matched."""

    dir: Path
    submission: Submission
    trace: dict[str, TraceRecord]  # question id -> its last trace record
    gold: Path | None  # the gold file `score` used (score.json)
    record: RunRecord  # run.json; empty for a bare submission
    # question id -> the submitted letter, None when not usable (not offered, null, missing)
    answers: dict[str, str | None] = field(default_factory=dict)
    problem_of: dict[str, str] = field(default_factory=dict)  # question id -> problem id
    findings: list[Finding] = field(default_factory=list)  # as `score` lists them

    @property
    def name(self) -> str:
        return display(self.dir)

    def match(self, gold: Dataset | None) -> None:
        """Line the submission up with the gold problems it holds, as `score --subset` does (a
        letter not offered, null or a missing question: no answer, so wrong); without gold,
        with its own questions (the options each line carries)."""
        if gold is None:
            reference = own_reference(self.submission)
            unreadable = [Finding("unreadable", line) for line in reference.errors]
        else:
            held = {e.id for e in self.submission.entries}
            reference, unreadable = Dataset(gold.path, [p for p in gold.problems if p.id in held]), []
        matched = match(self.submission, reference)
        self.answers = matched.answers
        self.problem_of = {q.qid: q.problem_id for q in reference.questions}
        self.findings = unreadable + matched.findings


@dataclass
class RunStats:
    dir: str
    questions: int  # compared (common) questions
    held: int  # questions the run holds
    accuracy: float | None = None
    interval: tuple[float, float] | None = None
    problems: int = 0
    problem_accuracy: float | None = None
    problem_interval: tuple[float, float] | None = None
    traced: int = 0
    answer_alone: float | None = None  # the Answer Agent's letter before the Evaluate Agent
    fixed: int | None = None  # by the Evaluate Agent: Answer wrong, final right
    broken: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # only the keys that differ between runs
    findings: list[str] = field(default_factory=list)  # what `score` lists: answers not offered, null, ...


@dataclass
class PairStats:
    a: str
    b: str
    agreement: float  # same final letter
    fixed: int | None = None  # A wrong, B right
    broken: int | None = None  # A right, B wrong
    p_value: float | None = None  # exact McNemar on fixed vs broken


@dataclass
class Comparison:
    runs: list[RunStats]
    pairs: list[PairStats]
    common: int
    gold: str | None
    summaries: list[list[str]] = field(default_factory=list)  # per run, one line per kind of finding
    out_dir: Path | None = None
    gold_findings: list[str] = field(default_factory=list)  # gold answers not offered: FILE:LINE: question
    models: str | None = None  # whether every run answered with the same models (models_line)
    own_gold: bool = False  # runs on different inputs, each scored against its own gold: side by side, no pairs

    @property
    def scored(self) -> bool:
        return bool(self.gold) or self.own_gold

    def to_json(self) -> dict[str, Any]:
        return {"common": self.common, "gold": self.gold, "own_gold": self.own_gold, "gold_findings": self.gold_findings,
                "models": self.models,
                "runs": [asdict(r) for r in self.runs], "pairs": [asdict(p) for p in self.pairs]}


# ---------------------------------------------------------------- reading runs


def load_run(path: str | Path) -> Run:
    """An `infer` output folder, or a bare submission file (no trace, no settings: its answers alone)."""
    d = Path(path)
    if d.is_file():
        return Run(d, read_submission(d), {}, None, RunRecord())
    if not d.is_dir():
        raise UserError(f"{path}: no such folder or file; give `orchestrator infer` output folders (--out-dir) "
                        "or submission files")
    submission = d / "submission.jsonl"
    if not submission.exists():
        raise UserError(f"{path} has no submission.jsonl: is it an `orchestrator infer` output folder?")
    trace = read_trace(d / "trace.jsonl")  # the last record of a question wins
    scored = read_record(d, ScoreRecord)
    ran = read_record(d, RunRecord)
    return Run(d, read_submission(submission), trace, scored.gold_path() if scored else None,
               ran or RunRecord())


def _gold_file(runs: list[Run], gold: str | Path | None) -> Path | None:
    """--gold, else the one gold file the runs were scored against, else none."""
    if gold:
        return Path(gold)
    scored = {r.gold.resolve() for r in runs if r.gold}
    if len(scored) > 1:
        raise UserError("the runs were scored against different gold files (" + ", ".join(map(str, sorted(scored)))
                        + "): choose one with --gold FILE")
    found = scored.pop() if scored else None
    if found and not found.exists():
        raise UserError(f"{found}: the gold file the runs were scored against is gone; give one with --gold FILE")
    return found


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay whole."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out |= flatten(sub, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): value}


def settings(run: Run) -> dict[str, Any]:
    """The run's settings as dotted keys: input, inference.*, answer.* and evaluate.* (a served
    model's recipe keys, e.g. answer.train.lora_rank, and answer.model for the model itself)."""
    r = run.record
    # each Answer model's worked examples (k, pool), by its place, not its name: a --set variant's
    # name differs (tiny-answer@7a83290d) where its fewshot settings may not
    few = list(r.fewshot.values()) if isinstance(r.fewshot, dict) else []
    out = {"input": r.input, "limit": r.limit, **flatten(r.inference, "inference."),
           **{k: v for i, sub in enumerate(few) for k, v in flatten(sub, f"fewshot.{i + 1}." if len(few) > 1
                                                                    else "fewshot.").items()}}
    for role, agent in r.models.items():
        agent = dict(agent)
        out[f"{role}.model"] = agent.pop("identity", agent.get("model"))
        agent.pop("model", None)
        recipe = agent.pop("recipe", None) or {}
        out |= flatten(agent, f"{role}.") | flatten(recipe, f"{role}.")
    return {k: _relative(v) for k, v in out.items() if not any(k.endswith(n) or f".{n}." in k for n in _NOISE)}


def _relative(value: Any) -> Any:
    """A path inside the project as the recipes write it (relative), so one file spelled two ways
    (absolute, relative) is not a difference."""
    if isinstance(value, str) and value.startswith("/"):
        try:
            return str(Path(value).relative_to(project_root()))
        except ValueError:
            return value
    return value


def differences(runs: list[Run]) -> list[dict[str, Any]]:
    """Per run, the settings whose values are not the same in every run."""
    each = [settings(r) for r in runs]
    keys = sorted({k for s in each for k in s})
    differ = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True) for s in each}) > 1]
    return [{k: s.get(k) for k in differ} for s in each]


# ---------------------------------------------------------------- the comparison


def _problems(run: Run, questions: list[str], right: dict[str, bool]) -> list[tuple[int, int]]:
    """(questions right, questions) per problem, in order."""
    per: dict[str, list[int]] = {}
    for qid in questions:
        counts = per.setdefault(run.problem_of[qid], [0, 0])
        counts[0] += right[qid]
        counts[1] += 1
    return [(ok, n) for ok, n in per.values()]


def _run_stats(run: Run, common: list[str], truth: dict[str, str] | None, seed: int, resamples: int) -> RunStats:
    stats = RunStats(run.name, len(common), len(run.answers))
    stats.problems = len({run.problem_of[q] for q in common})
    if truth is None:
        return stats
    right = {q: run.answers[q] == truth[q] for q in common}
    problems = _problems(run, common, right)
    stats.accuracy = sum(right.values()) / len(common)
    stats.interval = bootstrap_interval(problems, resamples=resamples, seed=seed)
    whole = [(int(ok == n), 1) for ok, n in problems]
    stats.problem_accuracy = sum(ok for ok, _ in whole) / len(whole)
    stats.problem_interval = bootstrap_interval(whole, resamples=resamples, seed=seed)
    traced = [q for q in common if q in run.trace]
    if traced:
        # tolerant: samples may carry a `model` (several Answer models), answer may be missing
        letter = {q: run.trace[q].answer.letter for q in traced}
        stats.traced = len(traced)
        stats.answer_alone = sum(letter[q] == truth[q] for q in traced) / len(traced)
        effects = [run.trace[q].evaluate_effect(truth[q], run.answers[q]) for q in traced]
        stats.fixed = sum(fixed for fixed, _ in effects)
        stats.broken = sum(broke for _, broke in effects)
    return stats


def _pair_stats(a: Run, b: Run, common: list[str], truth: dict[str, str] | None) -> PairStats:
    same = sum(a.answers[q] is not None and a.answers[q] == b.answers[q] for q in common)
    pair = PairStats(a.name, b.name, same / len(common))
    if truth is not None:
        pair.fixed = sum(a.answers[q] != truth[q] and b.answers[q] == truth[q] for q in common)
        pair.broken = sum(a.answers[q] == truth[q] and b.answers[q] != truth[q] for q in common)
        pair.p_value = mcnemar_exact(pair.fixed, pair.broken)
    return pair


def compare(
    run_dirs: list[str | Path],
    *,
    gold: str | Path | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    resamples: int = 2000,
) -> Comparison:
    """Compare the runs and write compare.md and compare.png into `out_dir` (default runs/compare)."""
    if len(run_dirs) < 2:
        raise UserError("compare needs at least two run folders")
    runs = [load_run(d) for d in run_dirs]
    if gold is None and all(r.gold for r in runs) and _apart(runs):
        return _write(_side_by_side(runs, seed, resamples), runs, out_dir)
    gold_path = _gold_file(runs, gold)
    reference = read_gold(gold_path) if gold_path else None  # as strict as `score`
    for run in runs:
        run.match(reference)
    truth = gold_answers(reference) if reference else None
    common = set.intersection(*(set(r.answers) for r in runs))
    order = [q for q in runs[0].answers if q in common]
    if not order:
        against = f" and {gold_path}" if gold_path else ""
        raise UserError("the runs" + against + " share no question (ids problem#index): "
                        "were they run on the same input file?")

    result = Comparison(
        runs=[_run_stats(r, order, truth, seed, resamples) for r in runs],
        pairs=[_pair_stats(a, b, order, truth) for a, b in combinations(runs, 2)],
        common=len(order),
        gold=str(gold_path) if gold_path else None,
        summaries=[summarise(r.findings, "counted wrong" if truth else "no answer, so no agreement") for r in runs],
        gold_findings=[f.text for f in gold_findings(reference)] if reference else [],
    )
    return _write(result, runs, out_dir)


def _apart(runs: list[Run]) -> bool:
    """Scored against different gold files and sharing no problem: e.g. the demo and a run on your own data."""
    if len({r.gold.resolve() for r in runs if r.gold}) < 2:
        return False
    ids = [{e.id for e in r.submission.entries} for r in runs]
    return not set.intersection(*ids)


def _side_by_side(runs: list[Run], seed: int, resamples: int) -> Comparison:
    """Each run against the gold it was scored with (score.json): its own accuracy, no pairs."""
    stats, findings = [], []
    for run in runs:
        assert run.gold is not None
        reference = read_gold(run.gold)
        run.match(reference)
        truth = gold_answers(reference)
        order = [q for q in run.answers if q in truth]
        if not order:
            raise UserError(f"{run.dir}: its submission holds none of the questions of {run.gold}, the gold it "
                            "was scored against")
        stats.append(_run_stats(run, order, truth, seed, resamples))
        findings += [f.text for f in gold_findings(reference)]
    return Comparison(runs=stats, pairs=[], common=0, gold=None, own_gold=True, gold_findings=findings,
                      summaries=[summarise(r.findings, "counted wrong") for r in runs])


def _write(result: Comparison, runs: list[Run], out_dir: str | Path | None) -> Comparison:
    for stats, differ, run in zip(result.runs, differences(runs), runs, strict=True):
        stats.settings = differ
        stats.findings = [f.text for f in run.findings]
    result.models = models_line(runs)
    out = Path(out_dir) if out_dir else runs_dir() / "compare"
    out.mkdir(parents=True, exist_ok=True)
    picture = compare_picture(result, out / "compare.png")
    atomic_write_text(out / "compare.md", compare_markdown(result, picture.name))
    result.out_dir = out
    return result


# ---------------------------------------------------------------- output


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ci(interval: tuple[float, float] | None) -> str:
    return "-" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _p_label(p: float | None) -> str:
    text = _p(p)
    return f"p{text}" if text.startswith("<") else f"p={text}"


def _value(v: Any) -> str:
    return "-" if v is None else v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def headline(c: Comparison) -> str:
    if c.own_gold:
        return ("different inputs, side by side: each run against the gold it was scored with (score.json), "
                "no question in common, so no pairs")
    held = {r.held for r in c.runs}
    line = f"compared on {c.common} questions"
    if held != {c.common}:
        line += " common to every run" + (" and the gold file" if c.gold else "") + " (the runs hold " + \
            ", ".join(str(r.held) for r in c.runs) + ")"
    line += f"; gold: {display(Path(c.gold))}" if c.gold else "; no gold file: agreement only (pass --gold FILE for accuracy)"
    return line


def _finding_lines(c: Comparison) -> list[str]:
    """Per run with findings, what `score` would list: one line per kind with its count."""
    how = "as `score` counts them" if c.scored else "without gold, an unusable answer is no answer"
    lines = [f"{r.dir}: " + "; ".join(summary) for r, summary in zip(c.runs, c.summaries, strict=True) if summary]
    gold = [f"{len(c.gold_findings)} {KIND_TEXT['gold_not_offered']}: {'; '.join(c.gold_findings[:3])}"
            + ("; ..." if len(c.gold_findings) > 3 else "")] if c.gold_findings else []
    return gold + ([f"submission findings ({how}):", *[f"  {x}" for x in lines]] if lines else [])


def _run_table(c: Comparison) -> tuple[list[str], list[list[str]]]:
    if not c.scored:
        return ["run", "questions held", "compared"], [[r.dir, str(r.held), str(r.questions)] for r in c.runs]
    return RUN_HEAD, _run_rows(c)


def _run_rows(c: Comparison) -> list[list[str]]:
    return [[r.dir, _f(r.accuracy), _ci(r.interval), _f(r.problem_accuracy), _ci(r.problem_interval),
             _f(r.answer_alone), "-" if r.fixed is None else str(r.fixed), "-" if r.broken is None else str(r.broken)]
            for r in c.runs]


RUN_HEAD = ["run", "accuracy", "95% interval", "by problem", "95% interval", "Answer alone", "Eval fixed", "Eval broke"]
PAIR_HEAD = ["A", "B", "fixed (A wrong, B right)", "broken (A right, B wrong)", "McNemar p", "agreement"]


def _pair_table(c: Comparison) -> tuple[list[str], list[list[str]]]:
    if not c.gold:
        return ["A", "B", "agreement"], [[p.a, p.b, _f(p.agreement)] for p in c.pairs]
    return PAIR_HEAD, _pair_rows(c)


def _pair_rows(c: Comparison) -> list[list[str]]:
    return [[p.a, p.b, "-" if p.fixed is None else str(p.fixed), "-" if p.broken is None else str(p.broken),
             _p(p.p_value), _f(p.agreement)] for p in c.pairs]


def _differ_lines(c: Comparison) -> list[str]:
    keys = list(dict.fromkeys(k for r in c.runs for k in r.settings))
    return [f"{k}: " + ", ".join(f"{r.dir} {_value(r.settings.get(k))}" for r in c.runs) for k in keys]


def models_line(runs: list[Run]) -> str | None:
    """Whether the runs answered with the same models, by the identities infer recorded for the models
    it served (an adapter's or merged model's content hash); None where a run recorded none, or asked
    an endpoint (known by its name only)."""
    models = [r.record.models for r in runs]
    if not all(models) or any(agent.get("url") for m in models for agent in m.values()):
        return None
    each = [{role: agent.get("identity") for role, agent in m.items()} for m in models]
    if all(m == each[0] for m in each):
        return "models: the same in every run (" + ", ".join(f"{k} {v}" for k, v in each[0].items()) + ")"
    return "models: not the same (their identities are under what differed)"


def table(c: Comparison) -> str:
    lines = [headline(c), *_finding_lines(c), "", *text_table(*_run_table(c))]
    lines += ["", *text_table(*_pair_table(c))] if c.pairs else []
    if c.models:
        lines += ["", c.models]
    differ = _differ_lines(c)
    lines += ["", "what differed:" if differ else "what differed: nothing the runs recorded (run.json)"]
    lines += [f"  {line}" for line in differ]
    if c.out_dir:
        lines += ["", f"report: {display(c.out_dir / 'compare.md')}"]
    return "\n".join(lines)


def compare_markdown(c: Comparison, picture: str) -> str:
    lines = ["# Comparing runs", "", headline(c) + ".", "", f"![accuracy with intervals, flips per pair]({picture})",
             "", "## Runs", "", *md_table(*_run_table(c)), "",
             ("Intervals: 95% bootstrap over problems (seeded). A problem counts when all its compared questions "
              "are right. Answer alone is the Answer Agent's letter before the Evaluate Agent; Eval fixed/broke "
              "count the questions the Evaluate Agent's own letter turned right/wrong (from the trace; a "
              "fallback letter is not its doing)."),
             "", "## Pairs", "",
             *(md_table(*_pair_table(c)) if c.pairs else ["None: the runs share no question (different inputs)."]), "",
             ("McNemar: exact two-sided test on the questions that changed; below 0.05 the difference is "
              "unlikely to be noise. Agreement: the share of questions with the same final letter."),
             "", "## What differed", ""]
    if c.models:
        lines += [c.models[0].upper() + c.models[1:] + ".", ""]
    differ = _differ_lines(c)
    lines += [f"- {line}" for line in differ] or ["Nothing the runs recorded (run.json)."]
    lines += ["", "## Submission cases", "",
              ("As `orchestrator score` counts them: an answer the question does not offer, null or a missing "
               "question is wrong." if c.scored else
               "Without gold, an answer the question does not offer, null or a missing question is no answer: "
               "it agrees with nothing.")]
    if c.gold_findings:
        lines += ["", "### the gold file", "", f"{len(c.gold_findings)} {KIND_TEXT['gold_not_offered']}:", "",
                  *[f"- {t}" for t in c.gold_findings]]
    for r, summary in zip(c.runs, c.summaries, strict=True):
        lines += ["", f"### {r.dir}", ""]
        lines += ["; ".join(summary) + ":", "", *[f"- {t}" for t in r.findings]] if summary else ["None."]
    return "\n".join(lines) + "\n"


def compare_picture(c: Comparison, path: Path) -> Path:
    """Accuracy with intervals per run, and flips (or agreement) per pair; matplotlib's Agg canvas."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    names = [r.dir for r in c.runs]
    pair_names = [f"{p.a}\nvs {p.b}" for p in c.pairs]
    if c.scored:
        acc = [r.accuracy or 0.0 for r in c.runs]
        bounds = [r.interval or (a, a) for a, r in zip(acc, c.runs, strict=True)]
        errors = [[a - low for a, (low, _) in zip(acc, bounds, strict=True)],
                  [high - a for a, (_, high) in zip(acc, bounds, strict=True)]]
        left.bar(names, acc, yerr=errors, capsize=6, color="#2f6fb0")
        for x, a in enumerate(acc):  # inside a tall bar, above a short one (0: no bar at all)
            left.text(x, a / 2 if a > 0.1 else a + 0.02, f"{a:.3f}", ha="center", color="white" if a > 0.1 else "black")
        left.set_ylim(0, 1)
        left.set_title("Accuracy by question (95% interval)")
        if not c.pairs:  # side by side (different inputs): nothing changed between runs to show
            right.axis("off")
        else:
            xs = range(len(c.pairs))
            right.bar([x - 0.2 for x in xs], [p.fixed for p in c.pairs], 0.4, label="fixed (A wrong, B right)",
                      color="#3a9a5b")
            right.bar([x + 0.2 for x in xs], [p.broken for p in c.pairs], 0.4, label="broken (A right, B wrong)",
                      color="#c0504d")
            right.set_xticks(list(xs), [f"{n}\n{_p_label(p.p_value)}" for n, p in zip(pair_names, c.pairs)])
            top = max([1, *(p.fixed or 0 for p in c.pairs), *(p.broken or 0 for p in c.pairs)])
            right.set_ylim(0, top * 1.3)  # whole counts from 0, room for the legend; none changed: still an axis
            right.yaxis.set_major_locator(MaxNLocator(integer=True))
            for x, p in zip(xs, c.pairs):
                right.text(x - 0.2, (p.fixed or 0) + top * 0.02, str(p.fixed), ha="center")
                right.text(x + 0.2, (p.broken or 0) + top * 0.02, str(p.broken), ha="center")
            right.legend(loc="upper left")
            right.set_title("Questions that changed, per pair")
    else:
        left.bar(pair_names, [p.agreement for p in c.pairs], color="#2f6fb0")
        left.set_ylim(0, 1)
        left.set_title("Agreement per pair (no gold)")
        right.axis("off")
    for ax in (left, right):
        ax.tick_params(axis="x", labelsize=7)
    return save_png(fig, path)
