"""search: find features by the meaning of their labels.

Every chosen label is embedded once, when it is written (`index_labels`, called by the pipeline's
commits, the Ray merge and label import), with the offline scorers' model (all-MiniLM-L6-v2,
L2-normalised) and stored as float16 in `label_vectors`. A query is embedded the same way and
compared with every stored vector by brute force: one float16 matrix-vector product (torch's, ~40 ms
for 1M labels on 2 cores; the matrix is 768 bytes a label, 0.75 GB at 1M), then the top hits. Exact,
no index to build or tune; an ANN library would pay off only well past 10M labels.
"""

from __future__ import annotations

import numpy as np

from ..embed import MODEL_NAME, embed_many, embed_text

LABELS = f"{MODEL_NAME}/label-bf16-v1"  # what a stored label vector is: change it when the recipe changes
EMBED_CHUNK = 4096


def index_labels(w, dictionary_id: int, rows: list[tuple[int, int, str]], progress=None) -> None:
    """Embed and store the label vectors of explanations (explanation_id, feature, text), in chunks."""
    for i in range(0, len(rows), EMBED_CHUNK):
        part = rows[i:i + EMBED_CHUNK]
        w.vectors.add_label_vectors(dictionary_id, LABELS, part, embed_many([t for _, _, t in part]))
        if progress is not None:
            progress.update(len(part))


def index_missing(store, dictionary_id: int | None = None, progress=None) -> int:
    """Index the chosen labels that have no vector yet (labels imported, or from before search existed);
    returns how many. Each chunk is embedded first and then written in a commit of its own: the file is held
    for the writes only, so readers go on meanwhile, and a stopped run keeps what it wrote."""
    todo = store.vectors.unindexed_labels(LABELS, dictionary_id)
    by_dict: dict[int, list] = {}
    for d, e, f, t in todo:
        by_dict.setdefault(d, []).append((e, f, t))
    for d, rows in by_dict.items():
        for i in range(0, len(rows), EMBED_CHUNK):
            part = rows[i:i + EMBED_CHUNK]
            vectors = embed_many([t for _, _, t in part])
            with store.transaction() as w:
                w.vectors.add_label_vectors(d, LABELS, part, vectors)
            if progress is not None:
                progress.update(len(part))
    return len(todo)


class LabelIndex:
    """The label vectors of a store (or one dictionary of it) in memory, for repeated queries."""

    def __init__(self, store, dictionary_id: int | None = None) -> None:
        import torch

        self.dictionary_id = dictionary_id
        self.explanation_ids, keys, vectors = store.vectors.label_matrix(LABELS, dictionary_id)
        self.dictionary_ids, self.features = keys >> 32, keys & 0xFFFFFFFF
        self._matrix = torch.from_numpy(np.ascontiguousarray(vectors))  # shares the float16 array
        self._torch = torch
        # what a writer did since: labels added (ids above the base's), labels gone from the base
        self._base_n = len(self.explanation_ids)
        self._base_max = int(self.explanation_ids.max()) if self._base_n else 0
        self._gone: np.ndarray | None = None  # bool over the base: replaced or removed since
        self._delta: torch.Tensor | None = None

    def update(self, store) -> int:
        """Take in what a writer committed since the index was read: new labels' vectors (read; the base's
        matrix is not copied) and labels gone. Returns how many labels changed."""
        alive = store.vectors.label_ids(LABELS, self.dictionary_id, upto=self._base_max)
        base_ids = self.explanation_ids[:self._base_n]
        gone = ~np.isin(base_ids, alive, assume_unique=True)
        ids, keys, vectors = store.vectors.label_matrix(LABELS, self.dictionary_id, after=self._base_max)
        self._gone = gone if gone.any() else None
        self.explanation_ids = np.concatenate([base_ids, ids])
        self.dictionary_ids = np.concatenate([self.dictionary_ids[:self._base_n], keys >> 32])
        self.features = np.concatenate([self.features[:self._base_n], keys & 0xFFFFFFFF])
        self._delta = self._torch.from_numpy(np.ascontiguousarray(vectors)) if len(ids) else None
        return int(gone.sum()) + len(ids)

    def __len__(self) -> int:
        return len(self.explanation_ids)

    @property
    def nbytes(self) -> int:
        return int(self._matrix.numel() * 2 + self.explanation_ids.nbytes * 3)

    def query(self, text: str, limit: int = 20, dictionary_id: int | None = None) -> list[dict]:
        """The features whose labels are nearest `text` in meaning, best first, one hit per feature
        (its nearest label): [{dictionary_id, feature, explanation_id, similarity}]."""
        if not len(self) or limit <= 0:
            return []
        q = self._torch.from_numpy(embed_text(text).astype(np.float16))
        sims = self._torch.mv(self._matrix, q).float().numpy()
        if self._gone is not None:
            sims[self._gone] = -np.inf
        if self._delta is not None:
            sims = np.concatenate([sims, self._torch.mv(self._delta, q).float().numpy()])
        if dictionary_id is not None:
            sims = np.where(self.dictionary_ids == dictionary_id, sims, -np.inf)
        out: list[dict] = []
        seen: set[tuple[int, int]] = set()
        k = min(len(sims), 4 * limit)
        while True:  # the top k, widened while one feature's several labels crowd out others
            top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
            top = top[np.lexsort((top, -sims[top]))]
            out, seen = [], set()
            for i in top:
                if not np.isfinite(sims[i]):
                    break
                key = (int(self.dictionary_ids[i]), int(self.features[i]))
                if key in seen:
                    continue
                seen.add(key)
                out.append({"dictionary_id": key[0], "feature": key[1],
                            "explanation_id": int(self.explanation_ids[i]), "similarity": round(float(sims[i]), 4)})
                if len(out) == limit:
                    return out
            if k >= len(sims):
                return out
            k = min(len(sims), 4 * k)
