"""`orchestrator webui`: LlamaBoard opens prefilled from a recipe, read back from the page in a
real headless Chromium (Debian's `chromium`), with no click."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.core.common.process import free_port, port_free, url_host
from orchestrator.core.recipes.loading import load_role
from orchestrator.core.run_folders.role_paths import model_path
from orchestrator.stages.webui import launch_webui

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium: apt-get install --no-install-recommends chromium"
)

# LlamaBoard's English labels of the fields we check.
LABELS = {
    "model_name": "Model name",
    "model_path": "Model path",
    "template": "Chat template",
    "finetuning_type": "Finetuning method",
    "dataset_dir": "Data dir",
    "dataset": "Dataset",
    "learning_rate": "Learning rate",
    "num_train_epochs": "Epochs",
    "cutoff_len": "Cutoff length",
    "batch_size": "Batch size",
    "gradient_accumulation_steps": "Gradient accumulation",
    "lora_rank": "LoRA rank",
    "lora_alpha": "LoRA alpha",
    "lora_dropout": "LoRA dropout",
    "lora_target": "LoRA modules (optional)",
    "output_dir": "Output dir",
}

# The value a person sees in the first field with this label (the top bar, then the Train tab,
# which precede the other tabs in the page): dropdown text, the chips of a multiselect,
# a text box's or a slider's number.
READ_FIELD = """(label) => {
  const info = [...document.querySelectorAll('[data-testid="block-info"]')].find(s => s.textContent.trim() === label);
  if (!info) return null;
  const block = info.closest('.block');
  if (!block.querySelector('input[role=listbox]') && block.querySelector('.wrap-inner'))
    return [...block.querySelectorAll('.token > span')].map(t => t.textContent.trim());
  return block.querySelector('input[role=listbox], input[type=number], textarea').value;
}"""


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield b
        b.close()


def read_page(browser, url: str, screenshot: Path) -> dict:
    """Open the page, wait until its fields stop changing (LlamaBoard's load events), read them."""
    page = browser.new_page(viewport={"width": 1400, "height": 1500})
    try:
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("Learning rate", exact=True).wait_for(timeout=60_000)  # labels come with the load event

        def read() -> dict:
            return {key: page.evaluate(READ_FIELD, label) for key, label in LABELS.items()}

        values, deadline = read(), time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(1.0)
            again = read()
            if again == values:
                break
            values = again
        page.get_by_text("LoRA configurations", exact=True).click()  # for the screenshot only, after reading
        page.get_by_text("LoRA rank", exact=True).wait_for()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
        return values
    finally:
        page.close()


def running_in_group(pgid: int) -> list[int]:
    """Processes of group `pgid` that run (zombies left to a PID 1 that never reaps do not)."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        state, _, pgrp = stat[stat.rfind(b")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in (b"Z", b"X"):
            pids.append(int(entry))
    return pids


def expected(recipe, project: Path, model_name: str) -> dict:
    train = recipe.train
    return {
        "model_name": model_name,
        "model_path": str(model_path(recipe)),
        "template": recipe.model.template,
        "finetuning_type": train["finetuning_type"],
        "dataset_dir": str(project / "datasets"),
        "dataset": [recipe.dataset_name],
        "learning_rate": float(train["learning_rate"]),
        "num_train_epochs": float(train["num_train_epochs"]),
        "cutoff_len": float(train["cutoff_len"]),
        "batch_size": float(train["per_device_train_batch_size"]),
        "gradient_accumulation_steps": float(train["gradient_accumulation_steps"]),
        "lora_rank": float(train["lora_rank"]),
        "lora_alpha": float(train["lora_alpha"]),
        "lora_dropout": float(train["lora_dropout"]),
        "lora_target": train["lora_target"],
        "output_dir": "train_<time>",  # the page's own folder under saves/: never the recipe's adapter
    }


def as_recipe_types(page: dict, want: dict) -> dict:
    """Page text as numbers where the recipe has numbers; LlamaBoard's train_<time> folder as such."""
    page = {**page, "output_dir": re.sub(r"^train_\d{4}(-\d\d){5}$", "train_<time>", page["output_dir"] or "")}
    return {k: float(page[k]) if isinstance(want[k], float) and page[k] not in (None, "") else page[k] for k in want}


def open_and_check(
    browser, project: Path, role: str, recipe: str, overrides: tuple[str, ...], model_name: str, shot: str,
    host: str = "127.0.0.1",
) -> None:
    loaded = load_role(role, recipe, overrides)
    port = free_port(host)
    with launch_webui(loaded, port=port, host=host, block=False) as ui:
        assert ui.url == f"http://{url_host(host)}:{port}/"
        pid = ui.server.proc.pid
        assert running_in_group(pid)
        page = read_page(browser, ui.url, ARTIFACTS / shot)
    want = expected(loaded.recipe, project, model_name)
    assert as_recipe_types(page, want) == want
    assert (project / "runs" / loaded.recipe.run_name / "llamaboard" / "llamaboard_cache" / "user_config.yaml").exists()
    # stopped: nothing of the server's process group runs and the port is free again
    assert ui.server.proc is None
    assert not running_in_group(pid)
    assert port_free(host, port)


@pytest.mark.browser
@needs_chromium
@pytest.mark.xdist_group("browser")  # one chromium, the module's fixture
@pytest.mark.parametrize(
    "role, recipe, model_name",
    [("answer", "recipes/tiny-answer.yaml", "Custom"), ("evaluate", "recipes/evaluate.yaml", "Qwen2-7B-Instruct")],
)
def test_webui_opens_with_the_recipe(browser, project: Path, role: str, recipe: str, model_name: str) -> None:
    open_and_check(browser, project, role, recipe, (), model_name, f"webui-{role}.png")


@pytest.mark.browser
@needs_chromium
@pytest.mark.xdist_group("browser")  # one chromium, the module's fixture
def test_unknown_model_name_shows_custom_with_path_and_template(browser, project: Path) -> None:
    # LlamaBoard's own default for Custom is the `default` template: the recipe's must win.
    # On IPv6 loopback: gradio needs the address in brackets (before the fix, every port was "taken")
    overrides = ("model.name=my-own-qwen", "model.path=models/my-own-qwen", "model.template=qwen")
    open_and_check(browser, project, "answer", "recipes/tiny-answer.yaml", overrides, "Custom", "webui-custom.png",
                   host="::1")


def test_port_taken_is_one_error_line(project: Path, cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = cli("webui", "answer", "--recipe", "recipes/tiny-answer.yaml", "--port", port)
    assert (code, out) == (2, "")
    assert err == f"Error: webui: port {port} on 127.0.0.1 is taken; stop what uses it or pick another with --port N\n"
    assert not (project / "runs").exists()


@pytest.mark.parametrize("login", [{}, {"LLAMABOARD_USER": "me"}, {"LLAMABOARD_PASSWORD": "pw"}],
                         ids=["none", "user-only", "password-only"])
def test_beyond_loopback_needs_a_login(project: Path, cli, monkeypatch: pytest.MonkeyPatch, login: dict) -> None:
    """An exposed LlamaBoard lets anyone start trainings: refused without a gradio login."""
    for name in ("LLAMABOARD_USER", "LLAMABOARD_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in login.items():
        monkeypatch.setenv(name, value)
    code, out, err = cli("webui", "answer", "--recipe", "recipes/tiny-answer.yaml", "--host", "0.0.0.0")
    assert (code, out) == (2, "")
    assert err == ("Error: LlamaBoard would listen on 0.0.0.0 open to anyone who reaches it: ask for a password: "
                   "export LLAMABOARD_USER=<a user> LLAMABOARD_PASSWORD=<a password>, "
                   "or keep the default host 127.0.0.1\n")
    assert not (project / "runs").exists()


BOARD_RECIPE = """\
extends: tiny-answer.yaml
name: board
dataset:
  val_size: 0.0
train:
  max_steps: 2
  save_steps: 2
  logging_steps: 1
"""


def save_on_the_page(browser, url: str, learning_rate: str) -> None:
    """Type a learning rate into the page's Train tab and press "Save arguments"."""
    page = browser.new_page(viewport={"width": 1400, "height": 1500})
    try:
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("Learning rate", exact=True).wait_for(timeout=60_000)
        deadline = time.monotonic() + 30  # the recipe's values arrive with the load events
        while page.evaluate(READ_FIELD, "Max samples") is None or page.evaluate(READ_FIELD, "Epochs") != "3.0":
            assert time.monotonic() < deadline, "the page never showed the recipe's epochs"
            time.sleep(0.5)
        box = page.locator(".block", has=page.get_by_text("Learning rate", exact=True)).locator("textarea").first
        box.fill(learning_rate)
        box.press("Tab")
        page.get_by_role("button", name="Save arguments").click()
        page.get_by_text("Arguments have been saved at", exact=False).first.wait_for(timeout=30_000)
    finally:
        page.close()


@pytest.mark.browser
@pytest.mark.slow
@needs_chromium
@pytest.mark.xdist_group("browser")  # one chromium, the module's fixture
def test_llamaboard_round_trip(browser, tiny_project: Path, cli) -> None:
    """A save made on the real page becomes a recipe; a training started as the page starts it
    (LLaMA-Factory's runner: its arguments, save_cmd, `llamafactory-cli train FILE` in the page's
    folder) trains for real into its own folder, and importing it adopts its adapter: training with
    the imported recipe then trains nothing."""
    (tiny_project / "recipes" / "board-answer.yaml").write_text(BOARD_RECIPE, encoding="utf-8")
    rows = [{"instruction": f"问题 {i}", "input": "", "output": f"答案是：{'ABCD'[i % 4]}"} for i in range(8)]
    (tiny_project / "datasets" / "train_answer_instruct.json").write_text(json.dumps(rows, ensure_ascii=False))
    loaded = load_role("answer", "recipes/board-answer.yaml")
    workdir = tiny_project / "runs" / "board" / "llamaboard"
    with launch_webui(loaded, port=free_port(), block=False) as ui:
        save_on_the_page(browser, ui.url, "0.005")
    (save,) = (workdir / "llamaboard_config").glob("*.yaml")
    saved = yaml.safe_load(save.read_text(encoding="utf-8"))
    assert saved["train.learning_rate"] == "0.005" and "top.model_path" not in saved  # the page's own format

    code, out, err = cli("recipe", "import", save, "--role", "answer", "--recipe", "recipes/board-answer.yaml",
                         "--out", "recipes/page-answer.yaml")
    assert code == 0, err
    recipe = yaml.safe_load((tiny_project / "recipes" / "page-answer.yaml").read_text(encoding="utf-8"))
    assert recipe["extends"] == "board-answer.yaml" and recipe["name"] == "page-answer"
    assert recipe["train"]["learning_rate"] == 0.005

    # the training the page would start from this save, started as its runner starts it
    from llamafactory.webui.common import save_cmd

    from orchestrator.core.llamafactory.llamaboard_save import train_args

    args = {**train_args(saved, str(save)), "model_name_or_path": str(tiny_project / "models" / "tiny-qwen2"),
            "output_dir": "saves/Custom/lora/train_page", "preprocessing_num_workers": None}
    args = {k: v for k, v in args.items() if v is not None}
    env = {**os.environ, "LLAMABOARD_ENABLED": "1", "LLAMABOARD_WORKDIR": args["output_dir"],
           "DISABLE_VERSION_CHECK": "1", "NPROC_PER_NODE": "1"}
    cli_path = Path(sys.executable).parent / "llamafactory-cli"
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        config = save_cmd(args)
    finally:
        os.chdir(cwd)
    done = subprocess.run([str(cli_path), "train", config], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    trained = workdir / "saves" / "Custom" / "lora" / "train_page"
    assert (trained / "adapter_model.safetensors").is_file()
    assert not (tiny_project / "runs" / "board" / "adapter").exists()  # the recipe's model untouched

    code, out, err = cli("recipe", "import", trained / "training_args.yaml", "--role", "answer",
                         "--recipe", "recipes/board-answer.yaml", "--out", "recipes/page-trained-answer.yaml")
    assert code == 0, err
    assert "adopted" in out
    adopted = tiny_project / "runs" / "page-trained-answer" / "adapter" / "adapter_model.safetensors"
    assert adopted.read_bytes() == (trained / "adapter_model.safetensors").read_bytes()
    code, out, err = cli("train", "answer", "--recipe", "recipes/page-trained-answer.yaml")
    assert code == 0, err
    assert out.startswith("up to date: "), out  # the adopted manifest's identity is the recipe's training
    code, out, err = cli("runs")
    assert code == 0, err
    assert "page-trained-answer " in out  # the kept store lists the adopted training


def test_webui_says_where_the_page_saves_and_how_it_comes_back(project: Path) -> None:
    from orchestrator.stages.webui import llamaboard_values, where_the_page_saves

    loaded = load_role("answer", "recipes/tiny-answer.yaml")
    assert where_the_page_saves(loaded, project / "runs" / "tiny-answer" / "llamaboard") == [
        "Save arguments writes runs/tiny-answer/llamaboard/llamaboard_config/<time>.yaml; `orchestrator recipe "
        "import FILE --role answer --recipe recipes/tiny-answer.yaml` makes it a recipe",
        "Start trains into runs/tiny-answer/llamaboard/saves/<model>/<method>/train_<time>/ (never "
        "runs/tiny-answer/adapter); once finished, `orchestrator recipe import THAT_FOLDER/training_args.yaml "
        "--role answer --recipe recipes/tiny-answer.yaml` makes it a recipe and adopts its adapter",
    ]
    values = llamaboard_values(loaded.recipe)
    assert "train.output_dir" not in values and "output_dir" not in json.loads(values["train.extra_args"])
