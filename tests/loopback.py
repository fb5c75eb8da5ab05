"""A loopback HTTP server that speaks the Anthropic Messages and OpenAI Chat Completions wire formats.

Tests point the real SDKs at it (`base_url`), so retries, headers and parsing run through the SDKs'
own code. Replies come from `reply(provider, body)`: a str, a list of n str (a chat completion's n
choices), or (str, tokens) where tokens are
[(token, [(alternative, logprob), ...]), ...] joining to the str, which a chat completion asked for
`logprobs` reports (a plain str is then split into words, numbers and signs, each certain). Faults are scripted per request, in order:

    "ok" | "429" (retry-after: 0.05) | "400" | "401" | "500" | "529" | "timeout" (answers after 3 s)
    | "reset" (closes the connection) | "truncated" (half a JSON body) | "wrong_shape" (valid JSON, wrong fields)

For benchmarks it can also add latency (mean ± uniform jitter), enforce a requests-per-minute limit
the way providers do (a token bucket holding one second of requests; over the limit: 429 with
retry-after), and inject random faults at a given rate. `python tests/loopback.py --rpm N ...` serves
in a process of its own and prints its URL.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import socket
import threading
import time
from collections import Counter, deque
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ErrorReply:
    """What a reply function returns to answer with an HTTP error: its status and message."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


class Loopback:
    def __init__(self, reply=None, rate_headers: dict | None = None, *, latency: float = 0.0, jitter: float = 0.0,
                 rpm: float | None = None, fault_rate: float = 0.0, faults=("500", "429", "reset", "truncated"),
                 seed: int = 0, keep_requests: bool = True, one_slot: bool = False) -> None:
        """`one_slot`: serve one request at a time and abort it when another arrives, as llama-cpp-python's
        server does by default (`--interrupt_requests True`)."""
        self.reply = reply or (lambda provider, body: "a reply")
        self.script: deque[str] = deque()
        self.requests: list[dict] = []
        self.rate_headers = rate_headers or {}
        self.lock = threading.Lock()
        self.latency, self.jitter, self.rpm = latency, jitter, rpm
        self.fault_rate, self.random_faults, self.keep_requests = fault_rate, tuple(faults), keep_requests
        self.rng = random.Random(seed)
        self.level, self.t = 1.0, time.monotonic()
        self.stats = {"requests": 0, "over_limit": 0, "injected": 0, "interrupted": 0}
        self.one_slot, self.current = one_slot, None  # the event that aborts the request being served
        self.batches: dict[str, dict] = {}  # Message Batches: id -> {"requests", "polls"}
        self.batch_polls = 2  # a batch ends at its second status poll
        self.batch_errors: set[str] = set()  # custom ids whose batch result is "errored"
        self.files: dict[str, bytes] = {}  # OpenAI Files
        handler = type("Handler", (_Handler,), {"server_state": self})
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def fault(self, *faults: str) -> None:
        self.script.extend(faults)

    def __enter__(self) -> Loopback:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, path_part: str = "") -> int:
        return sum(path_part in r["path"] for r in self.requests)

    def _admit(self) -> str:
        """Under the lock: the fault for this request (scripted, over the limit, random, or ok)."""
        self.stats["requests"] += 1
        if self.rpm:
            now = time.monotonic()
            self.level = min(self.rpm / 60.0, self.level + (now - self.t) * self.rpm / 60.0)
            self.t = now
            if self.level < 1.0:
                self.stats["over_limit"] += 1
                return "429"
            self.level -= 1.0
        if self.script:
            return self.script.popleft()
        if self.fault_rate and self.rng.random() < self.fault_rate:
            self.stats["injected"] += 1
            return self.rng.choice(self.random_faults)
        return "ok"


class _QuietServer(ThreadingHTTPServer):
    request_queue_size = 1024  # many clients connect at once; the default backlog of 5 refuses them
    def handle_error(self, request, client_address) -> None:  # a scripted reset is not an error
        pass


class _Handler(BaseHTTPRequestHandler):
    server_state: Loopback
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        st = self.server_state
        parts = self.path.split("?")[0].rstrip("/").split("/")
        if parts[1:3] in (["v1", "batches"], ["v1", "files"]):
            self._openai_get(parts)
            return
        with st.lock:
            st.requests.append({"path": self.path, "method": "GET", "body": None, "fault": "ok", "headers": {}})
            b = st.batches.get(parts[4]) if len(parts) > 4 and parts[2:4] == ["messages", "batches"] else None
            if b is None:
                self._send(404, json.dumps({"type": "error", "error": {"type": "not_found_error",
                                                                       "message": "no such batch"}}).encode())
                return
            if len(parts) == 5:
                b["polls"] += 1
                self._send(200, json.dumps(self._batch_doc(parts[4], b)).encode())
                return
        lines = []
        for r in b["requests"]:
            cid, params = r["custom_id"], r["params"]
            if cid in st.batch_errors:
                res = {"type": "errored", "error": {"type": "error", "error": {"type": "invalid_request_error",
                                                                              "message": "scripted batch error"}}}
            else:
                text = st.reply("anthropic", params)
                res = {"type": "succeeded", "message": _anthropic_message(params, text)}
            lines.append(json.dumps({"custom_id": cid, "result": res}))
        payload = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("content-type", "application/binary")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _batch_doc(self, batch_id: str, b: dict) -> dict:
        st = self.server_state
        ended = b["polls"] >= st.batch_polls
        n = len(b["requests"])
        errored = sum(r["custom_id"] in st.batch_errors for r in b["requests"]) if ended else 0
        return {"id": batch_id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
                "request_counts": {"processing": 0 if ended else n, "succeeded": n - errored if ended else 0,
                                   "errored": errored, "canceled": 0, "expired": 0},
                "created_at": "2026-11-22T00:00:00Z", "expires_at": "2026-11-23T00:00:00Z",
                "ended_at": "2026-11-22T00:01:00Z" if ended else None, "archived_at": None,
                "cancel_initiated_at": None,
                "results_url": f"{st.url}/v1/messages/batches/{batch_id}/results" if ended else None}

    # -- OpenAI Files and Batches ------------------------------------------------------------------

    def _openai_batch_doc(self, batch_id: str, b: dict) -> dict:
        st = self.server_state
        done = b["polls"] >= st.batch_polls
        doc = {"id": batch_id, "object": "batch", "endpoint": "/v1/chat/completions", "input_file_id": b["input"],
               "completion_window": "24h", "status": "completed" if done else "in_progress",
               "created_at": int(time.time()), "output_file_id": None, "error_file_id": None,
               "request_counts": {"total": b["n"], "completed": b["n"] if done else 0, "failed": 0}}
        if done:
            out_id = f"file-out-{batch_id}"
            if out_id not in st.files:
                lines = []
                for line in st.files[b["input"]].decode().splitlines():
                    req = json.loads(line)
                    text = st.reply("openai", req["body"])
                    lines.append(json.dumps({"id": "r", "custom_id": req["custom_id"], "error": None,
                                             "response": {"status_code": 200, "request_id": "q",
                                                          "body": _openai_completion(req["body"], text)}}))
                st.files[out_id] = ("\n".join(lines) + "\n").encode()
            doc["output_file_id"] = out_id
        return doc

    def _openai_get(self, parts: list[str]) -> None:
        st = self.server_state
        with st.lock:
            st.requests.append({"path": self.path, "method": "GET", "body": None, "fault": "ok", "headers": {}})
            if parts[2] == "files" and len(parts) == 5 and parts[4] == "content" and parts[3] in st.files:
                payload = st.files[parts[3]]
                self.send_response(200)
                self.send_header("content-type", "application/octet-stream")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            if parts[2] == "batches" and len(parts) == 4 and parts[3] in st.batches:
                b = st.batches[parts[3]]
                b["polls"] += 1
                self._send(200, json.dumps(self._openai_batch_doc(parts[3], b)).encode())
                return
        self._send(404, json.dumps({"error": {"message": "not found", "type": "invalid_request_error"}}).encode())

    def _openai_post(self, raw: bytes) -> None:
        st = self.server_state
        with st.lock:
            st.requests.append({"path": self.path, "method": "POST", "body": None, "fault": "ok", "headers": {}})
            if self.path.rstrip("/").endswith("/files"):
                msg = BytesParser().parsebytes(b"Content-Type: " + self.headers["content-type"].encode() + b"\r\n\r\n"
                                               + raw)
                data = next(part.get_payload(decode=True) for part in msg.get_payload()
                            if part.get_param("name", header="content-disposition") == "file")
                file_id = f"file-in-{len(st.files) + 1}"
                st.files[file_id] = data
                doc = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                       "filename": "requests.jsonl", "purpose": "batch", "status": "processed"}
            else:
                body = json.loads(raw)
                batch_id = f"batch_{len(st.batches) + 1:04d}"
                n = len(st.files[body["input_file_id"]].decode().splitlines())
                st.batches[batch_id] = {"input": body["input_file_id"], "polls": 0, "n": n, "requests": []}
                st.requests[-1]["body"] = {"n": n}
                doc = self._openai_batch_doc(batch_id, st.batches[batch_id])
        self._send(200, json.dumps(doc).encode())

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        st = self.server_state
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.rstrip("/").endswith(("/v1/files", "/v1/batches")):
            self._openai_post(raw)
            return
        body = json.loads(raw or b"{}")
        if self.path.rstrip("/").endswith("/messages/batches"):
            with st.lock:
                batch_id = f"msgbatch_{len(st.batches) + 1:04d}"
                st.batches[batch_id] = {"requests": body["requests"], "polls": 0}
                st.requests.append({"path": self.path, "method": "POST", "body": {"n": len(body["requests"])},
                                    "fault": "ok", "headers": {}})
                doc = self._batch_doc(batch_id, st.batches[batch_id])
            self._send(200, json.dumps(doc).encode())
            return
        with st.lock:
            fault = st._admit()
            delay = st.latency + (st.rng.uniform(-st.jitter, st.jitter) if st.jitter else 0.0)
            rec = {"path": self.path, "method": "POST", "body": body, "fault": fault,
                   "headers": {k.lower(): v for k, v in self.headers.items()}}
            if st.keep_requests:
                st.requests.append(rec)
        if st.one_slot:
            with st.lock:
                if st.current is not None:  # a new request interrupts the one being served
                    st.current.set()
                    st.stats["interrupted"] += 1
                mine = st.current = threading.Event()
            aborted = mine.wait(max(delay, 0.0))
            with st.lock:
                if st.current is mine:
                    st.current = None
            if aborted:
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
        elif delay > 0 and fault != "429":
            time.sleep(delay)
        provider = ("anthropic" if self.path.endswith("/messages") else
                    "completions" if self.path.rstrip("/").endswith("/completions") and "chat" not in self.path
                    else "openai")
        if fault == "reset":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if fault == "timeout":
            time.sleep(3.0)
        if fault in ("400", "401", "500", "529", "429"):
            status = int(fault)
            err = {"type": "error", "error": {"type": "scripted", "message": f"scripted {status}"}}
            self._send(status, json.dumps(err).encode(), {"retry-after": "0.05"} if status == 429 else None)
            return
        text = st.reply(provider, body)
        if isinstance(text, ErrorReply):
            err = {"error": {"message": text.message, "type": "internal_server_error"}}
            self._send(text.status, json.dumps(err).encode())
            return
        rec["reply"] = text[0] if isinstance(text, tuple) else text  # what the model wrote (tests measure it)
        if provider == "anthropic":
            doc = _anthropic_message(body, text)
        elif provider == "completions":
            doc = _echo_completion(body, text)
        else:
            doc = _openai_completion(body, text)
        if fault == "wrong_shape":
            doc = {"unexpected": True}
        payload = json.dumps(doc).encode()
        if fault == "truncated":
            payload = payload[: len(payload) // 2]
            self._send(200, payload)
            return
        self._send(200, payload, st.rate_headers)


def _anthropic_message(body: dict, text) -> dict:
    text = text[0] if isinstance(text, tuple) else text
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": body.get("model"),
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": _tokens(body), "output_tokens": len(text.split()) + 1,
                      "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}


def _openai_completion(body: dict, text) -> dict:
    n = body.get("n", 1)
    texts = text if isinstance(text, list) else None  # a list: one text per choice (n)
    text, tokens = text if isinstance(text, tuple) else (texts[0] if texts else text, None)
    logprobs = None
    if body.get("logprobs"):
        if tokens is None:  # split like a BPE pretokenizer: numbers, words (with their space), signs
            tokens = [(t, [(t, 0.0)]) for t in re.findall(r"\d{1,3}|\s?[A-Za-z_]+|\s+|[^\w\s]|\w", text)]
        assert "".join(t for t, _ in tokens) == text, "scripted tokens must join to the text"
        k = body.get("top_logprobs") or 0

        def entry(tok, lp):
            return {"token": tok, "logprob": lp, "bytes": list(tok.encode())}

        logprobs = {"content": [{**entry(t, dict(alts).get(t, max(lp for _, lp in alts))),
                                 "top_logprobs": [entry(a, lp) for a, lp in alts[:k]]} for t, alts in tokens],
                    "refusal": None}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": body.get("model"),
            "choices": [{"index": i, "message": {"role": "assistant", "content": texts[i] if texts else text},
                         "finish_reason": "stop", "logprobs": logprobs} for i in range(n)],
            "usage": {"prompt_tokens": _tokens(body), "completion_tokens": n * (len(text.split()) + 1),
                      "total_tokens": 0}}


def _echo_completion(body: dict, tokens) -> dict:
    """A legacy completion with echo + logprobs, as llama.cpp's server and vLLM send it: `tokens` are
    [(token, {alternative: logprob} | None), ...] spelling the prompt and the one generated token, or
    None for a server that echoes no logprobs."""
    lp = None
    if tokens is not None:
        offsets, at = [], 0
        for t, _ in tokens:
            offsets.append(at)
            at += len(t)
        lp = {"tokens": [t for t, _ in tokens], "text_offset": offsets,
              "token_logprobs": [None if a is None else a.get(t, min(a.values())) for t, a in tokens],
              "top_logprobs": [a for _, a in tokens]}
    text = body["prompt"] + ("".join(t for t, _ in tokens)[len(body["prompt"]):] if tokens else "")
    n_prompt = len(tokens) - 1 if tokens else len(body["prompt"]) // 4
    return {"id": "cmpl-1", "object": "text_completion", "created": int(time.time()), "model": body.get("model"),
            "choices": [{"index": 0, "text": text, "logprobs": lp, "finish_reason": "length"}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": 1, "total_tokens": n_prompt + 1}}


def _tokens(body: dict) -> int:
    text = json.dumps(body.get("messages", [])) + json.dumps(body.get("system", ""))
    return len(text) // 4


# -- scripted models: what the tests (and eval/quality.py --loopback) talk to -------------------------


def explainer(provider, body):
    """A scripted model: names the token marked most often in the last user turn."""
    last = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    marked = Counter(x.strip() for x in re.findall(r"<<(.*?)>>", last))
    if not marked:
        return "No idea."
    return f"The marked tokens agree.\nEXPLANATION: the token \"{marked.most_common(1)[0][0]}\""


def _turn(body):
    """The tokens a scorer prompt's description quotes, and its (id, window body) pairs."""
    user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    user = user if isinstance(user, str) else user[0]["text"]
    named = {t.strip() for t in re.findall(r'"([^"]+)"', user.split("\n", 1)[0])}
    return named, re.findall(r'<window id="(\d+)">\n(.*?)\n</window>', user, re.S)


def simulator(provider, body):
    """A scripted simulator: 10 on tokens the description quotes, 0 elsewhere, one number per token."""
    named, wins = _turn(body)
    return json.dumps({"windows": [{"id": int(i), "activations": [10 if ln.split("\t", 1)[1].strip() in named else 0
                                                                   for ln in w.splitlines()]} for i, w in wins]})


def sparse_simulator(provider, body):
    """A scripted sparse simulator: lists the tokens the description quotes, at 10; nothing else."""
    named, wins = _turn(body)
    return json.dumps({"nonzero": [[int(i), int(j), tok, 10] for i, w in wins
                                   for j, tok in (ln.split("\t", 1) for ln in w.splitlines()) if tok.strip() in named]})


def intruder_judge(provider, body):
    """A scripted intruder judge: the word found in most of a question's windows is what they share; the
    intruder is the first window without it."""
    user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    user = user if isinstance(user, str) else user[0]["text"]
    answers = []
    for q, block in re.findall(r'<question id="(\d+)">\n(.*?)\n</question>', user, re.S):
        wins = [set(re.findall(r"\w+", w.lower())) for w in re.findall(r'<window id="\d+">(.*?)</window>', block)]
        common = Counter(t for w in wins for t in w).most_common(1)
        lacking = [i for i, w in enumerate(wins, 1) if common and common[0][0] not in w]
        answers.append({"id": int(q), "intruder": lacking[0] if lacking else 1})
    return json.dumps({"answers": answers})


def detector(provider, body):
    """A scripted detector: says a window fires when it contains, as a whole word, a token the description quotes."""
    named, wins = _turn(body)

    def has(t, w):
        return re.search(r"(?<![^\W_])" + re.escape(t) + r"(?![^\W_])", w) is not None

    return json.dumps({"fires": [int(i) for i, w in wins if any(has(t, w) for t in named)]})


def fuzz_judge(provider, body):
    """A scripted judge: a window is marked correctly when a marked span is a token the description quotes."""
    named, wins = _turn(body)
    return json.dumps({"correct": [int(i) for i, w in wins if any(m.strip() in named
                                                                   for m in re.findall(r"<<(.*?)>>", w))]})


def pretokenize(text: str, split_digits: bool = False, join_tab: bool = False) -> list[str]:
    """Words with their leading space (or TAB, with `join_tab`), numbers (digit by digit with
    `split_digits`, as Gemma's tokenizer writes "10" as "1", "0"), a newline alone, other white space, signs."""
    num = r"\d" if split_digits else r"\d{1,3}"
    word = r"[ \t]?[A-Za-z_]+" if join_tab else r" ?[A-Za-z_]+"
    return re.findall(num + "|" + word + r"|\n|[^\S\n]+|[^\w\s]|\w", text)


def prompt_reader(provider, body, *, split_digits: bool = False, spaces: str = " ", join_tab: bool = False,
                  bos: bool = False):
    """A scripted all-at-once simulator: echoes the prompt's tokens; where a feature's "unknown" stands,
    puts most of the mass on "9" after a token the description quotes, else on "0". `spaces`: how the server writes a leading space ("▁" for raw SentencePiece pieces);
    `bos`: the echo starts with a "<bos>" token the prompt does not hold (as vLLM's may)."""
    prompt = body["prompt"]
    described = prompt.rsplit("Description: ", 1)[-1].split("\n", 1)[0]
    named = {t.strip() for t in re.findall(r'"([^"]+)"', described)}
    toks = pretokenize(prompt, split_digits, join_tab) + ["\n"]
    out, prev_line = [], ""
    for i, t in enumerate(toks):
        if i == 0:
            alts = None
        elif t.lstrip("\t") == "unknown":
            hot = prev_line.strip() in named
            top = "9" if hot else "0"  # simulate_prompt's levels are 0..9
            alts = {top: math.log(0.6), "unknown": math.log(0.3), ("0" if hot else "2"): math.log(0.1)}
        else:
            alts = {t: math.log(0.9), "x": math.log(0.1)}
        if t.startswith("\t"):
            prev_line = "".join(toks[j] for j in range(max(0, i - 8), i)).rsplit("\n", 1)[-1]
        out.append((t.replace(" ", spaces, 1) if t.startswith(" ") else t, alts))
    return [("<bos>", None)] + out if bos else out


def scripted(provider, body):
    """One scripted model for every prompt: routed by the system prompt of autointerp's templates."""
    if provider == "completions":
        return prompt_reader(provider, body)
    system = body.get("system") or body["messages"][0]["content"]
    system = system if isinstance(system, str) else system[0]["text"]
    if "List only the tokens" in system:
        return sparse_simulator(provider, body)
    if "simulating one feature" in system:
        return simulator(provider, body)
    if "find the intruder" in system:
        return intruder_judge(provider, body)
    if "fires anywhere" in system:
        return detector(provider, body)
    if "marks are where" in system:
        return fuzz_judge(provider, body)
    return explainer(provider, body)


def main() -> None:
    ap = argparse.ArgumentParser(description="Serve the loopback provider until stdin closes.")
    ap.add_argument("--rpm", type=float)
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--jitter", type=float, default=0.05)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    a = ap.parse_args()
    reply = lambda p, b: "The marked tokens share one word.\nEXPLANATION: the word in the marked tokens"  # noqa: E731
    with Loopback(reply, latency=a.latency, jitter=a.jitter, rpm=a.rpm, fault_rate=a.fault_rate,
                  keep_requests=False) as server:
        print(server.url, flush=True)
        import sys

        sys.stdin.read()
        print(json.dumps(server.stats), flush=True)


if __name__ == "__main__":
    main()
