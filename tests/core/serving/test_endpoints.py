"""The endpoint client against a real (fake) OpenAI-compatible HTTP server: no mocks."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from email.utils import formatdate
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fake_openai import Chain, FailPrompts, FakeOpenAI, RandomFaults, Script, expected_letter  # noqa: E402

from orchestrator.core.serving.endpoints import Endpoint, EndpointError, Reply  # noqa: E402

KEY = "sk-TOPSECRET-0123456789"
FAST = {"backoff_base": 0.01, "backoff_max": 0.05}
PROMPT = "### 题目:\n甲乙丙\n### 问题:\n选择题 1:\n谁是骑士？\nA. 甲\nB. 乙\nC. 丙\n"


def run(coro):
    return asyncio.run(coro)


async def _complete(url: str, prompt: str = PROMPT, **kw):
    options = {**FAST, **kw}
    async with Endpoint(url, "fake-model", KEY, **options) as ep:
        try:
            return await ep.complete(prompt), ep
        except EndpointError as exc:
            return exc, ep


# (script, endpoint options, expected attempts, expected error reason or None for success)
CASES = [
    pytest.param([], {}, 1, None, id="clean"),
    pytest.param(["500"], {}, 2, None, id="500"),
    pytest.param(["503"], {}, 2, None, id="503"),
    pytest.param(["429"], {}, 2, None, id="429-no-retry-after"),
    pytest.param(["429:0"], {}, 2, None, id="429-retry-after-0"),
    pytest.param(["truncated"], {}, 2, None, id="truncated-json"),
    pytest.param(["short_body"], {}, 2, None, id="body-shorter-than-content-length"),
    pytest.param(["nonjson"], {}, 2, None, id="html-body"),
    pytest.param(["empty_choices"], {}, 2, None, id="empty-choices"),
    pytest.param(["null_content"], {}, 2, None, id="null-content"),
    pytest.param(["drop"], {}, 2, None, id="dropped-connection"),
    pytest.param([("slow", 1.0)], {"timeout": 0.3}, 2, None, id="timeout-then-ok"),
    pytest.param(["500", "truncated", "drop", "429:0", "nonjson"], {}, 6, None, id="mixed"),
    pytest.param(["500"] * 3, {"max_retries": 2}, 3, "http 500", id="500-exhausted"),
    pytest.param(["empty_choices"] * 2, {"max_retries": 1}, 2, "empty choices", id="empty-exhausted"),
    pytest.param(["nonjson"] * 2, {"max_retries": 1}, 2, "malformed body", id="nonjson-exhausted"),
    pytest.param(["null_content"] * 2, {"max_retries": 1}, 2, "null content", id="null-exhausted"),
    pytest.param([("slow", 1.0)] * 2, {"timeout": 0.2, "max_retries": 1}, 2, "timeout", id="timeout-exhausted"),
    pytest.param(["drop"] * 2, {"max_retries": 1}, 2, "connection dropped", id="drop-exhausted"),
    pytest.param(["500"], {"max_retries": 0}, 1, "http 500", id="no-retries"),
    pytest.param(["401"], {}, 1, "http 401: the endpoint refused the API key", id="401-not-retried"),
    pytest.param(["400"], {}, 1, "http 400", id="400-not-retried"),
    pytest.param(["403"], {}, 1, "http 403", id="403-not-retried"),
    pytest.param(["404"], {}, 1, "http 404", id="404-not-retried"),
]


@pytest.mark.parametrize("script, options, attempts, reason", CASES)
def test_fault_table(script, options, attempts, reason):
    with FakeOpenAI(faults=Script(script)) as server:
        result, ep = run(_complete(server.url, **options))
    assert server.completions == attempts
    assert ep.requests == attempts
    assert ep.retries == attempts - 1
    if reason is None:
        assert isinstance(result, Reply), result
        assert result.attempts == attempts
        assert result.text.endswith(f"答案是：{expected_letter(PROMPT)}")
        assert result.finish_reason == "stop"
    else:
        assert isinstance(result, EndpointError), result
        assert result.reason.startswith(reason)
        assert result.kind == reason.split(":")[0]
        assert result.attempts == attempts
        assert result.retryable == (result.kind not in ("http 400", "http 401", "http 403", "http 404"))


def test_truncated_ascii_json_is_retried():
    # An ASCII body cut in half fails json.loads (the Chinese default may fail UTF-8 decoding first).
    with FakeOpenAI(reply=lambda prompt, request: "plain ascii answer", faults=Script(["truncated"] * 2)) as server:
        result, _ = run(_complete(server.url, max_retries=1))
    assert isinstance(result, EndpointError) and result.reason == "malformed body"
    assert "JSONDecodeError" in result.detail


class Delays:
    """A backoff sleep that records each delay instead of waiting it out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.mark.parametrize("status", ["429", "503"])
def test_retry_after_seconds_is_honoured(status):
    delays = Delays()
    with FakeOpenAI(faults=Script([(status, 0.3)])) as server:
        result, _ = run(_complete(server.url, backoff_base=0.001, backoff_max=5.0, sleep=delays))
    assert isinstance(result, Reply) and result.attempts == 2
    assert delays.delays == [pytest.approx(0.3)]


def test_retry_after_http_date_is_honoured():
    # The date is read against the endpoint's wall clock, fixed here at the second it was written
    # from (a loaded machine's delay between the reply and its reading does not count).
    written = float(int(time.time()))
    delays = Delays()
    with FakeOpenAI(faults=Script([("429", formatdate(written + 2, usegmt=True))])) as server:
        result, _ = run(_complete(server.url, backoff_base=0.001, backoff_max=5.0, sleep=delays, now=lambda: written))
    assert isinstance(result, Reply) and result.attempts == 2
    assert delays.delays == [2.0]


def test_retry_after_is_capped_by_backoff_max():
    delays = Delays()
    with FakeOpenAI(faults=Script([("429", 60)])) as server:
        result, _ = run(_complete(server.url, backoff_base=0.01, backoff_max=0.2, sleep=delays))
    assert isinstance(result, Reply) and result.attempts == 2
    assert delays.delays == [0.2]


def test_backoff_is_exponential_and_capped():
    class Top:  # an rng whose "full jitter" always picks the top of the range
        def uniform(self, low, high):
            return high

    delays = Delays()
    with FakeOpenAI(faults=Script(["500"] * 4)) as server:
        result, _ = run(_complete(server.url, backoff_base=0.05, backoff_max=0.15, rng=Top(), sleep=delays))
    assert isinstance(result, Reply) and result.attempts == 5
    assert delays.delays == [0.05, 0.10, 0.15, 0.15]  # doubling, then capped at backoff_max


async def _many(url: str, prompts: list[str], **kw):
    async with Endpoint(url, "fake-model", KEY, **{**FAST, **kw}) as ep:
        results = await asyncio.gather(*(ep.complete(p) for p in prompts), return_exceptions=True)
    return results, ep


def test_concurrency_never_exceeds_the_limit():
    faults = RandomFaults({"500": 0.15, "429:0.02": 0.1, "drop": 0.05, "truncated": 0.05}, seed=7)
    with FakeOpenAI(latency=0.03, faults=faults) as server:
        prompts = [f"{PROMPT}\n# {i}" for i in range(60)]
        results, ep = run(_many(server.url, prompts, concurrency=5, max_retries=10))
    assert all(isinstance(r, Reply) for r in results), [r for r in results if not isinstance(r, Reply)]
    assert server.max_in_flight == 5
    assert ep.requests == server.completions > 60
    assert ep.retries == server.completions - 60


def test_a_request_backing_off_holds_no_slot():
    """The one bound on requests in flight is per attempt: at concurrency 1, while the first
    request waits out its backoff (here: until the second is answered), the second is sent."""
    with FakeOpenAI(faults=Script(["500"])) as server:
        async def go():
            answered = asyncio.Event()

            async def backoff(delay: float) -> None:
                await answered.wait()

            async with Endpoint(server.url, "fake-model", KEY, concurrency=1, sleep=backoff) as ep:
                async def second():
                    await asyncio.sleep(0)  # the first takes the slot first
                    reply = await ep.complete(f"{PROMPT}\n# second")
                    answered.set()
                    return reply

                return await asyncio.gather(ep.complete(f"{PROMPT}\n# first"), second())

        first, second = run(asyncio.wait_for(go(), 30))
    assert (first.attempts, second.attempts) == (2, 1)
    assert [p.rsplit(" ", 1)[1] for p in server.prompts] == ["first", "second", "first"]


def test_before_send_is_asked_before_each_attempt_and_what_it_raises_ends_the_call_unsent():
    class Refused(Exception):
        pass

    asked: list[int] = []

    def before_send() -> None:
        asked.append(len(asked))
        if len(asked) > 1:  # the retry's turn: refused
            raise Refused

    with FakeOpenAI(faults=Script(["500"])) as server:
        async def go():
            async with Endpoint(server.url, "fake-model", KEY, before_send=before_send, **FAST) as ep:
                with pytest.raises(Refused):
                    await ep.complete(PROMPT)
                return ep

        ep = run(go())
    assert asked == [0, 1] and server.completions == ep.requests == 1


def test_64_concurrent_slow_requests_overlap():
    with FakeOpenAI(latency=0.2) as server:
        prompts = [f"{PROMPT}\n# {i}" for i in range(64)]
        results, ep = run(_many(server.url, prompts, concurrency=64))
    assert all(isinstance(r, Reply) for r in results)
    assert [r.text[-1] for r in results] == [expected_letter(p) for p in prompts]
    # they overlapped: the server held more than half at once (measured there, not by a clock here)
    assert server.max_in_flight > 32
    assert ep.requests == 64 and ep.retries == 0


def test_permanent_failures_are_per_prompt():
    with FakeOpenAI(faults=Chain(FailPrompts("BROKEN"), Script(["500"]))) as server:
        prompts = [f"{PROMPT}\n# {i}" + (" BROKEN" if i % 3 == 0 else "") for i in range(9)]
        results, _ = run(_many(server.url, prompts, concurrency=4, max_retries=2))
    for prompt, result in zip(prompts, results, strict=True):
        if "BROKEN" in prompt:
            assert isinstance(result, EndpointError) and result.reason == "http 500" and result.attempts == 3
            assert server.by_prompt[prompt] == 3
        else:
            assert isinstance(result, Reply)


def test_api_key_never_appears_in_errors_logs_or_repr(caplog):
    caplog.set_level(logging.DEBUG)
    # The server requires another key and echoes the one it was sent in its 401 body.
    with FakeOpenAI(api_key="the-right-key") as server:
        result, ep = run(_complete(server.url))
        assert isinstance(result, EndpointError) and result.kind == "http 401" and result.attempts == 1
        assert "Incorrect API key" in result.detail
        url = server.url
    refused, _ = run(_complete(url, max_retries=2))  # server gone: retries, each logged
    assert isinstance(refused, EndpointError) and refused.reason == "connection refused"
    assert refused.attempts == 3
    texts = [str(result), repr(result), result.detail, repr(ep), str(refused), repr(refused), caplog.text]
    assert "retry" in caplog.text
    for text in texts:
        assert KEY not in text


def test_server_killed_and_restarted_on_the_same_port():
    server = FakeOpenAI().start()
    try:

        async def scenario():
            options = {"backoff_base": 0.05, "backoff_max": 0.2, "max_retries": 20}
            async with Endpoint(server.url, "fake-model", KEY, **options) as ep:
                first = await ep.complete(PROMPT)  # leaves a keep-alive connection open
                server.stop()
                threading.Timer(0.4, server.start).start()
                second = await ep.complete(PROMPT)
                return first, second

        first, second = run(scenario())
    finally:
        server.stop()
    assert first.attempts == 1
    assert second.attempts > 1 and second.text == first.text


def test_request_shape_system_top_p_and_models():
    seen: list[dict] = []

    def reply(prompt, request):
        seen.append(request)
        return f"echo {prompt}"

    async def scenario(url):
        async with Endpoint(url, "fake-model", KEY, **FAST) as ep:
            a = await ep.complete("hello", system="be brief", temperature=0.7, max_tokens=12, top_p=0.9)
            b = await ep.complete("again")
            return a, b, await ep.models()

    with FakeOpenAI(latency=0.05, reply=reply, models=("m1", "m2")) as server:
        a, b, models = run(scenario(server.url))
    assert a.text == "echo hello" and b.text == "echo again"
    assert a.latency >= 0.05 and a.attempts == 1
    assert models == ["m1", "m2"]
    assert seen[0]["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert (seen[0]["temperature"], seen[0]["max_tokens"], seen[0]["top_p"]) == (0.7, 12, 0.9)
    assert seen[1]["messages"] == [{"role": "user", "content": "again"}] and "top_p" not in seen[1]


def test_import_is_light():
    code = "import sys, orchestrator.core.serving.endpoints; print('openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fake_server_as_a_process():
    script = Path(__file__).resolve().parents[2] / "fake_openai.py"
    command = [sys.executable, str(script), "--port", "0", "--latency", "0.05", "--fault-rate", "500=0.3"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        assert url.endswith("/v1")
        results, _ = run(_many(url, [f"{PROMPT}\n# {i}" for i in range(10)], max_retries=10))
        assert [r.text[-1] for r in results] == [expected_letter(f"{PROMPT}\n# {i}") for i in range(10)]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
