"""Peak memory of llama-cpp-python's OpenAI-compatible server, per request shape.

    python eval/selfhost_memory.py [--model GGUF] [--n-ctx 4096 8192] [--logits-all true false]
                                   [--shapes idle chat chat_lp10 chat_lp20 chat_lp20_stream echo]
                                   [--chat-prompt 1000] [--max-tokens 512] [--echo-prompt 3000]
                                   [--cap-gb 12] [--timeout 90] [--threads 2] [--json]

For every (n_ctx, logits_all) setting and every request shape it starts a fresh
`python -m llama_cpp.server` (the flags README's recipe gives: --chat_format gemma,
--interrupt_requests False) under an address-space cap (`prlimit --as`, --cap-gb), sends the one request,
polls the server's /proc/PID/status meanwhile, and reports its resident memory when idle after load,
its peak (VmHWM) and its peak address space (VmPeak). A fresh server per shape keeps each VmHWM that
shape's own. The shapes, on synthetic prompts (repeated English text, sized with /extras/tokenize/count):

  idle       no request: the loaded server.
  chat       a chat completion of --chat-prompt tokens, --max-tokens generated, no logprobs.
  chat_lp10  the same with logprobs: true, top_logprobs: 10 (the JSON simulator with top_logprobs).
  chat_lp20  the same with top_logprobs: 20.
  chat_lp20_stream  chat_lp20 with stream: true (llama-cpp-python then takes each token's logprobs from
             its own row of logits, not from a log-softmax over the whole context at the end).
  echo       a completion of --echo-prompt tokens with echo: true, logprobs: 20, max_tokens: 1
             (the all-at-once simulator, simulate_prompt).

The chat shapes push <eos> and <end_of_turn> down with logit_bias so that the model writes all of
--max-tokens, as a small model rambling on a JSON reply does. A request still running after --timeout
seconds is cut (status "cut"): its peak is then the peak so far. With logprobs the memory peak comes
before llama-cpp-python's slow per-token loop (it sorts the whole vocabulary for every token, 0.25-0.5
s each on 2 cores), so a cut request has usually passed it; run with a larger --timeout to be sure.

The address-space cap is what keeps the machine safe: a request that needs more makes numpy raise
MemoryError, the server answers 500 and lives on (status "error 500"), where without the cap the
kernel's OOM killer ends it, or something else. The cap counts reserved, untouched memory too
(llama-cpp-python reserves n_ctx x n_vocab float32 at load), so it must exceed VmPeak, not VmHWM.

Prints a table, or with --json a list of rows. The server is stopped after every shape, on error too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / ".pytest_cache" / "d" / "gemma-gguf" / "gemma-3-270m-q4_k_m.gguf"
ALIAS = "gemma"
SHAPES = ("idle", "chat", "chat_lp10", "chat_lp20", "chat_lp20_stream", "echo")
TEXT = ("The quick brown fox jumps over the lazy dog while the farmer counts his sheep in the green "
        "valley, and the river runs quietly past the old mill towards the sea. ")
GIB = 1 << 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, VmSize, VmPeak of a process, in bytes (empty once it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "VmSize", "VmPeak"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


class Server:
    """One llama_cpp.server process under RLIMIT_AS, in its own session (so it is stopped whole)."""

    def __init__(self, model: Path, n_ctx: int, logits_all: bool, cap_bytes: int, threads: int,
                 log: Path) -> None:
        self.port = _free_port()
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        # prlimit sets the cap and execs the server: same PID, so /proc/PID/status is the server's
        self.proc = subprocess.Popen(
            ["prlimit", f"--as={cap_bytes}", sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", ALIAS,
             "--n_ctx", str(n_ctx), "--logits_all", str(logits_all), "--chat_format", "gemma",
             "--interrupt_requests", "False", "--n_threads", str(threads),
             "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def wait_ready(self, within: float = 180.0) -> None:
        deadline, pause = time.monotonic() + within, 0.1
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/v1/models", timeout=5) as r:
                    if json.load(r)["data"][0]["id"] == ALIAS:
                        return
            except OSError:
                pass
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
        raise RuntimeError(f"server did not answer within {within:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self._log.close()


def post(url: str, body: dict, timeout: float) -> dict:
    """POST JSON; a streamed answer (server-sent events) is read to its end and summed up as `usage`."""
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        if not body.get("stream"):
            return json.load(r)
        tokens = with_logprobs = 0
        for line in r:
            if not line.startswith(b"data: {"):
                continue
            choice = json.loads(line[len(b"data: "):])["choices"][0]
            if (choice.get("delta") or {}).get("content") is not None:
                tokens += 1
                with_logprobs += bool((choice.get("logprobs") or {}).get("content"))
        return {"usage": {"completion_tokens": tokens, "with_logprobs": with_logprobs}}


def prompt_of(server: Server, tokens: int) -> str:
    """Repeated TEXT of about `tokens` tokens (counted by the server's own tokenizer)."""
    per = post(server.url + "/extras/tokenize/count", {"input": TEXT * 10}, 30)["count"] / 10
    return TEXT * max(1, round(tokens / per))


def special_ids(server: Server, *names: str) -> list[int]:
    ids = []
    for name in names:
        toks = post(server.url + "/extras/tokenize", {"input": name}, 30)["tokens"]
        ids += [t for t in toks if t != 2][-1:]  # 2: Gemma's <bos>, when the tokenizer adds it
    return ids


def request_of(server: Server, shape: str, a: argparse.Namespace) -> tuple[str, dict] | None:
    """(path, body) of a shape's request; None for idle."""
    if shape == "idle":
        return None
    if shape == "echo":
        return "/v1/completions", {"model": ALIAS, "prompt": prompt_of(server, a.echo_prompt), "echo": True,
                                   "logprobs": 20, "max_tokens": 1, "temperature": 0}
    body = {"model": ALIAS, "max_tokens": a.max_tokens, "temperature": 0.7,
            "messages": [{"role": "user", "content": "Repeat this text, then go on writing in its style:\n"
                          + prompt_of(server, a.chat_prompt)}],
            "logit_bias": {str(i): -100 for i in special_ids(server, "<eos>", "<end_of_turn>")}}
    if shape.startswith("chat_lp"):
        body.update(logprobs=True, top_logprobs=int(shape[len("chat_lp"):].removesuffix("_stream")))
    if shape.endswith("_stream"):
        body["stream"] = True
    return "/v1/chat/completions", body


def measure(a: argparse.Namespace, n_ctx: int, logits_all: bool, shape: str, work: Path) -> dict:
    row = {"n_ctx": n_ctx, "logits_all": logits_all, "shape": shape, "status": "", "seconds": None,
           "prompt_tokens": None, "completion_tokens": None}
    server = Server(a.model, n_ctx, logits_all, int(a.cap_gb * GIB), a.threads,
                    work / f"server-{n_ctx}-{logits_all}-{shape}.log")
    try:
        server.wait_ready()
        time.sleep(1.0)  # let the load settle before reading the idle figure
        row["idle_rss"] = proc_status(server.proc.pid).get("VmRSS")
        req = request_of(server, shape, a)
        result: dict = {}
        if req is not None:
            def send() -> None:
                try:
                    result["body"] = post(server.url + req[0], req[1], a.timeout + 60)
                except urllib.error.HTTPError as e:
                    result["error"] = f"error {e.code}: {e.read().decode(errors='replace')[:200]}"
                except Exception as e:  # noqa: BLE001 - reported in the row, not raised
                    result["error"] = f"error: {type(e).__name__}: {e}"[:200]

            t0 = time.monotonic()
            worker = threading.Thread(target=send, daemon=True)
            worker.start()
            # VmHWM and VmPeak are the kernel's own maxima (it records them before an munmap), so
            # waiting is enough: no sampling can miss a short-lived peak.
            while worker.is_alive() and time.monotonic() - t0 < a.timeout and server.proc.poll() is None:
                worker.join(0.05)
            row["seconds"] = round(time.monotonic() - t0, 1)
            if server.proc.poll() is not None:
                row["status"] = f"server died ({server.proc.returncode})"
            elif worker.is_alive():
                row["status"] = "cut"
            elif "error" in result:
                row["status"] = result["error"].replace("\n", " ")
            else:
                row["status"] = "ok"
                usage = result["body"].get("usage", {})
                row["prompt_tokens"], row["completion_tokens"] = usage.get("prompt_tokens"), usage.get(
                    "completion_tokens")
        else:
            row["status"] = "ok"
        st = proc_status(server.proc.pid)
        row.update(peak_rss=st.get("VmHWM"), after_rss=st.get("VmRSS"), peak_vm=st.get("VmPeak"))
    except Exception as e:  # noqa: BLE001 - one shape's failure is a row, the others still run
        row["status"] = f"failed: {e}"[:300]
    finally:
        server.stop()
    return row


def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / GIB:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the GGUF (default: the packaged Gemma 3 270M, "
                    "assembled where the tests keep it)")
    ap.add_argument("--n-ctx", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--logits-all", nargs="+", choices=("true", "false"), default=["true", "false"])
    ap.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    ap.add_argument("--chat-prompt", type=int, default=1000, help="tokens of the chat shapes' prompt")
    ap.add_argument("--max-tokens", type=int, default=512, help="tokens the chat shapes generate")
    ap.add_argument("--echo-prompt", type=int, default=3000, help="tokens of the echo shape's prompt")
    ap.add_argument("--cap-gb", type=float, default=12.0, help="the server's address-space cap (RLIMIT_AS), GiB")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds before a request is cut")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    a = ap.parse_args()
    if not a.model.is_file() and a.model == DEFAULT_MODEL:  # assembled once from the packaged chunks
        sys.path.insert(0, str(ROOT / "tests"))
        from llama_server import gguf

        a.model.parent.mkdir(parents=True, exist_ok=True)
        a.model = gguf(a.model.parent)
    if not a.model.is_file():
        ap.error(f"no GGUF at {a.model} (pass --model)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="selfhost-memory-") as tmp:
        for n_ctx in a.n_ctx:
            for la in a.logits_all:
                for shape in a.shapes:
                    rows.append(measure(a, n_ctx, la == "true", shape, Path(tmp)))
                    if not a.json:
                        print(f"  done: n_ctx={n_ctx} logits_all={la} {shape}: {rows[-1]['status'][:60]}",
                              file=sys.stderr, flush=True)
    if a.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"RLIMIT_AS {a.cap_gb:g} GiB; GiB of the server's memory (peak RSS = VmHWM, peak VM = VmPeak)")
    head = ("n_ctx", "logits_all", "shape", "prompt", "gen", "sec", "idle RSS", "peak RSS", "after", "peak VM",
            "status")
    lines = [head] + [(str(r["n_ctx"]), str(r["logits_all"]), r["shape"], str(r["prompt_tokens"] or "-"),
                       str(r["completion_tokens"] or "-"), str(r["seconds"] or "-"), gib(r.get("idle_rss")),
                       gib(r.get("peak_rss")), gib(r.get("after_rss")), gib(r.get("peak_vm")), r["status"][:70])
                      for r in rows]
    widths = [max(len(x[i]) for x in lines) for i in range(len(head) - 1)]
    for x in lines:
        print("  ".join(v.rjust(w) for v, w in zip(x, widths)) + "  " + x[-1])


if __name__ == "__main__":
    main()
