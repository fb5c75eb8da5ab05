"""What keeps `autointerp serve` answering and its answers its own (api.py uses these).

- `SlowPool`: the slow endpoints (trace, search) run on a few threads of their own with a short queue
  before them, never on the threads every other request runs on: a slow trace cannot starve the
  feature list. A request that finds the threads and the queue full is answered 503 at once, with
  `Retry-After` (`Busy`), instead of waiting behind them.
- `HostGuard`: the Host header must name the server (DNS rebinding: a page on an attacker's name that
  resolves to 127.0.0.1 would otherwise read the API from the victim's browser). `allowed_hosts`
  gives the names for an address the server is bound to.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import socket
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
WILDCARDS = ("0.0.0.0", "::", "")


class Busy(Exception):
    """The slow pool's threads and queue are full (503 with Retry-After)."""

    def __init__(self, what: str, retry_after: int) -> None:
        super().__init__(f"busy: too many {what} requests at once; try again in {retry_after} s")
        self.retry_after = retry_after


class SlowPool:
    """`threads` threads for one slow endpoint, and room for `queue` more requests waiting for them; past
    that, `run` raises Busy at once. A request whose client went away while it waited is dropped from the
    queue; one already running finishes (a thread cannot be stopped) and holds its place until it does."""

    def __init__(self, what: str, threads: int = 4, queue: int = 8, retry_after: int = 1) -> None:
        if threads < 1 or queue < 0:
            raise ValueError(f"a slow pool needs at least one thread and a queue of 0 or more, not {threads}, {queue}")
        self.what, self.threads, self.queue, self.retry_after = what, threads, queue, retry_after
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=f"autointerp-{what}")
        self._places = threading.BoundedSemaphore(threads + queue)
        self._count = threading.Lock()
        self.held = 0  # requests running or waiting now

    async def run(self, fn: Callable, *args, **kwargs):
        if not self._places.acquire(blocking=False):
            raise Busy(self.what, self.retry_after)
        with self._count:
            self.held += 1
        try:
            fut = self._executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._release()
            raise
        fut.add_done_callback(lambda _: self._release())  # when the work ends (or is cancelled while queued)
        return await asyncio.wrap_future(fut)

    def _release(self) -> None:
        with self._count:
            self.held -= 1
        self._places.release()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def on_pool(pool: SlowPool, model) -> Callable:
    """Decorator: the (sync) endpoint runs on `pool`, and its answer is validated against `model` and made
    JSON there too (a large trace's matrix is never serialised on the event loop)."""
    from fastapi.responses import JSONResponse

    def wrap(fn: Callable) -> Callable:
        def work(*args, **kwargs):
            return JSONResponse(model.model_validate(fn(*args, **kwargs)).model_dump(mode="json"))

        @functools.wraps(fn)  # FastAPI reads the parameters from fn's signature
        async def endpoint(*args, **kwargs):
            return await pool.run(work, *args, **kwargs)

        return endpoint

    return wrap


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name[1:-1] if name.startswith("[") and name.endswith("]") else name)
        return True
    except ValueError:
        return False


def host_name(value: str) -> str:
    """A Host header's name, lower-cased, without its port ("[::1]:8000" -> "[::1]")."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[:end + 1] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> tuple[frozenset[str], bool]:
    """(the Host names a server bound to `bind` answers, whether any IP address is allowed too).

    Always: localhost, 127.0.0.1, [::1], the bound address, and the names in `extra`. Bound to every
    address (0.0.0.0 or ::): also this machine's hostname (and its fully qualified name), and any IP
    address: a rebinding attack needs a name of the attacker's in the Host header, never an address."""
    bound = bind.strip().lower()
    names = {*LOOPBACK, *(host_name(n) for n in extra if n.strip())}
    if bound not in WILDCARDS:
        names.add(f"[{bound}]" if ":" in bound else bound)
        return frozenset(names), False
    for n in (socket.gethostname(), socket.getfqdn()):
        if n:
            names.add(n.lower())
    return frozenset(names), True


class HostGuard:
    """ASGI middleware: 400 with a one-line JSON error for a request whose Host header is not one of
    `names` (or, with `any_ip`, an IP address); no Host at all is refused too."""

    def __init__(self, app, names: Iterable[str], any_ip: bool = False) -> None:
        self.app, self.names, self.any_ip = app, frozenset(names), any_ip

    def allowed(self, host: str | None) -> bool:
        if not host:
            return False
        name = host_name(host)
        return name in self.names or (self.any_ip and _is_ip(name))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), None)
            if not self.allowed(host):
                body = json.dumps({"error": f"host {(host or '')[:100]!r} is not this server's: start `autointerp "
                                            "serve` with --allowed-host NAME to answer it"}).encode()
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()),
                                        (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]})
                await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
                return
        await self.app(scope, receive, send)
