"""`autointerp serve`: the feature browser and its JSON API live from a store, read-only (uvicorn).

The store is opened read-only, so a labelling run elsewhere cannot be disturbed (DuckDB lets one
writer or many readers hold a file: serve a copy, or stop the server, while labelling). The app is in
`api.py`; this module binds the socket (port 0: any free one, so the URL is known before serving)
and runs uvicorn on it.
"""

from __future__ import annotations

import socket

from ..store import Store
from .api import make_app


class BrowserServer:
    """The app on a bound socket; `serve()` blocks until `stop()` (or Ctrl-C)."""

    def __init__(self, store: Store, dictionary: str | None = None, host: str = "127.0.0.1", port: int = 8000) -> None:
        import uvicorn

        self.app = make_app(store, dictionary)
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
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.sock.close()

    def stop(self) -> None:
        self.server.should_exit = True

    @property
    def started(self) -> bool:
        return self.server.started


def make_server(store: Store, dictionary: str | None = None, host: str = "127.0.0.1", port: int = 8000) -> BrowserServer:
    return BrowserServer(store, dictionary, host, port)
