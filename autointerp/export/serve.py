"""`autointerp serve`: the feature browser and its JSON API live from a store, read-only (uvicorn).

The store is opened as a reader: labelling runs, jobs and imports write it meanwhile (store/gate.py), and
the server takes their commits in every few seconds (`Browser.watch`: only the features that changed are
read again). The app is in `api.py`; this module binds the socket (port 0: any free one, so the URL is
known before serving) and runs uvicorn on it.

Only requests whose Host header names this server are answered (safety.allowed_hosts: localhost,
127.0.0.1, [::1], the bound address; bound to 0.0.0.0 or ::, also this machine's name and any IP
address; and each `allowed_hosts` name): a web page on another name cannot read the API through DNS
rebinding.
"""

from __future__ import annotations

import socket

from collections.abc import Iterable

from ..store import Store
from .api import SLOW, make_app
from .safety import allowed_hosts as host_names

SERVE_READ_WAIT = 10.0  # seconds a request waits for a writer's long transaction before its 503


class BrowserServer:
    """The app on a bound socket; `serve()` blocks until `stop()` (or Ctrl-C)."""

    def __init__(self, store: Store, dictionary: str | None = None, host: str = "127.0.0.1", port: int = 8000,
                 allowed_hosts: Iterable[str] = (), slow: tuple[int, int] = SLOW, warm: bool = False) -> None:
        import uvicorn

        self.warm = warm
        self.hosts = host_names(host, allowed_hosts)
        store.db.read_wait = SERVE_READ_WAIT  # a request does not wait long for a writer's long transaction: 503
        self.app = make_app(store, dictionary, hosts=self.hosts, slow=slow)
        self.dictionary = self.app.state.browser.default
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False,
                                                    timeout_graceful_shutdown=2))

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def serve(self) -> None:
        import threading

        stop = threading.Event()
        watcher = threading.Thread(target=self.app.state.browser.watch, args=(stop,), name="browser-refresh",
                                   daemon=True)
        watcher.start()
        if self.warm:  # the served dictionary's model, loaded now for trace (not on the first request)
            self.app.state.browser.warm()
        try:
            self.server.run(sockets=[self.sock])
        finally:
            stop.set()
            self.sock.close()
            for pool in self.app.state.pools.values():
                pool.close()

    def stop(self) -> None:
        self.server.should_exit = True

    @property
    def started(self) -> bool:
        return self.server.started


def make_server(store: Store, dictionary: str | None = None, host: str = "127.0.0.1", port: int = 8000,
                allowed_hosts: Iterable[str] = (), slow: tuple[int, int] = SLOW, warm: bool = False) -> BrowserServer:
    """The server; `warm`: load the served dictionary's model for trace as it starts (`autointerp serve` does)."""
    return BrowserServer(store, dictionary, host, port, allowed_hosts, slow, warm)
