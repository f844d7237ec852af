"""Recipes: YAML the user edits, loaded once into typed objects.

Precedence: parent recipe (`extends:`), then the recipe, then `--set dotted.key=value`.
Every problem is reported at once, each with the file (or `--set`) and the dotted key.
A role recipe's `train:` and `merge:` mappings hold LLaMA-Factory's own argument names,
passed through verbatim; a null value removes a key a parent set.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.core.common.api_keys import ENV_NAME_RULE, is_env_name
from orchestrator.core.common.errors import UserError, did_you_mean
from orchestrator.core.common.paths import HOME_ENV, project_root

ROLES = ("answer", "evaluate")
MAX_RECIPE_BYTES = 1 << 20  # recipes are a few KB; more is a mistake, and slow to parse
MAX_VALUES = 100_000  # values in a recipe with its aliases expanded (a billion-laughs bomb has 10^9)
MAX_DEPTH = 50
_PLAIN = re.compile(r"\w[\w.-]{0,59}")  # one file-name component (<255 bytes): no separator, no "..", no NUL


def _plain(v: str | None) -> bool:
    return v is None or bool(_PLAIN.fullmatch(v))


def _dataset_name(v: str | None) -> str | None:
    if v is not None and (not _plain(v) or v.endswith(".json")):
        raise ValueError("a dataset name is a plain word such as train_answer_instruct (no path, no .json)")
    if v == "dataset_info":  # datasets/dataset_info.json is the registry itself
        raise ValueError("dataset_info is reserved for datasets/dataset_info.json; pick another name")
    return v


def invalid(key: str, message: str, value: Any) -> ValidationError:
    """A model validator's error at the dotted `key` (from the model validated), so the error
    line names the key a cross-field check is about."""
    from pydantic_core import InitErrorDetails, PydanticCustomError

    detail = InitErrorDetails(type=PydanticCustomError("value_error", message), loc=tuple(key.split(".")), input=value)
    return ValidationError.from_exception_data("recipe", [detail])


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSection(Section):
    name: str = "Qwen2-7B-Instruct"  # LlamaBoard catalogue name; unknown names show as Custom
    source: str = "qwen/Qwen2-7B-Instruct"  # modelscope id that `download` fetches
    path: str | None = None  # a local model directory; default: <models_dir>/<source>
    models_dir: str = "models"
    template: str = "qwen"  # LLaMA-Factory chat template, the same for train, merge and serve

    @field_validator("source")
    @classmethod
    def _model_id(cls, v: str) -> str:
        # the download goes to <models_dir>/<source>: an id may not climb out of models_dir
        if not all(_plain(part) for part in v.split("/")):
            raise ValueError("a model id is owner/name such as qwen/Qwen2-7B-Instruct (no '..', no absolute path)")
        return v


class DatasetSection(Section):
    name: str | None = None  # default: train_<role>_instruct
    val_size: float = Field(0.0, ge=0.0, lt=1.0)  # held out by problem, never split inside one
    seed: int = 0  # the held-out problems and the subsample
    subsample: float = Field(1.0, gt=0.0, le=1.0)  # train on this fraction of the problems (a variant)
    extra: dict[str, str | None] = Field(default_factory=dict)  # more training sets: name -> file; null drops a parent's
    evaluate_source: Literal["teacher", "answer_model"] = "teacher"  # whose reasoning the Evaluate set reads
    evaluate_samples: int = Field(4, ge=1, le=64)  # Answer-model replies per question (answer_model)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str | None) -> str | None:
        return _dataset_name(v)

    @field_validator("extra")
    @classmethod
    def _plain_extra_names(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        for name in v:
            _dataset_name(name)
        return {name: file for name, file in v.items() if file is not None}


class FewshotSection(Section):
    """Worked examples of similar training problems in the Answer prompt (orchestrator/core/data/fewshot.py)."""

    k: int = Field(0, ge=0, le=8)  # examples per prompt; 0: none (the plain prompt)
    pool: Literal["train"] = "train"  # where they come from: data.train's distilled, agreeing replies


class ServeSection(Section):
    infer_backend: Literal["huggingface", "vllm", "sglang"] = "huggingface"
    # what is served: the merged model, or the base with the adapter on top (auto: the adapter
    # when the base's config.json declares a quantization, which LLaMA-Factory cannot merge into)
    weights: Literal["merged", "adapter", "auto"] = "auto"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_concurrent: int = Field(4, ge=1)  # the huggingface backend's semaphore (MAX_CONCURRENT)
    startup_timeout: float = Field(600.0, gt=0)
    args: dict[str, Any] = Field(default_factory=dict)  # extra LLaMA-Factory keys, e.g. vllm_maxlen


class DistributedSection(Section):
    gpus_per_node: int = Field(1, ge=1)
    nnodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    master_addr: str = "127.0.0.1"
    master_port: int = Field(29500, ge=1, le=65535)
    deepspeed: Literal[0, 2, 3] = 0  # ZeRO stage; 0 = no DeepSpeed
    offload: bool = False  # ZeRO offload of optimizer (and, at stage 3, parameters) to CPU
    ray_workers: int = Field(0, ge=0)  # >0: launch with Ray (USE_RAY=1), one GPU per worker


class RoleRecipe(Section):
    role: Literal["answer", "evaluate"]
    name: str | None = None  # run folder runs/<name>/; default: the role
    model: ModelSection = ModelSection()
    dataset: DatasetSection = DatasetSection()
    fewshot: FewshotSection = FewshotSection()  # read for the Answer role only
    train: dict[str, Any] = Field(default_factory=dict)
    merge: dict[str, Any] = Field(default_factory=dict)
    serve: ServeSection = ServeSection()
    distributed: DistributedSection = DistributedSection()

    @field_validator("name")
    @classmethod
    def _plain_run_name(cls, v: str | None) -> str | None:
        if not _plain(v):
            raise ValueError("a run name is a plain word (no path): the run goes to runs/<name>/")
        return v

    @model_validator(mode="after")
    def _subsample_has_its_own_dataset(self) -> RoleRecipe:
        if self.dataset.subsample < 1 and self.dataset_name == f"train_{self.role}_instruct":
            raise invalid("dataset.subsample", f"{self.dataset.subsample} needs a dataset.name of its own (e.g. "
                          f"train_{self.run_name.replace('-', '_')}), so this variant's subset does not overwrite "
                          f"{self.dataset_name}", self.dataset.subsample)
        return self

    @property
    def run_name(self) -> str:
        return self.name or self.role

    @property
    def dataset_name(self) -> str:
        return self.dataset.name or f"train_{self.role}_instruct"

    @property
    def eval_dataset_name(self) -> str:
        return self.dataset_name.replace("train_", "val_", 1) if self.dataset_name.startswith("train_") else f"val_{self.dataset_name}"


class DataSection(Section):
    train: str = "datasets/sample/train.jsonl"
    test: str = "datasets/sample/test.jsonl"
    gold: str | None = "datasets/sample/test_gold.jsonl"
    fixes: str | None = None  # label corrections applied whenever data.train is read (orchestrator/core/data/fixes.py)
    extra_train: list[str] = Field(default_factory=list)  # more training files, e.g. `pseudo-label` output


def _env_name(v: str | None) -> str | None:
    # the value is never echoed: it may be a key pasted where the variable's name belongs
    if v is not None and not is_env_name(v):
        raise ValueError(ENV_NAME_RULE)
    return v


class TeacherSection(Section):
    base_url: str = "https://api.deepseek.com/v1"
    model: str = "deepseek-chat"
    api_key_env: str = "DEEPSEEK_API_KEY"  # the NAME of the variable holding the key
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(1024, ge=1)
    concurrency: int = Field(16, ge=1, le=1024)
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0)
    max_attempts: int = Field(1, ge=1)  # >1: ask again when the teacher misses the gold letter
    retry_temperature: float = Field(0.7, gt=0.0, le=2.0)
    hint_gold: bool = False  # tell the teacher the correct letter and ask for the reasoning
    keep: Literal["agreeing", "all"] = "agreeing"  # which replies go into the training sets
    preload: list[str] = Field(default_factory=list)  # cache files imported before asking
    max_failed: int | float = 0  # questions left failing that still let distill finish: a count, or a fraction < 1

    _api_key_env = field_validator("api_key_env")(_env_name)

    @field_validator("max_failed")
    @classmethod
    def _count_or_fraction(cls, v: int | float) -> int | float:
        if isinstance(v, float) and v.is_integer() and v >= 1:
            v = int(v)
        if v < 0 or (isinstance(v, float) and v >= 1):
            raise ValueError("a count of questions (e.g. 75) or a fraction of them below 1 (e.g. 0.05)")
        return v

    def failures_allowed(self, questions: int) -> int:
        """How many of `questions` may be left failing: max_failed as a count, or its fraction of them."""
        return int(self.max_failed) if isinstance(self.max_failed, int) else int(self.max_failed * questions)


class AnswerModel(Section):
    """One Answer model of an ensemble: a role recipe whose model is served, or an endpoint."""

    recipe: str | None = None  # a role recipe with role: answer
    url: str | None = None  # an OpenAI base URL: talk to it, serve nothing
    model: str | None = None  # the name sent in requests (default: the recipe's name, or the one the URL lists)

    @model_validator(mode="after")
    def _recipe_or_url(self) -> AnswerModel:
        if (self.recipe is None) == (self.url is None):
            raise ValueError("an Answer model is either {recipe: PATH} or {url: URL, model: NAME}")
        return self


class InferenceSection(Section):
    mode: Literal["staged", "pipelined"] = "staged"
    concurrency: int = Field(8, ge=1, le=1024)
    votes: int = Field(1, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    vote_temperature: float = Field(0.7, gt=0.0, le=2.0)
    extra_votes: int = Field(0, ge=0)  # more Answer samples per model, only for the questions extra_when picks
    extra_when: Literal["split", "no_majority"] = "split"  # split: the first `votes` samples are not unanimous
    extra_temperature: float = Field(0.9, gt=0.0, le=2.0)
    max_tokens: int = Field(512, ge=1)
    timeout: float = Field(300.0, gt=0)
    max_retries: int = Field(4, ge=0)
    # the Answer models, in order; several vote. One model may be written as the shorthand
    # answer_url (+ answer_model) or answer_recipe (+ answer_model), folded in here
    answer_models: list[AnswerModel] = Field(default_factory=list)
    answer_recipe: str = "recipes/answer.yaml"  # also the recipe taken to have trained an endpoint's model
    evaluate_recipe: str = "recipes/evaluate.yaml"
    answer_url: str | None = None  # given: talk to this endpoint, serve nothing
    evaluate_url: str | None = None
    answer_model: str | None = None
    evaluate_model: str | None = None
    api_key_env: str | None = None  # for remote endpoints
    fallback: str | None = "prior"  # a question left without an answer: prior, a letter, or null
    deadline_s: float | None = Field(None, gt=0)  # from infer's start: then nothing more is asked, the submission is written

    @model_validator(mode="before")
    @classmethod
    def _fold_the_shorthand(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("answer_models"):
            if data.get("answer_url") or data.get("answer_model"):
                raise invalid("answer_models", "lists the Answer models: leave answer_url and answer_model null "
                              "(or list one model)", data["answer_models"])
            return data
        url, model = data.get("answer_url"), data.get("answer_model")
        recipe = data.get("answer_recipe", cls.model_fields["answer_recipe"].default)
        return {**data, "answer_models": [{"url": url, "model": model} if url else {"recipe": recipe, "model": model}]}

    @field_validator("fallback")
    @classmethod
    def _fallback(cls, v: str | None) -> str | None:
        if v is None or v == "prior":
            return v
        if len(v.strip()) == 1 and v.strip().upper() in "ABCDEFG":
            return v.strip().upper()
        raise ValueError(f"fallback is prior, a letter A-G, or null (no answer), got {v!r}")

    _api_key_env = field_validator("api_key_env")(_env_name)


class PackageSection(Section):
    """The submission image `orchestrator package` writes: where it reads and writes, its limits."""

    base_image: str = "pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime"  # FROM: Python, CUDA and the torch vllm 0.11 pins
    input: str = "/tcdata/round2_test_data.jsonl"  # the test file the image answers (INPUT overrides)
    output: str = "/app/results.jsonl"  # the submission it writes (OUTPUT overrides)
    deadline_s: float | None = Field(None, gt=0)  # the image's whole run; infer gets it less IMAGE_RESERVE_S
    gpu_memory_gb: float = Field(32.0, gt=0)  # the target GPU (one V100 32 GB): larger estimates are refused
    python: str = Field("3.11", pattern=r"^3\.\d+$")  # the base image's Python: the wheels are downloaded for it

    @field_validator("input", "output")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"a path inside the image is absolute, such as /app/results.jsonl, got {v!r}")
        return v


class PipelineRecipe(Section):
    data: DataSection = DataSection()
    teacher: TeacherSection = TeacherSection()
    inference: InferenceSection = InferenceSection()
    package: PackageSection = PackageSection()


R = TypeVar("R", RoleRecipe, PipelineRecipe)


@dataclass
class Loaded(Generic[R]):
    """A validated recipe with where it came from."""

    recipe: R
    path: Path
    raw: dict[str, Any]  # the merged mapping, for printing and manifests
    origin: dict[str, str] = field(default_factory=dict)  # dotted key -> file, "--set" or "--some-flag"

    def overridden(self) -> dict[str, dict[str, Any]]:
        """The values the command line set (--set, flags, make variables): dotted key -> value and origin."""
        out = {}
        for dotted, source in self.origin.items():
            if _from_command_line(source) and not any(self.origin.get(p) == source for p in _parents(dotted)):
                out[dotted] = {"value": _get(self.raw, dotted), "from": source}
        return out

    def overridden_lines(self) -> list[str]:
        """`key = value  (from --flag)` for each value the command line set, to print at start;
        data paths are left to `data_line`, which every command reading one prints."""
        return [f"{k} = {v['value']!r}  (from {v['from']})" for k, v in self.overridden().items()
                if not k.startswith("data.")]

    def files(self) -> list[Path]:
        """The recipe files its values came from: the recipe and every parent it extends."""
        from orchestrator.core.common.paths import project_root

        named = {Path(source) for source in self.origin.values()} | {self.path}
        return sorted(f for f in {p if p.is_absolute() else project_root() / p for p in named} if f.is_file())

    def data_line(self, dotted: str) -> str:
        """`data.train = FILE (from WHERE)`: the data file a command reads and who chose it."""
        return f"{dotted} = {_get(self.recipe.model_dump(), dotted)} (from {self.where(dotted)})"

    def data_file(self, dotted: str) -> Path:
        """The file a data key names (relative to the project), which must exist."""
        path = project_root() / str(_get(self.recipe.model_dump(), dotted))
        if not path.is_file():
            raise UserError(f"{self.data_line(dotted)}: no such file (looked for {path})")
        return path

    def where(self, dotted: str) -> str:
        """The file (or --set, or the flag) that set `dotted` or its closest parent."""
        return _where(self.origin, self.path, dotted)


def _where(origin: dict[str, str], path: Path, dotted: str) -> str:
    parts = dotted.split(".")
    while parts:
        key = ".".join(parts)
        if key in origin:
            return origin[key]
        parts.pop()
    return display(path)


def _parents(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _get(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


# ---------------------------------------------------------------- loading


def display(path: Path) -> str:
    """`path` relative to the working directory when inside it, as users typed it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _read_yaml(path: Path) -> dict[str, Any]:
    name = display(path)
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise UserError(f"{name}: {path.stat().st_size} bytes is too large for a recipe (at most {MAX_RECIPE_BYTES})")
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        home = "" if os.environ.get(HOME_ENV) else (
            f" (no project found from {Path.cwd()} up: run from the project folder or set {HOME_ENV}=/path/to/project)")
        raise UserError(f"{name}: no such recipe{home}") from None
    except (OSError, ValueError) as e:  # ValueError: not UTF-8, or a NUL byte in the path
        raise UserError(f"{name}: cannot read ({e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark else name
        reason = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{where}: not valid YAML ({reason})") from None
    except RecursionError:
        raise UserError(f"{name}: not valid YAML (nested too deeply)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{name}: a recipe is a mapping of keys, not a {type(data).__name__}")
    _check_tree(data, name)
    return data


def _check_tree(value: Any, where: str) -> None:
    """Refuse what YAML aliases can build: a structure that contains itself, or one that
    expands to more than MAX_VALUES values (each later copy, merge and print would hang)."""
    count = 0

    def walk(v: Any, depth: int, path: tuple[int, ...]) -> None:
        nonlocal count
        count += 1
        if count > MAX_VALUES:
            raise UserError(f"{where}: aliases expand it beyond {MAX_VALUES} values; write the values out")
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(f"{where}: text has an unpaired \\uXXXX surrogate escape") from None
        if not isinstance(v, (dict, list)):
            return
        if id(v) in path:
            raise UserError(f"{where}: an alias refers to itself (a structure cannot contain itself)")
        if depth > MAX_DEPTH:
            raise UserError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        for child in ([*v.keys(), *v.values()] if isinstance(v, dict) else v):
            walk(child, depth + 1, (*path, id(v)))

    walk(value, 0, ())


def _merge(base: dict, top: dict, origin: dict[str, str], source: str, prefix: str = "") -> dict:
    out = dict(base)
    for key, value in top.items():
        key = str(key)
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, origin, source, dotted + ".")
        else:
            out[key] = copy.deepcopy(value)
            origin[dotted] = source
            _mark(value, origin, source, dotted + ".")
    return out


def _mark(value: Any, origin: dict[str, str], source: str, prefix: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            origin[f"{prefix}{k}"] = source
            _mark(v, origin, source, f"{prefix}{k}.")


def _load_chain(path: Path, origin: dict[str, str], seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    try:
        resolved = path.resolve()
    except (OSError, ValueError) as e:  # a NUL byte, a name too long
        raise UserError(f"{_shown(str(path))}: not a usable path ({e})") from None
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise UserError(f"{display(path)}: extends itself ({chain})")
    data = _read_yaml(path)
    parent_ref = data.pop("extends", None)
    base: dict[str, Any] = {}
    if parent_ref is not None:
        if not isinstance(parent_ref, str) or not parent_ref.strip():
            raise UserError(f"{display(path)}: extends must be the path of a parent recipe")
        try:
            parent = (path.parent / parent_ref).resolve()
            found = parent.exists()
        except (OSError, ValueError) as e:  # a NUL byte, a name too long
            raise UserError(f"{display(path)}: extends {_shown(parent_ref)}, which is not a usable path ({e})") from None
        if not found:
            raise UserError(f"{display(path)}: extends {_shown(parent_ref)}, which does not exist (looked for {parent})")
        base = _load_chain(parent, origin, (*seen, resolved))
    return _merge(base, data, origin, display(path))


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", value); the value parsed as a YAML scalar. Split on the first `=`."""
    if "=" not in item:
        raise UserError(f"--set {_shown(item)}: expected KEY=VALUE, e.g. --set train.learning_rate=5e-5")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"--set {_shown(item)}: the key before '=' must be a dotted name such as train.learning_rate")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except (yaml.YAMLError, RecursionError):  # not YAML: the text as typed
        value = text
    _check_tree(value, f"--set {_shown(key)}")
    return key, value


MAKE_VARIABLES_ENV = "ORCHESTRATOR_MAKE_VARIABLES"  # "data.train=TRAIN ...": the --set items make passes


def make_variables() -> dict[str, str]:
    """dotted key -> the make variable whose value make passed as `--set KEY=...`, so the value's
    origin reads `TRAIN` rather than `--set`; `TRAIN@last` (a value make kept from its last call)
    reads `TRAIN in the last make call`."""
    out = {}
    for item in os.environ.get(MAKE_VARIABLES_ENV, "").split():
        key, _, name = item.partition("=")
        name, _, tag = name.partition("@")
        if key and name.isidentifier():
            out[key] = f"{name} in the last make call" if tag == "last" else name
    return out


def _from_command_line(source: str) -> bool:
    return source.startswith("--") or source in make_variables().values()


def _apply_override(data: dict[str, Any], key: str, value: Any, origin: dict[str, str], source: str = "--set") -> None:
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
            origin[".".join(parts[: i + 1])] = source  # a section the override created
        elif not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            raise UserError(f"{source} {_shown(key)}: {_shown(prefix)} is a value, not a section")
        node = child
    node[parts[-1]] = value
    origin[key] = source
    _mark(value, origin, source, key + ".")


def _describe(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"must be one of {expected}, got {_short(error.get('input'))}"
    msg = error["msg"].removeprefix("Value error, ")
    if kind in {"value_error"}:
        return msg
    return f"{msg[0].lower()}{msg[1:]}, got {_short(error.get('input'))}"


def _shown(text: str) -> str:
    """User text in an error line: as typed, or quoted when it holds a newline or the like."""
    return text if text.isprintable() else repr(text)


def _short(value: Any, limit: int = 60) -> str:
    """repr of a value, cut to keep an error on one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dotted(loc: tuple[Any, ...]) -> str:
    """A location as a dotted key; a part that is not a plain word is shown quoted."""
    return ".".join(str(p) if re.fullmatch(r"[\w\[\]-]+", str(p)) else repr(str(p)) for p in loc)


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the section that `loc` points into."""
    for part in loc:
        info = model.model_fields.get(str(part))
        ann = getattr(info, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return list(model.model_fields)


def validate(cls: type[R], data: dict[str, Any], path: Path, origin: dict[str, str]) -> R:
    """Validate into `cls`; every problem becomes one line naming the file and dotted key."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = tuple(err["loc"])
            where, dotted = _where(origin, path, ".".join(str(p) for p in loc)), _dotted(loc)
            if err["type"] == "extra_forbidden":
                hint = did_you_mean(str(loc[-1]), _fields_at(cls, loc[:-1]))
                lines.append(f"{where}: {dotted} is not a recipe key{hint}")
            else:
                lines.append(f"{where}: {dotted} {_describe(err)}")
        raise UserError(*lines) from None


def load(
    path: str | Path,
    cls: type[R],
    overrides: tuple[str, ...] | list[str] = (),
) -> Loaded[R]:
    path = Path(path)
    origin: dict[str, str] = {}
    data = _load_chain(path, origin)
    by_make = make_variables()
    for item in overrides:
        key, value = parse_override(item)
        _apply_override(data, key, value, origin, source=by_make.get(key, "--set"))
    _refuse_other_kind(cls, data, path)
    recipe = validate(cls, data, path, origin)
    return Loaded(recipe, path, data, origin)


def _refuse_other_kind(cls: type[RoleRecipe] | type[PipelineRecipe], data: dict[str, Any], path: Path) -> None:
    """A role recipe given where a pipeline recipe belongs (or the reverse): say so, once."""
    if cls is PipelineRecipe and "role" in data:
        raise UserError(f"{display(path)} is a role recipe (it has role:); this command takes a pipeline recipe such as recipes/pipeline.yaml")
    if cls is RoleRecipe and "role" not in data and {"teacher", "inference", "data"} & set(data):
        raise UserError(f"{display(path)} is a pipeline recipe; this command takes a role recipe such as recipes/answer.yaml")


def default_role_recipe(role: str, variant: str | None = None) -> Path:
    """recipes/<role>.yaml, or recipes/<variant>-<role>.yaml (`RECIPE=tiny`)."""
    return project_root() / "recipes" / (f"{variant}-{role}.yaml" if variant else f"{role}.yaml")


def load_role(
    role: str, recipe: str | Path | None = None, overrides: tuple[str, ...] | list[str] = ()
) -> Loaded[RoleRecipe]:
    """Load a role recipe and check it is for `role`."""
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}: choose answer or evaluate{did_you_mean(role, ROLES)}")
    loaded = load(recipe or default_role_recipe(role), RoleRecipe, overrides)
    if loaded.recipe.role != role:
        raise UserError(
            f"{loaded.where('role')}: role is {loaded.recipe.role}, but this command is for the {role} model"
        )
    return loaded


def command_for(loaded: Loaded[RoleRecipe], command: str) -> str:
    """`orchestrator COMMAND ROLE`, with `--recipe` when the recipe is not the role's default,
    so a hint followed literally acts on the same recipe."""
    role = loaded.recipe.role
    same = loaded.path.resolve() == default_role_recipe(role).resolve()
    return f"orchestrator {command} {role}" + ("" if same else f" --recipe {display(loaded.path)}")


def load_pipeline(
    recipe: str | Path | None = None, overrides: tuple[str, ...] | list[str] = ()
) -> Loaded[PipelineRecipe]:
    return load(recipe or project_root() / "recipes" / "pipeline.yaml", PipelineRecipe, overrides)


# ---------------------------------------------------------------- the command line


def route_overrides(
    overrides: tuple[str, ...] | list[str], *, role: bool = True, pipeline: bool = True
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split `--set` items by top-level key into (role recipe items, pipeline recipe items),
    for a command that reads a role recipe, a pipeline recipe, or both."""
    sections = {
        **({k: "role" for k in RoleRecipe.model_fields} if role else {}),
        **({k: "pipeline" for k in PipelineRecipe.model_fields} if pipeline else {}),
    }
    routed: dict[str, list[str]] = {"role": [], "pipeline": []}
    for item in overrides:
        key, _ = parse_override(item)
        top = key.split(".")[0]
        if top not in sections:
            other = {*RoleRecipe.model_fields, *PipelineRecipe.model_fields} - set(sections)
            elsewhere = " (a key of the other kind of recipe, which this command does not read)" if top in other else ""
            raise UserError(
                f"--set {_shown(item)}: {_shown(top)} is not a recipe key{elsewhere}; "
                f"valid keys start with {', '.join(sorted(sections))}{did_you_mean(top, sections)}"
            )
        routed[sections[top]].append(item)
    return tuple(routed["role"]), tuple(routed["pipeline"])


def with_flags(loaded: Loaded[R], flags: dict[str, tuple[str, Any]]) -> Loaded[R]:
    """`loaded` with command-line options folded in: dotted key -> (flag, value); a None value
    is a flag not given. Each value is validated as it is (no round trip through text) and
    its origin is the flag, so an error names what the user typed."""
    given = {dotted: pair for dotted, pair in flags.items() if pair[1] is not None}
    if not given:
        return loaded
    data, origin = copy.deepcopy(loaded.raw), dict(loaded.origin)
    for dotted, (flag, value) in given.items():
        _apply_override(data, dotted, value, origin, source=flag)
    recipe = validate(type(loaded.recipe), data, loaded.path, origin)
    return Loaded(recipe, loaded.path, data, origin)
