"""Reading a choice letter from model output: the one extractor that distillation, inference
and scoring share, so all three agree on what a model answered.

Precedence, first hit wins:
1. the text after the last `</think>`, else the whole text; the think block only when
   nothing after it reads as an answer;
2. within that, the `### 可能的结果:` section (Answer-model format), else the whole text;
3. within a region, the LAST explicit claim (`答案是：B`, `故选C`, `\\boxed{D}`,
   `The answer is C`, `选项B正确`), skipping hypotheticals (`如果答案是A`) and examples;
   a region whose every claim is skipped reads as nothing;
4. else a region that is a single option line (`A. 0`);
5. else, in a result section or a one-line text, the one letter it names (`选项B`), if
   it names exactly one and neither negates nor questions it (`A和B都有可能` is None).
A letter beyond `n_options` gives None, never a fallback to a weaker reading.
"""

from __future__ import annotations

import re

from orchestrator.core.data.competition import LETTERS

# Full-width ASCII (`Ｂ`, `：`, `（`) and the ideographic space to ASCII; markdown emphasis and
# code marks dropped so `**答案是：B**` reads like `答案是：B`.
_NORMALISE = str.maketrans(
    {**{c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}, 0x3000: " ", ord("*"): None, ord("`"): None}
)

# A choice letter: uppercase not glued to a word (`BMI`), or lowercase only when nothing but
# punctuation, a non-ASCII character or the line end follows (`答案是 b`, not `is a bit`);
# never one of a list (`A或B`) or a question (`A吗`).
_LETTER = (
    r"(?:(?P<up>[A-G])(?![A-Za-z0-9])|(?P<low>[a-g])(?=[^\S\n]*(?:$|\n|[^\sA-Za-z0-9])))"
    r"(?![^\S\n]*(?:或者?|和|与|及|、|/|(?i:or|and)\b)[^\S\n]*\(?[A-G](?![A-Za-z0-9]))"
    r"(?![^\S\n]*(?:吗|\?))"
)
# What may sit between a claim and its letter: colons, brackets, quotes, an `选项`/`option`.
_FILLER = r"[\s:=【\[(「『\"'“‘]*(?:(?:选项|选择|选|(?i:option|choice))[\s:【\[(「『\"'“‘]*)?"
_CLAIM = re.compile(
    r"(?:"
    r"答案\s*(?:应该|应当|应|可能|就|只能|也|一定|必然)?\s*(?:是|为|选择|选)?"
    r"|(?:正确|最佳|最终|合适)的?(?:选项|选择)\s*(?:应该|应)?\s*(?:是|为)?"
    r"|(?:故|所以|因此|因而|则|即|就|应该|应当|应|我|最终|最后|只能)选择?"
    r"|\\boxed\s*\{\s*(?:\\text(?:bf)?\s*\{\s*)?"
    r"|(?i:\b(?:answer|correct (?:option|choice))\s*"
    r"(?:(?:is|would be|should be|must be|will be)\b|:|=))"
    r"|(?i:\bI (?:would )?(?:choose|pick|select)\b)"
    r")" + _FILLER + _LETTER
)
# A claim with the letter first: `选项B正确`, `option C is correct`.
_CLAIM_LETTER_FIRST = re.compile(
    r"(?:选项|(?i:\b(?:option|choice)))\s*\(?(?:(?P<up>[A-G])|(?P<low>[a-g]))\)?\s*"
    r"(?:(?:是|为)?(?:正确|对)|(?i:is (?:the )?(?:correct|right)\b))"
)
# Words just before a claim that make it a hypothesis, a negation or an example.
_NOT_A_CLAIM = re.compile(
    r"(?:不|非|(?:如果|假如|假设|倘若|若|例如|比如)[^\n]{0,2}"
    r"|(?i:\b(?:not|if|suppose|assume|assuming|unless|e\.g\.|example)[\s,:]+(?:the |that )?))$"
)
# The Answer model's likely-result heading: `### 可能的结果:` (or an unmarked `可能的结果:` line).
_RESULT_HEADING = re.compile(r"#+[ \t]*可能的结果[ \t]*:?|^[ \t]*可能的结果[ \t]*:", re.MULTILINE)
# A line that is one option as the prompt lists it: `A. 0`, `(B) text`, a bare `C`.
_OPTION_LINE = re.compile(r"[#>\-\s]*\(?([A-G])\)?(?:[.、:)]|\s*$)")
# A standalone letter; `A` before a lowercase word is the article (`A person`), not a choice.
_MENTION = re.compile(r"(?<![A-Za-z0-9])(A(?! (?!is\b|or\b|and\b)[a-z])|[B-G])(?![A-Za-z0-9])")
# A letter negated or questioned: `不是A`, `排除A`, `A不正确`, `A吗`, `A is wrong`.
_NEGATED_BEFORE = re.compile(r"(?:不|非|排除|除了|除|没有|(?i:\bnot|\bno))[^\n]{0,2}$")
_NEGATED_AFTER = re.compile(
    r"[^\S\n]*(?:选项|项)?[^\S\n]*"
    r"(?:不|错|排除|有误|吗|\?|(?i:is(?:n't| not| wrong| incorrect)|wrong|incorrect))"
)


def extract_choice(text: str, n_options: int) -> str | None:
    """The choice letter `text` states, among the first `n_options` of A..G, or None when it
    states none, states one out of range, or leaves several open."""
    if not text:
        return None
    text = text.translate(_NORMALISE)
    thought, closed, answer = text.rpartition("</think>")
    letter = _read(answer)
    if letter is None and closed:
        letter = _read(thought)
    return letter if letter is not None and letter in LETTERS[: max(n_options, 0)] else None


def _read(text: str) -> str | None:
    headings = list(_RESULT_HEADING.finditer(text))
    if headings:
        letter = _read_region(text[headings[-1].end() :], is_result=True)
        if letter is not None:
            return letter
    return _read_region(text, is_result=False)


def _read_region(text: str, is_result: bool) -> str | None:
    claims = [m for pattern in (_CLAIM, _CLAIM_LETTER_FIRST) for m in pattern.finditer(text)]
    if claims:
        asserted = [
            m for m in claims if not _NOT_A_CLAIM.search(text, max(m.start() - 12, 0), m.start())
        ]
        if not asserted:  # only hypotheses or examples (`如果答案是A`): nothing to fall back on
            return None
        last = max(asserted, key=lambda m: m.start())
        return (last["up"] or last["low"]).upper()
    body = text.strip()
    single_line = "\n" not in body
    if single_line:
        option = _OPTION_LINE.match(body)
        if option:
            return option[1]
    if not (is_result or single_line):
        return None
    mentions = list(_MENTION.finditer(body))
    if len({m[1] for m in mentions}) != 1:
        return None
    for m in mentions:
        if _NEGATED_BEFORE.search(body, max(m.start() - 6, 0), m.start()) or _NEGATED_AFTER.match(
            body, m.end()
        ):
            return None
    return mentions[0][1]
