"""Serving safely: the slow endpoints on bounded pools of their own (503 + Retry-After when full, the rest
still answering), the Host header checked (DNS rebinding), /api/docs with nothing from another origin,
and labels and tokens with terminal escape sequences printed escaped by the CLI.

One small store for the module: a parquet dictionary whose tokens and imported labels carry ESC sequences."""

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from contextlib import contextmanager
from html.parser import HTMLParser

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.export.safety import HostGuard, allowed_hosts
from autointerp.ingest import ingest_parquet
from autointerp.store import Store, open_store

runner = CliRunner()
TITLE = "\x1b]0;pwned\x07"  # sets the terminal's title
CLEAR = "\x1b[2J"  # clears the screen
CSI = "\x9b31m"  # C1: the one-byte CSI
LABEL = f"the word zebra{TITLE}{CLEAR}{CSI} done"
TOKEN = "\x1b[31mred"
WIDTH = 8


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """8 features over 60 contexts; feature 0 fires on TOKEN; its imported label (through `ingest labels`)
    holds a title-setting OSC, a clear-screen CSI and a C1 CSI."""
    tmp = tmp_path_factory.mktemp("safety")
    rng = np.random.default_rng(0)
    vocab = [f" w{i}" for i in range(20)] + [TOKEN]
    tok = rng.integers(0, len(vocab), size=(60, 16))
    folder = tmp / "acts"
    folder.mkdir()
    pq.write_table(pa.table({"context_id": np.arange(60), "token_ids": [list(map(int, r)) for r in tok],
                             "tokens": [[vocab[i] for i in r] for r in tok]}), folder / "contexts.parquet")
    rows = [(0, c, p, 3.0) for c, p in zip(*np.nonzero(tok == len(vocab) - 1))]
    for f in range(1, WIDTH):
        rows += [(f, c, p, 1.0) for c, p in zip(*np.nonzero(tok == f))]
    f, c, p, v = (np.array(x) for x in zip(*rows))
    pq.write_table(pa.table({"feature": f, "context_id": c, "position": p, "value": v}), folder / "activations.parquet")
    path = tmp / "safety.duckdb"
    with Store(path) as s:
        ingest_parquet(s, folder, dictionary="esc", width=WIDTH, model="toy", hook="layer.0")
    labels = tmp / "labels.jsonl"
    labels.write_text("".join(json.dumps({"feature_id": i, "explanation": LABEL if i == 0 else f"the word w{i}"}) + "\n"
                              for i in range(WIDTH)))
    r = cli("ingest", "labels", labels, "--store", path, "--format", "jsonl")
    assert r.exit_code == 0, r.output
    return path


@contextmanager
def serving(path, **kw):
    """The server `autointerp serve` runs, on a free loopback port in a thread: yields it."""
    from autointerp.export.serve import make_server

    with open_store(path, read_only=True) as s:
        server = make_server(s, port=0, **kw)
        t = threading.Thread(target=server.serve, daemon=True)
        t.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert t.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        try:
            yield server
        finally:
            server.stop()
            t.join(10)


@pytest.fixture(scope="module")
def served(store_path):
    """One thread and no queue for each slow endpoint; browser.example allowed besides the loopback names."""
    with serving(store_path, allowed_hosts=["browser.example"], slow=(1, 0)) as server:
        yield server


def request(server, path, host=None, method="GET"):
    """(status, headers, body) of one request, with the Host header `host` (default: the server's address)."""
    addr, port = server.sock.getsockname()[:2]
    conn = http.client.HTTPConnection(addr, port, timeout=60)
    try:
        conn.request(method, path, headers={"Host": host if host is not None else f"{addr}:{port}"})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_host_header_must_name_the_server(served):
    port = served.sock.getsockname()[1]
    for host in [f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}", "[::1]",
                 "browser.example", f"browser.example:{port}"]:
        status, _, body = request(served, "/api/dictionaries", host)
        assert status == 200 and json.loads(body)[0]["name"] == "esc", (host, body)
    for host in ["evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "10.0.0.1", "browser.example.evil",
                 ""]:
        for path in ("/api/dictionaries", "/", "/api/docs", "/openapi.json"):
            status, headers, body = request(served, path, host)
            doc = json.loads(body)
            assert status == 400 and list(doc) == ["error"] and "\n" not in doc["error"], (host, path, body)
            assert "--allowed-host" in doc["error"] and headers["content-type"] == "application/json"
    status, _, body = request(served, "/api/dictionaries", "evil.example", method="HEAD")
    assert status == 400 and body == b""
    assert request(served, "/api/features", "evil.example", method="POST")[0] == 400  # the Host, before all else


def test_allowed_hosts_of_an_address():
    names, any_ip = allowed_hosts("127.0.0.1", ["Docs.Example"])
    guard = HostGuard(None, names, any_ip)
    assert guard.allowed("docs.example:80") and guard.allowed("127.0.0.1:1") and guard.allowed("[::1]:9")
    assert not guard.allowed("192.168.1.4:8000") and not guard.allowed(None) and not guard.allowed("docs.example.evil")
    names, any_ip = allowed_hosts("::1")
    assert HostGuard(None, names, any_ip).allowed("[::1]:8000")
    names, any_ip = allowed_hosts("0.0.0.0", ["lab.example"])  # every address: the machine's name and any IP too
    guard = HostGuard(None, names, any_ip)
    assert guard.allowed(f"{socket.gethostname()}:8000") and guard.allowed("192.168.1.4:8000")
    assert guard.allowed("[fe80::1]:8000") and guard.allowed("lab.example")
    assert not guard.allowed("evil.example:8000")


def test_a_full_slow_pool_answers_503_and_the_rest_keep_answering(served):
    """The trace pool (1 thread, no queue) is held by a trace whose model load waits (the lock a model
    load holds, taken here): a second trace is 503 with Retry-After at once; the feature list and search
    (a pool of its own) answer meanwhile; after the load, traces are answered again."""
    browser, pool = served.app.state.browser, served.app.state.pools["trace"]
    q = "/api/trace?" + urllib.parse.urlencode({"text": "a w1 b", "dictionary": "esc"})
    got = {}
    with browser._tracer_lock:
        first = threading.Thread(target=lambda: got.setdefault("first", request(served, q)))
        first.start()
        deadline = time.monotonic() + 30
        while pool.held < 1:  # the first trace has its place (running, waiting for the model)
            assert time.monotonic() < deadline and first.is_alive()
            time.sleep(0.005)
        t0 = time.monotonic()
        status, headers, body = request(served, q)
        assert time.monotonic() - t0 < 5
        assert status == 503 and int(headers["retry-after"]) >= 1, (status, headers, body)
        doc = json.loads(body)
        assert list(doc) == ["error"] and "busy" in doc["error"] and "\n" not in doc["error"]
        status, _, body = request(served, "/api/features?limit=3")
        assert status == 200 and len(json.loads(body)["rows"]) == 3
        status, _, body = request(served, "/api/search?q=zebra&limit=2")
        assert status == 200 and json.loads(body)["rows"][0]["feature"] == 0
        assert first.is_alive()  # still waiting for the model
    first.join(30)
    status, _, body = got["first"]  # the model load went on: this dictionary has no model (400, one line)
    assert status == 400 and "not captured from a local model" in json.loads(body)["error"]
    assert pool.held == 0
    status, _, _ = request(served, q)
    assert status == 400  # the place is free again: answered, not 503


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href", "action", "srcset", "data", "poster")]


def test_docs_page_needs_no_other_origin(served):
    status, headers, body = request(served, "/api/docs")
    assert status == 200 and headers["content-type"].startswith("text/html")
    html = body.decode()
    parser = _Refs()
    parser.feed(html)
    assert parser.refs  # the OpenAPI link and the forms
    for tag, attr, value in parser.refs:  # same-origin paths (or data:) only
        assert value.startswith(("/", "#", "data:")) and not value.startswith("//"), (tag, attr, value)
    assert "<script" not in html and "@import" not in html and "url(" not in html
    assert "http://" not in html and "https://" not in html
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    for path in ("/api/dictionaries", "/api/features", "/api/features/{feature}", "/api/search", "/api/trace"):
        assert f"<code>{path}</code>" in html
    assert 'action="/api/features"' in html and "&#x27;esc&#x27;" in html  # a form; the dictionary enum
    assert request(served, "/openapi.json")[0] == 200


def test_cli_text_output_shows_control_characters_escaped(store_path):
    escaped = "\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m"
    for args in (["labels"], ["show", "--feature", "0"], ["search", "zebra", "--limit", "2"]):
        r = cli(*args, "--store", store_path)
        assert r.exit_code == 0, (args, r.output)
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\x9b" not in r.stdout, (args, r.stdout)
        assert escaped in r.stdout, (args, r.stdout)
    shown = cli("show", "--feature", "0", "--store", store_path).stdout
    assert "<<\\x1b[31mred>>" in shown  # the firing token, escaped too
    assert "héllo 日本\\n" == __import__("autointerp.cli.common", fromlist=["safe"]).safe("héllo 日本\n")
    doc = json.loads(cli("labels", "--store", store_path, "--json").stdout)  # JSON: the label as it is
    assert LABEL in [r["explanation"] for r in doc["labels"]]


def test_serve_allowed_host_option(store_path):
    """`autointerp serve --allowed-host NAME` (repeatable) answers those names, and no other."""
    proc = subprocess.Popen([sys.executable, "-m", "autointerp", "serve", "--store", str(store_path), "--port", "0",
                             "--allowed-host", "one.example", "--allowed-host", "two.example:8000", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "serving esc" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = urllib.parse.urlsplit(line.split(" at ")[1].split()[0])

        def status(host):
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            try:
                conn.request("GET", "/api/dictionaries", headers={"Host": host})
                return conn.getresponse().status
            finally:
                conn.close()

        assert [status(h) for h in ("one.example", "two.example", f"localhost:{url.port}", "three.example")] == \
            [200, 200, 200, 400]
    finally:
        proc.terminate()
        proc.wait(30)
