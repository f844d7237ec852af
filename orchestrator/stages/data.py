"""Stage: `data check`, validate a competition .jsonl (or a submission against its test file)
and say what was skipped, repaired or worth a look."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core.data.competition import read_dataset
from orchestrator.core.data.submission import KIND_TEXT, MAX_LISTED, WARNINGS, Finding, check_submission, summarise


@dataclass
class DataCheck:
    summary: str = ""  # the one line for stdout
    notes: list[str] = field(default_factory=list)  # for stderr: skipped, repaired, to check, findings
    refusal: str | None = None  # a submission that cannot be uploaded: why


def check_file(file: str | Path, *, skip_invalid: bool = False, against: str | Path | None = None) -> DataCheck:
    """A summary of `file`; with `against`, whether it can be uploaded as a submission for it."""
    if against:
        check = check_submission(file, against)
        notes = _listed(check.findings)
        if check.problems:
            return DataCheck(notes=notes, refusal=f"{file} cannot be uploaded for {against}: "
                             + "; ".join(summarise(check.problems)))
        return DataCheck(f"{file}: ready to upload for {against}: {len(check.answers)} questions answered"
                         + (f" ({len(check.warnings)} warnings)" if check.warnings else ""), notes)
    dataset = read_dataset(file, skip_invalid=skip_invalid)
    notes = [*(f"skipped {x}" for x in dataset.errors), *(f"repaired {x}" for x in dataset.repairs),
             *(f"check {x}" for x in dataset.doubts)]
    return DataCheck(dataset.summary() + (f", {len(dataset.errors)} bad lines skipped" if dataset.errors else ""), notes)


def _listed(findings: list[Finding]) -> list[str]:
    """Each finding as a line, but only the first MAX_LISTED of a kind (a file without answers has
    one per question), the rest counted."""
    lines, seen = [], Counter[str]()
    for f in findings:
        seen[f.kind] += 1
        if seen[f.kind] <= MAX_LISTED:
            lines.append(f"{'warning' if f.is_warning else 'problem'}: {f.text}")
    return lines + [f"{'warning' if kind in WARNINGS else 'problem'}: ... and {n - MAX_LISTED} more "
                    f"{KIND_TEXT[kind]}" for kind, n in seen.items() if n > MAX_LISTED]
