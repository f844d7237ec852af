"""LlamaBoard's saved arguments (llamaboard_config/<time>.yaml: the page's element ids, such as
`train.learning_rate: '0.005'`, text as the page holds it, `train.extra_args` a JSON string) turned
into the arguments a training started from the page would run, by LLaMA-Factory's own
`Runner._parse_train_args` (webui/runner.py), then cleaned as its `save_cmd` cleans them. The page
saves neither `top.model_path` nor `train.output_dir` (runner.py `_build_config_dict`)."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.core.common.errors import UserError

# The page's tabs: a save's keys are `<tab>.<element>` (webui/manager.py add_elems).
TABS = ("top", "train", "eval", "infer", "export")


def is_llamaboard_save(data: dict[str, Any]) -> bool:
    """A mapping keyed by the page's element ids, with the Train tab's among them."""
    keys = [str(k) for k in data]
    return bool(keys) and all(k.split(".", 1)[0] in TABS and "." in k for k in keys) and \
        any(k.startswith("train.") for k in keys)


class _ById:
    """The page's manager as `_parse_train_args` asks it: here an element is its id."""

    @staticmethod
    def get_elem_by_id(elem_id: str) -> str:
        return elem_id


def train_args(save: dict[str, Any], where: str) -> dict[str, Any]:
    """The arguments LlamaBoard would train with from this save; model_name_or_path is None
    (the page does not save it), output_dir a placeholder."""
    try:
        json.loads(str(save.get("train.extra_args", "{}")))
    except ValueError as e:
        raise UserError(f"{where}: train.extra_args is not valid JSON ({e}); fix it on the page and save again") from None
    from llamafactory.webui.common import _clean_cmd
    from llamafactory.webui.runner import Runner

    runner = Runner.__new__(Runner)
    runner.manager = _ById()
    data = {"top.model_path": None, "train.output_dir": "imported", **save}
    try:
        args = runner._parse_train_args(data)
    except KeyError as e:
        raise UserError(f"{where}: no {e.args[0]} among the saved arguments: saved by another LLaMA-Factory version "
                        "than this one's LlamaBoard? Save them again from `orchestrator webui`") from None
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: LlamaBoard cannot read these arguments ({e})") from None
    args.pop("output_dir", None)
    args.pop("cache_dir", None)  # the page's hub cache, from its user_config.yaml: not a training knob
    return _clean_cmd(args)
