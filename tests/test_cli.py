"""What `orchestrator COMMAND --help` tells: only what applies to that command."""

from __future__ import annotations

import pytest

# (command, said in its help, not said)
HELP = [
    (["render"], "runs/<name>/train.yaml", "runs/<role>/"),
    (["merge"], "merge.export_device=cpu", "teacher.keep"),
    (["infer"], "inference.votes=3", "teacher.keep"),
    (["dataset"], "teacher.keep=all", None),
    (["distill"], "Only the first N problems", "first N questions"),
    (["infer"], "Only the first N problems", None),
    (["eval"], "--limit", None),
    (["score"], "default: data.gold", None),
]


@pytest.mark.parametrize(("command", "said", "not_said"), HELP)
def test_help_says_what_applies(cli, command: list[str], said: str, not_said: str | None) -> None:
    code, out, _ = cli(*command, "--help")
    text = " ".join(out.split())  # click wraps lines
    assert code == 0 and said in text
    assert not_said is None or not_said not in text


def test_check_says_when_the_base_model_is_missing(project, cli) -> None:
    code, out, err = cli("check", "answer", "--recipe", "recipes/tiny-answer.yaml", "--set", "model.path=models/nope")
    assert code == 0 and out.startswith("ok  answer:")
    assert err == (f"Warning: answer: no base model in {project}/models/nope (model.path, from --set): "
                   "`orchestrator download answer --recipe recipes/tiny-answer.yaml` fetches it, or fix model.path; "
                   "the served prompt is checked against the training prompt once its tokenizer is there\n")
