"""A small, real OpenAI-compatible HTTP server on 127.0.0.1, for tests and benchmarks.

Stdlib only. In a test:

    with FakeOpenAI(latency=0.2, faults=Script(["429:1", "500"])) as server:
        ...  # point a client at server.url
        assert server.completions == 3

As a process (prints `READY http://127.0.0.1:PORT/v1` once listening, runs until SIGTERM):

    python tests/fake_openai.py --port 0 --latency 0.2 --fault-rate 500=0.1 --fault-rate 429:1=0.05

A fault is what the server does with one chat request instead of answering it:
None (answer), ("429", retry_after) (retry_after: seconds, or a string sent verbatim such as
an HTTP date, or None for no header), "500", "503" or ("503", retry_after), "400", "401",
"403", "404", "truncated" (200, the JSON body cut in half, Content-Length matching the cut body),
"short_body" (200, Content-Length of the whole body but only half sent, then the connection
closed), "nonjson" (200 `<html>oops</html>`), "empty_choices" (200 with `"choices": []`),
"null_content" (200 with `"content": null`), ("slow", seconds) (answer after extra seconds),
"drop" (close the connection without a response). Strings like "429:1" and "slow:0.5" are
accepted for the tuple forms.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Fault = str | tuple | None
FaultSource = Callable[[int, str], Fault]
ReplyFn = Callable[[str, dict], str]

FAULT_KINDS = {
    "429", "500", "502", "503", "400", "401", "403", "404",
    "truncated", "short_body", "nonjson", "empty_choices", "null_content", "slow", "drop",
}
_OPTION = re.compile(r"^([A-G])\. ", re.MULTILINE)


def parse_fault(spec: Fault) -> tuple[str, Any] | None:
    """Normalise a fault spec to (kind, argument) or None."""
    if spec is None:
        return None
    if isinstance(spec, tuple):
        kind, arg = str(spec[0]), (spec[1] if len(spec) > 1 else None)
    else:
        kind, _, raw = str(spec).partition(":")
        arg = float(raw) if raw else None
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {spec!r}; known: {sorted(FAULT_KINDS)}")
    if kind == "slow" and arg is None:
        raise ValueError("a slow fault needs seconds, e.g. 'slow:0.5'")
    return kind, arg


class Script:
    """Faults for the first len(script) chat requests, in order (request numbers start at 1)."""

    def __init__(self, script: Sequence[Fault]):
        self.script = [parse_fault(s) for s in script]

    def __call__(self, n: int, prompt: str) -> tuple[str, Any] | None:
        return self.script[n - 1] if n <= len(self.script) else None


class RandomFaults:
    """A seeded random mix: rates maps a fault spec to its probability, e.g. {"500": 0.1, "429:0.2": 0.05}.

    Request n's fault depends only on (seed, n), so a run is reproducible whatever the thread order.
    """

    def __init__(self, rates: dict[str, float], seed: int = 0):
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates add up to more than 1")
        self.rates = [(parse_fault(spec), rate) for spec, rate in rates.items()]
        self.seed = seed

    def __call__(self, n: int, prompt: str) -> tuple[str, Any] | None:
        x = random.Random(f"{self.seed}:{n}").random()
        for fault, rate in self.rates:
            if x < rate:
                return fault
            x -= rate
        return None


class FailPrompts:
    """The same fault on every request whose prompt contains one of the markers (a permanent failure)."""

    def __init__(self, markers: str | Iterable[str], fault: Fault = "500"):
        self.markers = [markers] if isinstance(markers, str) else list(markers)
        self.fault = parse_fault(fault)

    def __call__(self, n: int, prompt: str) -> tuple[str, Any] | None:
        return self.fault if any(m in prompt for m in self.markers) else None


class Chain:
    """The first fault any source gives."""

    def __init__(self, *sources: FaultSource):
        self.sources = sources

    def __call__(self, n: int, prompt: str) -> Fault:
        for source in self.sources:
            fault = source(n, prompt)
            if fault is not None:
                return fault
        return None


def expected_letter(prompt: str) -> str:
    """The letter default_reply answers for this prompt: a hash of the prompt among its options."""
    letters = _OPTION.findall(prompt) or ["A"]
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return letters[int.from_bytes(digest[:4], "big") % len(letters)]


def default_reply(prompt: str, request: dict) -> str:
    """A deterministic Answer-model-style reply."""
    letter = expected_letter(prompt)
    return (
        "### 思考思路:\n"
        "1. 根据题目条件逐项分析各选项。\n"
        f"2. 选项 {letter} 与已知事实一致。\n"
        "### 可能的结果:\n"
        f"答案是：{letter}"
    )


def _prompt_of(request: dict) -> str:
    """The text of the last user message (string or list-of-parts content)."""
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return str(request.get("prompt", ""))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # the listen backlog: 64+ clients connect at once
    allow_reuse_address = True

    def __init__(self, address, handler, fake: FakeOpenAI):
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open keep-alive connection, as a killed server would."""
        with self.conn_lock:
            conns = list(self.connections)
            self.connections.clear()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        pass  # a client that went away is not a test failure


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        fake = self.server.fake
        fake._count_request()
        if not self._authorised():
            return
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in fake.models]
            self._json(200, {"object": "list", "data": data})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self):
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        fake._count_request()
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            self._json(400, {"error": {"message": "request body is not JSON", "type": "invalid_request_error"}})
            return
        prompt = _prompt_of(request)
        n = fake._begin(prompt, request)
        try:
            self._complete(fake, n, prompt, request)
        finally:
            fake._end()

    def _complete(self, fake: FakeOpenAI, n: int, prompt: str, request: dict) -> None:
        if not self._authorised():
            return
        fault = parse_fault(fake.faults(n, prompt)) if fake.faults else None
        kind, arg = fault if fault else (None, None)
        delay = fake.latency + (float(arg) if kind == "slow" else 0.0)
        if delay > 0:
            time.sleep(delay)
        if kind in ("429", "503"):
            headers = {} if arg is None else {"Retry-After": arg if isinstance(arg, str) else _num(arg)}
            message = "rate limited" if kind == "429" else "overloaded"
            self._json(int(kind), {"error": {"message": message, "type": "fake_fault"}}, headers)
            return
        if kind == "401":
            self._json(401, {"error": {"message": f"Incorrect API key provided: {self._sent_key()}",
                                       "type": "invalid_request_error"}})
            return
        if kind in ("500", "502", "400", "403", "404"):
            self._json(int(kind), {"error": {"message": f"fake fault {kind}", "type": "fake_fault"}})
            return
        if kind == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if kind == "nonjson":
            self._send(200, b"<html>oops</html>", "text/html")
            return
        model = request.get("model") or fake.models[0]
        text = fake.reply(prompt, request)
        # several choices (`n`) only when told to: many servers ignore it, which infer must notice
        several = int(request.get("n") or 1) if fake.honour_n else 1
        texts = [text] + [fake.reply(prompt, {**request, "choice": i}) for i in range(1, several)]
        body = {
            "id": f"chatcmpl-fake-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": None if kind == "null_content" else t},
                    "finish_reason": "stop",
                }
                for i, t in enumerate(texts)
            ],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(text),
                      "total_tokens": len(prompt) + len(text)},
        }
        if kind == "empty_choices":
            body["choices"] = []
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        if kind == "truncated":
            self._send(200, data[: len(data) // 2], "application/json")
        elif kind == "short_body":
            self._send(200, data[: len(data) // 2], "application/json", length=len(data))
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        else:
            self._send(200, data, "application/json")

    def _authorised(self) -> bool:
        key = self.server.fake.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._json(401, {"error": {"message": f"Incorrect API key provided: {self._sent_key()}",
                                   "type": "invalid_request_error"}})
        return False

    def _sent_key(self) -> str:
        # Echoed in 401 bodies, as some servers do, so tests can check the client never repeats it.
        return (self.headers.get("Authorization") or "").removeprefix("Bearer ")

    def _json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body).encode("utf-8"), "application/json", headers=headers)

    def _send(self, status: int, data: bytes, content_type: str, *, length: int | None = None,
              headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data) if length is None else length))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


class FakeOpenAI:
    """An OpenAI-compatible server in a background thread. `.url` ends in /v1."""

    def __init__(self, port: int = 0, latency: float = 0.0, reply: ReplyFn | None = None,
                 faults: FaultSource | None = None, *, models: Sequence[str] = ("fake-model",),
                 api_key: str | None = None, host: str = "127.0.0.1", honour_n: bool = False):
        self.host = host
        self.honour_n = honour_n  # answer a request's `n` with that many choices (else one, as if ignored)
        self.port = port
        self.latency = latency
        self.reply = reply or default_reply
        self.faults = faults
        self.models = list(models)
        self.api_key = api_key  # None: any key (or none) is accepted
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.reset_counts()

    def reset_counts(self) -> None:
        with self._lock:
            self.requests = 0          # HTTP requests of any kind
            self.completions = 0       # chat completion requests; fault numbers count these from 1
            self.prompts: list[str] = []
            self.by_prompt: Counter[str] = Counter()
            self.in_flight = 0
            self.max_in_flight = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        """Listen (again, on the same port after stop()) and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), _Handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-openai-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections, like a killed server."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def _begin(self, prompt: str, request: dict) -> int:
        with self._lock:
            self.completions += 1
            self.prompts.append(prompt)
            self.by_prompt[prompt] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.completions

    def _end(self) -> None:
        with self._lock:
            self.in_flight -= 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each chat reply")
    parser.add_argument("--fault-rate", action="append", default=[], metavar="FAULT=RATE",
                        help="e.g. 500=0.1 or 429:1=0.05 (repeatable)")
    parser.add_argument("--fail-prompt", action="append", default=[], metavar="TEXT",
                        help="answer 500 to every prompt containing TEXT (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", action="append", default=None, help="model id to list (repeatable)")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    args = parser.parse_args(argv)

    sources: list[FaultSource] = []
    if args.fail_prompt:
        sources.append(FailPrompts(args.fail_prompt))
    if args.fault_rate:
        rates = {}
        for item in args.fault_rate:
            spec, _, rate = item.rpartition("=")
            rates[spec] = float(rate)
        sources.append(RandomFaults(rates, seed=args.seed))
    server = FakeOpenAI(port=args.port, latency=args.latency, faults=Chain(*sources) if sources else None,
                        models=args.model or ("fake-model",), api_key=args.api_key)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    server.start()
    print(f"READY {server.url}", flush=True)
    while not done.wait(0.2):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
