"""`orchestrator webui`: LlamaBoard opens prefilled from a recipe, read back from the page in a
real headless Chromium (Debian's `chromium`), with no click."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

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
        "output_dir": str(project / "runs" / recipe.run_name / "adapter"),
    }


def as_recipe_types(page: dict, want: dict) -> dict:
    """Page text as numbers where the recipe has numbers."""
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
