"""A run's LLM requests through the providers' batch APIs (half price), stage by stage, before it labels."""

from __future__ import annotations

import time

from ..llm import BatchPlan
from .config import BatchOptions
from .work import Item, Parts, do_item


async def plan_batches(feed, parts, opts: BatchOptions) -> dict:
    """Send every LLM request of the run through the providers' batch APIs, stage by stage.

    A planning pass labels every feature inside a BatchPlan (llm/client.py): what
    is cached is used, what is not is noted and not sent, and a feature stops at the first stage with a
    missing reply (explain; the candidates' selector grades; the other scorers; for a label that only
    lacks grades, those). The noted requests are submitted as batches and collected into the cache; the
    next pass gets one stage further. It ends when a pass needs nothing new, or a batch is still pending
    after `opts.wait` seconds (a rerun collects it). A request whose batch item failed is not
    resubmitted: the labelling pass calls it directly.
    """
    clients = parts.clients
    # offline scorers are not planned: they cost nothing and would only slow the plan down
    llm = Parts(parts.explainer, [s for s in parts.grade if s.client is not None], parts.select)
    got = {"submitted": 0, "batches": 0, "replies": 0, "errors": 0, "pending": 0, "stages": 0}
    tried: set[tuple[int, str]] = set()
    t0 = time.monotonic()
    cursor = feed.store
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
            for i in feed.batches():
                for item in feed.items(i, cursor):
                    if item.explanation is not None:
                        item = Item(item.sample, item.explanation, [s for s in item.scorers if s in llm.grade])
                    with BatchPlan() as plan:
                        await do_item(item, llm)
                    for c, req, purpose in plan.requests:
                        k = (id(c), req.key(c.provider.name))
                        if k not in tried and k not in wanted:
                            wanted[k] = (c, req, purpose)
                            new += 1
                    await submit()
            await submit(final=True)
            for c in clients:
                left = None if opts.wait is None else max(0.0, opts.wait - (time.monotonic() - t0))
                for k, v in (await c.collect(opts.poll, left)).items():
                    got[k] += v
            got["stages"] += bool(new)  # the passes that found replies missing
            if got["pending"] or not new:
                return got
    finally:
        await parts.aclose()
