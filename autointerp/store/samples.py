"""The samples domain: each feature's sampled windows (references into the contexts) and its sampling
outcome, under a stored sampler config. Reads and writes in one place."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from ..clock import utcnow as _now
from ..records import SamplerConfig
from .repo import Repo, reads


class SampleRepo(Repo):
    # -- reads --------------------------------------------------------------------------------------

    @reads
    def sample_refs(self, dictionary_id: int, feature: int) -> tuple[dict | None, list[tuple]]:
        """The stored sample of one feature: its status row and its window references in order."""
        st = self._one(
            "SELECT s.status, s.reason, s.n_candidates, s.seed, s.created_at, c.config FROM sample_status s "
            "JOIN sampler_configs c USING (config_hash) WHERE s.dictionary_id = ? AND s.feature = ?",
            [dictionary_id, feature])
        if st is None:
            return None, []
        status = dict(zip(("status", "reason", "n_candidates", "seed", "created_at"), st[:5]))
        status["config"] = json.loads(st[5])
        refs = self.con.execute(
            "SELECT sample_set, kind, context_id, start, length FROM samples "
            "WHERE dictionary_id = ? AND feature = ? ORDER BY sample_set, rank", [dictionary_id, feature]).fetchall()
        return status, refs

    @reads
    def sample_summary(self, dictionary_id: int) -> dict[str, int]:
        rows = self.con.execute("SELECT status, count(*) FROM sample_status WHERE dictionary_id = ? GROUP BY status",
                                [dictionary_id]).fetchall()
        return dict(rows)

    @reads
    def current_samples(self, dictionary_id: int, config_hash: str, seed: int) -> np.ndarray:
        """Sorted features whose stored sample was drawn under this config and seed from the feature's
        current activations (the ones a run can read instead of drawing again)."""
        t = self.con.execute(
            "SELECT s.feature FROM sample_status s JOIN feature_stats f USING (dictionary_id, feature) "
            "WHERE s.dictionary_id = ? AND s.config_hash = ? AND s.seed = ? AND s.act_hash = f.act_hash "
            "ORDER BY s.feature", [dictionary_id, config_hash, seed]).fetchnumpy()
        return np.asarray(t["feature"], dtype=np.int64)

    @reads
    def sampled_features(self, dictionary_id: int) -> np.ndarray:
        """Sorted features with a stored sample under any config, seed or activations."""
        t = self.con.execute("SELECT DISTINCT feature FROM sample_status WHERE dictionary_id = ? ORDER BY feature",
                             [dictionary_id]).fetchnumpy()
        return np.asarray(t["feature"], dtype=np.int64)

    @reads
    def sample_rows(self, dictionary_id: int, features: np.ndarray) -> tuple[dict, dict]:
        """Stored status rows and window references of several features, in feature (and window) order:
        ({feature, status, reason, n_candidates, seed, config}, {feature, sample_set, kind, context_id,
        start, length})."""
        feats = np.asarray(features, np.int64).tolist()
        st = self.con.execute(
            "SELECT s.feature, s.status, s.reason, s.n_candidates, s.seed, c.config FROM sample_status s "
            "JOIN sampler_configs c USING (config_hash) WHERE s.dictionary_id = ? AND s.feature IN "
            "(SELECT unnest(?::UINTEGER[])) ORDER BY s.feature", [dictionary_id, feats]).fetchnumpy()
        refs = self.con.execute(
            "SELECT feature, sample_set::VARCHAR AS sample_set, kind::VARCHAR AS kind, context_id, start, length "
            "FROM samples WHERE dictionary_id = ? AND feature IN (SELECT unnest(?::UINTEGER[])) "
            "ORDER BY feature, sample_set, rank", [dictionary_id, feats]).fetchnumpy()
        return st, refs

    # -- writes (inside a transaction) --------------------------------------------------------------

    def clear_samples(self, dictionary_id: int, features: np.ndarray | None = None) -> None:
        for t in ("samples", "sample_status"):
            if features is None:
                self.con.execute(f"DELETE FROM {t} WHERE dictionary_id = ?", [dictionary_id])
            else:
                self.con.execute(f"DELETE FROM {t} WHERE dictionary_id = ? AND feature IN "
                                 "(SELECT unnest(?::UINTEGER[]))", [dictionary_id, features.tolist()])

    def add_samples(self, dictionary_id: int, config: SamplerConfig, seed: int, status: dict[str, np.ndarray],
                    refs: dict[str, np.ndarray], sample_sets: tuple[str, ...], window_kinds: tuple[str, ...]) -> None:
        """Append sampled window references and one status row per feature.

        refs["sample_set"] and refs["kind"] are int8 indices into `sample_sets` and `window_kinds`.
        """
        self.con.execute("INSERT INTO sampler_configs (config_hash, config) SELECT ?, ? WHERE NOT EXISTS "
                         "(SELECT 1 FROM sampler_configs WHERE config_hash = ?)",
                         [config.hash, json.dumps(config.to_dict(), sort_keys=True), config.hash])
        n = len(status["feature"])
        st = pa.table({"dictionary_id": np.full(n, dictionary_id, np.uint16),
                       "feature": status["feature"].astype(np.uint32),
                       "status": pa.array(status["status"], pa.string()),
                       "reason": pa.array(status["reason"], pa.string()),
                       "n_candidates": status["n_candidates"].astype(np.int32),
                       "config_hash": pa.array([config.hash] * n, pa.string()),
                       "seed": np.full(n, seed, np.int64),
                       "created_at": pa.array([_now()] * n, pa.timestamp("us"))})
        lo, hi = (int(status["feature"].min()), int(status["feature"].max())) if n else (0, -1)
        # with the fingerprint of the activations sampled: a run reads the sample only while they are current
        self.con.execute("INSERT INTO sample_status BY NAME SELECT st.*, f.act_hash FROM st LEFT JOIN (SELECT feature, act_hash "
                         "FROM feature_stats WHERE dictionary_id = ? AND feature BETWEEN ? AND ?) f "
                         "ON f.feature = st.feature", [dictionary_id, lo, hi])
        m = len(refs["feature"])
        if m:
            rt = pa.table({"dictionary_id": np.full(m, dictionary_id, np.uint16),
                           "feature": refs["feature"].astype(np.uint32),
                           "sample_set": pa.DictionaryArray.from_arrays(refs["sample_set"], pa.array(sample_sets)),
                           "kind": pa.DictionaryArray.from_arrays(refs["kind"], pa.array(window_kinds)),
                           "rank": refs["rank"].astype(np.uint16),
                           "context_id": refs["context_id"].astype(np.uint32),
                           "start": refs["start"].astype(np.uint16),
                           "length": refs["length"].astype(np.uint16)})
            self.writing.insert("samples", rt)

