"""The README and docs/*.md lead somewhere: every relative link names a file that exists and,
with a `#anchor`, a heading of that page by GitHub's slug rules; every docs page is linked from
the README."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
CODE_SPAN = re.compile(r"(`+).+?\1")
LINK = re.compile(r"!?\[[^\]]*\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto: ...


def prose(text: str) -> list[tuple[int, str]]:
    """The page's lines outside fenced code blocks, with their line numbers."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text as rendered (no link targets, no markup),
    lowercased, punctuation and symbols dropped (letters of any script, digits, `_` and `-`
    kept), each space a `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated one gets `-1`, `-2`, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose(text):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(text: str) -> list[tuple[int, str]]:
    """Every relative link target outside code, with its line number."""
    return [(number, target) for number, line in prose(text)
            for target in LINK.findall(CODE_SPAN.sub("", line)) if not EXTERNAL.match(target)]


def broken(page: Path, root: Path = REPO) -> list[str]:
    """One line per link of `page` that leads nowhere: `PAGE:LINE: TARGET: why`."""
    problems = []
    for number, target in links(page.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        where = f"{page.relative_to(root)}:{number}: {target}"
        goal = (page.parent / path).resolve() if path else page
        if not goal.exists():
            problems.append(f"{where}: no such file")
        elif anchor and goal.suffix != ".md":
            problems.append(f"{where}: an anchor into a file that is not a page")
        elif anchor and anchor not in anchors(goal.read_text(encoding="utf-8")):
            problems.append(f"{where}: no heading of {goal.relative_to(root)} has the anchor #{anchor}")
    return problems


SLUGS = [
    pytest.param("Quick start: two commands", "quick-start-two-commands", id="colon"),
    pytest.param("Is run B better than run A? The evaluation loop", "is-run-b-better-than-run-a-the-evaluation-loop",
                 id="question-mark"),
    pytest.param("No null in a submission: `inference.fallback`", "no-null-in-a-submission-inferencefallback",
                 id="code-dot-dropped"),
    pytest.param("Extra votes where they matter: `inference.extra_votes`",
                 "extra-votes-where-they-matter-inferenceextra_votes", id="underscore-kept"),
    pytest.param("The test suite's time (issue 31: measured first)", "the-test-suites-time-issue-31-measured-first",
                 id="apostrophe-parentheses"),
    pytest.param("2 nodes x 8 GPUs with ZeRO-3", "2-nodes-x-8-gpus-with-zero-3", id="hyphen-kept"),
    pytest.param("Answer → Evaluate", "answer--evaluate", id="symbol-dropped-spaces-kept"),
    pytest.param("复杂推理能力评估：闭世界假设", "复杂推理能力评估闭世界假设", id="chinese-kept-full-width-colon-dropped"),
    pytest.param("**Bold** and [a link](x.md)", "bold-and-a-link", id="markup-and-link-target-dropped"),
]


@pytest.mark.parametrize("heading, expected", SLUGS)
def test_a_heading_s_anchor_is_github_s(heading: str, expected: str) -> None:
    assert slug(heading) == expected


OTHER = "# Other\n\n## A heading\n\n## A heading\n\n```bash\n# not a heading\n```\n"

LINKS = [
    pytest.param("[x](other.md)", [], id="a-page"),
    pytest.param("[x](other.md#a-heading) [y](other.md#a-heading-1)", [], id="anchors-repeated-headings-get-1"),
    pytest.param("[x](#page) and ![picture](picture.png)", [], id="own-heading-and-an-image"),
    pytest.param("[x](https://example.com/missing.md) <https://example.com>", [], id="external-not-checked"),
    pytest.param("```\n[x](missing.md)\n```\n`[y](missing.md)`", [], id="code-not-checked"),
    pytest.param("[x](missing.md)", ["page.md:3: missing.md: no such file"], id="missing-file"),
    pytest.param("[x](other.md#nowhere)", ["page.md:3: other.md#nowhere: no heading of other.md has the anchor #nowhere"],
                 id="missing-anchor"),
    pytest.param("[x](other.md#not-a-heading)",
                 ["page.md:3: other.md#not-a-heading: no heading of other.md has the anchor #not-a-heading"],
                 id="a-comment-in-code-is-no-heading"),
    pytest.param("[x](#A-heading)", ["page.md:3: #A-heading: no heading of page.md has the anchor #A-heading"],
                 id="anchors-are-lowercase"),
    pytest.param("[x](picture.png#top)", ["page.md:3: picture.png#top: an anchor into a file that is not a page"],
                 id="anchor-into-a-picture"),
]


@pytest.mark.parametrize("body, problems", LINKS)
def test_a_link_that_leads_nowhere_is_named(tmp_path: Path, body: str, problems: list[str]) -> None:
    (tmp_path / "other.md").write_text(OTHER, encoding="utf-8")
    (tmp_path / "picture.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(f"# Page\n\n{body}\n", encoding="utf-8")
    assert broken(page, tmp_path) == problems


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    problems = broken(page)
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {target.partition("#")[0] for _, target in links((REPO / "README.md").read_text(encoding="utf-8"))}
    assert [p.name for p in PAGES[1:] if f"docs/{p.name}" not in linked] == []
