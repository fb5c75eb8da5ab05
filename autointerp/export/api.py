"""The JSON API `autointerp serve` answers, and the browser pages it serves beside it (FastAPI).

Read-only: GET and HEAD only (anything else is 405), and the store is opened read-only. Concurrent
readers: every request reads through a DuckDB cursor of its own, never a shared lock.

- `GET /api/dictionaries`: the store's dictionaries with their width, labelled count and scorers.
- `GET /api/features`: one page of a dictionary's features, sorted, filtered and paged in DuckDB
  over an in-memory table of every feature with its label and grades (built once per dictionary, on
  first use: ~1 s and ~150 MB per 1M features). `q` keeps the features whose label contains it
  (case-insensitive), or the feature with that id. Each row has its grades' values and 95% intervals;
  `by=lower` sorts by a scorer's lower bound (a grade on little evidence ranks below an equal one on much).
- `GET /api/features/{id}`: everything about one feature: its labels (every candidate), their
  grades with details and provenance, its statistics, top and quantile windows, simulated vs true.
- `GET /api/search`: the features whose labels are nearest a query in meaning (see `search`).
- `GET /api/trace`: a text through the model (and SAE) a dictionary was captured from: per token its
  strongest features with their labels (see capture/trace.py); one text at a time per model.
- `GET /api/docs`: the OpenAPI document as a page made here (docs.py): no CDN, no script.

Bad parameters are 400 with a one-line JSON error ({"error": ...}); an unknown feature is 404. What the
routes read (the feature indexes, the trace models, the plots) is held by `browser.Browser`.

Search and trace run on pools of their own (safety.SlowPool: a few threads and a short queue each), not on
the threads the other endpoints answer on: a slow trace never holds up the feature list. When a pool's
threads and queue are full, the request is answered 503 at once with `Retry-After`. Served by `autointerp
serve`, a request whose Host header does not name the server is 400 (safety.HostGuard: DNS rebinding).
"""


from enum import Enum
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path, Query, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from ..errors import AutointerpError, StoreBusy
from ..records import TRACE_MAX_CHARS, Dictionary, TraceConfig
from ..store import FIXED_SORTS, Store
from .browser import BadRequest, Browser, describe_hits, dictionary_infos
from .docs import DOCS_CSP, docs_page
from .html import ASSETS, WEB, feature_docs
from .safety import Busy, HostGuard, SlowPool, on_pool

MAX_LIMIT = 1000
SLOW = (4, 8)  # each slow endpoint's pool: threads, and requests that may wait for one (then 503)


class DictionaryInfo(BaseModel):
    name: str
    model: str
    hook: str
    kind: str
    width: int
    labelled: int
    scorers: list[str]
    measures: dict[str, str]
    tracer: Literal["ready", "loading", "cold", "none"]


class FeatureRow(BaseModel):
    feature: int
    label: str
    density: float
    max: float | None
    n_firing: int
    scores: dict[str, float | None]
    ci: dict[str, list[float] | None]
    why: dict[str, str]


class FeaturePage(BaseModel):
    dictionary: str
    total: int
    offset: int
    limit: int
    sort: str
    order: str
    by: str
    rows: list[FeatureRow]


class Window(BaseModel):
    context: int
    start: int
    tokens: list[str]
    peak: int


class SearchHit(BaseModel):
    dictionary: str
    feature: int
    label: str
    similarity: float
    scores: dict[str, float | None]
    ci: dict[str, list[float] | None]
    density: float | None
    max: float | None
    top: Window | None


class SearchResult(BaseModel):
    query: str
    rows: list[SearchHit]


class TracedFeature(BaseModel):
    feature: int
    value: float
    label: str | None


class Matrix(BaseModel):
    position: list[int]
    feature: list[int]
    value: list[float]


class TraceResult(BaseModel):
    dictionary: str
    text: str
    tokens: list[str]
    top: list[list[TracedFeature]]
    matrix: Matrix | None


class DensityHistogram(BaseModel):
    lo: float | None
    hi: float | None
    counts: list[int]
    live: int
    dead: int


class Scatter(BaseModel):
    scorer: str | None
    total: int
    points: list[tuple[int, float, float, float | None, float | None]]  # feature, density, value, lower, upper


class Overview(BaseModel):
    dictionary: str
    density: DensityHistogram
    scatter: Scatter


class Error(BaseModel):
    error: str


BUSY: dict[int | str, dict[str, Any]] = {  # the type of FastAPI's `responses`
    503: {"model": Error, "description": "Busy: the endpoint's threads and queue are full; try again after "
                                         "Retry-After seconds"}}


def _read_only_get_and_head(app: FastAPI) -> None:
    """GET and HEAD only (anything else: 405); a HEAD is the GET without its body; nothing is cached."""

    @app.middleware("http")
    async def read_only(request: Request, call_next):
        if request.method not in ("GET", "HEAD"):
            return JSONResponse({"error": "read-only: GET and HEAD only"}, 405, headers={"allow": "GET, HEAD"})
        head = request.method == "HEAD"
        if head:
            request.scope["method"] = "GET"
        response = await call_next(request)
        response.headers["cache-control"] = "no-store"
        response.headers["x-content-type-options"] = "nosniff"
        if head:
            async for _ in response.body_iterator:  # the body is computed, then dropped
                pass
            return Response(status_code=response.status_code, headers=dict(response.headers))
        return response


def _errors_as_json(app: FastAPI) -> None:
    """Every error as one line of JSON ({"error": ...}): bad parameters 400, unknown paths 404, a full slow
    pool or a writer's long transaction 503 with Retry-After."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        e = err.errors()[0] if err.errors() else {}
        where = ".".join(str(x) for x in e.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {e.get('msg', 'invalid')}".replace("\n", " ")}, 400)

    @app.exception_handler(BadRequest)
    async def bad(request: Request, err: BadRequest):
        return JSONResponse({"error": str(err).replace("\n", " ")}, 400)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's own and the router's (an unknown path: 404)
    async def http_error(request: Request, err: StarletteHTTPException):
        return JSONResponse({"error": str(err.detail).replace("\n", " ")}, err.status_code)

    @app.exception_handler(Busy)
    async def busy(request: Request, err: Busy):
        return JSONResponse({"error": str(err)}, 503, headers={"retry-after": str(err.retry_after)})

    @app.exception_handler(StoreBusy)
    async def store_busy(request: Request, err: StoreBusy):  # a writer's long transaction (an ingest, a capture)
        return JSONResponse({"error": str(err).splitlines()[0]}, 503, headers={"retry-after": "10"})

    @app.exception_handler(AutointerpError)
    async def ours(request: Request, err: AutointerpError):
        return JSONResponse({"error": str(err).splitlines()[0]}, 400)


def make_app(store: Store, dictionary: str | None = None, *, hosts: tuple[frozenset[str], bool] | None = None,
             slow: tuple[int, int] = SLOW) -> FastAPI:
    """The API and pages over one store opened read-only; `dictionary`: the one shown by default.
    `hosts`: (the Host names answered, whether any IP address is too), as safety.allowed_hosts gives them
    (None: no Host check, for an app called in-process). `slow`: threads and queue of the search and of
    the trace pool (each its own)."""
    b = Browser(store, dictionary)
    app, pools = _new_app(b, hosts, slow)
    get = ["GET"]  # HEAD is a GET without its body (the middleware): the OpenAPI lists GET

    @app.api_route("/api/dictionaries", methods=get, response_model=list[DictionaryInfo])
    def dictionaries():
        """The store's dictionaries, the default one first."""
        return dictionary_infos(b)

    names = [d.name for d in b.dictionaries]  # the store is read-only: these are all there will be
    sorts = [*FIXED_SORTS, *sorted({n for d in b.dictionaries for n in store.labels.scorer_names(d.dictionary_id)})]
    # members known only at run time (FastAPI lists them in the OpenAPI): mypy sees no members
    DictName = Enum("DictName", {n: n for n in names}, type=str)  # type: ignore[misc]  # noqa: N806 - a type, made here
    SortKey = Enum("SortKey", {n: n for n in sorts}, type=str)  # type: ignore[misc]  # noqa: N806

    def _dict(name) -> Dictionary:
        return b.dictionary(None if name is None else name.value)

    @app.api_route("/api/features", methods=get, response_model=FeaturePage,
                   responses={400: {"model": Error}})
    def features(dictionary: Annotated[DictName | None, Query(description="Dictionary name (default: the served one)")] = None,
                 sort: Annotated[SortKey, Query(description="feature, density, max, or a scorer's name")] = SortKey("feature"),
                 order: Annotated[Literal["asc", "desc"], Query()] = "asc",
                 by: Annotated[Literal["value", "lower"], Query(description="sorting by a scorer: its value, or the "
                                                                "lower end of its 95% interval")] = "value",
                 q: Annotated[str, Query(max_length=200, description="Label text (case-insensitive), or a feature id")] = "",
                 offset: Annotated[int, Query(ge=0, le=2**40)] = 0,
                 limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100):
        """One page of features with their labels and grades; missing values sort last either way."""
        d = _dict(dictionary)
        ix = b.index(d)
        total, rows = ix.page(sort.value, order, q, offset, limit, by)
        return {"dictionary": d.name, "total": total, "offset": offset, "limit": limit, "sort": sort.value,
                "order": order, "by": by, "rows": rows}

    @app.api_route("/api/features/{feature}", methods=get, responses={404: {"model": Error}, 400: {"model": Error}})
    def feature(feature: Annotated[int, Path(ge=0, le=2**32 - 1)],
                dictionary: Annotated[DictName | None, Query()] = None) -> dict:
        """One feature: labels (every candidate) with grades, details and provenance; statistics; top
        and quantile windows; simulated vs true activations on held-out windows."""
        return _one_feature(b, _dict(dictionary), feature)

    @app.api_route("/api/search", methods=get, response_model=SearchResult, responses={400: {"model": Error}, **BUSY})
    @on_pool(pools["search"], SearchResult)
    def search(q: Annotated[str, Query(min_length=1, max_length=500, pattern=r"\S",
                                       description="What the features should mean")],
               dictionary: Annotated[DictName | None, Query()] = None,
               limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20):
        """Features whose labels are nearest `q` in meaning, best first (one hit per feature)."""
        if not q.strip():
            raise BadRequest("q: the query is empty")
        d = _dict(dictionary) if dictionary else None
        hits = b.labels().query(q, limit, None if d is None else d.dictionary_id)
        return {"query": q, "rows": describe_hits(b.store, hits)}

    @app.api_route("/api/trace", methods=get, response_model=TraceResult, responses={400: {"model": Error}, **BUSY})
    @on_pool(pools["trace"], TraceResult)
    def trace(text: Annotated[str, Query(min_length=1, max_length=TRACE_MAX_CHARS, pattern=r"\S",
                                         description="The text to run through the dictionary's model")],
              dictionary: Annotated[DictName | None, Query()] = None,
              top: Annotated[int, Query(ge=1, le=100, description="Features per token")] = 5,
              matrix: Annotated[bool, Query(description="Also every nonzero activation (large for a wide "
                                                        "dictionary)")] = False):
        """A text through the model (and SAE) the dictionary was captured from: per token its strongest
        features with their labels, and every nonzero activation. 400 for a dictionary with no model here."""
        return _trace(b, _dict(dictionary), text, TraceConfig(top=top, matrix=matrix))

    @app.api_route("/api/overview", methods=get, response_model=Overview, responses={400: {"model": Error}})
    def overview(dictionary: Annotated[DictName | None, Query()] = None,
                 scorer: Annotated[str | None, Query(max_length=100, description="The grade plotted against "
                                                     "density (default: simulation, else the first); one "
                                                     "the dictionary has no grade of plots nothing")] = None,
                 limit: Annotated[int, Query(ge=1, le=5000, description="Points of the scatter at most")] = 2000):
        """What the index plots: the dictionary's features by log10 density (a histogram; dead ones counted
        apart), and a scatter of one scorer's grades against density, each point a feature (a fixed sample
        of `limit` when more are graded)."""
        return b.overview(_dict(dictionary), scorer, limit)

    _calibration(app, b)
    _pages(app)
    return app


def _calibration(app: FastAPI, b: Browser) -> None:
    """The runs of `autointerp calibrate`, and one run's tables (what the calibration page shows)."""
    from ..calibrate.metrics import by_rule

    @app.api_route("/api/calibration", methods=["GET"])
    def calibration_runs() -> list[dict]:
        """Every calibration run of the store, newest first, with its summaries (scorers by category and
        window budget, explainers' gaps to the truth)."""
        return b.store.calibrations.runs()

    @app.api_route("/api/calibration/{run_id}", methods=["GET"], responses={404: {"model": Error}})
    def calibration_run(run_id: Annotated[str, Path(max_length=64)]) -> dict:
        """One calibration run: its summaries, and per rule and scorer the truth's grade beside its best-graded
        near miss, the best unrelated label, and each explainer's label (every held-out window, seeds averaged)."""
        run = b.store.calibrations.run(run_id)
        if run is None:
            raise HTTPException(404, f"no calibration run {run_id!r}")
        return {**run, "rules": by_rule(b.store.calibrations.grades(run_id))}


def _new_app(b: Browser, hosts: tuple[frozenset[str], bool] | None,
             slow: tuple[int, int]) -> tuple[FastAPI, dict[str, SlowPool]]:
    """The app with its state (the browser, the slow pools), middleware and error handlers; no routes yet."""
    app = FastAPI(title="autointerp", version="1", summary="Feature labels and grades of an autointerp store "
                  "(read-only).", docs_url=None, redoc_url=None,
                  responses={400: {"model": Error, "description": "A bad parameter"}})
    app.state.browser = b
    app.state.pools = pools = {"search": SlowPool("search", *slow, retry_after=1),
                               "trace": SlowPool("trace", *slow, retry_after=2)}
    _read_only_get_and_head(app)
    if hosts is not None:  # added last: the outermost, before anything else looks at the request
        app.add_middleware(HostGuard, names=hosts[0], any_ip=hosts[1])
    _errors_as_json(app)
    return app, pools


def _one_feature(b: Browser, d: Dictionary, feature: int) -> dict:
    """One feature's page data (404 past the dictionary's width)."""
    if feature >= d.width:
        raise HTTPException(404, f"no feature {feature} in {d.name} (width {d.width})")
    docs = dict(feature_docs(b.store, d, [feature], unsampled=True))
    return {"dictionary": d.name, **docs[feature]}


def _trace(b: Browser, d: Dictionary, text: str, config: TraceConfig) -> dict:
    """A text through the dictionary's model, one text at a time per model."""
    from ..capture import trace_text  # torch and the model: loaded on the first trace, not at start

    tracer, lock = b.tracer(d)
    with lock:
        return trace_text(b.store, tracer, text, config)


def _pages(app: FastAPI) -> None:
    """The browser's page and its assets, and the API's docs page (all served locally: no CDN)."""
    get = ["GET"]

    @app.api_route("/api/docs", methods=get, include_in_schema=False)
    def docs():
        assert app.openapi_url is not None  # FastAPI's default ("/openapi.json"): make_app never turns it off
        return HTMLResponse(docs_page(app.openapi(), app.openapi_url),
                            headers={"content-security-policy": DOCS_CSP})

    @app.api_route("/", methods=get, include_in_schema=False)
    def home():
        return FileResponse(WEB / "index.html")

    @app.api_route("/calibration", methods=get, include_in_schema=False)
    def calibration_page():
        return FileResponse(WEB / "calibration.html")

    for name in ASSETS:
        def asset(name=name):
            return FileResponse(WEB / name)
        app.add_api_route(f"/{name}", asset, methods=get, include_in_schema=False)
