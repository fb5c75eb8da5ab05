"""`autointerp serve`: the feature browser live from a store, on localhost, read-only.

The same pages as the static export; the data scripts are made per request from the store (opened
read-only; one request at a time reads it). GET and HEAD only: anything else is 405. The store is
never written, so a labelling run elsewhere cannot be disturbed (DuckDB lets one writer or many
readers hold a file: serve a copy, or stop the server, while labelling).
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..store import Store
from .html import ASSETS, WEB, feature_docs, index_rows, js, site_meta

TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


class BrowserServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, store: Store, dictionary: str | None, address: tuple[str, int]) -> None:
        self.store, self.lock = store, threading.Lock()
        self.dictionary = store.dictionary(dictionary)
        with self.lock:
            self.meta = site_meta(store, self.dictionary)
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}/"

    def data(self, path: str) -> str | None:
        """The data script at `path` (data/meta.js, data/index-K.js, data/f/F.js), or None."""
        d, m = self.dictionary, self.meta
        if path == "data/meta.js":
            with self.lock:
                self.meta = m = site_meta(self.store, d)  # labels may have been added since
            return js("meta", m)
        if (k := re.fullmatch(r"data/index-(\d+)\.js", path)) and int(k.group(1)) < m["shards"]:
            with self.lock:
                return js("shard", int(k.group(1)), index_rows(self.store, d, int(k.group(1)), m["scorers"]))
        if (f := re.fullmatch(r"data/f/(\d+)\.js", path)) and int(f.group(1)) < d.width:
            with self.lock:
                docs = dict(feature_docs(self.store, d, [int(f.group(1))]))
            return js("feature", int(f.group(1)), docs[int(f.group(1))]) if docs else None
        return None


class _Handler(BaseHTTPRequestHandler):
    server: BrowserServer

    def log_message(self, *args) -> None:  # quiet; errors still reach the client as status codes
        pass

    def _reply(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.send_header("cache-control", "no-store")
        self.send_header("x-content-type-options", "nosniff")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_GET(self, head: bool = False) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0].split("#", 1)[0].lstrip("/") or "index.html"
        if path in ASSETS:
            self._reply(200, (WEB / path).read_bytes(), TYPES["." + path.rsplit(".", 1)[1]], head)
            return
        try:
            body = self.server.data(path)
        except Exception as err:  # noqa: BLE001 - a bad request must not take the server down
            self._reply(500, f"{type(err).__name__}: {err}".encode(), head=head)
            return
        if body is None:
            self._reply(404, b"not found", head=head)
        else:
            self._reply(200, body.encode("ascii"), TYPES[".js"], head)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET(head=True)

    def _refuse(self) -> None:
        self._reply(405, b"read-only: GET and HEAD only")

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815


def make_server(store: Store, dictionary: str | None = None, host: str = "127.0.0.1", port: int = 8000) -> BrowserServer:
    return BrowserServer(store, dictionary, (host, port))
