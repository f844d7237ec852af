"""Subprocesses we start: an argument list (never a shell string), their own process group,
output streamed under the stage name and kept in a log, and always reaped: on success, failure,
timeout or Ctrl-C the whole group is terminated, then killed."""

from __future__ import annotations

import http.client
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from orchestrator.core.common.errors import StageFailed, UserError

TAIL_LINES = 30
TICK = 0.1  # how often `run` looks at its child while nothing is to be read


@contextmanager
def environ_set(name: str, value: str) -> Iterator[None]:
    """`name` set to `value` in this process (and the children it starts) for the block; as it was, after."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


class Clock:
    """Time as the helpers here read and wait it: monotonic seconds, and a sleep. Every deadline
    (a timeout, a grace period, the drain, a server's start-up) is measured with it; a test
    passes a clock that counts only the waits asked for (like Endpoint's `sleep`), so a loaded
    machine's stalls cannot make a bound on them flake."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


CLOCK = Clock()


@dataclass
class Finished:
    returncode: int
    tail: list[str]
    seconds: float


def _stop_group(proc: subprocess.Popen, grace: float = 10.0, clock: Clock = CLOCK) -> None:
    """SIGTERM the process group, then SIGKILL what is left; reap the leader. A second
    Ctrl-C during the grace period skips to SIGKILL, so nothing is left behind either way."""
    try:
        _signal_group(proc, signal.SIGTERM, grace, clock)
    except KeyboardInterrupt:
        _signal_group(proc, signal.SIGKILL, 5.0, clock)
        raise
    _signal_group(proc, signal.SIGKILL, 5.0, clock)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _signal_group(proc: subprocess.Popen, sig: int, wait: float, clock: Clock) -> None:
    """Send `sig` to the group unless it is gone; wait up to `wait` s for it to be gone."""
    if proc.poll() is not None and not _group_alive(proc.pid):
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    deadline = clock.now() + wait
    while clock.now() < deadline:
        if proc.poll() is not None and not _group_alive(proc.pid):
            return
        clock.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs. Zombies do not count: where PID 1 does
    not reap orphans (many containers), a dead grandchild stays a zombie for good."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                return True
        except (OSError, psutil.Error):  # gone meanwhile
            continue
    return False


def env_bin() -> str:
    """This Python environment's bin/ (where torchrun and llamafactory-cli live), unresolved:
    a virtualenv's python is a link out of it."""
    return os.path.dirname(os.path.abspath(sys.executable))


def _clean_env(extra: dict[str, str] | None) -> dict[str, str]:
    """Our environment for a subprocess, with this environment's bin/ first on PATH: LLaMA-Factory's
    launcher runs `torchrun` by name, and `make` runs .venv/bin/orchestrator without activating."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PATH"] = os.pathsep.join([env_bin(), *[p for p in env.get("PATH", "").split(os.pathsep) if p]])
    env.update(extra or {})
    return env


def _popen(cmd: list[str], stage: str, **kwargs: Any) -> subprocess.Popen:
    """Start `cmd` in its own process group; a missing program is a UserError, not a traceback."""
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
    except (FileNotFoundError, PermissionError, NotADirectoryError) as e:
        if e.filename is not None and str(e.filename) != cmd[0]:  # the working directory
            raise UserError(f"{stage}: cannot start {cmd[0]} in {e.filename} ({e.strerror})") from None
        raise UserError(f"{stage}: cannot start {cmd[0]} ({e.strerror}); is it installed and on PATH?") from None


DRAIN_SECONDS = 2.0  # after the leader exits, how long leftovers may keep its output open


def run(
    cmd: list[str],
    *,
    stage: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    clock: Clock = CLOCK,
) -> Finished:
    """Run `cmd` to the end, each output line to `log_path` and to `on_line`.
    Raises StageFailed on timeout; the caller decides what a non-zero exit means.
    The loop below never blocks for long, so Ctrl-C and the timeout act at once, and a
    background child that keeps the output open cannot hold us after the leader exits."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    start = clock.now()
    deadline = start + timeout if timeout else None
    timed_out = False
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()

        def emit(raw: bytes) -> None:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            # tqdm redraws with \r: keep the last state of the line only
            line = line.rsplit("\r", 1)[-1]
            log.write(line + "\n")
            tail.append(line)
            if on_line is not None:
                on_line(line)

        proc = _popen(cmd, stage, stdout=subprocess.PIPE, env=_clean_env(env), cwd=cwd)
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buf = b""
        reading = True
        leader_gone: float | None = None
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                while True:
                    now = clock.now()
                    if deadline is not None and now >= deadline:
                        timed_out = True
                        break
                    if not reading:
                        if proc.poll() is None:
                            clock.sleep(TICK)
                            continue
                        break
                    if not sel.select(timeout=0):
                        clock.sleep(TICK)
                    else:
                        chunk = os.read(fd, 65536)
                        if not chunk:  # every process holding the output closed it
                            reading = False
                            continue
                        buf += chunk
                        *lines, buf = buf.split(b"\n")
                        for raw in lines:
                            emit(raw)
                        cut = buf.rfind(b"\r", 0, len(buf) - 1)
                        if cut >= 0:  # a progress bar: only its last state matters
                            buf = buf[cut + 1 :]
                    if proc.poll() is not None:
                        leader_gone = leader_gone or now
                        if now - leader_gone > DRAIN_SECONDS:
                            break  # leftovers hold the output open; they are stopped below
            if buf:
                emit(buf)
        except BaseException:
            _stop_group(proc, clock=clock)
            raise
        finally:
            proc.stdout.close()
            if proc.poll() is None or _group_alive(proc.pid):
                _stop_group(proc, grace=5.0 if timed_out else 2.0, clock=clock)
    seconds = clock.now() - start
    if timed_out:
        raise StageFailed(
            f"{stage}: stopped after {timeout:.0f} s (timeout); its log: {log_path}",
            *[f"  {line}" for line in list(tail)[-5:]],
        )
    return Finished(proc.returncode, list(tail), seconds)


def address_family(host: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 address (`::1`, `::`), else IPv4: uvicorn's rule (LLaMA-Factory's api,
    LlamaBoard's gradio), so a port is checked on the socket the server will open."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_free(host: str, port: int) -> bool:
    with socket.socket(address_family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(address_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def url_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host`, as a URL writes it: a
    wildcard becomes loopback, an IPv6 address goes in brackets (`http://[::1]:8000/`)."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_host(host: str, what: str, *, guarded: bool, how: str) -> None:
    """A server of ours beyond loopback must check who calls it (`guarded`: a key, a password):
    else refused, `how` saying how to set one. Guarded, it still warns that it is reachable."""
    if host in LOOPBACK:
        return
    if not guarded:
        raise UserError(f"{what} would listen on {host} open to anyone who reaches it: {how}, "
                        "or keep the default host 127.0.0.1")
    print(f"Warning: {what} listens on {host}: reachable from other machines.", file=sys.stderr)


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
        clock: Clock = CLOCK,
    ):
        self.cmd, self.stage, self.log_path = cmd, stage, log_path
        self.ready_url, self.env, self.cwd = ready_url, env, cwd
        self.startup_timeout, self.clock = startup_timeout, clock
        self.headers = headers or {}
        self.proc: subprocess.Popen | None = None
        self._log: IO[str] | None = None

    def start(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("a", encoding="utf-8")
        self._log = log
        log.write(f"$ {' '.join(self.cmd)}\n")
        log.flush()
        try:
            self.proc = _popen(self.cmd, self.stage, stdout=log, env=_clean_env(self.env), cwd=self.cwd)
        except BaseException:
            self.stop()
            raise
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = self.clock.now() + self.startup_timeout
        request = urllib.request.Request(self.ready_url, headers=self.headers)
        while self.clock.now() < deadline:
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
            # HTTPException: something on the port that does not speak HTTP (yet)
            except (urllib.error.URLError, OSError, http.client.HTTPException):
                pass
            self.clock.sleep(0.25)
        raise StageFailed(
            f"{self.stage}: not ready after {self.startup_timeout:.0f} s; its log: {self.log_path}",
            *[f"  {line}" for line in self.tail(8)],
        )

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        return [line.rsplit("\r", 1)[-1] for line in lines[-n:]]

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc, clock=self.clock)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def require_free_port(host: str, port: int, what: str, flag: str = "--port") -> None:
    if not port_free(host, port):
        raise UserError(f"{what}: port {port} on {host} is taken; stop what uses it or pick another with {flag} N")
