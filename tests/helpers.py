"""What several test modules share: competition files, teacher flags, submissions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from fake_openai import expected_letter
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parent.parent
# tiny-answer.yaml (which tiny-evaluate.yaml extends) edited to serve base + adapter: no merge
ADAPTER_ONLY = ("serve:\n  port: 8011\n", "serve:\n  port: 8011\n  weights: adapter\n")
# the property tests' budget: many examples, no per-example deadline on a loaded machine
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def make_train(path: Path, problems: int = 4, per_problem: int = 3) -> Path:
    """Questions whose gold letter is what the fake server's default reply will say."""
    from orchestrator.core.data.competition import Question
    from orchestrator.core.data.prompts import answer_prompt

    lines = []
    for p in range(problems):
        questions = []
        for i in range(per_problem):
            options = [f"选项{p}-{i}-{k}" for k in range(4)]
            q = Question(f"t{p}", i, f"题目 {p}：一些事实。", f"选择题 {i + 1}：\n问题 {p}-{i}?", tuple(options))
            questions.append({"question": q.question, "options": options, "answer": expected_letter(answer_prompt(q))})
        lines.append(json.dumps({"id": f"t{p}", "problem": f"题目 {p}：一些事实。", "questions": questions}, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def teacher_flags(url: str, **extra: object) -> tuple[str, ...]:
    sets = {"teacher.base_url": url, "teacher.model": "fake-model", "teacher.preload": "[]", "teacher.concurrency": 4, **extra}
    return tuple(f"{k}={v}" for k, v in sets.items())


SHAPE = [[4], [3, 5], [4, 4, 4], [2], [7, 3]]


def write_competition(path: Path, shape: list[list[int]] = SHAPE) -> list[str]:
    """A competition file; question j of problem i reads `问题i-j` (a marker faults can target)."""
    lines = []
    for i, options in enumerate(shape):
        questions = [
            {"question": f"选择题 {j + 1}:\n问题{i}-{j}：谁说了真话？", "options": [f"选项{i}{j}{k}" for k in range(n)]}
            for j, n in enumerate(options)
        ]
        problem = {"id": f"p{i:03d}", "problem": f"题目{i}：甲乙丙三人各说一句话。", "questions": questions}
        lines.append(json.dumps(problem, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [f"p{i:03d}#{j}" for i, options in enumerate(shape) for j in range(len(options))]


def marker(qid: str) -> str:
    """The text only question `qid` of write_competition has."""
    problem, index = qid.split("#")
    return f"问题{int(problem[1:])}-{index}："


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def row(table: str, name: str) -> str:
    """The value of a row of a printed summary table."""
    return next(line[len(name):].strip() for line in table.splitlines() if line.startswith(name + "  "))


def by_id(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in read_jsonl(path)}


def qids(shape: list[int]) -> list[str]:
    return [f"p{i:03d}#{j}" for i, n in enumerate(shape) for j in range(n)]


def write_file(path: Path, shape: list[int], answers: dict[str, str | None]) -> Path:
    """A competition file (4 options a question) with `answers` by question id."""
    lines = []
    for i, n in enumerate(shape):
        questions = [{"question": f"问题{i}-{j}", "options": list("甲乙丙丁"), "answer": answers.get(f"p{i:03d}#{j}")}
                     for j in range(n)]
        lines.append(json.dumps({"id": f"p{i:03d}", "problem": f"题目{i}", "questions": questions},
                                ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path



def adapter_variant(project: Path, name: str, rank: int, backend: str = "vllm", extends: str = "tiny-answer.yaml",
                    serve: dict | None = None, **serve_args: object) -> Path:
    """recipes/<name>.yaml extending `extends`, served by `backend` (more serve: keys in `serve`),
    with an adapter of rank `rank` on disk (its config and a weights file, no real weights)."""
    import yaml

    recipe = {"extends": extends, "name": name, "dataset": {"name": f"train_{name.replace('-', '_')}"},
              "train": {"lora_rank": rank}, "serve": {"infer_backend": backend, "args": serve_args, **(serve or {})}}
    path = project / "recipes" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    adapter = project / "runs" / name / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}), encoding="utf-8")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights of " + name.encode())
    return path


# A stand-in for vLLM's server (`python -m vllm.entrypoints.openai.api_server`, as the project starts
# it from $ORCHESTRATOR_VLLM_PYTHON), for adapters with no real weights (adapter_variant): the real
# engine (tests/e2e/test_vllm_engine.py) cannot load them. A loopback OpenAI server listing the adapters it was given; each
# adapter answers its own fixed letter (A for the first listed, B for the next...). It renders
# each request as vLLM's OpenAI server does: the messages through --chat-template (a file, or
# the template text), else the base tokenizer's own template, generation prompt on, then
# tokenized without special tokens; with no template at all it answers 400, as vLLM does.
# Every command line it was started with is noted in CALLS, the model each request named in
# CALLS-models, the rendered prompt's token ids in CALLS-prompts.
FAKE_VLLM = """#!{python}
import json, os, sys, threading
sys.path.insert(0, {tests!r})
from fake_openai import FakeOpenAI
from transformers import AutoTokenizer
args = sys.argv[1:]
with open({calls!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
port = int(args[args.index("--port") + 1])
if "--lora-modules" in args:
    start = args.index("--lora-modules") + 1
    names = [m.split("=")[0] for m in args[start:] if "=" in m and not m.startswith("--")]
else:
    names = [args[args.index("--served-model-name") + 1]]
letters = dict(zip(names, "ABCDEFG"))
tokenizer = AutoTokenizer.from_pretrained(args[args.index("--model") + 1], trust_remote_code=True)
template = args[args.index("--chat-template") + 1] if "--chat-template" in args else None
if template is not None and os.path.isfile(template):
    template = open(template, encoding="utf-8").read()
template = template or tokenizer.chat_template
lock = threading.Lock()
def reply(prompt, request):
    text = tokenizer.apply_chat_template(request["messages"], chat_template=template, add_generation_prompt=True,
                                         tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if prompt == "1+1=":  # the readiness probe (servers.READY_PROMPT): not a question
        return "2"
    with lock, open({calls!r}.replace(".jsonl", "-models.jsonl"), "a") as f:
        f.write(json.dumps(request["model"]) + "\\n")
    with lock, open({calls!r}.replace(".jsonl", "-prompts.jsonl"), "a") as f:
        f.write(json.dumps({{"model": request["model"], "user": prompt, "ids": ids}}, ensure_ascii=False) + "\\n")
    return "### 可能的结果:\\n答案是：" + letters[request["model"]]
NO_TEMPLATE = ("400", None)  # vLLM: "As of transformers v4.44, default chat template is no longer allowed ..."
server = FakeOpenAI(port=port, models=names, reply=reply, faults=None if template else (lambda n, p: NO_TEMPLATE))
server.start()
threading.Event().wait()
"""


def install_fake_vllm(bin_dir: Path, calls: Path) -> Path:
    """Write the stand-in vLLM python into bin_dir (name it in $ORCHESTRATOR_VLLM_PYTHON); it notes its calls in `calls`."""
    import stat
    import sys

    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "vllm"
    script.write_text(FAKE_VLLM.format(python=sys.executable, tests=str(REPO / "tests"), calls=str(calls)),
                      encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def vllm_calls(calls: Path) -> tuple[list[list[str]], list[str]]:
    """The stand-in's command lines, and the model each request to it named, in order."""
    models = calls.with_name(calls.name.replace(".jsonl", "-models.jsonl"))
    return ([json.loads(x) for x in calls.read_text(encoding="utf-8").splitlines()] if calls.exists() else [],
            [json.loads(x) for x in models.read_text(encoding="utf-8").splitlines()] if models.exists() else [])


def vllm_prompts(calls: Path) -> list[dict]:
    """Each request the stand-in rendered: {model, user (the user text), ids (the prompt's tokens)}."""
    prompts = calls.with_name(calls.name.replace(".jsonl", "-prompts.jsonl"))
    return read_jsonl(prompts) if prompts.exists() else []


def training_encoder(recipe_path: Path | str, role: str):
    """LLaMA-Factory's training encoding of one user turn for a role recipe, as a function of the
    user text: its rendered train YAML parsed as `llamafactory-cli train` parses it, its tokenizer
    and template loaded and fixed as training does, then Template.encode_oneturn."""
    import tempfile

    from orchestrator.core.llamafactory.chat_template import fixed_template
    from orchestrator.core.llamafactory.configs import render_role
    from orchestrator.core.llamafactory.parser import gpus_hidden, import_parser, read_rendered
    from orchestrator.core.recipes.loading import load_role

    parser = import_parser()
    from llamafactory.model import load_tokenizer

    loaded = load_role(role, recipe_path)
    args = read_rendered(render_role(loaded).train_yaml)
    args.pop("deepspeed", None)
    for key in ("bf16", "fp16"):
        args.pop(key, None)
    with tempfile.TemporaryDirectory() as tmp, gpus_hidden():
        model_args, data_args, *_ = parser.get_train_args({**args, "output_dir": tmp, "use_cpu": True})
    tokenizer = load_tokenizer(model_args)["tokenizer"]
    template = fixed_template(tokenizer, data_args)

    def encode(user: str) -> list[int]:
        turn = [{"role": "user", "content": user}, {"role": "assistant", "content": ""}]
        return list(template.encode_oneturn(tokenizer, turn)[0])

    return encode


def write_base(project: Path, quantization: dict | None, name: str = "base") -> Path:
    """A base model folder with only a config.json (Qwen2 keys; a quantization_config if given)."""
    base = project / "models" / name
    base.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64}
    if quantization is not None:
        config["quantization_config"] = quantization
    (base / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return base


GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128}


def with_makefile(project: Path) -> Path:
    """`project` ready for `make`: the Makefile, pyproject.toml (older than the install stamp,
    so nothing is reinstalled) and this checkout's .venv."""
    shutil.copy(REPO / "Makefile", project)
    shutil.copy(REPO / "pyproject.toml", project)
    os.utime(project / "pyproject.toml", (0, 0))
    (project / ".venv").symlink_to(REPO / ".venv")
    return project


def make(project: Path, *args: str, timeout: float = 600,
         environ: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`make ARGS...` in `project`, in this process's environment (or `environ`)."""
    return subprocess.run(["make", "--no-print-directory", *args], cwd=project, capture_output=True, text=True,
                          timeout=timeout, env={**(os.environ if environ is None else environ),
                                                "ORCHESTRATOR_HOME": str(project)})


def trained_copy(made: Path, to: Path, *, without: tuple[str, ...] = ()) -> Path:
    """The project of the session's `make eval RECIPE=tiny` (conftest's made_eval: both tiny models
    distilled, trained and merged once, read only) copied to `to` as it is, timestamps kept (so
    make finds it up to date), less the project-relative paths in `without`: a test whose subject
    is not training starts from the trained pair instead of training its own. Its .venv and
    models/tiny-qwen2 stay links (to this checkout's venv, to the session's tiny model)."""
    skip = {made / rel for rel in without}
    shutil.copytree(made, to, symlinks=True, ignore=lambda folder, names: [n for n in names if Path(folder) / n in skip])
    return to


def trained_runs(made: Path, project: Path, *names: str, merged: bool = True) -> None:
    """runs/<name> of the session's trained pair (see trained_copy) copied into `project`, its
    merged/ model left out unless `merged`."""
    for name in names:
        shutil.copytree(made / "runs" / name, project / "runs" / name, symlinks=True,
                        ignore=None if merged else shutil.ignore_patterns("merged"))


# A real model's config.json (the Hub's), for what reads a model's shape without its weights
QWEN2_72B_AWQ = {  # Qwen/Qwen2-72B-Instruct-AWQ
    "architectures": ["Qwen2ForCausalLM"], "hidden_size": 8192, "intermediate_size": 29568,
    "num_attention_heads": 64, "num_hidden_layers": 80, "num_key_value_heads": 8, "vocab_size": 152064,
    "tie_word_embeddings": False, "torch_dtype": "float16",
    "quantization_config": {"bits": 4, "group_size": 128, "quant_method": "awq", "version": "gemm", "zero_point": True},
}
