"""`orchestrator`: one command per stage, each a thin shell over a plain function.

Each command loads and validates its recipes once, folds its flags in, and hands the typed
objects to its stage. Heavy imports happen inside the commands, so `orchestrator --help` is
instant; the commands live in this package's modules by what they work on.
"""

from __future__ import annotations

import os
import sys

import click

from orchestrator.cli import configs, data, experiments, inference, lf_world, models, run as run_command
from orchestrator.cli.options import echo_err
from orchestrator.core.common.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show the traceback of errors.")
@click.option("-v", "--verbose", is_flag=True, help="Stream all of llamafactory-cli's output (default: losses, warnings, errors).")
@click.version_option(package_name="orchestrator")
def cli(debug: bool, verbose: bool) -> None:
    """LLaMA-Factory recipes for the Answer + Evaluate reasoning pipeline."""
    # --debug is read by run(), around click: an error raised before this group runs is shown too
    if verbose:
        from orchestrator.core.common.progress import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"


for module in (configs, data, models, inference, lf_world, run_command, experiments):
    for command in module.COMMANDS:
        cli.add_command(command)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds every `with Server(...)` and running subprocess


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; our errors become `Error:` lines and an exit code, never a traceback."""
    args = sys.argv[1:] if argv is None else argv
    try:
        code = cli.main(args=args, prog_name="orchestrator", standalone_mode=False)
    except UserError as e:
        if "--debug" in args:
            raise
        for line in e.lines:
            echo_err(f"Error: {line}")
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        echo_err("Interrupted.")
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    return code if isinstance(code, int) else 0  # a command's ctx.exit(N) (`run --question`)


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(run())
