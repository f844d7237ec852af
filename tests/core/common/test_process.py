"""Subprocess hygiene: every child we start, and every child it starts, is gone when `run`
or `Server` returns or raises: on exit, failure, timeout, Ctrl-C, or an exception in a `with`."""

from __future__ import annotations

import _thread
import os
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.core.common.errors import StageFailed, UserError
from orchestrator.core.common.process import CLOCK, TAIL_LINES, Clock, Server, free_port, port_free, run, url_host

# The child prints its own pid (the process group id) and its background grandchild's pid.
HANG = "echo $$; sleep 300 & echo $!; sleep 300"


def running(pid: int) -> bool:
    """Whether `pid` runs. A zombie does not: PID 1 of a container may never reap orphans."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def group_members(pgid: int) -> list[int]:
    """Running processes of group `pgid` (os.killpg(pgid, 0) would count zombies too)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                out.append(int(entry))
    return out


def assert_gone(pids: list[int]) -> None:
    assert len(pids) == 2, pids  # the leader and its grandchild were seen
    assert not group_members(pids[0]), f"left running in group {pids[0]}: {group_members(pids[0])}"
    assert not any(running(pid) for pid in pids)


class Waits(Clock):
    """A clock that counts only the waits `run` and `Server` ask for (each one really waited): the
    time a loaded machine takes to start, schedule or signal a process is not on it, so a bound on
    it says what the code waited for (a grace period, a timeout) and cannot flake."""

    def __init__(self) -> None:
        self.waited = 0.0

    def now(self) -> float:
        return self.waited

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
        self.waited += seconds


class Pids:
    """on_line: keeps the two pids the child prints; `seen` is set once both arrived, at `at` on
    `clock` (so a test times what `run` did after the child ran, not how long a loaded machine
    took to start it)."""

    def __init__(self, clock: Clock) -> None:
        self.pids: list[int] = []
        self.seen = threading.Event()
        self.clock = clock
        self.at = 0.0

    def __call__(self, line: str) -> None:
        if line.strip().isdigit() and len(self.pids) < 2:
            self.pids.append(int(line))
            if len(self.pids) == 2:
                self.at = self.clock.now()
                self.seen.set()

    def since(self) -> float:
        """Seconds waited since the child was seen running."""
        assert self.seen.is_set(), "the child never printed its pids"
        return self.clock.now() - self.at


def bash(script: str) -> list[str]:
    return ["bash", "-c", script]


# ---------------------------------------------------------------- run


def test_nonzero_exit_gives_returncode_and_tail(tmp_path: Path) -> None:
    script = "import sys\nfor i in range(50): print(f'line {i}')\nprint('half\\r', end='')\nprint('progress 10%\\rprogress 100%')\nsys.exit(3)"
    lines: list[str] = []
    log = tmp_path / "logs" / "x.log"
    finished = run([sys.executable, "-c", script], stage="x", log_path=log, on_line=lines.append)
    assert finished.returncode == 3
    assert len(finished.tail) == TAIL_LINES and finished.tail[-1] == "progress 100%" and finished.tail[-2] == "line 49"
    assert lines[0] == "line 0" and len(lines) == 51
    text = log.read_text()
    assert text.startswith(f"$ {sys.executable} -c ") and text.endswith("line 49\nprogress 100%\n")


def test_timeout_stops_the_whole_group(tmp_path: Path) -> None:
    clock = Waits()
    pids = Pids(clock)
    with pytest.raises(StageFailed) as info:
        run(bash(HANG), stage="train answer", log_path=tmp_path / "x.log", timeout=1, on_line=pids, clock=clock)
    assert pids.since() < 5  # the timeout, then SIGTERM: the 5 s grace is not waited out
    assert info.value.lines[0] == f"train answer: stopped after 1 s (timeout); its log: {tmp_path / 'x.log'}"
    assert info.value.exit_code == 1
    assert_gone(pids.pids)


def test_timeout_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    pids = Pids(CLOCK)
    with pytest.raises(StageFailed):
        run(bash("trap '' TERM; " + HANG), stage="x", log_path=tmp_path / "x.log", timeout=0.5, on_line=pids)
    assert_gone(pids.pids)


def test_leader_exits_while_a_grandchild_holds_the_output(tmp_path: Path) -> None:
    # Before the fix `run` read until every holder of the pipe closed it: 300 s here.
    clock = Waits()
    pids = Pids(clock)
    finished = run(bash("echo $$; sleep 300 & echo $!; exit 4"), stage="x", log_path=tmp_path / "x.log", on_line=pids,
                   clock=clock)
    assert finished.returncode == 4
    assert pids.since() < 8  # the 2 s drain and the 2 s grace at most
    assert_gone(pids.pids)


def test_leftover_grandchild_is_stopped_after_success(tmp_path: Path) -> None:
    pids = Pids(CLOCK)
    finished = run(bash("echo $$; sleep 300 >/dev/null 2>&1 & echo $!"), stage="x", log_path=tmp_path / "x.log", on_line=pids)
    assert finished.returncode == 0
    assert_gone(pids.pids)


def test_a_dead_grandchild_left_as_a_zombie_does_not_stall(tmp_path: Path) -> None:
    # The grandchild outlives bash, then dies; where PID 1 does not reap it stays a zombie of
    # the group. Before the fix the group counted as alive: SIGTERM, 2 s grace, SIGKILL, 5 s more.
    clock = Waits()
    finished = run(bash("sleep 0.3 & exit 0"), stage="x", log_path=tmp_path / "x.log", clock=clock)
    assert finished.returncode == 0
    assert clock.now() < 2  # the grandchild's 0.3 s, no grace period


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt in this process, as in the user's terminal, whatever the test
    runner set (a pytest-xdist worker ignores SIGINT: its controller stops it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interrupt(how: str) -> None:
    if how == "interrupt_main":
        _thread.interrupt_main()
    else:
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.usefixtures("ctrl_c_raises")
@pytest.mark.parametrize("how", ["interrupt_main", "SIGINT"])
def test_ctrl_c_while_streaming_leaves_no_orphan(tmp_path: Path, how: str) -> None:
    clock = Waits()
    pids = Pids(clock)

    def interrupt() -> None:
        if pids.seen.wait(60):  # (seen only while `run` runs: its timeout is later)
            _interrupt(how)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run(bash(HANG), stage="x", log_path=tmp_path / "x.log", timeout=30, on_line=pids, clock=clock)
    assert pids.since() < 5  # stopped at once: SIGTERM ends it, the 10 s grace is not waited out
    assert_gone(pids.pids)


@pytest.mark.usefixtures("ctrl_c_raises")
def test_second_ctrl_c_skips_the_grace_period(tmp_path: Path) -> None:
    # The child ignores SIGTERM: the first Ctrl-C would wait the 10 s grace; the second kills.
    clock = Waits()
    pids = Pids(clock)

    def interrupt_twice() -> None:
        if pids.seen.wait(60):
            _thread.interrupt_main()
            time.sleep(0.5)
            _thread.interrupt_main()

    threading.Thread(target=interrupt_twice, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run(bash("trap '' TERM; " + HANG), stage="x", log_path=tmp_path / "x.log", timeout=30, on_line=pids,
            clock=clock)
    assert pids.since() < 5  # 0.5 s of the grace, then SIGKILL
    assert_gone(pids.pids)


@pytest.mark.parametrize("cmd", [["no-such-program-xyz"], ["/etc/passwd"]], ids=["missing", "not executable"])
def test_program_that_cannot_start(tmp_path: Path, cmd: list[str]) -> None:
    with pytest.raises(UserError) as info:
        run(cmd, stage="train answer", log_path=tmp_path / "x.log")
    assert len(info.value.lines) == 1
    assert info.value.lines[0].startswith(f"train answer: cannot start {cmd[0]} (")
    assert info.value.lines[0].endswith("is it installed and on PATH?")


def test_missing_working_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        run(["true"], stage="x", log_path=tmp_path / "x.log", cwd=tmp_path / "gone")
    assert info.value.lines == [f"x: cannot start true in {tmp_path / 'gone'} (No such file or directory)"]


# ---------------------------------------------------------------- Server

HTTP_SERVER = """
import http.server, subprocess, sys
child = subprocess.Popen(["sleep", "300"])
print(f"grandchild {child.pid}", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()
"""

NOT_HTTP = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
while True:
    c, _ = s.accept(); c.sendall(b"garbage\\r\\n\\r\\n"); c.close()
"""


def server(tmp_path: Path, cmd: list[str], port: int, timeout: float = 20, clock: Clock = CLOCK) -> Server:
    return Server(
        cmd, stage="serve answer", log_path=tmp_path / "serve.log", ready_url=f"http://127.0.0.1:{port}/",
        cwd=tmp_path, startup_timeout=timeout, clock=clock,
    )


def log_pids(path: Path, prefix: str = "") -> list[int]:
    """The pids a child printed to its log, one a line after `prefix`."""
    return [int(m) for m in re.findall(rf"^{prefix}(\d+)$", path.read_text(), re.MULTILINE)]


def test_server_dying_before_ready_gives_the_log_tail(tmp_path: Path) -> None:
    script = "import sys\nprint('loading model', flush=True)\nprint('OSError: models/x is not a directory', flush=True)\nsys.exit(5)"
    s = server(tmp_path, [sys.executable, "-c", script], free_port())
    with pytest.raises(StageFailed) as info:
        s.start()
    assert info.value.lines[0] == f"serve answer: exited with code 5 before it was ready; its log: {tmp_path / 'serve.log'}"
    assert info.value.lines[-2:] == ["  loading model", "  OSError: models/x is not a directory"]
    assert s.proc is None


def test_server_never_ready_times_out_and_is_reaped(tmp_path: Path) -> None:
    clock = Waits()
    s = server(tmp_path, bash(HANG), free_port(), timeout=1, clock=clock)
    with pytest.raises(StageFailed) as info:
        s.start()
    assert clock.now() < 6  # the 1 s start-up, then SIGTERM: the 10 s grace is not waited out
    assert info.value.lines[0] == f"serve answer: not ready after 1 s; its log: {tmp_path / 'serve.log'}"
    assert_gone(log_pids(tmp_path / "serve.log"))


def test_server_answering_garbage_is_not_a_traceback(tmp_path: Path) -> None:
    # Before the fix http.client.BadStatusLine escaped `start` as a traceback.
    port = free_port()
    s = server(tmp_path, [sys.executable, "-c", NOT_HTTP, str(port)], port, timeout=1.5)
    with pytest.raises(StageFailed, match="not ready after 2 s"):
        s.start()
    assert s.proc is None


def test_server_context_manager_is_reaped_on_exception(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(RuntimeError, match="boom"), server(tmp_path, [sys.executable, "-c", HTTP_SERVER, str(port)], port) as s:
        pgid = s.proc.pid
        grandchild = log_pids(tmp_path / "serve.log", "grandchild ")[0]
        assert running(pgid) and running(grandchild)
        raise RuntimeError("boom")
    assert_gone([pgid, grandchild])
    assert port_free("127.0.0.1", port)  # nothing listens on it any more


@pytest.mark.usefixtures("ctrl_c_raises")
def test_server_context_manager_is_reaped_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(KeyboardInterrupt), server(tmp_path, [sys.executable, "-c", HTTP_SERVER, str(port)], port) as s:
        pids = [s.proc.pid, log_pids(tmp_path / "serve.log", "grandchild ")[0]]
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the signal arrives during this sleep
    assert_gone(pids)


def test_server_that_cannot_start(tmp_path: Path) -> None:
    s = server(tmp_path, ["no-such-program-xyz"], free_port())
    with pytest.raises(UserError, match=r"^serve answer: cannot start no-such-program-xyz \("):
        s.start()
    assert s.proc is None and s._log is None


@pytest.mark.parametrize("path", ["/usr/bin:/bin", ""], ids=["venv-not-activated", "no-path"])
def test_this_environments_bin_comes_first_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """What `make` gets from a plain .venv/bin/orchestrator: torchrun (a sibling of python) found."""
    monkeypatch.setenv("PATH", path)
    done = run(["/bin/sh", "-c", "command -v torchrun; echo \"$PATH\""], stage="t", log_path=tmp_path / "log")
    venv_bin = os.path.dirname(os.path.abspath(sys.executable))
    assert done.tail[0] == os.path.join(venv_bin, "torchrun")
    assert done.tail[1].split(os.pathsep) == [venv_bin, *filter(None, path.split(os.pathsep))]


# ---------------------------------------------------------------- hosts, IPv4 and IPv6

# (where something listens, the host asked about, whether that port is free there). `::` is
# dual-stack, as uvicorn opens it: a port taken on 127.0.0.1 is taken on `::` too.
PORTS = [
    pytest.param(None, "::1", True, id="free-on-v6-loopback"),
    pytest.param("::1", "::1", False, id="taken-on-v6-loopback"),
    pytest.param("::1", "127.0.0.1", True, id="v6-listener-leaves-v4-free"),
    pytest.param("127.0.0.1", "::1", True, id="v4-listener-leaves-v6-free"),
    pytest.param("127.0.0.1", "::", False, id="v4-listener-takes-the-v6-wildcard"),
    pytest.param("127.0.0.1", "127.0.0.1", False, id="taken-on-v4-loopback"),
]


@pytest.mark.parametrize("listener, host, free", PORTS)
def test_a_port_is_checked_on_the_hosts_own_family(listener: str | None, host: str, free: bool) -> None:
    # Before the fix every port on ::1 was "taken": the check opened an IPv4 socket
    port = free_port("::1")
    if listener is None:
        assert port_free(host, port) is free
        return
    with socket.socket(socket.AF_INET6 if ":" in listener else socket.AF_INET) as taken:
        taken.bind((listener, port))
        taken.listen()
        assert port_free(host, port) is free


@pytest.mark.parametrize("host, url", [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::1", "[::1]"),
                                       ("::", "[::1]"), ("localhost", "localhost"), ("fd00::2", "[fd00::2]")])
def test_url_host_reaches_the_bound_host(host: str, url: str) -> None:
    assert url_host(host) == url


def test_a_server_on_ipv6_loopback_is_ready_and_reaped(tmp_path: Path) -> None:
    port = free_port("::1")
    cmd = [sys.executable, "-m", "http.server", "--bind", "::1", str(port)]
    ready = f"http://{url_host('::1')}:{port}/"
    with Server(cmd, stage="serve answer", log_path=tmp_path / "serve.log", ready_url=ready, cwd=tmp_path,
                startup_timeout=20) as s:
        assert s.proc is not None and s.proc.poll() is None
        assert not port_free("::1", port)
    assert port_free("::1", port)


@pytest.mark.parametrize("before", [None, "", "kept"])
def test_environ_set_holds_the_value_for_the_block_and_restores_it(monkeypatch, before: str | None) -> None:
    from orchestrator.core.common.process import environ_set

    if before is None:
        monkeypatch.delenv("ORCHESTRATOR_TEST_VAR", raising=False)
    else:
        monkeypatch.setenv("ORCHESTRATOR_TEST_VAR", before)
    with pytest.raises(RuntimeError), environ_set("ORCHESTRATOR_TEST_VAR", "inside"):
        assert os.environ["ORCHESTRATOR_TEST_VAR"] == "inside"
        raise RuntimeError  # restored after a failure too
    assert os.environ.get("ORCHESTRATOR_TEST_VAR") == before
