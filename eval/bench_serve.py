"""`autointerp serve` under load: p50/p99 latency per endpoint at several numbers of concurrent connections,
alone and with a trace load beside it (clients that send /api/trace back to back, waiting Retry-After
seconds after a 503).

    python eval/bench_serve.py [--store PATH --dictionary NAME] [--tokens 4000] [--label 64] [--seconds 10]
                               [--clients 16,64] [--tracers 8] [--out DIR] [--src DIR]

Without --store it builds one in a temporary folder, as a new user would: `capture` of the bundled
all-MiniLM-L6-v2's layer-2 MLP neurons over the bundled corpus (--tokens), then offline `label` of the
first --label neurons (so search has labels, and trace has a model to run). With --store, the dictionary
should be a captured one (trace needs its model; an ingested one answers trace 400, which still loads the
server but no model).

`serve` runs as a subprocess (its own process, as a user runs it; --src DIR runs it from another source
tree, e.g. an older checkout, to compare). Each client is a thread holding one keep-alive connection,
cycling through /api/dictionaries, /api/features (the first 100 rows), /api/features/{id} and
/api/search. The clients run on the same machine as the server: on a small machine they take CPU from it,
so compare figures from one machine and one run.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

HOOK = "encoder.layer.2.intermediate"
QUERIES = ["the word return", "dates and times", "python functions", "numbers in a list", "errors raised",
           "file paths", "the end of a sentence", "class names"]
TEXTS = ["Return the value of the named attribute of object.", "Open file and return a corresponding file object.",
         "If the key is not found, raise a KeyError.", "The sort is stable: equal elements keep their order.",
         "Convert a number or string to an integer, or return 0 if no arguments are given."]


def autointerp(*args: str, env: dict | None = None) -> str:
    r = subprocess.run([sys.executable, "-m", "autointerp", *map(str, args)], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"autointerp {' '.join(map(str, args[:2]))} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return r.stdout


def build(folder: Path, tokens: int, n_label: int) -> tuple[Path, str]:
    from importlib.util import find_spec

    corpus = Path(find_spec("autointerp").origin).parent / "data" / "stdlib_docs.txt"
    store = folder / "bench_serve.duckdb"
    if store.exists():
        print(f"reusing {store}", flush=True)
        return store, "bench"
    t = time.perf_counter()
    autointerp("capture", "--corpus", corpus, "--neurons", HOOK, "--store", store, "--dictionary", "bench",
               "--max-tokens", tokens, "--device", "cpu", "--no-outputs")
    autointerp("label", "--store", store, "--dictionary", "bench", "--features", f"0-{n_label - 1}",
               "--scorer", "embedding")
    print(f"built {store}: {tokens:,} tokens captured, {n_label} features labelled offline "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    return store, "bench"


class Server:
    """`autointerp serve` on a free port, in its own process."""

    def __init__(self, store: Path, dictionary: str, src: str | None) -> None:
        env = dict(os.environ)
        if src:
            env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
        # cwd: `python -m` puts it first on the path, before PYTHONPATH
        self.proc = subprocess.Popen([sys.executable, "-m", "autointerp", "serve", "--store", str(Path(store).resolve()),
                                      "--dictionary", dictionary, "--port", "0", "--device", "cpu"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=src or tempfile.gettempdir())
        line = self.proc.stdout.readline()  # "serving ... at URL (...)" once it listens
        if " at " not in line:
            self.proc.kill()
            raise SystemExit(f"serve did not start: {line}{self.proc.stderr.read()[-2000:]}")
        url = urllib.parse.urlsplit(line.split(" at ", 1)[1].split()[0])
        self.host, self.port = url.hostname, url.port

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Client:
    """One keep-alive connection; `get` -> (milliseconds, status), reconnecting after a failure."""

    def __init__(self, server: Server) -> None:
        self.server, self.conn, self.retry_after = server, None, 0.0

    def get(self, path: str) -> tuple[float, int | str]:
        t = time.perf_counter()
        self.retry_after = 0.0
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=120)
            self.conn.request("GET", path)
            r = self.conn.getresponse()
            r.read()
            status: int | str = r.status
            if status == 503:
                self.retry_after = float(r.getheader("retry-after") or 1)
            if r.getheader("connection", "").lower() == "close":
                self.close()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            status = type(e).__name__
        return (time.perf_counter() - t) * 1000, status

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def q(path: str, **params) -> str:
    return path + ("?" + urllib.parse.urlencode(params) if params else "")


def cases(dictionary: str, labelled: int, rng: random.Random) -> dict:
    """endpoint -> a function giving the next request's path."""
    return {"/api/dictionaries": lambda: "/api/dictionaries",
            "/api/features (first rows)": lambda: q("/api/features", dictionary=dictionary, limit=100),
            "/api/features/{id}": lambda: f"/api/features/{rng.randrange(labelled)}?dictionary={dictionary}",
            "/api/search": lambda: q("/api/search", q=rng.choice(QUERIES), limit=10)}


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))] if xs else float("nan")


def phase(server: Server, dictionary: str, labelled: int, n_clients: int, n_tracers: int, seconds: float) -> dict:
    """n_clients on the four endpoints and n_tracers on /api/trace for `seconds`: endpoint -> [(ms, status)]."""
    stop = time.monotonic() + seconds
    got: dict[str, list] = {}
    lock = threading.Lock()
    start = threading.Barrier(n_clients + n_tracers)

    def client(k: int) -> None:
        rng = random.Random(k)
        c, mine = Client(server), []
        ways = list(cases(dictionary, labelled, rng).items())
        start.wait()
        for name, make in itertools.islice(itertools.cycle(ways), k % len(ways), None):
            if time.monotonic() >= stop:
                break
            mine.append((name, *c.get(make())))
        c.close()
        with lock:
            for name, ms, status in mine:
                got.setdefault(name, []).append((ms, status))

    def tracer(k: int) -> None:
        rng = random.Random(1000 + k)
        c, mine = Client(server), []
        start.wait()
        while time.monotonic() < stop:
            mine.append(c.get(q("/api/trace", text=rng.choice(TEXTS), dictionary=dictionary, top=5)))
            if c.retry_after:  # a polite client: it waits as told
                time.sleep(min(c.retry_after, max(0.0, stop - time.monotonic())))
        c.close()
        with lock:
            got.setdefault("/api/trace (the load)", []).extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    threads += [threading.Thread(target=tracer, args=(k,)) for k in range(n_tracers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, help="serve this store (default: build one)")
    ap.add_argument("--dictionary", help="with --store: a captured dictionary (trace runs its model)")
    ap.add_argument("--tokens", type=int, default=4000, help="building: corpus tokens to capture")
    ap.add_argument("--label", type=int, default=64, help="building: features to label offline")
    ap.add_argument("--seconds", type=float, default=10, help="length of each phase")
    ap.add_argument("--clients", default="16,64", help="concurrent connections, one phase each (comma-separated)")
    ap.add_argument("--tracers", type=int, default=8, help="trace clients beside them in the loaded phases (each "
                    "waits Retry-After seconds after a 503)")
    ap.add_argument("--out", type=Path, help="build the store in this folder, or reuse the one built there "
                    "(default: a temporary folder)")
    ap.add_argument("--src", help="run serve from this source tree (PYTHONPATH), e.g. an older checkout")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        if args.store:
            if not args.dictionary:
                raise SystemExit("--store needs --dictionary (a captured one)")
            store, dictionary, labelled = args.store, args.dictionary, args.label
        else:
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
            store, dictionary = build(args.out or Path(tmp), args.tokens, args.label)
            labelled = args.label
        server = Server(store, dictionary, args.src)
        try:
            warm = Client(server)  # the feature index, the label matrix and the model load once, before timing
            for path in [*[make() for make in cases(dictionary, labelled, random.Random(0)).values()],
                         q("/api/trace", text=TEXTS[0], dictionary=dictionary)]:
                ms, status = warm.get(path)
                print(f"warm-up {path.split('?')[0]:<24} {status} {ms:8.0f} ms", flush=True)
            warm.close()
            rows = []
            for n in [int(x) for x in args.clients.split(",")]:
                for tracers in (0, args.tracers):
                    got = phase(server, dictionary, labelled, n, tracers, args.seconds)
                    order = [*cases(dictionary, labelled, random.Random(0)), "/api/trace (the load)"]
                    for name, res in sorted(got.items(), key=lambda kv: order.index(kv[0])):
                        ms = [m for m, _ in res]
                        statuses: dict = {}
                        for _, s in res:
                            statuses[s] = statuses.get(s, 0) + 1
                        other = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str) if k != 200)
                        rows.append((n, tracers, name, len(res), percentile(ms, 0.5), percentile(ms, 0.99),
                                     len(res) / args.seconds, other or "-"))
                    print(f"... {n} clients, {tracers} tracers done", file=sys.stderr, flush=True)
        finally:
            server.stop()
    print(f"\n{args.seconds:g} s a phase; latency of every answer (200 or not); not 200: status: count")
    print(f"{'clients':>7} {'tracers':>7}  {'endpoint':<28} {'requests':>8} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8}"
          "  not 200")
    for n, tracers, name, count, p50, p99, rate, other in rows:
        print(f"{n:>7} {tracers:>7}  {name:<28} {count:>8} {rate:>7.1f} {p50:>8.1f} {p99:>8.1f}  {other}")


if __name__ == "__main__":
    main()
