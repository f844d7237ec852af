"""benchmarks/image_check.sh (`make image-check`, opt-in: minutes and gigabytes, run by hand): on a
machine without podman, runc or debootstrap it refuses in one line that names what is missing,
before building or downloading anything."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import REPO


@pytest.mark.parametrize("hidden", [("podman",), ("podman", "debootstrap")])
def test_image_check_names_the_missing_tools_in_one_line(tmp_path: Path, hidden: tuple[str, ...]) -> None:
    tools = tmp_path / "bin"  # a PATH with the shell's tools and runc/podman/debootstrap, less `hidden`
    tools.mkdir()
    for name in ("dirname", "id", "mkdir", *{"podman", "runc", "debootstrap"} - set(hidden)):
        (tools / name).symlink_to(shutil.which(name) or "/bin/true")
    done = subprocess.run([shutil.which("bash"), str(REPO / "benchmarks" / "image_check.sh")],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": str(tools)})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("Error: image-check needs podman, runc and debootstrap; missing: "
                           f"{' '.join(sorted(hidden, key=['podman', 'runc', 'debootstrap'].index))} "
                           "(as root: apt-get install podman runc debootstrap)\n")
