"""The deadline guard: with `inference.deadline_s`, from `deadline_margin` before the deadline
no request is sent (when its turn comes) and none still awaited is waited for, no server is
started (nor waited for past it), and the alarm writes the submission at once. A served model
whose server went away (its port refuses) is asked nothing more either.

Time is read from a `Clock`, the real one by default: tests pass one they move by hand, as
they pass the endpoint's backoff its `sleep`, so no margin depends on a machine's speed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Protocol, TypeVar

from orchestrator.core.common.errors import StageFailed
from orchestrator.core.common.progress import say
from orchestrator.core.serving.agents import Agent
from orchestrator.core.serving.endpoints import Endpoint, EndpointError

DEADLINE_MARGIN_S = 2.0  # at most this long before inference.deadline_s, the submission is written
T = TypeVar("T")


def deadline_margin(deadline_s: float) -> float:
    """How long before the deadline asking stops and the submission is written."""
    return min(DEADLINE_MARGIN_S, 0.1 * deadline_s)


class Clock(Protocol):
    """Where the deadline reads the time (seconds) and sets its alarm."""

    def now(self) -> float: ...

    def alarm(self, at: float, ring: Callable[[], None]) -> Callable[[], None]:
        """Call `ring` on another thread once `now()` reaches `at`; returns what cancels it."""
        ...


class MonotonicClock:
    """time.monotonic, and a timer thread for the alarm."""

    def now(self) -> float:
        return time.monotonic()

    def alarm(self, at: float, ring: Callable[[], None]) -> Callable[[], None]:
        timer = threading.Timer(max(0.0, at - self.now()), ring)
        timer.daemon = True
        timer.start()
        return timer.cancel


class NotAsked(Exception):
    """A request not sent, or no longer waited for: the deadline came, or the server went away."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Deadline:
    """When asking stops, on `clock` (`at` None: never). Once `start`ed, its alarm rings then:
    every reply still awaited `within` it is given up, and `on_passing` runs (on the alarm's thread)."""

    def __init__(self, at: float | None = None, clock: Clock | None = None):
        self.at = at
        self.clock = clock or MonotonicClock()
        self._lock = threading.Lock()
        self._rang = False
        self._waiting: set[Callable[[], None]] = set()  # wakes each reply awaited `within` the deadline
        self._cancel: Callable[[], None] | None = None
        self._on_passing: Callable[[], None] | None = None

    @classmethod
    def after(cls, deadline_s: float | None, clock: Clock | None = None) -> Deadline:
        """The deadline `deadline_s` seconds from now, less its margin (None: no deadline)."""
        clock = clock or MonotonicClock()
        return cls(None if deadline_s is None else clock.now() + deadline_s - deadline_margin(deadline_s), clock)

    def left(self) -> float | None:
        """Seconds until asking stops (None: no deadline)."""
        return None if self.at is None else self.at - self.clock.now()

    def expired(self) -> bool:
        left = self.left()
        return left is not None and left <= 0

    def start(self, on_passing: Callable[[], None] | None = None) -> None:
        """Set the alarm (none without a deadline)."""
        if self.at is not None and self._cancel is None:
            self._on_passing = on_passing
            self._cancel = self.clock.alarm(self.at, self._ring)

    def stop(self) -> None:
        """Take the alarm off, if it has not rung."""
        if self._cancel is not None:
            self._cancel()

    def _ring(self) -> None:
        with self._lock:
            if self._rang:
                return
            self._rang = True
        if self._on_passing is not None:  # first: the submission in time
            self._on_passing()
        with self._lock:  # held while waking: a loop still waiting is still running
            for wake in self._waiting:
                wake()

    async def within(self, awaitable: Awaitable[T]) -> T:
        """What `awaitable` gives, unless the alarm rings first: then NotAsked("deadline")."""
        if self.at is None:
            return await awaitable
        assert self._cancel is not None, "start() sets the alarm that ends the wait"
        loop = asyncio.get_running_loop()
        rang: asyncio.Future[Any] = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(_settle, rang)

        task: asyncio.Future[Any] = asyncio.ensure_future(awaitable)
        with self._lock:
            if self._rang:
                wake()
            self._waiting.add(wake)
        try:
            await asyncio.wait([task, rang], return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            task.cancel()
            await asyncio.wait({task})
            raise NotAsked("deadline")
        finally:
            with self._lock:
                self._waiting.discard(wake)
            if not task.done():
                task.cancel()


def _settle(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


class Guard:
    """Whether a request may go: not once the deadline has come, nor to a served model whose
    server went away (`down`: agent label -> why)."""

    def __init__(self, deadline: Deadline):
        self.deadline = deadline
        self.down: dict[str, str] = {}

    def check(self, agent: Agent) -> None:
        """Raise NotAsked when `agent` is not to be asked now (the endpoint calls it, in turn)."""
        if agent.label in self.down:
            raise NotAsked(self.down[agent.label])
        if self.deadline.expired():
            raise NotAsked("deadline")

    async def ask(self, agent: Agent, endpoint: Endpoint | None, call: Callable[[Endpoint], Awaitable[T]]) -> T:
        """`call(endpoint)`, unless `check` refuses (now, or when a request's turn comes in the
        endpoint); a reply still awaited at the deadline is given up. A served model's refused
        connection (after retries) means its server is gone: it is asked nothing more."""
        self.check(agent)
        assert endpoint is not None, "an endpoint is up for every model with a question to ask"
        try:
            return await self.deadline.within(call(endpoint))
        except EndpointError as e:
            if e.reason == "connection refused" and not agent.url:
                self.down[agent.label] = "server gone"
            raise

    @contextmanager
    def serving(self, server: Any, agents: list[Agent]) -> Iterator[str | None]:
        """The URL of `server` (a context manager that starts it), or None: the deadline came, or
        (with a deadline) it did not start; then its agents are asked nothing."""
        if self.deadline.expired():
            yield None
            return
        with ExitStack() as stack:
            try:
                url = stack.enter_context(server)
            except StageFailed as e:
                if self.deadline.at is None:
                    raise
                say("infer", f"{e.lines[0]}; its questions get the fallback")
                self.down.update((a.label, "server did not start") for a in agents)
                url = None
            yield url
