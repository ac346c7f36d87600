"""A random forest over region features (engine.defects.region_features), stored as plain arrays.

scikit-learn trains it (engine.training.describer_default); inference here is a few lines of
numpy, so the shipped file loads with any scikit-learn version (or none) and carries
no pickle. Leaf class shares are stored as uint8 (1/255 steps): a few hundred KB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEAF = -1  # sklearn's marker of a leaf in children_left / children_right


@dataclass(frozen=True)
class KindForest:
    """Trees concatenated: node arrays, each tree's root offset, leaf class shares."""

    feature: np.ndarray  # [nodes] int16 (LEAF at leaves)
    threshold: np.ndarray  # [nodes] float32: go left when x[feature] <= threshold
    left: np.ndarray  # [nodes] int32, absolute node index (LEAF at leaves)
    right: np.ndarray  # [nodes] int32
    value: np.ndarray  # [nodes, K] uint8 class shares at leaves, 255 = all
    roots: np.ndarray  # [trees] int32
    n_features: int

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """[N, F] features -> [N, K] mean of the trees' leaf class shares."""
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected [N, {self.n_features}] features, got {x.shape}")
        # every tree at once, one step down per pass: the per-tree loop cost ~10 ms per
        # call whatever the row count (60 trees x ~15 levels of small numpy calls), and
        # the worker calls this once per batch; the leaf shares are integers, so their
        # sum over the trees is exact in float64 in any order
        node = np.tile(self.roots.astype(np.int64), (len(x), 1))  # [N, trees]
        rows = np.repeat(np.arange(len(x)), len(self.roots)).reshape(node.shape)
        while True:
            inner = self.feature[node] != LEAF
            if not inner.any():
                break
            at = node[inner]
            f = self.feature[at].astype(np.int64)
            go_left = x[rows[inner], f] <= self.threshold[at]
            node[inner] = np.where(go_left, self.left[at], self.right[at])
        total = self.value[node].sum(axis=1, dtype=np.float64)  # [N, K]
        shares = total / np.maximum(total.sum(axis=1, keepdims=True), 1e-9)
        return shares.astype(np.float32)

    def save(self, path: Path) -> None:
        np.savez_compressed(path, feature=self.feature, threshold=self.threshold,
                            left=self.left, right=self.right, value=self.value,
                            roots=self.roots, n_features=np.int32(self.n_features))  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> KindForest:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["feature"], z["threshold"], z["left"], z["right"], z["value"],
                       z["roots"], int(z["n_features"]))  # fmt: skip


def from_sklearn(forest: object, n_kinds: int) -> KindForest:
    """A fitted sklearn RandomForestClassifier -> KindForest over kinds 0..n_kinds-1
    (a kind absent from training gets share 0)."""
    classes = np.asarray(forest.classes_, np.int64)  # type: ignore[attr-defined]
    feats, thr, lefts, rights, vals, roots = [], [], [], [], [], []
    offset = 0
    for est in forest.estimators_:  # type: ignore[attr-defined]
        t = est.tree_
        roots.append(offset)
        inner = t.children_left != LEAF
        feats.append(np.where(inner, t.feature, LEAF).astype(np.int16))
        thr.append(t.threshold.astype(np.float32))
        lefts.append(np.where(inner, t.children_left + offset, LEAF).astype(np.int32))
        rights.append(np.where(inner, t.children_right + offset, LEAF).astype(np.int32))
        v = t.value[:, 0, :]
        v = v / np.maximum(v.sum(axis=1, keepdims=True), 1e-12)
        full = np.zeros((t.node_count, n_kinds), np.float64)
        full[:, classes] = v
        full[inner] = 0  # only leaves answer: zeros compress
        vals.append(np.round(full * 255).astype(np.uint8))
        offset += t.node_count
    # float32 thresholds: a feature equal to a float64 threshold may round to either side;
    # the features are float32 already, as sklearn saw them
    return KindForest(np.concatenate(feats), np.concatenate(thr), np.concatenate(lefts),
                      np.concatenate(rights), np.concatenate(vals), np.asarray(roots, np.int32),
                      int(forest.n_features_in_))  # type: ignore[attr-defined]  # fmt: skip
