"""A small fault-injecting TCP proxy for tests: resets and delays traffic to a real server.

Put between an S3 client and a moto server on 127.0.0.1, it makes the network misbehave the way
a congested cluster network or an overloaded S3-compatible store does: connections are reset
(TCP RST, via ``SO_LINGER`` 0) before the request is forwarded, in the middle of an upload or in
the middle of a response body, and some answers arrive late. Only bytes are forwarded; nothing
is parsed, so what the client sees is exactly what a broken network gives it.

The fate (pass / delay / one of the resets) is drawn from a seeded RNG for every *exchange*, not
only once per accepted connection: HTTP clients keep connections alive, and a single lucky
pass-through connection would otherwise carry the whole test and inject nothing. An exchange
starts when the client sends after the server has answered (HTTP/1.1 without pipelining, which
is what urllib3/botocore do); the first exchange starts with the connection. The one piece of
HTTP the proxy looks at is an interim ``100 Continue`` answer: botocore's PUTs wait for it
before sending the body, and it does not end the exchange.

Each connection is served by one thread that ``select``s on both sockets, so an exchange's
state lives in one place; `FaultProxy.close` (or leaving the ``with`` block) stops the accept
thread and every connection thread and closes every socket.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from types import TracebackType

logger = logging.getLogger(__name__)

#: How often blocked threads look at the stop flag (seconds).
_POLL_S = 0.05
#: Largest chunk read from either side at once.
_CHUNK = 64 * 1024
#: Send timeout: a peer that stops reading for this long ends its connection (no hangs).
_SEND_TIMEOUT_S = 10.0

PASS = "pass"
DELAY = "delay"
#: Reset as soon as the request arrives, before anything reaches the server.
RESET_BEFORE_REQUEST = "reset-before-request"
#: Reset after forwarding part of the request (an interrupted upload).
RESET_MID_REQUEST = "reset-mid-request"
#: Reset after forwarding part of the response (an interrupted download: breaks Body.read()).
RESET_MID_RESPONSE = "reset-mid-response"


@dataclass
class _Fate:
    kind: str
    #: bytes of the request (mid-request) or response (mid-response) forwarded before the reset
    budget: int = 0


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST instead of a FIN (linger on, timeout 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _is_interim(data: bytes) -> bool:
    """True for a whole interim (1xx) HTTP answer such as ``HTTP/1.1 100 Continue``."""
    return data.startswith((b"HTTP/1.1 1", b"HTTP/1.0 1")) and data.endswith(b"\r\n\r\n")


class FaultProxy:
    """Forward 127.0.0.1:<port> to ``target_host:target_port``, injecting faults.

    Per exchange: with probability ``reset_fraction`` the connection is reset, before the
    request is forwarded, part-way through the request or part-way through the response (the
    case that breaks streaming reads) in the proportions ``reset_weights`` (default 1:1:2),
    after a random 1..``max_reset_bytes`` bytes of the request or response; with probability
    ``delay_fraction`` the response is held back ``delay_s`` seconds; otherwise it passes.
    Counters (``connections``, ``exchanges``, ``resets``, ``delayed`` and ``reset_kinds``)
    count what actually happened, so a test can assert that faults were really injected.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        reset_fraction: float = 0.2,
        delay_fraction: float = 0.2,
        delay_s: float = 0.05,
        seed: int = 0,
        max_reset_bytes: int = 1 << 20,
        reset_weights: tuple[float, float, float] = (1.0, 1.0, 2.0),
    ) -> None:
        if reset_fraction < 0 or delay_fraction < 0 or reset_fraction + delay_fraction > 1:
            raise ValueError("reset_fraction and delay_fraction must be >= 0 and sum to <= 1")
        if len(reset_weights) != 3 or min(reset_weights) < 0 or sum(reset_weights) <= 0:
            raise ValueError(
                "reset_weights: three weights >= 0 (before, mid-request, mid-response)"
            )
        total = sum(reset_weights)
        self._reset_cuts = (reset_weights[0] / total, (reset_weights[0] + reset_weights[1]) / total)
        self.target = (target_host, target_port)
        self.reset_fraction = reset_fraction
        self.delay_fraction = delay_fraction
        self.delay_s = delay_s
        self.max_reset_bytes = max(1, max_reset_bytes)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self.port = 0
        self.connections = 0
        self.exchanges = 0
        self.resets = 0
        self.delayed = 0
        self.reset_kinds: collections.Counter[str] = collections.Counter()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(_POLL_S)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"fault-proxy-{self.port}", daemon=True
        )
        self._accept_thread.start()
        logger.info("fault proxy %s -> %s:%d", self.url, *self.target)
        return self

    def close(self) -> None:
        """Stop accepting, end every connection and wait for all threads."""
        self._stop.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"fault proxy threads did not stop: {alive}")
        logger.info(
            "fault proxy %s closed: %d connections, %d exchanges, %d resets %s, %d delayed",
            self.url,
            self.connections,
            self.exchanges,
            self.resets,
            dict(self.reset_kinds),
            self.delayed,
        )

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _draw(self) -> _Fate:
        """The fate of the next exchange (seeded, so a run's sequence of fates is fixed)."""
        with self._lock:
            self.exchanges += 1
            r = self._rng.random()
            budget = self._rng.randint(1, self.max_reset_bytes)
            if r < self.reset_fraction:
                part = r / self.reset_fraction
                if part < self._reset_cuts[0]:
                    return _Fate(RESET_BEFORE_REQUEST)
                if part < self._reset_cuts[1]:
                    return _Fate(RESET_MID_REQUEST, budget)
                return _Fate(RESET_MID_RESPONSE, budget)
            if r < self.reset_fraction + self.delay_fraction:
                return _Fate(DELAY)
            return _Fate(PASS)

    def _count_reset(self, kind: str) -> None:
        with self._lock:
            self.resets += 1
            self.reset_kinds[kind] += 1

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError as exc:
                logger.warning("fault proxy cannot reach %s:%d: %s", *self.target, exc)
                client.close()
                continue
            with self._lock:
                self.connections += 1
                # Forget finished threads so a long test does not keep thousands around.
                self._threads = [t for t in self._threads if t.is_alive()]
                thread = threading.Thread(
                    target=self._serve,
                    args=(client, upstream),
                    name=f"fault-proxy-{self.port}-conn-{self.connections}",
                    daemon=True,
                )
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        """Pump bytes both ways until either side closes, a reset is due, or the proxy stops."""
        for sock in (client, upstream):
            sock.settimeout(_SEND_TIMEOUT_S)
        fate: _Fate | None = None
        request_bytes = response_bytes = 0
        answered = True  # the server has answered the previous exchange (or there was none)
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([client, upstream], [], [], _POLL_S)
                if client in readable:
                    data = client.recv(_CHUNK)
                    if not data:
                        return
                    if answered:
                        fate, request_bytes, response_bytes, answered = self._draw(), 0, 0, False
                    assert fate is not None
                    if fate.kind == RESET_BEFORE_REQUEST:
                        self._count_reset(fate.kind)
                        _reset(client)
                        _reset(upstream)
                        return
                    if fate.kind == RESET_MID_REQUEST and request_bytes + len(data) >= fate.budget:
                        upstream.sendall(data[: fate.budget - request_bytes])
                        self._count_reset(fate.kind)
                        _reset(client)
                        _reset(upstream)
                        return
                    upstream.sendall(data)
                    request_bytes += len(data)
                if upstream in readable:
                    data = upstream.recv(_CHUNK)
                    if not data:
                        return
                    assert fate is not None
                    if response_bytes == 0 and _is_interim(data):
                        client.sendall(data)  # "100 Continue": the request body follows
                        continue
                    if fate.kind == DELAY and not answered and response_bytes == 0:
                        with self._lock:
                            self.delayed += 1
                        time.sleep(self.delay_s)
                    answered = True
                    if (
                        fate.kind == RESET_MID_RESPONSE
                        and response_bytes + len(data) >= fate.budget
                    ):
                        client.sendall(data[: fate.budget - response_bytes])
                        self._count_reset(fate.kind)
                        _reset(client)
                        _reset(upstream)
                        return
                    client.sendall(data)
                    response_bytes += len(data)
        except OSError as exc:  # a peer went away mid-send: that connection is over
            logger.debug("fault proxy connection ended: %s", exc)
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()
