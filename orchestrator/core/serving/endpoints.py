"""The one OpenAI-compatible client: teacher distillation and two-stage inference both use it.

Our own retry loop on top of the `openai` SDK (whose retries are off): at most `concurrency`
requests in flight (the one bound: a request backing off holds no slot), exponential backoff
with full jitter, Retry-After honoured, and every failure reduced to a short
`EndpointError.reason` the Error Agent can record.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from orchestrator.core.common.api_keys import is_loopback
from orchestrator.core.common.errors import StageFailed, UserError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Statuses worth another try; any other 4xx is the request's fault and is raised at once.
_RETRY_STATUS = {408, 409, 425, 429}
_HINTS = {
    400: "the endpoint rejected the request (check the model name, max_tokens and the prompt length)",
    401: "the endpoint refused the API key",
    403: "the API key is not allowed to use this endpoint or model",
    404: "not found (check that base_url ends in /v1 and the model name is one the endpoint serves)",
    413: "the request is too large (check the prompt length)",
    422: "the endpoint could not process the request (check the sampling parameters)",
}


@dataclass(frozen=True)
class Reply:
    text: str
    latency: float  # seconds for the successful attempt
    attempts: int  # 1 = first try
    finish_reason: str | None


class EndpointError(Exception):
    """An endpoint call failed: retries exhausted, or a failure that retrying cannot fix.

    reason: the kind of failure, e.g. "http 429", "timeout", "malformed body", optionally followed
    by ": what to check"; kind: the part before the colon; detail: what the server said (trimmed).
    """

    def __init__(self, reason: str, attempts: int, *, detail: str = "", url: str = "", retryable: bool = False):
        self.reason = reason
        self.kind = reason.split(":", 1)[0]
        self.attempts = attempts
        self.detail = detail
        self.url = url
        self.retryable = retryable  # True: a transient kind that ran out of retries
        tries = f"after {attempts} attempts" if attempts != 1 else "after 1 attempt"
        message = f"{url}: {reason} ({tries})" if url else f"{reason} ({tries})"
        super().__init__(f"{message}: {detail}" if detail else message)


class _Failure(Exception):
    """One failed attempt, classified."""

    def __init__(self, reason: str, retryable: bool, detail: str = "", retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.detail = detail
        self.retry_after = retry_after


def _retry_after(headers: Any, now: Callable[[], float] = time.time) -> float | None:
    """Seconds asked for by retry-after-ms or Retry-After (seconds, or an HTTP date read against
    the wall clock `now`), else None."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now())


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 10:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _connection_reason(exc: BaseException) -> str:
    chain = _chain(exc)
    text = " ".join(str(e) for e in chain).lower()
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text:
        return "connection refused"
    names = {type(e).__name__ for e in chain}
    if "RemoteProtocolError" in names or "ReadError" in names or isinstance(chain[-1], ConnectionResetError):
        return "connection dropped"  # the server closed it mid-request or mid-body
    if "ConnectError" in names or "ConnectTimeout" in names:
        return "connection failed"
    return "connection error"


def _trim(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Endpoint:
    """An OpenAI-compatible chat endpoint with retries and a concurrency limit. Use within one event loop."""

    def __init__(self, base_url: str, model: str, api_key: str, *, concurrency: int = 16, timeout: float = 120.0,
                 max_retries: int = 6, backoff_base: float = 0.5, backoff_max: float = 30.0,
                 rng: random.Random | None = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 before_send: Callable[[], None] | None = None, now: Callable[[], float] = time.time):
        import openai  # heavy (~0.5 s): only commands that talk to an endpoint pay for it

        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.base_url = base_url
        self.model = model
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.rng = rng or random.Random()
        self.sleep = sleep  # waits out each backoff delay (tests record the delays instead)
        # called holding a slot, before each attempt: what it raises ends the call unsent (infer's deadline)
        self.before_send = before_send
        self.now = now  # the wall clock an HTTP-date Retry-After is read against (tests fix it)
        self.requests = 0  # HTTP attempts sent
        self.honours_n: bool | None = None  # several choices per request (`n`): None until a request finds out
        self.retries = 0  # attempts that were retried
        self._secret = api_key or "EMPTY"
        self._sem = asyncio.Semaphore(concurrency)
        self._openai = openai

        # Room for every request in flight (plus models() calls) so none waits on the pool.
        if hasattr(openai, "DefaultAsyncHttpx2Client"):
            import httpx2 as httpmod

            make_client = openai.DefaultAsyncHttpx2Client
        else:
            import httpx as httpmod  # type: ignore[no-redef]

            make_client = openai.DefaultAsyncHttpxClient  # type: ignore[assignment]
        pool = concurrency + 8
        limits = httpmod.Limits(max_connections=pool, max_keepalive_connections=pool)
        # A loopback server is never reached through a proxy from the environment.
        http_client = make_client(limits=limits, timeout=timeout, trust_env=not is_loopback(base_url))
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=self._secret, max_retries=0,
                                          timeout=timeout, http_client=http_client)

    def __repr__(self) -> str:
        return f"Endpoint(base_url={self.base_url!r}, model={self.model!r}, concurrency={self.concurrency})"

    async def __aenter__(self) -> Endpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, prompt: str, *, temperature: float = 0.0, max_tokens: int = 1024,
                       top_p: float | None = None, system: str | None = None) -> Reply:
        """One chat completion of a single user message (after an optional system message)."""
        messages: list[Any] = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": prompt}
        ]
        extra: dict[str, Any] = {} if top_p is None else {"top_p": top_p}

        async def attempt() -> tuple[str, str | None]:
            response = await self._client.chat.completions.create(
                model=self.model, messages=messages, temperature=temperature, max_tokens=max_tokens, **extra
            )
            return _chat_text(response)

        (text, finish_reason), latency, attempts = await self._call(attempt)
        return Reply(text=text, latency=latency, attempts=attempts, finish_reason=finish_reason)

    async def complete_n(self, prompt: str, n: int, *, temperature: float = 0.0,
                         max_tokens: int = 1024) -> tuple[list[Reply], int]:
        """`n` samples of one prompt and the requests they took: one request with `n` where the
        endpoint returns that many choices, else one request per sample (what the first
        several-sample request found out is kept in `honours_n`)."""
        if n == 1 or self.honours_n is False:
            replies = await asyncio.gather(*(self.complete(prompt, temperature=temperature, max_tokens=max_tokens)
                                             for _ in range(n)))
            return list(replies), n
        messages: list[Any] = [{"role": "user", "content": prompt}]

        async def attempt() -> list[tuple[str, str | None]]:
            response = await self._client.chat.completions.create(
                model=self.model, messages=messages, temperature=temperature, max_tokens=max_tokens, n=n)
            return _chat_texts(response)

        try:
            texts, latency, attempts = await self._call(attempt)
        except EndpointError as e:
            if self.honours_n is not None or e.retryable or not e.kind.startswith("http 4"):
                raise
            self.honours_n = False  # refused: a server that does not take `n`
            replies, requests = await self.complete_n(prompt, n, temperature=temperature, max_tokens=max_tokens)
            return replies, requests + 1
        got = [Reply(text=t, latency=latency, attempts=attempts, finish_reason=f) for t, f in texts[:n]]
        if len(got) < n:  # `n` ignored: the rest one request each
            self.honours_n = False
            rest, requests = await self.complete_n(prompt, n - len(got), temperature=temperature, max_tokens=max_tokens)
            return got + rest, 1 + requests
        self.honours_n = True
        return got, 1

    async def models(self) -> list[str]:
        """The model ids the endpoint serves (GET /v1/models)."""

        async def attempt() -> list[str]:
            page = await self._client.models.list()
            data = getattr(page, "data", None)
            if not isinstance(data, list):
                raise _Failure("malformed body", True, _trim(repr(page)))
            return [str(getattr(m, "id", "")) for m in data]

        ids, _, _ = await self._call(attempt)
        return ids

    async def _call(self, attempt: Callable[[], Awaitable[T]]) -> tuple[T, float, int]:
        """Run attempt() until it succeeds, a failure is not retryable, or retries run out."""
        for n in range(1, self.max_retries + 2):
            async with self._sem:  # held for the attempt only, not while backing off
                if self.before_send is not None:
                    self.before_send()
                self.requests += 1
                start = time.monotonic()
                try:
                    return await attempt(), time.monotonic() - start, n
                except Exception as exc:  # classified below; anything unknown is re-raised
                    failure = exc if isinstance(exc, _Failure) else self._classify(exc)
            if not failure.retryable or n > self.max_retries:
                raise EndpointError(failure.reason, n, detail=self._scrub(failure.detail),
                                    url=self._scrub(self.base_url), retryable=failure.retryable) from None
            delay = self.rng.uniform(0.0, min(self.backoff_max, self.backoff_base * 2 ** (n - 1)))
            if failure.retry_after is not None:
                delay = max(delay, failure.retry_after)  # at least what the server asked for
            delay = min(delay, self.backoff_max)
            self.retries += 1
            log.debug("%s: %s; retry %d in %.2fs", self._scrub(self.base_url), failure.reason, n, delay)
            await self.sleep(delay)
        raise AssertionError("unreachable")

    def _classify(self, exc: Exception) -> _Failure:
        openai = self._openai
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = _trim(getattr(exc, "message", "") or str(exc))
            if status in _RETRY_STATUS or status >= 500:
                return _Failure(f"http {status}", True, detail, _retry_after(exc.response.headers, self.now))
            hint = _HINTS.get(status)
            return _Failure(f"http {status}: {hint}" if hint else f"http {status}", False, detail)
        if isinstance(exc, openai.APITimeoutError):
            return _Failure("timeout", True, f"no reply within {self.timeout:g}s")
        if isinstance(exc, openai.APIConnectionError):
            root = _chain(exc)[-1]
            return _Failure(_connection_reason(exc), True, _trim(str(root) or type(root).__name__))
        if isinstance(exc, openai.APIResponseValidationError):
            return _Failure("malformed body", True, _trim(str(exc)))
        if isinstance(exc, ValueError):
            # The SDK's json.loads on a 200 body that is empty, cut short or not UTF-8.
            return _Failure("malformed body", True, f"{type(exc).__name__}: {_trim(str(exc), 120)}")
        raise exc

    def _scrub(self, text: str) -> str:
        """Text with the API key (should a server echo it) blanked out."""
        if len(self._secret) >= 6 and self._secret != "EMPTY":
            return text.replace(self._secret, "***")
        return text


def _chat_text(response: Any) -> tuple[str, str | None]:
    """(text, finish_reason) of the first choice, or a retryable _Failure for a malformed body."""
    return _chat_texts(response, first_only=True)[0]


def _chat_texts(response: Any, first_only: bool = False) -> list[tuple[str, str | None]]:
    """(text, finish_reason) of every choice (the first only, with `first_only`); a retryable
    _Failure for a malformed body."""
    if isinstance(response, (str, bytes)):
        # The SDK hands back the raw text when a 200 is not JSON (e.g. an HTML error page).
        raw = response.decode("utf-8", "replace") if isinstance(response, bytes) else response
        raise _Failure("malformed body", True, f"not JSON: {_trim(raw, 80)}")
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list):
        raise _Failure("malformed body", True, f"no choices: {_trim(repr(response), 120)}")
    if not choices:
        raise _Failure("empty choices", True)
    return [_choice_text(choice) for choice in (choices[:1] if first_only else choices)]


def _choice_text(choice: Any) -> tuple[str, str | None]:
    message = getattr(choice, "message", None)
    content = getattr(message, "content", None)
    if message is None:
        raise _Failure("malformed body", True, "choice without a message")
    if content is None:
        raise _Failure("null content", True, f"finish_reason={getattr(choice, 'finish_reason', None)}")
    if not isinstance(content, str):
        raise _Failure("malformed body", True, f"content is {type(content).__name__}")
    finish_reason = getattr(choice, "finish_reason", None)
    return content, (str(finish_reason) if finish_reason is not None else None)


def listed_model(url: str, api_key: str, role: str) -> str:
    """The one model an endpoint lists (GET /v1/models), when the user named none."""

    async def ask() -> list[str]:
        async with Endpoint(url, "", api_key, max_retries=2) as endpoint:
            return await endpoint.models()

    try:
        ids = asyncio.run(ask())
    except EndpointError as e:
        raise StageFailed(f"the {role} endpoint {e}") from None
    if len(ids) != 1:
        raise UserError(f"the {role} endpoint {url} lists {len(ids)} models ({', '.join(ids)}): "
                        f"choose one with --{role}-model NAME")
    return ids[0]
