"""The one error type users see: printed as a single `Error: ...` line, never a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem the user can fix. `lines` are printed one `Error:` line each."""

    exit_code = 2

    def __init__(self, *lines: str, exit_code: int | None = None):
        self.lines = [line for line in lines if line]
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__("\n".join(self.lines))


class StageFailed(UserError):
    """An external step (llamafactory-cli, an endpoint) failed; exit 1."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest choice, or ''."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""
