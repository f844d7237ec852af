"""The recipe schema: every section a role recipe (`role: answer|evaluate`) or the pipeline
recipe may hold, typed and validated, unknown keys refused. A role recipe's `train:` and
`merge:` mappings hold LLaMA-Factory's own argument names, passed through verbatim."""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.core.common.api_keys import ENV_NAME_RULE, is_env_name

ROLES = ("answer", "evaluate")
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


class PreferenceSection(Section):
    """Preference tuning on the SFT Answer model's own replies (train.stage: dpo;
    orchestrator/stages/preference.py): a pair is a reply with the gold letter (chosen) and one
    with another letter or none (rejected), to the same training question."""

    sft_recipe: str | None = None  # the SFT Answer recipe: its model is sampled, trained on and the reference
    samples: int = Field(4, ge=1, le=64)  # replies per training question
    temperature: float = Field(0.9, gt=0.0, le=2.0)
    max_tokens: int | None = Field(None, ge=1)  # default: inference.max_tokens of the pipeline recipe
    pairs_per_question: int = Field(1, ge=1, le=16)  # each right reply paired with another wrong one
    # where none of the samples is right: no pair (model), or the teacher's verified solution as chosen
    chosen: Literal["model", "teacher"] = "model"
    # how the SFT model is the reference: DPO trains a new adapter on its merged model (merged), or
    # goes on training its adapter with ref_model + ref_model_adapters (adapter: a quantized base)
    reference: Literal["merged", "adapter"] = "merged"


PREFERENCE_STAGES = ("dpo",)  # LLaMA-Factory's train.stage values a preference set feeds


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


class KeepSection(Section):
    # merged (or quantized) copies of earlier trainings kept in runs/<name>/kept/ besides the
    # current one (a 7B merge is ~15 GB); adapters are always kept, a removed copy is merged again
    merged: int = Field(1, ge=0)


class RoleRecipe(Section):
    role: Literal["answer", "evaluate"]
    name: str | None = None  # run folder runs/<name>/; default: the role
    model: ModelSection = ModelSection()
    dataset: DatasetSection = DatasetSection()
    fewshot: FewshotSection = FewshotSection()  # read for the Answer role only
    preference: PreferenceSection = PreferenceSection()  # train.stage: dpo only
    train: dict[str, Any] = Field(default_factory=dict)
    merge: dict[str, Any] = Field(default_factory=dict)
    serve: ServeSection = ServeSection()
    distributed: DistributedSection = DistributedSection()
    keep: KeepSection = KeepSection()

    @field_validator("name")
    @classmethod
    def _plain_run_name(cls, v: str | None) -> str | None:  # (name@variant: a --set variant; name~identity: a kept training)
        if not _plain(v and v.replace("@", "-", 1).replace("~", "-", 1)):
            raise ValueError("a run name is a plain word (no path): the run goes to runs/<name>/")
        return v

    @model_validator(mode="after")
    def _subsample_has_its_own_dataset(self) -> RoleRecipe:
        if self.dataset.subsample < 1 and self.dataset_name == f"train_{self.role}_instruct":
            raise invalid("dataset.subsample", f"{self.dataset.subsample} needs a dataset.name of its own (e.g. "
                          f"train_{self.run_name.replace('-', '_')}), so this variant's subset does not overwrite "
                          f"{self.dataset_name}", self.dataset.subsample)
        return self

    @model_validator(mode="after")
    def _preference_fits(self) -> RoleRecipe:
        if self.preference.sft_recipe and not self.is_preference:
            raise invalid("preference.sft_recipe", "is for a preference training: set train.stage: dpo too "
                          "(or remove preference.sft_recipe)", self.preference.sft_recipe)
        if self.is_preference and self.role != "answer":
            raise invalid("train.stage", "dpo is for the Answer role: its pairs are the Answer model's own replies",
                          self.train.get("stage"))
        if self.is_preference and self.dataset_name == f"train_{self.role}_instruct":
            raise invalid("dataset.name", f"a preference training needs a dataset.name of its own (e.g. "
                          f"pref_{self.run_name.replace('-', '_')}), so its pairs do not overwrite the SFT set "
                          f"{self.dataset_name}", self.dataset.name)
        return self

    @property
    def is_preference(self) -> bool:
        """Trained on pairs (train.stage: dpo): its set is a ranking set of chosen/rejected replies."""
        return self.train.get("stage") in PREFERENCE_STAGES

    @property
    def has_eval_set(self) -> bool:
        """Its held-out problems are a set evaluated as training goes (val_<name>): not a
        preference set's, whose held-out questions are never asked."""
        return self.dataset.val_size > 0 and not self.is_preference

    @property
    def run_name(self) -> str:
        return self.name or self.role

    @property
    def dataset_name(self) -> str:
        return self.dataset.name or f"train_{self.role}_instruct"

    @property
    def dataset_variant(self) -> str:
        """The hash of a --set variant's built set (<name>.<hash>, recipes/loading.variant_names); "" for the recipe's own."""
        found = re.search(r"\.([0-9a-f]{8})$", self.dataset_name)
        return found.group(1) if found else ""

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
