"""Self-hosted model benchmark: autointerp against a real llama.cpp server (Gemma 3 270M by default).

    python eval/bench_selfhost.py [--store demo.duckdb] [--features 3] [--windows 4] [--window 16]
                                  [--base-url http://127.0.0.1:8080/v1 --model NAME]

Without --base-url it starts llama-cpp-python's server on loopback with the packaged Gemma 3 270M
(tests/llama_server.py: --chat_format gemma, --interrupt_requests False, logits_all on). Without
--store it captures a small MiniLM dictionary over the bundled docs (`autointerp demo --max-tokens 5000`)
in a temporary folder. Then, on the same features and the same held-out windows, side by side in one run:

1. explain: `label --explainer compat:MODEL` on the features (3 top windows of `--window` tokens each):
   seconds, prompt and generated tokens per feature, generated tokens per second, and how many
   features ended labelled or failed (with the reasons);
2. simulate: `score --scorer simulation` on each feature's own label with three simulators: JSON
   (the model writes every number), JSON with top_logprobs (expected values), and all at once from
   the prompt's logprobs (simulate_prompt: one echo + logprobs completion, one generated token):
   seconds, prompt and generated tokens per feature, and the grade each gave.

Each method runs on a fresh copy of the store, so no reply comes from the cache. Figures are of this
machine: quote them as ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def cli(*args: str) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "autointerp", *args], capture_output=True, text=True)
    return time.perf_counter() - t0, p.returncode, p.stdout if p.returncode in (0, 22) else p.stderr


def ledger(store: Path, purpose: str) -> tuple[int, int, int]:
    """(calls, input tokens, output tokens) of `purpose` in a store's cost ledger."""
    import duckdb

    with duckdb.connect(str(store), read_only=True) as con:
        n, i, o = con.execute("SELECT count(*), coalesce(sum(input_tokens + cache_read_tokens), 0), "
                              "coalesce(sum(output_tokens), 0) FROM llm_calls WHERE purpose = ? AND NOT cached",
                              [purpose]).fetchone()
    return int(n), int(i), int(o)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, help="a captured store (default: a small MiniLM capture)")
    ap.add_argument("--features", type=int, default=3, help="how many features (the first live ones)")
    ap.add_argument("--windows", type=int, default=4, help="held-out windows each simulator judges")
    ap.add_argument("--window", type=int, default=16, help="tokens per window")
    ap.add_argument("--base-url", help="a running OpenAI-compatible server (default: start llama.cpp's)")
    ap.add_argument("--model", default="gemma", help="its model name")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-selfhost-"))
    server = None
    try:
        if a.store is None:
            a.store = work / "demo.duckdb"
            cli("demo", "--store", str(a.store), "--out", str(work / "demo.jsonl"), "--max-tokens", "5000")
        if a.base_url is None:
            from llama_server import LlamaServer, gguf

            server = LlamaServer(gguf(work), work / "server.log")
            server.wait_ready()
            a.base_url = server.url
        model = f"compat:{a.model}"
        import duckdb

        with duckdb.connect(str(a.store), read_only=True) as con:
            feats = [f for (f,) in con.execute("SELECT feature FROM label_status WHERE status = 'ok' ORDER BY feature "
                                               "LIMIT ?", [a.features]).fetchall()]
        if not feats:
            sys.exit(f"{a.store} has no labelled feature to measure on (run `autointerp label` on it first)")
        spec = ",".join(map(str, feats))
        sampler = ["--window", str(a.window), "--n-top", "3", "--n-quantile", "0", "--min-evidence", "1",
                   "--llm-windows", str(a.windows)]
        print(f"server {a.base_url} ({model}); store {a.store}; features {spec}; "
              f"{a.windows} held-out windows of {a.window} tokens each\n")

        # 1. explain
        st = work / "explain.duckdb"
        shutil.copy(a.store, st)
        secs, rc, out = cli("label", "--store", str(st), "--features", spec, "--explainer", model, "--scorer", "",
                            "--base-url", a.base_url, "--force", *sampler, "--json")
        n, i, o = ledger(st, "explain")
        doc = json.loads(out) if rc in (0, 22) else {}
        print("explain (label --explainer compat, 3 top windows a feature)")
        print(f"  {secs / len(feats):.1f} s, {i / max(n, 1):.0f} prompt + {o / max(n, 1):.0f} generated tokens a feature; "
              f"{o / secs:.1f} generated tokens/s overall")
        print(f"  {doc.get('explained', 0)} labelled, {doc.get('failed', 0)} failed (exit {rc})")
        with duckdb.connect(str(st), read_only=True) as con:
            for f, status, reason in con.execute("SELECT feature, status, reason FROM label_status WHERE explainer = ? "
                                                 f"AND feature IN ({spec}) ORDER BY feature", [model]).fetchall():
                print(f"    {f}: {status} {reason[:110] if reason else ''}")
            made = dict(con.execute("SELECT feature, text FROM explanations WHERE explainer = ? "
                                    f"AND feature IN ({spec})", [model]).fetchall())
        for f, text in made.items():
            print(f"    {f}: {text!r}")
        # 2. simulate: each feature's stored offline label, three simulators
        with duckdb.connect(str(a.store), read_only=True) as con:
            labels = dict(con.execute("SELECT feature, any_value(text) FROM explanations WHERE explainer = 'offline' "
                                      f"AND feature IN ({spec}) GROUP BY feature").fetchall())
        feats = [f for f in feats if f in labels]  # the simulators grade each feature's offline label
        print("\nsimulate (score --scorer simulation, the feature's own label)")
        print(f"  {'simulator':<28}{'s/feature':>10}{'prompt tok':>12}{'gen tok':>9}  grades")
        for k, (name, extra) in enumerate((("JSON", ["--no-logprobs"]), ("JSON + top_logprobs", []),
                                           ("all at once (prompt logprobs)", ["--simulator", "simulate_prompt"]))):
            st = work / f"simulate-{k}.duckdb"
            shutil.copy(a.store, st)
            total, grades = 0.0, []
            for f in feats:
                secs, rc, out = cli("score", "--store", str(st), "--feature", str(f), "--explanation", labels[f],
                                    "--scorer", "simulation", "--scorer-model", model, "--base-url", a.base_url,
                                    *sampler, *extra, "--json")
                total += secs
                g = json.loads(out)["scores"]["simulation"] if rc == 0 else {"status": "error", "reason": out[-80:]}
                grades.append(f"{g['value']:.2f}" if g.get("value") is not None
                              else f"{g['status']} ({(g.get('reason') or '')[:50]})")
            n, i, o = ledger(st, "simulate")
            print(f"  {name:<28}{total / len(feats):>10.1f}{i / len(feats):>12.0f}{o / len(feats):>9.0f}  "
                  + "; ".join(grades))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
