"""Applicability domain of a trained weave model: what its training molecules looked like, and a
per-molecule verdict (inside or not, a score, the reasons) for anything it is asked to predict.

Recorded from the training set in the model directory (`domain.npz`, plain arrays and a JSON
header, read with allow_pickle=False, its SHA-256 in checksums.json):

- the atom-count range and the elements seen;
- the range of every atom feature (21) and pair feature (13) over real atoms and pairs;
- the distribution of the pooled vector (the sum over atoms of the readout histograms, what the
  head reads: `WeaveNet.pooled`): its mean, the leading principal components with their
  variances, and the mean squared residual outside them. The score of a molecule is the RMS of
  its standardized coordinates in that subspace and of its residual (in units of the training
  residual), sqrt((sum_i p_i^2 / lambda_i + r^2 / r_train^2) / (k + 1)); about 1 for a typical
  training molecule. The threshold is the 99th percentile of the training molecules' scores, so
  1 % of the training set is flagged by construction.

Rules (each is a reason): atom count, or heavy-atom count, outside the training range (a model
trained on small molecules, like the beta models on labels for at most 6 heavy atoms, says so for
a larger one); an element the model never
saw; a feature outside its training range (beyond a 5 % margin of the range); more than one
fragment (QM9's molecules are single connected molecules: a file with two molecules in it is
two inputs, not one); a score above the threshold (far from the training data in the model's own
representation).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

DOMAIN_FILE = "domain.npz"
DOMAIN_FORMAT = "qmlrp-domain-1"
_MARGIN = 0.05


@dataclass
class Verdict:
    inside: bool
    score: float
    threshold: float
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"inside": self.inside, "score": round(float(self.score), 4), "threshold": round(float(self.threshold), 4),
                "reasons": list(self.reasons)}

    def text(self) -> str:
        return "inside" if self.inside else "OUTSIDE: " + "; ".join(self.reasons)


@dataclass
class Domain:
    n_atoms: tuple[int, int]
    elements: tuple[str, ...]
    atom_min: np.ndarray
    atom_max: np.ndarray
    pair_min: np.ndarray
    pair_max: np.ndarray
    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D)
    variances: np.ndarray  # (k,)
    residual_ms: float
    threshold: float
    n_train: int
    train_quantiles: dict
    n_heavy: tuple[int, int] | None = None  # None in domains recorded before heavy atoms were counted

    # -- scores ---------------------------------------------------------------------------
    def score(self, pooled: np.ndarray) -> np.ndarray:
        x = np.asarray(pooled, dtype=np.float64) - self.mean
        p = x @ self.components.T
        resid = (x * x).sum(1) - (p * p).sum(1)
        z2 = (p * p / self.variances).sum(1) + np.clip(resid, 0, None) / self.residual_ms
        return np.sqrt(z2 / (len(self.variances) + 1))

    def check(self, graphs: Sequence, pooled: np.ndarray, atom_names: Sequence[str] = (),
              pair_names: Sequence[str] = ()) -> list[Verdict]:
        """One Verdict per MolGraph, from its features and its (n, D) pooled vectors."""
        scores = self.score(pooled)
        out = []
        for g, s in zip(graphs, scores):
            reasons = []
            n = int(g.atom_features.shape[0])
            lo, hi = self.n_atoms
            if not lo <= n <= hi:
                reasons.append(f"{n} atoms; the training molecules have {lo}-{hi}")
            if self.n_heavy is not None:
                heavy, (hlo, hhi) = sum(e != "H" for e in g.elements), self.n_heavy
                if not hlo <= heavy <= hhi:
                    reasons.append(f"{heavy} heavy atoms; the training molecules have {hlo}-{hhi}")
            unseen = sorted(set(g.elements) - set(self.elements))
            if unseen:
                reasons.append(f"element(s) {', '.join(unseen)} never seen in training ({' '.join(self.elements)})")
            if n > 1:
                fragments = _fragments(g.pair_features.numpy())
                if fragments > 1:
                    reasons.append(f"{fragments} disconnected fragments in one input (QM9 molecules are single "
                                   f"connected molecules; give each molecule its own record)")
            a = g.atom_features.numpy().astype(np.float64)
            reasons += _ranges("atom feature", a, self.atom_min, self.atom_max, atom_names)
            if n > 1:
                pf = g.pair_features.numpy().astype(np.float64)
                off = ~np.eye(n, dtype=bool)
                reasons += _ranges("pair feature", pf[off], self.pair_min, self.pair_max, pair_names)
            if s > self.threshold:
                reasons.append(f"far from the training data in the model's representation (score {s:.2f} > "
                               f"{self.threshold:.2f}, the training molecules' 99th percentile)")
            out.append(Verdict(not reasons, float(s), self.threshold, reasons))
        return out

    # -- files ----------------------------------------------------------------------------
    def save(self, model_dir: str | os.PathLike) -> Path:
        from molgraph.storage import atomic_save_npz

        header = {"format": DOMAIN_FORMAT, "n_atoms": list(self.n_atoms), "elements": list(self.elements),
                  "residual_ms": self.residual_ms, "threshold": self.threshold, "n_train": self.n_train,
                  "train_quantiles": self.train_quantiles,
                  **({"n_heavy": list(self.n_heavy)} if self.n_heavy is not None else {})}
        path = Path(model_dir) / DOMAIN_FILE
        atomic_save_npz(path, header=np.array(json.dumps(header)),
                        atom_min=self.atom_min.astype(np.float32), atom_max=self.atom_max.astype(np.float32),
                        pair_min=self.pair_min.astype(np.float32), pair_max=self.pair_max.astype(np.float32),
                        mean=self.mean.astype(np.float32), components=self.components.astype(np.float32),
                        variances=self.variances.astype(np.float64))
        return path

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> "Domain | None":
        """The model directory's domain, or None when it has none (models from before it was
        recorded: `qmlrp domain MODEL` adds one)."""
        path = Path(model_dir) / DOMAIN_FILE
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                h = json.loads(str(z["header"]))
                if h.get("format") != DOMAIN_FORMAT:
                    raise ValueError(f"format {h.get('format')!r}, expected {DOMAIN_FORMAT!r}")
                arrays = {k: np.asarray(z[k], dtype=np.float64) for k in
                          ("atom_min", "atom_max", "pair_min", "pair_max", "mean", "components", "variances")}
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable applicability domain ({exc}); rebuild it with "
                             f"`qmlrp domain {Path(model_dir)}`") from None
        if not (arrays["variances"] > 0).all() or not h["residual_ms"] > 0:
            raise ValueError(f"{path}: variances must be > 0; rebuild it with `qmlrp domain {Path(model_dir)}`")
        return cls(tuple(h["n_atoms"]), tuple(h["elements"]), arrays["atom_min"], arrays["atom_max"],
                   arrays["pair_min"], arrays["pair_max"], arrays["mean"], arrays["components"],
                   arrays["variances"], float(h["residual_ms"]), float(h["threshold"]), int(h["n_train"]),
                   h["train_quantiles"], tuple(h["n_heavy"]) if h.get("n_heavy") is not None else None)


def _fragments(pair_features: np.ndarray) -> int:
    """Connected components of the bond graph (the pair features' bond_type one-hot)."""
    from molgraph.features import FEATURE_GROUPS

    bonded = np.asarray(pair_features)[..., FEATURE_GROUPS["bond_type"].slice].max(-1) > 0.5
    n = len(bonded)
    seen = np.zeros(n, dtype=bool)
    count = 0
    for i in range(n):
        if seen[i]:
            continue
        count += 1
        front = np.zeros(n, dtype=bool)
        front[i] = True
        while front.any():
            seen |= front
            front = bonded[front].any(0) & ~seen
    return count


def _ranges(kind: str, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, names: Sequence[str]) -> list[str]:
    if not len(x):
        return []
    span = np.maximum(hi - lo, 1e-12)
    below = x.min(0) < lo - _MARGIN * span
    above = x.max(0) > hi + _MARGIN * span
    out = []
    for k in np.flatnonzero(below | above):
        name = names[k] if k < len(names) else f"#{k}"
        v = x[:, k].min() if below[k] else x[:, k].max()
        out.append(f"{kind} {name} = {v:.3g} outside the training range [{lo[k]:.3g}, {hi[k]:.3g}]")
    return out


def fit(net: torch.nn.Module, train_ds, components: int = 32, batch_size: int = 256, max_molecules: int | None = None,
        seed: int = 0) -> Domain:
    """The applicability domain of `net` from its training set (a `molgraph.qm9.QM9Dataset` or
    anything with len, n_atoms, batch(indices) and encoded(i)). With max_molecules, a seeded
    sample of that many training molecules."""
    net = net.eval()
    m = len(train_ds)
    idx = np.arange(m)
    if max_molecules is not None and m > max_molecules:
        idx = np.sort(np.random.default_rng(seed).choice(m, max_molecules, replace=False))
    n_atoms = np.asarray(train_ds.n_atoms)
    order = idx[np.argsort(n_atoms[idx], kind="stable")]
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    a_lo, a_hi, p_lo, p_hi = None, None, None, None
    from molgraph.features import ATOM_TYPES, FEATURE_GROUPS

    type_cols = FEATURE_GROUPS["atom_type"].slice
    seen_types = np.zeros(len(ATOM_TYPES), dtype=bool)
    h_col = type_cols.start + ATOM_TYPES.index("H")
    pooled, heavy = [], []
    with torch.no_grad():
        for c in chunks:
            b = train_ds.batch(c)
            pooled.append(net.pooled(b.atom_features, b.pair_features, b.atom_mask).double().numpy())
            mask = b.atom_mask.numpy().astype(bool)
            heavy.append((mask & (b.atom_features.numpy()[..., h_col] < 0.5)).sum(1))
            a = b.atom_features.numpy()[mask]
            seen_types |= a[:, type_cols].max(0) > 0.5
            pm = mask[:, :, None] & mask[:, None, :] & ~np.eye(mask.shape[1], dtype=bool)[None]
            p = b.pair_features.numpy()[pm]
            a_lo = a.min(0) if a_lo is None else np.minimum(a_lo, a.min(0))
            a_hi = a.max(0) if a_hi is None else np.maximum(a_hi, a.max(0))
            if len(p):
                p_lo = p.min(0) if p_lo is None else np.minimum(p_lo, p.min(0))
                p_hi = p.max(0) if p_hi is None else np.maximum(p_hi, p.max(0))
    elements = {ATOM_TYPES[k] for k in np.flatnonzero(seen_types)}
    x = np.concatenate(pooled)
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / max(len(x) - 1, 1)
    vals, vecs = np.linalg.eigh(cov)
    keep = np.argsort(vals)[::-1][:components]
    keep = keep[vals[keep] > 1e-12 * max(vals.max(), 1e-300)]
    comps, var = vecs[:, keep].T, vals[keep]
    p = xc @ comps.T
    resid = np.clip((xc * xc).sum(1) - (p * p).sum(1), 0, None)
    residual_ms = float(max(resid.mean(), 1e-12 * float(var.sum()) if len(var) else 1e-12))
    d = Domain((int(n_atoms[idx].min()), int(n_atoms[idx].max())), tuple(sorted(elements)), a_lo, a_hi,
               p_lo if p_lo is not None else np.zeros(13), p_hi if p_hi is not None else np.zeros(13),
               mean, comps, var, residual_ms, 0.0, int(len(idx)), {})
    heavy = np.concatenate(heavy)
    d.n_heavy = (int(heavy.min()), int(heavy.max()))
    s = d.score(x)
    d.threshold = float(np.percentile(s, 99))
    d.train_quantiles = {str(q): float(np.percentile(s, q)) for q in (50, 90, 99, 99.9)}
    return d


def record(model_dir: str | os.PathLike, train_ds, max_molecules: int | None = None, log=None) -> Domain:
    """Fit the domain of the model in `model_dir` on its training set, write domain.npz and
    update checksums.json."""
    from .training import load, write_checksums

    net = load(model_dir).models[0].model
    d = fit(net, train_ds, max_molecules=max_molecules)
    d.save(model_dir)
    write_checksums(model_dir)
    if log:
        log(f"{model_dir}: applicability domain from {d.n_train} training molecules (threshold {d.threshold:.3f}) "
            f"-> {Path(model_dir) / DOMAIN_FILE}")
    return d


def combine(per_member: Sequence[Sequence[Verdict]]) -> list[Verdict]:
    """One verdict per molecule from the members' verdicts: inside when at least half of the
    members say so; the median score and threshold; the reasons of the members that say outside,
    each once."""
    out = []
    for vs in zip(*per_member):
        inside = sum(v.inside for v in vs) * 2 >= len(vs)
        reasons = []
        for v in vs:
            for r in v.reasons:
                key = r.split(" (score")[0]
                if all(x.split(" (score")[0] != key for x in reasons):
                    reasons.append(r)
        score = float(np.median([v.score for v in vs]))
        thr = float(np.median([v.threshold for v in vs]))
        if inside:
            reasons = []
        elif len(vs) > 1:
            reasons.append(f"{sum(not v.inside for v in vs)} of {len(vs)} fold models say outside")
        out.append(Verdict(inside, score, thr, reasons))
    return out
