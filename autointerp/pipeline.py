"""features -> samples -> explanations -> scores, each feature's outcome written to the store as it completes.

Three stages overlap: a thread samples the next features in batches (`Sampler.sample_many`, on its own
DuckDB cursor); `concurrency` workers explain and score features (offline methods are plain functions
and run one at a time; LLM methods are coroutines and run up to `concurrency` at once); finished
features are committed every `flush_every` results or `flush_seconds`, whichever comes first, and at
the end, also when the run is interrupted. A rerun skips features that already have an outcome (ok or
skipped) under the same explainer, prompt hash, sampler config and seed, and retries the ones that
failed; `force=True` redoes them, replacing (never duplicating) their rows.

Best-of-k: an explainer that gives several candidates has each graded by one (cheap) scorer, `select_by`
(default: the first scorer); the best becomes the feature's label and is graded by every other scorer;
all candidates are stored with their grades.

A feature that cannot be labelled never stops the run: too few examples is "skipped" with the sampler's
reason; an explainer that raises is "failed" with the error; a scorer that raises gives a "failed" score.
The summary counts each kind.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from tqdm import tqdm

from .errors import ExplainFailure, LabelError
from .explain import make_explainer
from .llm.client import DEFERRED
from .records import Dictionary, Explanation, FeatureLabel, FeatureSample, SamplerConfig, Score
from .sample import Sampler
from .score import make_scorers
from .store import Store


@dataclass(frozen=True)
class Budget:
    """Limits of one run; None is no limit. When one is reached no new feature starts, the features in
    flight finish and are committed, and the summary says which limit stopped the run. Dollars and
    tokens are what this run's LLM calls cost (cache hits are free), so the run may pass the limit by
    what the features in flight spend (at most `concurrency` features)."""

    dollars: float | None = None
    tokens: int | None = None
    features: int | None = None
    seconds: float | None = None

    def reached(self, clients, started: int, elapsed: float) -> str | None:
        return self.exceeded(sum(c.spent_usd for c in clients), sum(c.spent_tokens for c in clients), started,
                             elapsed)

    def exceeded(self, usd: float, tokens: int, started: int, elapsed: float) -> str | None:
        """Which limit the spending so far has reached ("budget: dollars (...)"), or None."""
        for name, used, limit in (("dollars", usd, self.dollars), ("tokens", tokens, self.tokens),
                                  ("features", started, self.features), ("seconds", elapsed, self.seconds)):
            if limit is not None and used >= limit:
                return f"budget: {name} ({used:.4g} of {limit:.4g})"
        return None


async def _call(fn, *args):
    out = fn(*args)
    return await out if inspect.isawaitable(out) else out


async def grade_one(scorer, sample: FeatureSample, explanation) -> Score:
    try:
        return await _call(scorer.score, sample, explanation)
    except Exception as err:  # a scorer bug or a provider failure grades this label "failed", not the run
        return Score(scorer.name, scorer.version, "failed", None, f"{type(err).__name__}: {err}", {},
                     datetime.now(timezone.utc).replace(tzinfo=None))


def _clients(*components) -> list:
    """The distinct LLM clients of an explainer and scorers (offline ones have none)."""
    return list({id(c.client): c.client for c in components if getattr(c, "client", None) is not None}.values())


def _kind(reason: str) -> str:
    """The class of a skip or failure reason, for the summary: 'dead', 'too rare', 'explainer', ..."""
    return reason.split(":", 1)[0].strip() or "unknown"


def run_key(store: Store, dictionary: Dictionary, explainer: str, llm=None, config: SamplerConfig | None = None,
            seed: int = 0) -> tuple[str, str, str, int]:
    """The (explainer, prompt hash, sampler hash, seed) a run of `explainer` would label under."""
    expl = make_explainer(explainer, store, dictionary, llm)
    if getattr(expl, "client", None) is not None:
        expl.client.log.close()  # made only to be named: nothing was called
    return (expl.name, expl.prompt_hash, (config or SamplerConfig()).hash, seed)


def label(store: Store, dictionary: Dictionary, features: np.ndarray | None = None, *, explainer="offline",
          scorers=("embedding", "simulation"), config: SamplerConfig | None = None, seed: int = 0,
          force: bool = False, concurrency: int = 8, sample_batch: int = 256, flush_every: int = 64,
          flush_seconds: float = 5.0, progress: bool = False, llm=None, batch: bool = False,
          batch_poll: float = 30.0, batch_wait: float | None = None, scorer_model: str | None = None,
          select_by=None, budget: Budget | None = None, on_flush=None, sink=None, summary: dict | None = None) -> dict:
    """Label features of one dictionary (default: all); returns counts per outcome and per score status.

    `explainer` is a name ("offline", "anthropic:MODEL", ...) or an explainer object; `llm` the
    llm.LLMOptions for a named LLM explainer or scorer; `scorers` names or scorer objects; with
    `scorer_model` (anthropic:MODEL, ...) the scorers that have an LLM form (simulation) use it.
    `select_by`: the scorer (a name or object) that picks the label among an explainer's candidates.
    `budget`: limits (dollars, tokens, features, seconds) that stop the run gracefully; `summary["stopped"]`
    then says which (a budget may also be shared by many processes: `reached` may be a coroutine).
    `on_flush(summary)` is called after each commit (progress for logs). `sink(labels)`: where finished
    labels go instead of the store (a Ray worker labels from a read-only snapshot). `summary`: a dict
    filled in place, so the caller keeps the counts of what was committed if the run is interrupted.

    `batch`: first send every uncached LLM request (explainer and scorers, stage by stage: see `_batch`)
    through the providers' batch APIs (half price), waiting for the batches (polling every `batch_poll`
    s, at most `batch_wait` s), then label from the cache. Batches are recorded in the store when
    submitted: a run stopped while they are pending (or `batch_wait` reached) is resumed by running
    again, which collects and never resubmits.
    """
    if concurrency < 1 or sample_batch < 1 or flush_every < 1:
        raise LabelError("concurrency, sample_batch and flush_every must be at least 1")
    config = config or SamplerConfig()
    feats = np.arange(dictionary.width) if features is None else np.unique(np.asarray(features, dtype=np.int64))
    if len(feats) and (feats[0] < 0 or feats[-1] >= dictionary.width):
        raise LabelError(f"features must be in 0..{dictionary.width - 1}")
    expl = make_explainer(explainer, store, dictionary, llm) if isinstance(explainer, str) else explainer
    names = [s for s in scorers if isinstance(s, str)]
    grade = make_scorers(names, store, dictionary, scorer_model, llm) + [s for s in scorers if not isinstance(s, str)]
    if isinstance(select_by, str):  # one of the scorers, or a scorer of its own
        select_by = next((s for s in grade if s.name == select_by), None) or \
            make_scorers([select_by], store, dictionary, scorer_model, llm)[0]
    select = select_by or (grade[0] if grade else None)
    run_key = (expl.name, expl.prompt_hash, config.hash, seed)
    done = set() if force else store.labelled_features(dictionary.dictionary_id, run_key)
    todo = [int(f) for f in feats if int(f) not in done]
    sampler = Sampler(store, dictionary, config, seed)

    summary = summary if summary is not None else {}
    summary.update(dictionary=dictionary.name, features=int(len(feats)), ok=0, skipped=0, failed=0,
                   already_done=len(feats) - len(todo), skipped_kinds={}, failed_kinds={}, score_failures={},
                   scores={s.name: {} for s in grade}, explainer=expl.name, prompt_hash=expl.prompt_hash,
                   sampler_hash=config.hash, seed=seed, select_by=select.name if select else None, stopped=None)
    t0 = time.perf_counter()
    clients = _clients(expl, *grade, select)
    if batch:
        if not clients:
            raise LabelError("--batch needs an LLM explainer or scorer (anthropic:MODEL, ...)")
        if not all(c.use_cache for c in clients):
            raise LabelError("--batch collects replies into the response cache: it cannot run with --no-cache")
        summary["batch"] = asyncio.run(_batch(sampler, expl, grade, select, todo, sample_batch, batch_poll,
                                              batch_wait))
    if not batch or not summary["batch"]["pending"]:  # batches still pending: the next run collects them
        asyncio.run(_run(store, dictionary, sampler, expl, grade, select, todo, summary, concurrency, sample_batch,
                         flush_every, flush_seconds, progress, budget or Budget(), on_flush, sink))
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    if clients:  # an LLM explainer or scorer: what this run cost (they share one run id)
        summary["run_id"] = clients[0].run_id
        summary["cost"] = store.cost_summary(clients[0].run_id)
    return summary


async def _batch(sampler, expl, grade, select, todo, sample_batch, poll, wait) -> dict:
    """Send every LLM request of the run through the providers' batch APIs, stage by stage.

    A planning pass labels every feature with the clients in deferring mode (llm.client.DEFERRED): what
    is cached is used, what is not is noted and not sent, and a feature stops at the first stage with a
    missing reply (explain; the candidates' selector grades; the other scorers). The noted requests are
    submitted as batches and collected into the cache; the next pass gets one stage further. It ends
    when a pass needs nothing new, or a batch is still pending after `wait` seconds (a rerun collects
    it). A request whose batch item failed is not resubmitted: the labelling pass calls it directly.
    """
    clients = _clients(expl, *grade, select)
    llm_grade = [s for s in grade if getattr(s, "client", None) is not None]  # offline scorers are not planned
    got = {"submitted": 0, "batches": 0, "replies": 0, "errors": 0, "pending": 0, "stages": 0}
    tried: set[tuple[int, str]] = set()
    t0 = time.monotonic()
    try:
        while True:
            wanted: dict[tuple[int, str], tuple] = {}

            async def submit(final: bool = False) -> None:
                if not (final or len(wanted) >= 10_000):  # bounded memory: submit as the plan grows
                    return
                by: dict[tuple[int, str], tuple] = {}
                for c, req, purpose in wanted.values():  # one submission per client and purpose
                    by.setdefault((id(c), purpose), (c, purpose, []))[2].append(req)
                for c, purpose, reqs in by.values():
                    got["submitted"] += await c.submit(reqs, purpose=purpose)
                tried.update(wanted)
                wanted.clear()

            new = 0
            for i in range(0, len(todo), sample_batch):
                for sample in sampler.sample_many(todo[i:i + sample_batch]):
                    noted: list = []
                    token = DEFERRED.set(noted)
                    try:
                        await _label_one(sample, expl, llm_grade, select, planning=noted)
                    finally:
                        DEFERRED.reset(token)
                    for c, req, purpose in noted:
                        k = (id(c), req.key(c.provider.name))
                        if k not in tried and k not in wanted:
                            wanted[k] = (c, req, purpose)
                            new += 1
                    await submit()
            await submit(final=True)
            for c in clients:
                left = None if wait is None else max(0.0, wait - (time.monotonic() - t0))
                for k, v in (await c.collect(poll, left)).items():
                    got[k] += v
            got["stages"] += bool(new)  # the passes that found replies missing
            if got["pending"] or not new:
                return got
    finally:
        for c in clients:
            await c.aclose()


async def _run(store, dictionary, sampler, expl, grade, select, todo, summary, concurrency, sample_batch,
               flush_every, flush_seconds, progress, budget, on_flush, sink) -> None:
    queue: asyncio.Queue = asyncio.Queue(maxsize=max(sample_batch, 2 * concurrency))
    finished: list[FeatureLabel] = []
    last_flush = t0 = time.monotonic()
    started = 0
    stop = asyncio.Event()  # a budget was reached: no new feature starts
    bar = tqdm(total=len(todo), unit="feat", disable=not progress, desc=f"label {dictionary.name}")
    cursor = store.cursor()  # the sampling thread reads through a connection of its own

    clients = _clients(expl, *grade, select)

    def flush() -> None:
        nonlocal last_flush
        for c in clients:  # journalled LLM replies and ledger rows first: labels never outrun their cost
            c.fold()
        if finished:
            done = list(finished)
            if sink is not None:
                sink(done)
            else:
                with store.writer(checkpoint=False) as w:
                    w.add_labels(dictionary.dictionary_id, done)
            finished.clear()  # at once: an interrupt from here on must not write or count them twice
            for r in done:
                _count(summary, r)
            bar.update(len(done))
        last_flush = time.monotonic()
        if on_flush is not None:
            on_flush(summary)

    async def produce() -> None:
        for i in range(0, len(todo), sample_batch):
            if stop.is_set():
                break
            for s in await asyncio.to_thread(sampler.sample_many, todo[i:i + sample_batch], cursor):
                if stop.is_set():
                    break
                await queue.put(s)
        for _ in range(concurrency):  # a worker that stopped drained the queue: there is room
            await queue.put(None)

    async def work() -> None:
        nonlocal started
        while (sample := await queue.get()) is not None:
            if stop.is_set():
                continue  # drain to the end marker: the producer must never block on a full queue
            if (why := await _call(budget.reached, clients, started, time.monotonic() - t0)) is not None:
                summary["stopped"] = why
                stop.set()
                continue
            started += 1
            finished.append(await _label_one(sample, expl, grade, select))
            if len(finished) >= flush_every or time.monotonic() - last_flush >= flush_seconds:
                flush()

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(produce())
            for _ in range(concurrency):
                tg.create_task(work())
    finally:  # also on error or interrupt: what finished is kept
        try:
            flush()
        finally:
            for c in clients:
                await c.aclose()
            cursor.close()
            bar.close()
            if not store.read_only:
                store.con.execute("CHECKPOINT")


async def _label_one(sample: FeatureSample, expl, grade, select=None, planning: list | None = None) -> FeatureLabel:
    """Explain one feature and grade its explanations. `planning` (a batch plan, see _batch): the list
    the deferred requests go to; a stage that deferred any ends the feature there."""
    base = dict(dictionary=sample.dictionary, feature=sample.feature, explainer=expl.name,
                prompt_hash=expl.prompt_hash, sampler=sample.config, seed=sample.seed)
    if sample.status != "ok":
        return FeatureLabel(**base, status="skipped", reason=sample.reason)
    try:
        out = await _call(expl.explain, sample)
    except ExplainFailure as err:
        return FeatureLabel(**base, status="failed", reason=f"explainer: {err}")
    except Exception as err:  # an explainer bug fails this feature, visibly, not the run
        return FeatureLabel(**base, status="failed", reason=f"explainer error: {type(err).__name__}: {err}")
    candidates = list(out) if isinstance(out, (list, tuple)) else [out]  # an explainer may give n candidates
    if len(candidates) == 1 or select is None:
        graded = [(e, tuple(await asyncio.gather(*(grade_one(s, sample, e) for s in grade)))) for e in candidates]
        return FeatureLabel(**base, status="ok", explanations=tuple(graded))
    # best-of-k: every candidate graded by `select`; the best one alone by the other scorers
    first = await asyncio.gather(*(grade_one(select, sample, e) for e in candidates))
    if planning:  # the selector's replies are not all in yet: which candidate wins is not known
        return FeatureLabel(**base, status="failed", reason="planning")
    chosen = _best(first)
    rest = await asyncio.gather(*(grade_one(s, sample, candidates[chosen]) for s in grade if s is not select))
    graded = [(e, (first[i], *(rest if i == chosen else ()))) for i, e in enumerate(candidates)]
    return FeatureLabel(**base, status="ok", explanations=tuple(graded), chosen=chosen)


def _best(scores: list[Score]) -> int:
    """The candidate with the highest defined score (the first of equals); the first when none is defined."""
    ok = [(s.value, -i) for i, s in enumerate(scores) if s.status == "ok" and s.value is not None]
    return -max(ok)[1] if ok else 0


def _count(summary: dict, r: FeatureLabel) -> None:
    summary[r.status] += 1
    if r.status != "ok":
        kinds = summary[f"{r.status}_kinds"]
        kinds[_kind(r.reason)] = kinds.get(_kind(r.reason), 0) + 1
    for _, scores in r.explanations:
        for s in scores:
            per = summary["scores"].setdefault(s.scorer, {})
            per[s.status] = per.get(s.status, 0) + 1
            if s.status == "failed":  # why, by kind: reply (unusable), provider (budget spent), or an error type
                kinds = summary["score_failures"].setdefault(s.scorer, {})
                kinds[_kind(s.reason)] = kinds.get(_kind(s.reason), 0) + 1


def score_text(store: Store, dictionary: Dictionary, feature: int, text: str, *, scorers=("embedding",),
               config: SamplerConfig | None = None, seed: int = 0, author: str = "given",
               scorer_model: str | None = None, llm=None) -> tuple[FeatureSample, list[Score]]:
    """Grade any text (a human's label, another model's) as the label of one feature, on the same
    held-out windows `label` grades its own explanations on. Nothing is written to the store."""
    if not text.strip():
        raise LabelError("the explanation is empty")
    config = config or SamplerConfig()
    sample = Sampler(store, dictionary, config, seed).sample(feature)
    if sample.status != "ok":
        raise LabelError(f"feature {feature} cannot be scored: {sample.reason}")
    e = Explanation(dictionary=dictionary.name, feature=feature, text=text, explainer=author, prompt_hash="",
                    sampler=config, seed=seed, created_at=datetime.now(timezone.utc).replace(tzinfo=None))
    grade = [s for s in scorers if not isinstance(s, str)] + make_scorers([s for s in scorers if isinstance(s, str)],
                                                                          store, dictionary, scorer_model, llm)

    async def run():
        try:
            return await asyncio.gather(*(grade_one(s, sample, e) for s in grade))
        finally:
            for c in _clients(*grade):
                await c.aclose()

    return sample, list(asyncio.run(run()))
