"""What the browser's plots and page data cost at a million features: the index's overview (density
histogram, grade vs density), a feature page with its activation histogram, and the static export's
feature scripts sized to what a page loads, side by side with fixed 1,024-feature scripts.

    python eval/bench_pages.py [--width 1048576] [--tokens 1048576] [--out /tmp/bench_pages] [--demo STORE]

Builds (or reuses, in --out) a synthetic delphi cache of `--width` features over `--tokens` tokens (as
eval/bench_scale.py does: power-law firing, ~32 latents a token, the last 2% dead), ingests it, and imports
one graded label per live feature (JSONL, as labels made elsewhere). Then, in one process:

- `serve`'s app on a loopback port, measured by a client (median and max of 7): `/api/overview` (the first
  request builds the dictionary's in-memory index; then the cached answer, and a new `limit`), and
  `/api/features/{id}` for the densest, a median and a rare feature, beside the activation histogram's own
  query for the same feature (its share of the page);
- `export --format html` of a 2,000-feature slice twice: feature scripts sized to FILE_BYTES (now) and
  1,024 features a script (before): the largest script a feature page loads, and the export's time.

With --demo STORE (e.g. the demo's store) the same export comparison runs on it too: real windows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

EVAL = Path(__file__).resolve().parent
sys.path.insert(0, str(EVAL))

from bench_scale import build, labels_file, run  # noqa: E402  (eval/ is not a package)


def timed(fn, n: int = 7) -> tuple[float, float]:
    """(median, max) milliseconds of `n` calls."""
    ms = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ms.append(1000 * (time.perf_counter() - t))
    return statistics.median(ms), max(ms)


def make_store(a) -> Path:
    store = a.out / "pages.duckdb"
    if store.exists():
        return store
    build(a.out, a.width, a.tokens // 64, narrow=False)
    S = ["--store", str(store)]
    run("ingest (delphi)", ["ingest", "delphi", str(a.out / "cache" / "wide"), *S, "--dictionary", "wide", "--json"],
        a.width, store)
    from autointerp.store import Store

    with Store(store, read_only=True) as s:
        firing = s.activations.firing_counts(s.dictionary("wide").dictionary_id)
    lf = a.out / "labels.jsonl"
    n = labels_file(lf, a.width, firing)
    run(f"ingest labels: {n:,} graded (jsonl, --no-index)", ["ingest", "labels", str(lf), *S, "--dictionary", "wide",
                                                             "--format", "jsonl", "--no-index", "--json"], n, store)
    return store


def api(store: Path) -> None:
    from autointerp.export.serve import make_server
    from autointerp.store import open_store

    with open_store(store, read_only=True) as s:
        d = s.dictionary("wide")
        stats = s.activations.feature_stats(d.dictionary_id, order_by="density")
        live = [st for st in stats if st.n_firing > 0]
        picks = {"densest": live[0], "median": live[len(live) // 2], "rare": live[-1]}
        server = make_server(s, port=0, dictionary="wide")
        t = threading.Thread(target=server.serve, daemon=True)
        t.start()
        while not server.started:
            time.sleep(0.01)
        url = server.url

        def get(path: str) -> dict:
            with urllib.request.urlopen(url + path, timeout=300) as r:
                return json.loads(r.read())

        try:
            t0 = time.perf_counter()
            first = get("api/overview")
            print(f"{'overview, first (builds the index)':<44} {1000 * (time.perf_counter() - t0):>9.0f} ms   "
                  f"{first['scatter']['total']:,} graded, {len(first['scatter']['points']):,} points, "
                  f"{first['density']['live']:,} live / {first['density']['dead']:,} dead", flush=True)
            med, mx = timed(lambda: get("api/overview"))
            print(f"{'overview, cached':<44} {med:>9.1f} ms   max {mx:.1f}", flush=True)
            k = [0]

            def fresh():  # a new limit each time: not the cached answer
                k[0] += 1
                get(f"api/overview?limit={4000 + k[0]}")
            med, mx = timed(fresh)
            print(f"{'overview, new (density + 4,000-point sample)':<44} {med:>9.1f} ms   max {mx:.1f}", flush=True)
            for name, st in picks.items():
                f = st.feature
                med, mx = timed(lambda: get(f"api/features/{f}"))
                hm, _ = timed(lambda: s.activations.activation_histograms(d.dictionary_id, [f]))
                print(f"{'feature page, ' + name + f' ({st.n_firing:,} firings)':<44} {med:>9.1f} ms   max {mx:.1f}; "
                      f"its histogram's query {hm:.1f} ms ({hm / med:.0%} of the page)", flush=True)
        finally:
            server.stop()
            t.join(10)


def export(store: Path, dictionary: str | None, features: list[int] | None, out: Path, label: str) -> None:
    from autointerp.export import html
    from autointerp.store import open_store

    rows = []
    out.mkdir(parents=True, exist_ok=True)
    for name, file_bytes in (("before: 1,024 features a script", float("inf")), ("now: sized to a page", html.FILE_BYTES)):
        keep = html.FILE_BYTES
        html.FILE_BYTES = file_bytes
        try:
            with open_store(store, read_only=True) as s:
                t0 = time.perf_counter()
                res = html.write_html(s, out / name.split(":")[0], dictionary, features)
                secs = time.perf_counter() - t0
        finally:
            html.FILE_BYTES = keep
        rows.append((name, res, secs))
    print(f"\nstatic export, {label}:")
    for name, res, secs in rows:
        print(f"  {name:<34} {res['feature_shard']:>5} a script, {res['feature_files']:>4} scripts, largest "
              f"{res['largest_feature_file'] / 1e3:>8,.0f} KB, {res['bytes'] / 1e3 / max(res['pages'], 1):.1f} KB a page, "
              f"{secs:.1f} s", flush=True)
    (b, rb, sb), (n, rn, sn) = rows
    print(f"  a feature page loads {rb['largest_feature_file'] / max(rn['largest_feature_file'], 1):.0f}x less at most; "
          f"export time now/before {sn / sb:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=2**20)
    ap.add_argument("--tokens", type=int, default=2**20)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_pages"))
    ap.add_argument("--demo", type=Path, help="also compare the static export on this store (e.g. the demo's)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    store = make_store(a)
    api(store)
    export(store, "wide", list(range(2000)), a.out / "site", f"{a.width:,}-feature dictionary, features 0-1999")
    if a.demo:
        export(a.demo, None, None, a.out / "demo-site", f"{a.demo} (every labelled feature)")


if __name__ == "__main__":
    main()
