"""The calibration domain: runs of `autointerp calibrate` (their summaries) and every grade they gave a
candidate label of a gold feature, for the browser's calibration page and the export."""

from __future__ import annotations

import json

import pyarrow as pa

from ..clock import utcnow as _now
from .repo import Repo, reads

GRADE_COLUMNS = ("rule", "category", "seed", "budget", "scorer", "candidate", "text", "status", "value", "low",
                 "high", "n_windows", "reason")


class CalibrationRepo(Repo):
    @reads
    def runs(self, dictionary_id: int | None = None) -> list[dict]:
        """Calibration runs, newest first: {run_id, dictionary, gold, created_at, summary}."""
        where, params = ("WHERE c.dictionary_id = ?", [dictionary_id]) if dictionary_id is not None else ("", [])
        rows = self.con.execute(
            "SELECT c.run_id, d.name, g.name, c.created_at, c.summary FROM calibration_runs c "
            "LEFT JOIN dictionaries d ON d.dictionary_id = c.dictionary_id "
            f"LEFT JOIN dictionaries g ON g.dictionary_id = c.gold_id {where} ORDER BY c.created_at DESC, c.run_id",
            params).fetchall()
        return [{"run_id": r[0], "dictionary": r[1], "gold": r[2], "created_at": r[3].isoformat(),
                 "summary": json.loads(r[4])} for r in rows]

    @reads
    def run(self, run_id: str) -> dict | None:
        return next((r for r in self.runs() if r["run_id"] == run_id), None)

    @reads
    def grades(self, run_id: str, rule: str | None = None) -> list[dict]:
        """The run's grades (of one rule), in rule, seed, budget, scorer, candidate order."""
        where, params = "run_id = ?", [run_id]
        if rule is not None:
            where, params = where + " AND rule = ?", params + [rule]
        cur = self.con.execute(f"SELECT {', '.join(GRADE_COLUMNS)} FROM calibration_grades WHERE {where} "
                               "ORDER BY rule, seed, budget NULLS LAST, scorer, candidate", params)
        return [dict(zip(GRADE_COLUMNS, r)) for r in cur.fetchall()]

    def add_run(self, run_id: str, dictionary_id: int, gold_id: int, summary: dict, grades: list[dict]) -> None:
        tx = self.writing
        self.con.execute("INSERT INTO calibration_runs VALUES (?, ?, ?, ?, ?)",
                         [run_id, dictionary_id, gold_id, json.dumps(summary, sort_keys=True), _now()])
        cols = {c: [g[c] for g in grades] for c in GRADE_COLUMNS}
        tx.insert("calibration_grades", pa.table({"run_id": [run_id] * len(grades), **cols}))
