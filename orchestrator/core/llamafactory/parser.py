"""LLaMA-Factory's own argument parser, run in this process on what we render: its quiet
import, the arguments it knows, a mapping handed to it as `llamafactory-cli` would (command-line
flags, or the YAML file as OmegaConf reads it), its complaint tied to the recipe key, what it
accepted once, not asked again, and what it resolved (Resolved: every argument, its defaults
included), the one source of LLaMA-Factory's values for the stages."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.common.errors import UserError
from orchestrator.core.common.files import atomic_write_text
from orchestrator.core.common.paths import cache_dir, project_root
from orchestrator.core.common.process import environ_set
from orchestrator.core.recipes.loading import Loaded
from orchestrator.core.recipes.schema import RoleRecipe


@contextmanager
def gpus_hidden() -> Iterator[None]:
    """Hide the GPUs while LLaMA-Factory's parser runs, so validation does not depend on this
    machine's GPUs; the subprocesses started afterwards see them again."""
    with environ_set("CUDA_VISIBLE_DEVICES", ""):
        yield


def import_parser():
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "ERROR")
    import transformers

    transformers.logging.set_verbosity_error()
    from llamafactory.hparams import parser

    return parser


def known_arguments(kind: str) -> set[str]:
    parser = import_parser()
    classes = [*parser._TRAIN_ARGS, parser.RayArguments] if kind == "train" else parser._INFER_ARGS
    import dataclasses

    return {f.name for cls in classes for f in dataclasses.fields(cls)}


def argument_default(name: str) -> Any:
    """LLaMA-Factory's own default of the argument `name`, read from its argument classes: for a
    value no config of ours has been parsed for (a server's, in `package`)."""
    import dataclasses

    parser = import_parser()
    for cls in [*parser._TRAIN_ARGS, *parser._INFER_ARGS]:
        for f in dataclasses.fields(cls):
            if f.name == name:
                if f.default is not dataclasses.MISSING:
                    return f.default
                return f.default_factory() if f.default_factory is not dataclasses.MISSING else None
    raise KeyError(f"{name} is not a LLaMA-Factory argument")


def _as_argv(args: dict[str, Any]) -> list[str]:
    """A mapping as command-line flags, so HfArgumentParser converts and type-checks each value
    exactly as `llamafactory-cli` does with a YAML file."""
    argv = []
    for key, value in args.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, (dict, list)):
            value = json.dumps(value) if isinstance(value, dict) else ",".join(map(str, value))
        argv += [f"--{key}", str(value)]
    return argv


def read_rendered(path: Path) -> dict[str, Any]:
    """A rendered YAML as `llamafactory-cli train|export FILE` reads it (parser.read_args)."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(path.absolute()))
    if not isinstance(data, dict):
        raise UserError(f"{path}: rendered as a {type(data).__name__}, not a mapping (a template bug)")
    return {str(k): v for k, v in data.items()}


@dataclass(frozen=True)
class Resolved:
    """What LLaMA-Factory's parser resolved from a role's rendered configs, by argument name, its
    defaults included: the source of every LLaMA-Factory value a stage reads (never a copy of
    one of its defaults)."""

    train: dict[str, Any]  # get_train_args on train.yaml
    merge: dict[str, Any]  # get_infer_args on merge.yaml (with the export_quantization_* it calibrates by)


def resolved_values(parsed: Iterable[Any]) -> dict[str, Any]:
    """Every field of the argument dataclasses a parser returned, by name (the first group that
    has it), as JSON values."""
    import dataclasses

    values: dict[str, Any] = {}
    for group in parsed:
        if not dataclasses.is_dataclass(group):
            continue
        for f in dataclasses.fields(group):
            if f.name not in values:
                values[f.name] = getattr(group, f.name, None)
    return json.loads(json.dumps(values, default=str))


def parse_args(parse_fn, args: dict[str, Any], *, as_argv: bool = True,
               resolved: dict[str, Any] | None = None) -> str | None:
    """Run one of LLaMA-Factory's parsers; its complaint, or None. as_argv: hand it command-line
    flags (HfArgumentParser converts and type-checks each value); else the mapping itself,
    as `llamafactory-cli` does with a YAML file (parse_dict: no conversion). Accepted, every
    value it resolved goes into `resolved` when given."""
    import contextlib
    import io

    err = io.StringIO()
    try:
        with gpus_hidden(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parsed = parse_fn(_as_argv(args) if as_argv else args)
    except SystemExit:
        lines = [line for line in err.getvalue().splitlines() if "error:" in line]
        return lines[-1].split("error:", 1)[1].strip() if lines else err.getvalue().strip()[-300:]
    except (ValueError, ImportError, RuntimeError, TypeError) as e:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if resolved is not None:
        resolved.update(resolved_values(parsed))
    return None


def blame(loaded: Loaded[RoleRecipe], section: str, message: str, args: dict[str, Any]) -> str:
    """Name the recipe key a LLaMA-Factory complaint is about, when it names one."""
    for word in re.findall(r"[`'\-]{1,2}([a-z_][a-z0-9_]+)", message):
        if word in args:
            dotted = f"{section}.{word}"
            return f"{loaded.where(dotted)}: {dotted}: LLaMA-Factory says: {message}"
    return f"{loaded.where(section)}: {section}: LLaMA-Factory says: {message}"


class Accepted:
    """What LLaMA-Factory's parser accepted, remembered so it is not parsed again while nothing it
    read has changed: importing the parser costs seconds of CPU (torch, transformers) in every
    command that checks, a `train` or `merge` with nothing to do included. The key is a
    fingerprint of the arguments and rendered files (`parts`, the project folder in them as a
    placeholder), the versions of LLaMA-Factory and the packages it checks with, and the text of
    our checking code (`code`). It is kept in the run folder (`stamp`) and in this machine's
    cache (cache_dir("accepted")), so a moved project, or another with the same recipe, is not
    parsed again either. Only an acceptance is remembered: a refused config is parsed each time.
    What the parser resolved can be kept with it (`remember(values)`, read back by `values()`),
    the project folder in it as a placeholder too."""

    def __init__(self, stamp: Path, *parts: Any, code: Iterable[str], packages: Iterable[str] = ()):
        self.stamp = stamp
        versions = {name: _version(name) for name in ("llamafactory", "transformers", "peft", *packages)}
        ours = [Path(__file__).read_text(encoding="utf-8"), *(Path(f).read_text(encoding="utf-8") for f in code)]
        blob = json.dumps([versions, ours, *parts], sort_keys=True, default=str, ensure_ascii=False)
        self.root = json.dumps(str(project_root()), ensure_ascii=False)[1:-1]  # as it is written in the blob
        self.key = hashlib.sha256(blob.replace(self.root, PROJECT).encode("utf-8")).hexdigest()
        self.shared = cache_dir("accepted") / self.key
        self.kept = stamp.with_name(stamp.name + ".json")  # the values, beside the stamp

    def before(self) -> bool:
        try:
            if self.stamp.read_text(encoding="utf-8").strip() == self.key:
                return True
        except (OSError, UnicodeDecodeError):
            pass
        if self.shared.is_file():
            with suppress(OSError):
                atomic_write_text(self.stamp, self.key + "\n")
            return True
        return False

    def values(self) -> dict[str, Any] | None:
        """What the parser resolved when it accepted these inputs; None: not kept."""
        for path in (self.kept, self.shared):
            try:
                record = json.loads(path.read_text(encoding="utf-8").replace(PROJECT, self.root))
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("key") == self.key and isinstance(record.get("values"), dict):
                return record["values"]
        return None

    def remember(self, values: dict[str, Any] | None = None) -> None:
        text = "" if values is None else json.dumps({"key": self.key, "values": values}, ensure_ascii=False,
                                                    sort_keys=True).replace(self.root, PROJECT)
        if values is not None:
            atomic_write_text(self.kept, text)
        atomic_write_text(self.stamp, self.key + "\n")
        with suppress(OSError):  # the machine's cache is a convenience: a read-only home parses again
            self.shared.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.shared, text)


PROJECT = "<project>"  # the project folder, in what Accepted hashes and keeps


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
