"""Subprocesses we start: an argument list (never a shell string), their own process group,
output streamed under the stage name and kept in a log, and always reaped: on success, failure,
timeout or Ctrl-C the whole group is terminated, then killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import StageFailed, UserError

TAIL_LINES = 30


@dataclass
class Finished:
    returncode: int
    tail: list[str]
    seconds: float


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left; reap the leader."""
    if proc.poll() is None or _group_alive(proc.pid):
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if proc.poll() is not None and not _group_alive(proc.pid):
                    break
                time.sleep(0.05)
            else:
                continue
            break
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def run(
    cmd: list[str],
    *,
    stage: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
) -> Finished:
    """Run `cmd` to the end, each output line to `log_path` and to `on_line`.
    Raises StageFailed on timeout; the caller decides what a non-zero exit means."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    start = time.monotonic()
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_clean_env(env),
            cwd=cwd,
            start_new_session=True,
        )
        timer = None
        timed_out = threading.Event()
        if timeout:
            def _expire() -> None:
                timed_out.set()
                _stop_group(proc, grace=5.0)

            timer = threading.Timer(timeout, _expire)
            timer.daemon = True
            timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                # tqdm redraws with \r: keep the last state of the line only
                line = line.rsplit("\r", 1)[-1]
                log.write(line + "\n")
                tail.append(line)
                if on_line:
                    on_line(line)
            proc.wait()
        except BaseException:
            _stop_group(proc)
            raise
        finally:
            if timer:
                timer.cancel()
            if _group_alive(proc.pid):
                _stop_group(proc, grace=2.0)
    seconds = time.monotonic() - start
    if timed_out.is_set():
        raise StageFailed(
            f"{stage}: stopped after {timeout:.0f} s (timeout); its log: {log_path}",
            *[f"  {line}" for line in list(tail)[-5:]],
        )
    return Finished(proc.returncode, list(tail), seconds)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_host(host: str, what: str) -> None:
    """Warn when a server of ours is about to listen beyond loopback."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        import click

        click.echo(f"Warning: {what} listens on {host}: reachable from other machines.", err=True)


class Server:
    """A long-running subprocess (llamafactory-cli api / webui) as a context manager:
    started in its own process group, ready when `ready_url` answers 200, always stopped."""

    def __init__(
        self,
        cmd: list[str],
        *,
        stage: str,
        log_path: Path,
        ready_url: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        startup_timeout: float = 600.0,
        headers: dict[str, str] | None = None,
    ):
        self.cmd, self.stage, self.log_path = cmd, stage, log_path
        self.ready_url, self.env, self.cwd = ready_url, env, cwd
        self.startup_timeout = startup_timeout
        self.headers = headers or {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("a", encoding="utf-8")
        self._log.write(f"$ {' '.join(self.cmd)}\n")
        self._log.flush()
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_clean_env(self.env),
            cwd=self.cwd,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        request = urllib.request.Request(self.ready_url, headers=self.headers)
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise StageFailed(
                    f"{self.stage}: exited with code {self.proc.returncode} before it was ready; its log: {self.log_path}",
                    *[f"  {line}" for line in self.tail(8)],
                )
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        raise StageFailed(f"{self.stage}: not ready after {self.startup_timeout:.0f} s; its log: {self.log_path}")

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        return [line.rsplit("\r", 1)[-1] for line in lines[-n:]]

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)
            self.proc = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def require_free_port(host: str, port: int, what: str, flag: str = "--port") -> None:
    if not port_free(host, port):
        raise UserError(f"{what}: port {port} on {host} is taken; stop what uses it or pick another with {flag} N")
