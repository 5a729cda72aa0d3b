"""Text similarity for curation: character n-gram TF-IDF and cosine nearest neighbours (scikit-learn)."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.neighbors import NearestNeighbors


class TextIndex:
    """Vectorises a fixed list of texts once; answers nearest-neighbour questions by position."""

    def __init__(self, texts: list[str]):
        self.texts = texts
        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, lowercase=True)
        self.matrix = self.vectorizer.fit_transform(texts) if texts else sparse.csr_matrix((0, 0))

    def vectors(self, texts: list[str]) -> sparse.csr_matrix:
        return self.vectorizer.transform(texts)

    def nearest(self, queries: sparse.csr_matrix, candidates: list[int], k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, candidate positions) of the k nearest candidates for each query row."""
        if not candidates:
            n = queries.shape[0]
            return np.zeros((n, 0)), np.zeros((n, 0), dtype=int)
        k = min(k, len(candidates))
        nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(self.matrix[candidates])
        dist, idx = nn.kneighbors(queries)
        return 1.0 - dist, np.asarray(candidates)[idx]

    def neighbours_within(self, positions: list[int], similarity: float) -> list[list[int]]:
        """For each of ``positions``, the other positions (from the same list) at least ``similarity`` alike."""
        if len(positions) < 2:
            return [[] for _ in positions]
        nn = NearestNeighbors(radius=1.0 - similarity, metric="cosine", algorithm="brute").fit(self.matrix[positions])
        _, idx = nn.radius_neighbors(self.matrix[positions])
        pos = np.asarray(positions)
        return [[int(p) for p in pos[row] if p != positions[i]] for i, row in enumerate(idx)]


def cross_label_pairs(index: TextIndex, labels: list[str], positions: list[int]) -> list[tuple[float, int, int]]:
    """Each example's most similar example with a different label: (similarity, example, counterpart), most similar first."""
    pairs: list[tuple[float, int, int]] = []
    by_label: dict[str, list[int]] = {}
    for p in positions:
        by_label.setdefault(labels[p], []).append(p)
    for label, members in by_label.items():
        others = [p for p in positions if labels[p] != label]
        if not others:
            continue
        sims, nbrs = index.nearest(index.matrix[members], others, k=1)
        pairs.extend((float(s[0]), m, int(n[0])) for m, s, n in zip(members, sims, nbrs))
    pairs.sort(key=lambda t: (-t[0], t[1]))
    return pairs
