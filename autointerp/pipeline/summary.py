"""What a labelling run did: a typed summary, filled in place as the run commits, merged across Ray
shards, written to the job ledger and printed by the CLI."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from ..records import FeatureLabel, Grades

MAX_REASONS = 50  # distinct failure reasons kept (most runs have a handful; a flood of unique ones is cut)


def _add(into: dict, key: str, n: int = 1) -> None:
    into[key] = into.get(key, 0) + n


@dataclass
class RunSummary:
    """Counts of one run. `explained`: features labelled now (explained and graded); `graded`: labels
    made earlier that this run graded with scorers they lacked (no explainer call); `already_done`:
    features an earlier run did (a current label with every grade of this run's scorers, or skipped as
    dead or too rare); `without_import`: grading imported labels, features that have none. `carried`:
    features that kept a label carried from a matched dictionary (graded here, not explained: an explainer
    call saved each);
    `carry_rejected`: features whose carried label graded too low and were explained (counted in
    `explained` too). `scores`: per scorer, grades by status; `failure_reasons`: feature failures and
    failed grades, by reason."""

    dictionary: str = ""
    features: int = 0
    explained: int = 0
    graded: int = 0
    skipped: int = 0
    failed: int = 0
    already_done: int = 0
    without_import: int = 0
    carried: int = 0
    carry_rejected: int = 0
    carry_from: str | None = None
    skipped_kinds: dict = field(default_factory=dict)
    failed_kinds: dict = field(default_factory=dict)
    failure_reasons: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)
    score_failures: dict = field(default_factory=dict)
    samples_stored: int = 0  # samples read from the store (`sample --all` under this config, current)
    samples_drawn: int = 0  # samples drawn now
    samples_not_current: int = 0  # of those, features whose stored sample is under another config, seed or activations
    explainer: str = ""
    prompt_hash: str = ""
    sampler_hash: str = ""
    seed: int = 0
    select_by: str | None = None
    stopped: str | None = None  # the budget that stopped the run
    seconds: float = 0.0
    run_id: str | None = None
    cost: list = field(default_factory=list)
    batch: dict | None = None
    executor: str = "local"
    extra: dict = field(default_factory=dict)  # executor details (Ray shards, coordinator state)

    @property
    def failed_grades(self) -> int:
        return sum(c.get("failed", 0) for c in self.scores.values())

    @property
    def committed(self) -> int:
        return self.explained + self.carried + self.graded + self.skipped + self.failed

    @property
    def not_started(self) -> int:
        """Selected features a budget or pending batches left for the next run (neither done nor committed)."""
        return max(0, self.features - self.committed - self.already_done - self.without_import)

    def outcome_words(self) -> str:
        """Each selected feature counted once, in words that add up to `features`: "1,536 features of D: 1,507
        labelled (explained and graded), 29 skipped (14 dead, 15 too rare)". Only the outcomes that happened
        are named."""

        def kinds(k: dict) -> str:
            return f" ({', '.join(f'{n:,} {x}' for x, n in k.items())})" if k else ""

        rejected = f"; {self.carry_rejected:,} after their carried label graded too low" if self.carry_rejected else ""
        why = self.stopped or ("batches still pending" if self.batch and self.batch.get("pending") else "stopped")
        parts = [(self.explained, f"labelled (explained and graded{rejected})"),
                 (self.carried, f"carried from {self.carry_from} (graded here, no explainer call)"),
                 (self.graded, "graded (labels made earlier, given the grades they lacked)"),
                 (self.skipped, "skipped" + kinds(self.skipped_kinds)),
                 (self.failed, "failed" + kinds(self.failed_kinds)),
                 (self.already_done, "already done by an earlier run (labelled and graded, or skipped)"),
                 (self.without_import, "with no imported label to grade"),
                 (self.not_started, f"not started ({why}: run again to go on)")]
        said = ", ".join(f"{n:,} {w}" for n, w in parts if n)
        of = f" of {self.dictionary}" if self.dictionary else ""
        return f"{self.features:,} features{of}: " + (said or "none selected")

    def count(self, outcome: FeatureLabel | Grades) -> None:
        """Add one committed outcome: a feature's label (or why it has none), or new grades of a label."""
        if isinstance(outcome, Grades):
            self.graded += 1
            self._count_scores(outcome.scores)
            return
        name: str = "explained" if outcome.status == "ok" else outcome.status  # skipped | failed
        if outcome.carry == "kept":
            name = "carried"
        self.carry_rejected += outcome.carry == "rejected"
        setattr(self, name, getattr(self, name) + 1)
        if outcome.failure is not None:  # skipped or failed: counted by kind
            _add(self.skipped_kinds if outcome.status == "skipped" else self.failed_kinds, outcome.failure.kind)
        if outcome.status == "failed":
            self._reason(outcome.reason)
        for _, scores in outcome.explanations:
            self._count_scores(scores)

    def _count_scores(self, scores) -> None:
        for s in scores:
            _add(self.scores.setdefault(s.scorer, {}), s.status)
            if s.failure is not None:  # failed: why, by kind: reply (unusable), provider (budget spent), an error type
                _add(self.score_failures.setdefault(s.scorer, {}), s.failure.kind)
                self._reason(f"{s.scorer}: {s.reason}")

    def _reason(self, reason: str) -> None:
        reason = " ".join(reason.split())[:200]
        if reason in self.failure_reasons or len(self.failure_reasons) < MAX_REASONS:
            _add(self.failure_reasons, reason)
        else:
            _add(self.failure_reasons, "(other reasons)")

    def top_reasons(self, n: int = 3) -> list[tuple[str, int]]:
        return Counter(self.failure_reasons).most_common(n)

    def merge(self, other: RunSummary) -> RunSummary:
        """Add another part's counts (a Ray shard's) to this summary, in place; returns self."""
        for k in ("features", "explained", "graded", "skipped", "failed", "already_done", "without_import", "carried",
                  "carry_rejected",
                  "samples_stored", "samples_drawn", "samples_not_current"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for k in ("skipped_kinds", "failed_kinds", "failure_reasons"):
            for key, n in getattr(other, k).items():
                _add(getattr(self, k), key, n)
        for k in ("scores", "score_failures"):
            for scorer, counts in getattr(other, k).items():
                for key, n in counts.items():
                    _add(getattr(self, k).setdefault(scorer, {}), key, n)
        self.stopped = self.stopped or other.stopped
        return self

    def outcome(self) -> tuple[str, str]:
        """A finished run's status (a key of errors.EXIT: done, budget, failed) and the reason."""
        if self.stopped:
            return "budget", self.stopped
        if self.batch and self.batch.get("pending"):
            return "budget", "batches still pending: run again to collect them"
        if self.failed or self.failed_grades:
            top = "; ".join(f"{n}x {r}" for r, n in self.top_reasons())
            return "failed", f"{self.failed} features and {self.failed_grades} grades failed (retried next run): {top}"
        return "done", ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failed_grades"] = self.failed_grades
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunSummary:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})
