"""Training sets in LLaMA-Factory's own formats that a role recipe mixes into its training
(`dataset.extra: {name: file}`), beside the set the `dataset` stage builds; not competition
files (those are data.extra_train, read by sources.py).

Each file is alpaca or sharegpt, JSON (a list) or JSONL (one object a line). Its format is
read off the file, so the `dataset_info.json` entry is right without the user writing one;
a missing file or an unknown format is an error naming the recipe key before anything runs.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.paths import project_root

ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}
# sharegpt as LLaMA-Factory's default tags expect it ({"from": "human", "value": ...}), and the
# OpenAI `messages` form ({"role": "user", "content": ...}) through its tags.
SHAREGPT: dict[str, dict[str, Any]] = {
    "conversations": {"from": ("human", "gpt"), "tags": None},
    "messages": {
        "role": ("user", "assistant"),
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"},
    },
}
ALPACA_EXAMPLE = '{"instruction": "...", "input": "", "output": "..."}'
SHAREGPT_EXAMPLE = '{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}'


class BadMixedDataset(Exception):
    """What is wrong with a mixed-in file, in words."""


def mixed_path(file: str) -> Path:
    """A mixed-in file as the recipe names it: relative to the project root, or absolute."""
    return (project_root() / file).resolve()


def _records(path: Path) -> list[Any]:
    """The records of a JSON list or a JSONL file."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".jsonl":
        out = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except (ValueError, RecursionError) as e:
                    raise BadMixedDataset(f"line {lineno} is not valid JSON ({e})") from None
        return out
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise BadMixedDataset(f"not valid JSON ({e})") from None
    if not isinstance(data, list):
        raise BadMixedDataset(f"a JSON file must hold a list of examples, not a {type(data).__name__}")
    return data


def _format_of(record: Any) -> str:
    """alpaca, conversations or messages: what one example looks like."""
    if not isinstance(record, dict):
        raise BadMixedDataset(f"an example must be an object, not a {type(record).__name__}")
    if "instruction" in record and "output" in record:
        return "alpaca"
    for key, spec in SHAREGPT.items():
        turns = record.get(key)
        if isinstance(turns, list) and turns and all(isinstance(t, dict) for t in turns):
            tag, (user, assistant) = next((k, v) for k, v in spec.items() if k != "tags")
            seen = {t.get(tag) for t in turns}
            if user in seen and assistant in seen:
                return key
    raise BadMixedDataset(f"an example is neither alpaca ({ALPACA_EXAMPLE}) nor sharegpt ({SHAREGPT_EXAMPLE})")


@lru_cache(maxsize=64)
def _inspect(path: Path, mtime_ns: int, size: int) -> tuple[str, int]:
    records = _records(path)
    if not records:
        raise BadMixedDataset("it holds no examples")
    formats = set()
    for i, record in enumerate(records):
        try:
            formats.add(_format_of(record))
        except BadMixedDataset as e:
            raise BadMixedDataset(f"example {i + 1}: {e}") from None
        if len(formats) > 1:
            raise BadMixedDataset(f"example {i + 1} is {_format_of(record)} but the first is {_format_of(records[0])}; "
                             "one file holds one format")
    return formats.pop(), len(records)


def inspect_file(file: str) -> tuple[str, int]:
    """(format, number of examples) of a mixed-in file; BadMixedDataset says what is wrong."""
    path = mixed_path(file)
    if path.suffix not in (".json", ".jsonl"):
        raise BadMixedDataset(f"{file}: expected a .json or .jsonl file")
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise BadMixedDataset(f"{file} does not exist (looked for {path})") from None
    except OSError as e:
        raise BadMixedDataset(f"{file}: cannot read ({e.strerror})") from None
    if not path.is_file():
        raise BadMixedDataset(f"{file} is not a file")
    try:
        return _inspect(path, stat.st_mtime_ns, stat.st_size)
    except UnicodeDecodeError:
        raise BadMixedDataset(f"{file}: not UTF-8 text") from None
    except BadMixedDataset as e:
        raise BadMixedDataset(f"{file}: {e}") from None


def entry(file: str, fmt: str) -> dict[str, Any]:
    """The dataset_info.json entry of a mixed-in file (absolute: LLaMA-Factory joins it to dataset_dir)."""
    if fmt == "alpaca":
        return {"file_name": str(mixed_path(file)), "formatting": "alpaca", "columns": ALPACA_COLUMNS}
    out: dict[str, Any] = {"file_name": str(mixed_path(file)), "formatting": "sharegpt",
                           "columns": {"messages": fmt}}
    if SHAREGPT[fmt]["tags"]:
        out["tags"] = SHAREGPT[fmt]["tags"]
    return out


def mixed_entries(recipe: Any, where: Any = None) -> dict[str, dict[str, Any]]:
    """dataset name -> dataset_info.json entry for each of `dataset.extra`; every bad file is
    one error line naming its key (`where(dotted)` gives the recipe file that set it)."""
    entries, problems = {}, []
    # the role's own sets, and the other role's default ones (both share dataset_info.json)
    own = {recipe.dataset_name, recipe.eval_dataset_name,
           *(f"{split}_{role}_instruct" for split in ("train", "val") for role in ("answer", "evaluate"))}
    for name, file in recipe.dataset.extra.items():
        dotted = f"dataset.extra.{name}"
        prefix = f"{where(dotted)}: " if where else ""
        if name in own:
            problems.append(f"{prefix}{dotted}: {name} names a role's own set; give the extra set another name")
            continue
        try:
            fmt, _ = inspect_file(file)
        except BadMixedDataset as e:
            problems.append(f"{prefix}{dotted}: {e}")
            continue
        entries[name] = entry(file, fmt)
    if problems:
        raise UserError(*problems)
    return entries


def mixed_counts(recipe: Any) -> dict[str, dict[str, Any]]:
    """name -> {file, format, examples}, for manifests."""
    out = {}
    for name, file in recipe.dataset.extra.items():
        fmt, n = inspect_file(file)
        out[name] = {"file": file, "format": "alpaca" if fmt == "alpaca" else "sharegpt", "examples": n}
    return out
