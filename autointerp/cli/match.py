"""`autointerp match`: pair the features of two dictionaries over one corpus (the old SAE and its retrained
successor), by co-activation and by decoder cosine; the pairs are stored for `label --carry-from` and
`diff --dictionaries`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import MatchError, UsageError
from .common import (FeaturesOpt, JsonOpt, StoreOpt, check_choice, check_features, emit_json, handle_errors, opened,
                     safe, show_progress)

if TYPE_CHECKING:
    from ..records import Dictionary
    from ..store import Store


@handle_errors
def match(store: StoreOpt,
          from_: Annotated[str, typer.Option("--from", help="The earlier dictionary (whose labels would carry).")],
          to: Annotated[str, typer.Option("--to", help="The later dictionary: each of its features gets a partner.")],
          method: Annotated[str, typer.Option(help="auto (co-activation, and decoder cosine when both have output "
                                                   "directions), coactivation, or decoder.")] = "auto",
          threshold: Annotated[float, typer.Option(help="Similarity the summary counts as matched.")] = 0.8,
          as_json: JsonOpt = False) -> None:
    """For every feature of --to, its closest feature of --from: by the correlation of their activations over
    the shared corpus (co-activation, computed in bounded memory a range of features at a time) and by the
    cosine of their output directions when both were captured with them. Replaces an earlier match of the
    same pair and method; one transaction (an error or Ctrl-C writes nothing)."""
    from ..match import MatchConfig, match_dictionaries

    config = MatchConfig(method=method, threshold=threshold)
    with opened(store) as s:
        a, b = s.dictionary(from_), s.dictionary(to)
        res = match_dictionaries(s, a, b, config, progress=show_progress(as_json))
    if as_json:
        emit_json(res.to_dict())
        return
    typer.echo(f"match {a.name} -> {b.name}: {res.live:,} of {b.width:,} features of {b.name} fire "
               f"({a.name}: {a.width:,} features); {res.seconds} s")
    for name, m in res.methods.items():
        extra = f" (search: {m['search']})" if "search" in m else ""
        typer.echo(f"{name}: {m['pairs']:,} paired, {m['matched']:,} at similarity >= {m['threshold']:g}, "
                   f"median {m['median'] if m['median'] is not None else '-'}{extra}")
        typer.echo("  " + "  ".join(f"{k}: {v:,}" for k, v in m["histogram"].items()))
    if res.agreement is not None:
        typer.echo(f"the two methods name the same partner for {res.agreement:.1%} of the features paired by both")
    typer.echo(f"the pairs: autointerp matches --from {a.name} --to {b.name}")


@handle_errors
def matches(store: StoreOpt,
            from_: Annotated[str, typer.Option("--from", help="The earlier dictionary (as `match --from`).")],
            to: Annotated[str, typer.Option("--to", help="The later dictionary (as `match --to`).")],
            method: Annotated[str, typer.Option(help="Which stored match: coactivation or decoder.")] = "coactivation",
            min_similarity: Annotated[float, typer.Option(help="Only pairs at this similarity or more.")] = -1.0,
            features: Annotated[str | None, typer.Option(help="Only these features of --to, e.g. 0-99,123.")] = None,
            sort: Annotated[str, typer.Option(help="feature (of --to) or similarity (highest first).")] = "feature",
            limit: Annotated[int, typer.Option(help="Pairs listed (the total counts all); 0: every one, read a "
                                                    "block at a time.")] = 100,
            as_json: JsonOpt = False) -> None:
    """The pairs a match stored: each feature of --to with its partner in --from, their similarity and both
    current labels. Reads only; run `autointerp match` first."""
    check_choice(method, ("coactivation", "decoder"), "--method")
    check_choice(sort, ("feature", "similarity"), "--sort")
    if not -1.0 <= min_similarity <= 1.0:  # NaN too
        raise UsageError(f"--min-similarity must be between -1 and 1, got {min_similarity}")
    if limit < 0:
        raise UsageError(f"--limit must be 0 or more, got {limit}")
    check_features(features)
    with opened(store, read_only=True) as s:
        a, b = s.dictionary(from_), s.dictionary(to)
        if method not in s.matches.match_methods(a.dictionary_id, b.dictionary_id):
            raise MatchError(f"no {method} match from {a.name!r} to {b.name!r} in the store: run `autointerp "
                             f"match --from {a.name} --to {b.name}` first")
        from ..pipeline.config import parse_features

        sel = None if features is None else parse_features(features, b.width)
        offset, sep, after, total = 0, "", None, 0
        while True:  # a page of pairs at a time, each from where the last ended: `--limit 0` lists a million
            n = MATCH_PAGE if limit == 0 else min(MATCH_PAGE, limit - offset)
            counted, rows = _match_page(s, a, b, method, min_similarity, sel, sort, after, n, count=offset == 0)
            total = total if counted is None else counted
            keys = [(r.pop("similarity_exact"), r["feature_b"]) for r in rows]  # where the next page starts
            if offset == 0 and as_json:  # one document, its pairs written as they are read
                head = {"from": a.name, "to": b.name, "method": method, "min_similarity": min_similarity,
                        "sort": sort, "features": features, "total": total}
                typer.echo(json.dumps(head)[:-1] + ', "pairs": [', nl=False)
            elif offset == 0:
                shown = total if limit == 0 else min(total, limit)
                typer.echo(f"{total:,} {method} pairs {a.name} -> {b.name} at similarity >= {min_similarity:g}"
                           + (f", features {features}" if features else "")
                           + (f"; the first {shown:,} by {sort}" if shown < total else ""))
                typer.echo("feature_a\tfeature_b\tsimilarity\tmethod\tlabel_a\tlabel_b")
            for r in rows:
                if as_json:
                    typer.echo(sep + json.dumps(r), nl=False)
                    sep = ", "
                else:
                    typer.echo(f"{r['feature_a']}\t{r['feature_b']}\t{r['similarity']:.4f}\t{method}\t"
                               f"{safe(r['label_a'] or '-')}\t{safe(r['label_b'] or '-')}")
            offset += len(rows)
            if len(rows) < n or (limit and offset >= limit):
                break
            after = keys[-1]
        if as_json:
            typer.echo("]}")


MATCH_PAGE = 10_000  # pairs read (and their labels) at a time by `matches`


def _match_page(s: Store, a: Dictionary, b: Dictionary, method: str, min_similarity: float, sel, sort: str,
                after: tuple[float, int] | None, n: int, count: bool) -> tuple[int | None, list[dict]]:
    """(pairs in all when `count`, else None; `n` of them after the pair `after`, each with both sides'
    current labels)."""
    import numpy as np

    total, p = s.matches.matched_pairs(a.dictionary_id, b.dictionary_id, method, min_similarity, sel, sort,
                                       after, n, count)
    if not len(p["to_feature"]):
        return total, []
    ta, tb = ({f: t for f, t in zip(x["feature"].tolist(), x["text"].tolist())}
              for x in (s.labels.label_side(a.dictionary_id, np.unique(p["from_feature"])),
                        s.labels.label_side(b.dictionary_id, np.unique(p["to_feature"]))))
    return total, [{"feature_a": fa, "feature_b": fb, "similarity": round(sim, 4), "method": method,
                    "label_a": ta.get(fa), "label_b": tb.get(fb), "similarity_exact": sim}
                   for fb, fa, sim in zip(p["to_feature"].tolist(), p["from_feature"].tolist(),
                                          p["similarity"].tolist())]


@handle_errors
def diff(store: StoreOpt,
         runs: Annotated[tuple[str, str] | None, typer.Option("--runs", help="Two run ids, before and after "
                                                              "(`label --json`'s run_id, `job list`).")] = None,
         dictionaries: Annotated[tuple[str, str] | None, typer.Option("--dictionaries", help="Two dictionaries, "
                                                                      "before and after (their current labels).")]
         = None,
         method: Annotated[str | None, typer.Option(help="Two dictionaries: pair features by coactivation or "
                                                         "decoder (matched first if `match` has not; default: the "
                                                         "method of the newest `label --carry-from` between them, "
                                                         "else coactivation).")] = None,
         min_similarity: Annotated[float | None, typer.Option(help="Two dictionaries: a pair counts at this "
                                                                   "similarity or more (default: the threshold "
                                                                   "the newest `label --carry-from` between them "
                                                                   "recorded, else 0.8).")] = None,
         features: FeaturesOpt = None,
         meaning: Annotated[float, typer.Option(help="Label distance (1 - cosine of their embeddings) counted as "
                                                     "a change of meaning.")] = 0.3,
         limit: Annotated[int, typer.Option(help="Changes listed, most impactful first, shared among the kinds "
                                                 "(the counts cover all).")] = 30,
         html: Annotated[Path | None, typer.Option("--html", help="Also write the report as a page: DIR/diff.html.")]
         = None,
         as_json: JsonOpt = False) -> None:
    """What changed between two runs (over one dictionary, or over a dictionary and its retrained successor)
    or between two dictionaries: features added and gone, labels relabelled (and whether their meaning
    changed), grades that moved beyond their 95% intervals, sorted by impact (the change times how often the
    feature fires). A run holds the features it explained, carried or graded: only those both runs hold are
    compared, the rest counted ("N features not in run B"). Reads only, except that a missing match of two
    dictionaries is computed and stored."""
    from ..export import check_diff_out, write_diff_html
    from ..match import DiffConfig, Side, run_side
    from ..match import diff as run_diff

    if (runs is None) == (dictionaries is None):
        raise UsageError("give either --runs RUN_A RUN_B or --dictionaries A B")
    config = DiffConfig(method=method, min_similarity=min_similarity, meaning=meaning, limit=limit,
                        features=check_features(features))
    if html is not None:
        check_diff_out(html)  # before anything is computed or stored
    def sides(s: Store) -> tuple[Side, Side]:
        if runs is not None:
            return run_side(s, runs[0]), run_side(s, runs[1])
        assert dictionaries is not None  # checked above: --runs or --dictionaries, exactly one
        return Side(s.dictionary(dictionaries[0])), Side(s.dictionary(dictionaries[1]))

    with opened(store, read_only=True) as s:
        a, b = (x.dictionary for x in sides(s))
        if features is not None:  # an id past both widths: refused before a match is computed and stored
            from ..pipeline.config import parse_features

            parse_features(features, max(a.width, b.width))
        missing = None
        if a.dictionary_id != b.dictionary_id:
            from ..match.diff import pairing

            missing = pairing(s, a, b, config)[0]  # the method the pairs will come from
            if missing in s.matches.match_methods(a.dictionary_id, b.dictionary_id):
                missing = None
    if missing:  # two dictionaries: their pairs, matched and stored first (the one write a diff makes)
        from ..match import MatchConfig, check_pair, match_dictionaries

        with opened(store) as s:
            check_pair(s, a, b, missing)
            match_dictionaries(s, a, b, MatchConfig(method=missing), progress=show_progress(as_json))
    with opened(store, read_only=True) as s:  # the diff itself only reads: a running job does not block it
        res = run_diff(s, *sides(s), config)
    doc = res.to_dict()
    if html is not None:
        doc["page"] = write_diff_html(doc, html)["page"]
    if as_json:
        emit_json(doc)
        return
    c = res.counts
    typer.echo(f"{safe(res.a)} -> {safe(res.b)} (paired by {res.paired_by}"
               + (f"; features {res.features}" if res.features else "") + f"): {c['added']} added, {c['gone']} gone, "
               f"{c['relabelled']} relabelled ({c['changed_meaning']} changed meaning), {c['grade']} grades moved "
               f"beyond their intervals; {c['pairs']} labelled pairs compared")
    if res.similarity is not None:
        typer.echo(f"  similarity >= {res.similarity['min']:g}: {safe(res.similarity['why'])}")
    for side, n in (("B", c["not_in_b"]), ("A", c["not_in_a"])):
        if n:
            typer.echo(f"  {n} features not in run {side} (not compared)")
    for scorer, m in res.moved.items():
        typer.echo(f"  {safe(scorer)}: {m['up']} up, {m['down']} down")
    if res.rows:
        typer.echo("impact\tchange\tfeature\tbefore\tafter")
    for r in res.rows:
        feature = (f"{r['feature_a']}->{r['feature_b']}" if "feature_a" in r and "feature_b" in r
                   and r["feature_a"] != r["feature_b"] else str(r.get("feature_b", r.get("feature_a"))))
        if r["kind"] == "grade":
            what, before, after = (f"grade {r['scorer']} {r['delta']:+.3f}", f"{r['value_a']:.3f}",
                                   f"{r['value_b']:.3f}  {r['label_b']}")
        elif r["kind"] == "relabelled":
            what, before, after = f"relabelled ({r['distance']:.2f})", r["label_a"], r["label_b"]
        else:
            what, before, after = r["kind"], r.get("label_a") or "", r.get("label_b") or ""
        typer.echo(f"{r['impact']:.3f}\t{safe(what)}\t{feature}\t{safe(before)}\t{safe(after)}")
    if html is not None:
        typer.echo(f"wrote {doc['page']}")
