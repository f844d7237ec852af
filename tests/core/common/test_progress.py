"""What a quiet run shows of llamafactory-cli's output: eval losses, the training summary, warnings,
errors (the running loss is on the step bar); -v shows all."""

from __future__ import annotations

import pytest

from orchestrator.core.common.progress import VERBOSE_ENV, clean, worth_showing

LINES = [
    # (line as llamafactory-cli / transformers print it, shown when quiet)
    ("{'loss': 2.3412, 'grad_norm': 1.52, 'learning_rate': 9e-05, 'epoch': 0.5}", False),  # on the step bar
    ("{'eval_loss': 2.1, 'eval_runtime': 0.3, 'epoch': 1.0}", True),
    ("{'train_runtime': 12.3, 'train_samples_per_second': 8.1, 'train_loss': 2.2, 'epoch': 3.0}", True),
    ("[WARNING|2026-11-25 13:01:02] llamafactory.hparams.parser:148 >> We recommend enable mixed precision", True),
    ("[ERROR|2026-11-25 13:01:02] llamafactory.data.loader:55 >> Cannot find dataset", True),
    ("/x/site-packages/torch/utils/data.py:12: UserWarning: This DataLoader will create 4 worker processes", True),
    ("Traceback (most recent call last):", True),
    ("ValueError: Undefined dataset train_answer_instruct in dataset_info.json.", True),
    ("[INFO|2026-11-25 13:01:02] llamafactory.data.template:143 >> Add <|im_end|> to stop words.", False),
    ("[INFO|tokenization_utils_base.py:2012] 2026-11-25 >> loading file vocab.json", False),
    ("input_ids:", False),
    ("[151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13]", False),
    ("inputs:", False),
    ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>", False),
    ("Running tokenizer on dataset (num_proc=4):  50%|█████     | 56/113 [00:01<00:00, 50.2 examples/s]", False),
    (" 40%|████      | 48/120 [00:03<00:05, 14.1it/s]", False),
    ("***** Running training *****", False),
    ("", False),
    ("   ", False),
    ("an error-free run", False),  # the word inside another word is not a log level
    # as train.log holds them: tqdm's cursor-up code before the eval dict
    ("\x1b[A{'eval_loss': '8.085', 'eval_runtime': '0.097', 'epoch': '2.727'}", True),
    ("\x1b[A\x1b[A{'train_runtime': '9.1', 'train_loss': '8.2', 'epoch': '10.0'}", True),
    # torch's warning on every CPU run: noise, kept in the log only
    ("/x/torch/utils/data/dataloader.py:759: UserWarning: 'pin_memory' argument is set as true but no "
     "accelerator is found, then device pinned memory won't be used.", False),
    # gptqmodel's banner, printed by any training once it is installed (make setup-quant)
    ("WARN  Python GIL is enabled: Multi-gpu quant acceleration for MoE models is sub-optimal and multi-core "
     "accelerated cpu packing is also disabled.", False),
]


@pytest.mark.parametrize(("line", "shown"), LINES)
def test_quiet_shows_losses_warnings_and_errors(line: str, shown: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    assert worth_showing(line) is shown


@pytest.mark.parametrize(("line", "shown"), LINES)
def test_verbose_shows_every_line_but_bar_redraws(line: str, shown: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VERBOSE_ENV, "1")
    noise = "pin_memory" in line or "Python GIL is enabled" in line
    assert worth_showing(line) is (bool(line.strip()) and "%|" not in line and not noise)


def test_verbose_flag_sets_the_environment(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv(VERBOSE_ENV, "0")  # quiet, and restored after the test (-v sets it for the process)
    code, _, err = cli("-v", "data", "check", "no-such-file.jsonl")
    assert code == 2 and "no-such-file.jsonl" in err
    assert os.environ.get(VERBOSE_ENV) == "1"


def test_shown_lines_lose_escape_codes() -> None:
    assert clean("\x1b[A{'eval_loss': '8.085'}") == "{'eval_loss': '8.085'}"


@pytest.mark.parametrize(("updates", "lines"), [
    ([120], 1),          # the last state printed by a refresh is not printed again by close
    ([60, 60], 2),       # 60 printed, then 120 by close
    ([], 1),             # nothing printed yet: close prints the state
    ([120, 0, 0], 1),    # refreshed while nothing moved (a trainer saving its model): no repeated line
])
def test_log_bar_prints_its_last_state_once(updates: list[int], lines: int, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.core.common import progress

    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    b = progress.LogBar(120, "train", "step")
    for n in updates[:-1]:
        b.update(n)
    if updates:
        b.n += updates[-1]
        b.refresh()
    b.close()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == lines and err[-1].startswith(f"[train] {sum(updates)}/120 step")
