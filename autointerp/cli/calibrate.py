"""`autointerp calibrate`: plant gold features on a dictionary's corpus, and say how far each scorer and
explainer can be trusted on them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..calibrate import CalibrateConfig
from ..calibrate import calibrate as run_calibrate
from ..errors import UsageError
from ..llm import LLMOptions
from ..score import ScoringOptions
from .common import (
    DeviceOpt,
    DictOpt,
    JsonOpt,
    MinEvidenceOpt,
    MinWindowsOpt,
    NNeighborsOpt,
    NNonfiringOpt,
    NQuantileOpt,
    NQuantilesOpt,
    NScoreOpt,
    NTopOpt,
    PeakOpt,
    StoreOpt,
    WindowOpt,
    emit_json,
    encoder_device,
    handle_errors,
    opened,
    sampler_config,
    show_progress,
)
from .label import LogprobsOpt


@handle_errors
def calibrate(store: StoreOpt, dictionary: DictOpt = None,
              rules: Annotated[Path | None, typer.Option(help="A TOML file of rules of your own ([[rule]] tables: "
                                                              "docs/how-to/calibrate.md), planted beside the "
                                                              "built-in library.")] = None,
              builtin: Annotated[bool, typer.Option("--builtin/--no-builtin", help="Plant the built-in library of "
                                                    "42 rules (word classes, context rules, spans, graded).")] = True,
              scorer: Annotated[str, typer.Option(help="Comma-separated scorers to calibrate: simulation, embedding "
                                                       "(offline); with --scorer-model, simulation, detection and "
                                                       "fuzzing run on it.")] = "simulation,embedding",
              scorer_model: Annotated[str | None, typer.Option(help="LLM scorers: anthropic:MODEL, openai:MODEL or "
                                                               "compat:MODEL (with --base-url).")] = None,
              explainer: Annotated[str, typer.Option(help="Comma-separated explainers whose labels are graded "
                                                          "against the truth: offline, anthropic:MODEL, ...; "
                                                          "none: no explainer.")] = "offline",
              candidates: Annotated[int, typer.Option(help="LLM explainers: also label with best-of-k (k "
                                                           "candidates, picked by simulation) to see its effect, "
                                                           "1..32.")] = 1,
              seeds: Annotated[int, typer.Option(help="Sampler seeds (other held-out windows each), 1..20; two or "
                                                      "more give the intervals' coverage.")] = 3,
              budgets: Annotated[str, typer.Option(help="Held-out window budgets to grade with, comma-separated "
                                                        "(all: every window).")] = "10,20,40,all",
              unrelated: Annotated[int, typer.Option(help="Other rules' true descriptions graded as unrelated labels "
                                                          "of each rule, 0..10.")] = 2,
              base_url: Annotated[str | None, typer.Option(help="LLM: server URL (OpenAI-compatible servers).")] = None,
              api_key_env: Annotated[str | None, typer.Option(help="LLM: environment variable holding the key.")] = None,
              rpm: Annotated[float | None, typer.Option(help="LLM: requests per minute (default: 50 until the "
                                                             "provider's rate-limit headers give its limit).")] = None,
              max_in_flight: Annotated[int | None, typer.Option(help="LLM: most calls at once (default 16, or 1 on "
                                                                  "a compat server).")] = None,
              logprobs: LogprobsOpt = True, min_evidence: MinEvidenceOpt = 10,
              window: WindowOpt = 32, peak_offset: PeakOpt = None, n_top: NTopOpt = 20, n_quantile: NQuantileOpt = 20,
              n_score: NScoreOpt = 50, n_nonfiring: NNonfiringOpt = 50, n_neighbors: NNeighborsOpt = 0,
              n_quantiles: NQuantilesOpt = 10, min_windows: MinWindowsOpt = 10,
              device: DeviceOpt = "auto", as_json: JsonOpt = False) -> None:
    """Plant gold features (rules whose true description is known) on the dictionary's corpus as a hidden
    gold dictionary, grade each rule's true description, its near misses and unrelated labels with every
    scorer, and every explainer's labels of them; print how often each scorer ranks the truth first, the
    AUROC of truth vs near misses, the coverage of its 95% intervals across seeds, and each explainer's gap to
    the truth. The run is stored (`serve` shows it at /calibration; `export --format calibration` writes it). Exit
    11 on a bad rule file (nothing written)."""
    encoder_device(device)
    config = CalibrateConfig(rules=rules, builtin=builtin, scorers=tuple(scorer.split(",")), scorer_model=scorer_model,
                             explainers=tuple(e.strip() for e in explainer.split(",") if e.strip() and e != "none"),
                             seeds=seeds, budgets=parse_budgets(budgets), unrelated=unrelated, candidates=candidates,
                             llm=LLMOptions(base_url=base_url, api_key_env=api_key_env, requests_per_minute=rpm,
                                            max_in_flight=max_in_flight, logprobs=logprobs),
                             scoring=ScoringOptions(min_evidence=min_evidence, windows=None),
                             sampler=sampler_config(window, peak_offset, n_top, n_quantile, n_score, n_nonfiring,
                                                    n_neighbors, n_quantiles, min_windows))
    with opened(store) as s:
        out = run_calibrate(s, s.dictionary(dictionary), config, progress=show_progress(as_json))
    doc = out.to_dict()
    if as_json:
        emit_json(doc)
    else:
        typer.echo(render(doc))


def parse_budgets(spec: str) -> tuple[int | None, ...]:
    out: list[int | None] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "all":
            out.append(None)
        elif part.isdigit():
            out.append(int(part))
        else:
            raise UsageError(f"--budgets takes window counts and 'all', comma-separated, not {part!r}")
    if not out:
        raise UsageError("--budgets is empty")
    return tuple(dict.fromkeys(out))


def _rate(r: dict) -> str:
    if r.get("rate") is None:
        return "-"
    ci = r.get("ci")
    return f"{r['rate']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def render(doc: dict) -> str:
    """The calibration as tables: scorers by category (every window), the window budgets, the explainers."""
    left = doc["left_out"]
    failed = doc.get("failed_grades") or {}
    lines = [f"calibration {doc['run_id']}: {doc['calibrated']} of {doc['rules']} gold rules of {doc['gold']} "
             f"calibrated, {doc['config']['seeds']} seeds, {doc['grades']} grades"
             + (f" ({', '.join(f'{n} failed: {k}' for k, n in failed.items())})" if failed else "")
             + ("; left out: " + "; ".join(f"{k} ({v})" for k, v in list(left.items())[:4])
                + (f"; +{len(left) - 4} more" if len(left) > 4 else "") if left else ""), ""]
    head = f"{'scorer':<12}{'category':<12}{'rules':>6}  {'truth first':<20}{'> near':>7}{'> unrel':>8}  " \
           f"{'near AUROC':<20}{'coverage':>9}"
    budgets = doc["config"]["budgets"]
    widest = "all" if "all" in budgets else max(budgets)
    lines += ["every held-out window:" if widest == "all" else f"{widest} held-out windows:", head]
    for r in doc["scorers"]:
        if r["budget"] == widest:
            lines.append(f"{r['scorer']:<12}{r['category']:<12}{r['rules']:>6}  {_rate(r['truth_first']):<20}"
                         f"{_num(r['above_near']['rate']):>7}{_num(r['above_unrelated']['rate']):>8}  "
                         f"{_rate({'rate': r['near_auroc']['value'], 'ci': r['near_auroc']['ci']}):<20}"
                         f"{_num(r['coverage']['rate']):>9}")
    if len(doc["config"]["budgets"]) > 1:
        lines += ["", "by window budget (every category):",
                  f"{'scorer':<12}{'windows':>8}  {'truth first':<20}{'near AUROC':>11}{'coverage':>9}"]
        for r in doc["scorers"]:
            if r["category"] == "all":
                lines.append(f"{r['scorer']:<12}{r['budget']!s:>8}  {_rate(r['truth_first']):<20}"
                             f"{_num(r['near_auroc']['value']):>11}{_num(r['coverage']['rate']):>9}")
    if doc["explainers"]:
        lines += ["", "explainers (their labels' grade minus the truth's, same windows):",
                  (f"{'explainer':<24}{'scorer':<12}{'labels':>7}  {'gap to truth':<24}{'within 0.1':>10}"
                   f"{'names words':>12}")]
        for e in doc["explainers"]:
            for scorer, s in e["scorers"].items():
                gap = "-" if s["gap"] is None else f"{s['gap']:+.3f}" + (
                    f" [{s['gap_ci'][0]:+.3f}, {s['gap_ci'][1]:+.3f}]" if s["gap_ci"] else "")
                who = e["explainer"] + (f" (best of {e['candidates']})" if e["candidates"] > 1 else "")
                lines.append(f"{who:<24}"
                             f"{scorer:<12}{s['labels']:>7}  {gap:<24}{_num(s['within_0.1']):>10}"
                             f"{_num(e['names_words']['rate']):>12}")
    return "\n".join(lines)


def _num(v) -> str:
    return "-" if v is None else f"{v:.2f}"
