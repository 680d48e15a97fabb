"""`qmlrp explain`: relevance of every feature, atom and pair of a trained weave network.

Pipeline: pick the molecules (the test molecules of the model's split, a file of QM9 ids, or
XYZ/SDF files), explain each with `lrp.explain` in size-sorted batches, write the per-molecule
relevance (`relevance.npz`), the 12 feature-group sums (`groups.csv`), group statistics with
bootstrap confidence intervals (`summary.json`, `group_relevance.png/.svg`), heatmaps of a
representative set of molecules (`heatmaps/`), the faithfulness check (`faithfulness.json/.png`)
and one page for a reader (`report.html`).

What is explained. The network predicts the standardized target y_s = (y - mean) / std, with
the training set's mean and std. LRP distributes y_s over the inputs; every relevance here is
multiplied by std, so it is in the target's units, and

    sum of all feature relevances + absorbed = explained = prediction - training mean

(`absorbed`: what biases and stabilizers keep, tracked module by module). The training mean is
the reference value that is not distributed: a relevance says how much a feature moves the
prediction away from the average training molecule's value.
"""
from __future__ import annotations

import csv
import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

RELEVANCE_FORMAT = "qmlrp-relevance-1"
N_ATOM_FEATURES, N_PAIR_FEATURES = 21, 13


# ----------------------------------------------------------------------------- relevance files
@dataclass(frozen=True)
class MoleculeRelevance:
    """One molecule's explanation, in the target's units.

    atom: (n, 21) relevance of every atom feature; pair: (n, n, 13) of every ordered pair's
    features; per_atom: (n,) own features + half of each pair, both orders (sums to the total);
    groups: (12,) per group, `molgraph.GROUP_NAMES` order; prediction, target (NaN without a
    label), explained (= prediction - training mean), absorbed."""

    id: str
    n_atoms: int
    atom: np.ndarray
    pair: np.ndarray
    per_atom: np.ndarray
    groups: np.ndarray
    prediction: float
    target: float
    explained: float
    absorbed: float
    elements: tuple[str, ...] = ()

    @property
    def total(self) -> float:
        """Relevance summed over every feature (= explained - absorbed)."""
        return float(self.atom.sum(dtype=np.float64) + self.pair.sum(dtype=np.float64))


@dataclass
class RelevanceSet:
    """The ragged per-molecule arrays of `relevance.npz`.

    Molecule m has atoms offsets[m]:offsets[m+1] in `atom_relevance` (sum n, 21) and
    `per_atom`, and ordered pairs pair_offsets[m]:pair_offsets[m+1] in `pair_relevance`
    (sum n^2, 13; row-major over (i, j), i.e. reshape to (n, n, 13)).
    """

    ids: np.ndarray
    n_atoms: np.ndarray
    offsets: np.ndarray
    pair_offsets: np.ndarray
    atom_relevance: np.ndarray
    pair_relevance: np.ndarray
    per_atom: np.ndarray
    groups: np.ndarray
    prediction: np.ndarray
    target: np.ndarray
    explained: np.ndarray
    absorbed: np.ndarray
    elements: np.ndarray
    meta: dict = field(default_factory=dict)
    _index: dict | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, key: int | str) -> int:
        if isinstance(key, (int, np.integer)):
            if not -len(self) <= key < len(self):
                raise IndexError(f"molecule {key} out of range for {len(self)} molecules")
            return int(key) % len(self)
        if self._index is None:
            self._index = {str(s): k for k, s in enumerate(self.ids)}
        try:
            return self._index[str(key)]
        except KeyError:
            raise KeyError(f"no molecule {key!r} in this explanation") from None

    def molecule(self, key: int | str) -> MoleculeRelevance:
        """By position or by id ('qm9:1234', 'mol.xyz:0')."""
        m = self.index(key)
        s, e = int(self.offsets[m]), int(self.offsets[m + 1])
        ps, pe = int(self.pair_offsets[m]), int(self.pair_offsets[m + 1])
        n = e - s
        return MoleculeRelevance(
            str(self.ids[m]), n, self.atom_relevance[s:e], self.pair_relevance[ps:pe].reshape(n, n, N_PAIR_FEATURES),
            self.per_atom[s:e], self.groups[m], float(self.prediction[m]), float(self.target[m]),
            float(self.explained[m]), float(self.absorbed[m]), tuple(str(x) for x in self.elements[s:e]),
        )


def offsets_of(n_atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(n_atoms, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(n)]), np.concatenate([[0], np.cumsum(n * n)])


def save_relevance(path: Path, rs: RelevanceSet) -> None:
    from molgraph.storage import atomic_save_npz

    atomic_save_npz(
        path, format=np.array(RELEVANCE_FORMAT), meta=np.array(json.dumps(rs.meta)),
        ids=np.asarray(rs.ids, dtype=str), n_atoms=rs.n_atoms.astype(np.int64), offsets=rs.offsets,
        pair_offsets=rs.pair_offsets, atom_relevance=rs.atom_relevance.astype(np.float32),
        pair_relevance=rs.pair_relevance.astype(np.float32), per_atom=rs.per_atom.astype(np.float32),
        groups=rs.groups.astype(np.float64), group_names=np.asarray(_group_names(), dtype=str),
        prediction=rs.prediction, target=rs.target, explained=rs.explained, absorbed=rs.absorbed,
        elements=np.asarray(rs.elements, dtype=str),
    )


def load_relevance(directory: str | Path) -> RelevanceSet:
    """Read `relevance.npz` from an explain output directory (or the file itself)."""
    path = Path(directory)
    if path.is_dir():
        path = path / "relevance.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no relevance file (run `qmlrp explain` first)")
    with np.load(path, allow_pickle=False) as z:
        if str(z["format"]) != RELEVANCE_FORMAT:
            raise ValueError(f"{path}: format {str(z['format'])!r}, expected {RELEVANCE_FORMAT!r}")
        if tuple(str(x) for x in z["group_names"]) != _group_names():
            raise ValueError(f"{path}: group names differ from molgraph.GROUP_NAMES")
        return RelevanceSet(
            z["ids"], z["n_atoms"], z["offsets"], z["pair_offsets"], z["atom_relevance"], z["pair_relevance"],
            z["per_atom"], z["groups"], z["prediction"], z["target"], z["explained"], z["absorbed"], z["elements"],
            json.loads(str(z["meta"])),
        )


def _group_names() -> tuple[str, ...]:
    from molgraph import GROUP_NAMES

    return tuple(GROUP_NAMES)


# ----------------------------------------------------------------------------- model
@dataclass
class LoadedModel:
    net: object  # the WeaveNet, standardized output
    model_dir: Path
    target: str
    unit: str
    output: int  # column of the network output that is explained
    mean: float
    std: float
    note: str
    config: dict


def resolve_model_dir(model: str | Path, fold: int | None = None) -> tuple[Path, str]:
    """A model directory, or the fold to use from a CV directory of fold_*/ models."""
    root = Path(model)
    if (root / "config.json").exists():
        if fold is not None:
            raise ValueError(f"{root} is a single model directory; --fold is for a directory of fold_*/ models")
        return root, f"model {root}"
    folds = sorted((p for p in root.glob("fold_*") if (p / "weights.pt").exists()),
                   key=lambda p: int(p.name.split("_")[1]) if p.name.split("_")[1].isdigit() else 1 << 30)
    if not folds:
        raise FileNotFoundError(f"{root}: no config.json + weights.pt, and no fold_*/ model directories")
    if fold is None:
        chosen = folds[0]
        note = (f"{root} holds {len(folds)} fold models; explained with the first, {chosen.name} "
                f"(choose another with --fold; every fold is the stability study's job)")
    else:
        chosen = root / f"fold_{fold}"
        if chosen not in folds:
            raise FileNotFoundError(f"{root}: no fold_{fold}/ model; present: {', '.join(p.name for p in folds)}")
        note = f"fold {fold} of the {len(folds)} fold models in {root}"
    return chosen, note


def load_model(model: str | Path, fold: int | None = None, target: str | None = None) -> LoadedModel:
    import gcnn

    model_dir, note = resolve_model_dir(model, fold)
    predictor = gcnn.load(model_dir)
    if predictor.is_vector:
        raise ValueError(f"{model_dir} predicts a vector target ({predictor.targets[0]}); explain handles scalar targets")
    targets = list(predictor.targets)
    if target is None:
        if len(targets) > 1:
            raise ValueError(f"{model_dir} predicts {', '.join(targets)}; choose one with --target")
        target = targets[0]
    if target not in targets:
        raise ValueError(f"{model_dir} does not predict {target!r}; it predicts {', '.join(targets)}")
    k = targets.index(target)
    member = predictor.models[0]
    cfg = json.loads((model_dir / "config.json").read_text())
    net = member.model.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return LoadedModel(net, model_dir, target, predictor.units[target], k, float(member.mean[k]), float(member.std[k]),
                       note, cfg)


# ----------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """The molecules to explain: ids, sizes, labels (NaN without), a featurized graph and a
    plain Molecule (for depiction) per position, and what could not be featurized."""

    ids: list[str]
    n_atoms: np.ndarray
    targets: np.ndarray
    graph: Callable[[int], object]
    molecule: Callable[[int], object]
    failures: list[dict]
    description: str


def split_test_ids(model_dir: Path, which: str = "test") -> tuple[np.ndarray, str]:
    """Ids of the model's split (`split.json` in the model directory written by `qmlrp train`,
    or, for a fold of `qmlrp cv`, the k-fold split in the parent directory)."""
    from molgraph import splits

    cfg = json.loads((model_dir / "config.json").read_text())
    meta = cfg.get("split", {})
    own = model_dir / "split.json"
    if own.exists():
        sp = splits.load_split(own)
        if isinstance(sp, splits.KFold):
            sp = sp.fold(int(meta.get("fold", 0)))
        return np.asarray(getattr(sp, which)), f"{which} molecules of {own}"
    parent = model_dir.parent / "split.json"
    if parent.exists() and meta.get("digest"):  # a fold of `qmlrp cv` or a size of `qmlrp learning-curve`
        sp = splits.load_split(parent)
        cands = [sp] if isinstance(sp, splits.TrainValTest) else [sp.fold(f) for f in range(sp.k)]
        if "fold" in meta and isinstance(sp, splits.KFold):
            cands.insert(0, sp.fold(int(meta["fold"])))
        for c in cands:
            if c.digest == meta["digest"]:
                where = f"fold {c.meta['fold']} of {parent}" if "fold" in c.meta else str(parent)
                return np.asarray(getattr(c, which)), f"{which} molecules of {where}"
        raise ValueError(f"{parent} does not hold the split {model_dir} was trained on (digest {meta['digest']})")
    raise FileNotFoundError(f"{model_dir}: no split.json here or (for a fold model) in the parent directory; "
                            f"choose the molecules with --ids FILE or give XYZ/SDF files")


def find_qm9(ids: np.ndarray, source: str = "qm9pack", checksum: str | None = None, cache_root=None,
             log: Callable[[str], None] = print, progress: bool = True):
    """A featurized QM9 dataset holding `ids`: the smallest complete cache under the cache root
    that has them all (same source, checksum and featurizer), else one built for exactly these ids."""
    from molgraph import FEATURIZER_VERSION, qm9

    root = Path(cache_root) if cache_root else qm9.default_cache_root()
    wanted = np.unique(np.asarray(ids, dtype=np.int64))
    best = None
    for man in sorted(root.glob("qm9-*/manifest.json")) if root.exists() else []:
        try:
            m = json.loads(man.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if m.get("source") != source or m.get("featurizer_version") != FEATURIZER_VERSION:
            continue
        if checksum and m.get("source_checksum") != checksum:
            continue
        if best is not None and m.get("n_molecules", 0) >= best[0]:
            continue
        try:
            ds = qm9.QM9Dataset(man.parent)
        except (FileNotFoundError, ValueError):
            continue
        have = np.isin(wanted, ds.ids)
        failed = {int(f["id"]) for f in ds.failures}
        if np.all(have | np.isin(wanted, list(failed))):
            best = (m.get("n_molecules", len(ds)), ds)
    if best is not None:
        return best[1]
    if source != "qm9pack":
        raise FileNotFoundError(f"no featurized QM9 cache from source {source!r} under {root} holds these molecules; "
                                f"featurize them first (qmlrp featurize --root ...)")
    log(f"featurizing {len(wanted)} QM9 molecules into the cache {root}")
    return qm9.load(source, ids=wanted, cache_root=cache_root, progress=progress, log=log)


def qm9_inputs(ids: Sequence[int], target: str, source: str = "qm9pack", checksum: str | None = None,
               cache_root=None, description: str = "", log=print, progress: bool = True) -> Inputs:
    ds = find_qm9(np.asarray(ids), source, checksum, cache_root, log=log, progress=progress)
    failed = {int(f["id"]): f["reason"] for f in ds.failures}
    present = set(int(i) for i in ds.ids)
    failures, keep = [], []
    for i in ids:
        i = int(i)
        if i in present:
            keep.append(i)
        else:
            failures.append({"source": "qm9", "molecule": f"qm9:{i}",
                             "error": failed.get(i, "not in the featurized dataset")})
    sub = ds.subset(keep).with_targets([])
    y = ds.subset(keep).target(target) if keep else np.zeros(0)
    return Inputs([f"qm9:{i}" for i in keep], np.asarray(sub.n_atoms, dtype=np.int64), np.asarray(y, dtype=np.float64),
                  sub.__getitem__, sub.molecule, failures, description)


def file_inputs(paths: Sequence[str]) -> Inputs:
    """Featurize every molecule of XYZ/SDF/MOL files; failures are recorded and skipped."""
    from molgraph import MolecularGraphFeaturizer, MoleculeError, iter_molecules

    featurizer = MolecularGraphFeaturizer()
    graphs, mols, ids, failures = [], [], [], []
    names = [Path(p).name for p in paths]
    for path, name in zip(paths, names):
        label = name if names.count(name) == 1 else str(path)
        if not Path(path).is_file():
            failures.append({"source": str(path), "molecule": None, "error": "no such file"})
            continue
        for item in iter_molecules(path):
            try:
                if isinstance(item, MoleculeError):
                    raise item
                g = featurizer(item)
            except MoleculeError as exc:
                failures.append({"source": exc.source, "molecule": exc.index, "error": exc.problem})
                continue
            graphs.append(g)
            mols.append(item)
            ids.append(f"{label}:{item.index if item.index is not None else 0}")
    n = np.array([g.n_atoms for g in graphs], dtype=np.int64)
    return Inputs(ids, n, np.full(len(ids), np.nan), graphs.__getitem__, mols.__getitem__, failures,
                  f"{len(ids)} molecule(s) from {len(paths)} file(s)")


# ----------------------------------------------------------------------------- the relevance pass
def composite_for(rule: str, histogram_rule: str | None = None):
    """The LRP composite: preset `rule`, with the GaussianHistogram rule `histogram_rule`
    ('pass' or 'rescale', gcnn.lrp_rules.HISTOGRAM_RULES) in place of gcnn's default."""
    import lrp

    composite = lrp.preset(rule)
    if histogram_rule is None:
        return composite
    from gcnn.layers import GaussianHistogram
    from gcnn.lrp_rules import histogram_rule as named

    return composite.with_rules({GaussianHistogram: named(histogram_rule)})


def explain_inputs(lm: LoadedModel, inputs: Inputs, rule: str, batch_size: int = 128,
                   progress: bool = True, histogram_rule: str | None = None) -> RelevanceSet:
    """LRP of every molecule, batched by size (molecules sorted by atom count, so a batch pads
    little); relevance in target units. `histogram_rule` overrides gcnn's GaussianHistogram rule."""
    import torch

    import lrp
    from gcnn.lrp_rules import DEFAULT_HISTOGRAM_RULE
    from molgraph import collate
    from molgraph.relevance import group_sums, per_atom

    n = np.asarray(inputs.n_atoms, dtype=np.int64)
    m_count = len(n)
    off, poff = offsets_of(n)
    atom_rel = np.zeros((off[-1], N_ATOM_FEATURES), np.float32)
    pair_rel = np.zeros((poff[-1], N_PAIR_FEATURES), np.float32)
    pa = np.zeros(off[-1], np.float32)
    groups = np.zeros((m_count, 12))
    pred, explained, absorbed = np.zeros(m_count), np.zeros(m_count), np.zeros(m_count)
    elements = np.empty(off[-1], dtype="<U2")
    order = np.argsort(n, kind="stable")
    chunks = [order[i:i + batch_size] for i in range(0, m_count, batch_size)]
    target = None if lm.net.config.n_outputs == 1 else lm.output
    composite = composite_for(rule, histogram_rule)
    bar = _tqdm(chunks, progress, desc="explain", unit="batch")
    for idx in bar:
        graphs = [inputs.graph(int(i)) for i in idx]
        b = collate([g.with_targets({}) for g in graphs])
        e = lrp.explain(lm.net, (b.atom_features, b.pair_features, b.atom_mask), composite, target=target,
                        track_absorbed=True)
        ra = e.relevance[0].double() * lm.std  # (B, N, 21)
        rp = e.relevance[1].double() * lm.std  # (B, N, N, 13)
        gs = group_sums(ra, rp).numpy()
        pat = per_atom(ra, rp).numpy()
        out = e.output[:, lm.output].double().numpy()
        ra32, rp32 = ra.float().numpy(), rp.float().numpy()
        for j, i in enumerate(idx):
            k = int(n[i])
            atom_rel[off[i]:off[i + 1]] = ra32[j, :k]
            pair_rel[poff[i]:poff[i + 1]] = rp32[j, :k, :k].reshape(k * k, N_PAIR_FEATURES)
            pa[off[i]:off[i + 1]] = pat[j, :k]
            elements[off[i]:off[i + 1]] = graphs[j].elements
        groups[idx] = gs
        pred[idx] = out * lm.std + lm.mean
        explained[idx] = e.explained.double().numpy() * lm.std
        absorbed[idx] = e.absorbed.double().numpy() * lm.std
    meta = {"model_dir": str(lm.model_dir), "target": lm.target, "unit": lm.unit, "rule": rule,
            "histogram_rule": histogram_rule or DEFAULT_HISTOGRAM_RULE,
            "training_mean": lm.mean, "training_std": lm.std,
            "explained": "prediction - training mean, in target units (LRP of the standardized output x std)",
            "per_atom": "own atom features + half of each pair (i, j) and (j, i)"}
    return RelevanceSet(np.asarray(inputs.ids, dtype=str), n, off, poff, atom_rel, pair_rel, pa, groups, pred,
                        np.asarray(inputs.targets, dtype=np.float64), explained, absorbed, elements, meta)


def _tqdm(it, progress: bool, **kw):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, file=sys.stderr, **kw)


# ----------------------------------------------------------------------------- statistics
NORMALIZATION = (
    "Z[m, g] = (G[m, g] - mu[g]) / S, where G[m, g] is molecule m's relevance summed over group g "
    "(target units), mu[g] = mean over the explained molecules of G[., g] (each group centred on its "
    "own dataset mean) and S = max over all molecules and groups of |G[m, g] - mu[g]|, the largest absolute "
    "value of the centred relevances over the dataset (one scale for all groups, so they stay comparable): Z lies in [-1, 1] and has zero mean per group. mu and S "
    "are computed once on all explained molecules and held fixed in the bootstrap."
)


def group_statistics(g: np.ndarray, n_atoms: np.ndarray | None = None, resamples: int = 2000, seed: int = 0,
                     ci: float = 0.95) -> dict:
    """Per-group statistics of G (M, 12), raw and normalized, with percentile bootstrap CIs
    (molecules resampled with replacement, `resamples` times, seeded).

    For a matrix X (raw G or normalized Z): mean = mean over molecules of X[., g];
    mean_abs = mean of |X[., g]|; share = sum_m |X[m, g]| / sum_m sum_h |X[m, h]| (the group's
    part of all absolute relevance); signed_share = sum_m X[m, g] / sum_m sum_h |X[m, h]|;
    raw only: molecule_share = mean over molecules of |G[m, g]| / sum_h |G[m, h]| (each molecule
    weighs the same, however large its relevances), median."""
    names = _group_names()
    g = np.asarray(g, dtype=np.float64)
    m = len(g)
    if m == 0:
        raise ValueError("no molecules to summarize")
    mu = g.mean(0)
    scale = float(np.abs(g - mu).max())
    z = (g - mu) / scale if scale > 0 else np.zeros_like(g)
    rng = np.random.default_rng(seed)
    lo_q, hi_q = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2

    row_abs = np.abs(g).sum(1, keepdims=True)
    mol_share = np.abs(g) / np.where(row_abs > 0, row_abs, 1.0)  # (M, 12) each molecule's own shares
    keys = ("mean", "mean_abs", "share", "signed_share", "molecule_share")

    def stats(w, x):  # w: (R, M) resample counts
        s, a = w @ x, w @ np.abs(x)  # (R, 12)
        tot = a.sum(1, keepdims=True)
        tot[tot == 0] = 1.0
        nw = w.sum(1, keepdims=True)
        return {"mean": s / nw, "mean_abs": a / nw, "share": a / tot, "signed_share": s / tot,
                "molecule_share": (w @ mol_share) / nw}

    boot = {"raw": {k: [] for k in keys}, "normalized": {k: [] for k in keys}}
    done = 0
    while done < resamples:
        r = min(250, resamples - done)
        w = rng.multinomial(m, np.full(m, 1.0 / m), size=r).astype(np.float64)  # (r, M)
        for kind, x in (("raw", g), ("normalized", z)):
            for k, v in stats(w, x).items():
                boot[kind][k].append(v)
        done += r
    point = {kind: stats(np.ones((1, m)), x) for kind, x in (("raw", g), ("normalized", z))}
    out = {}
    from molgraph import FEATURE_GROUPS

    per_atom_mean = (g / np.asarray(n_atoms, dtype=np.float64)[:, None]).mean(0) if n_atoms is not None else None
    for j, name in enumerate(names):
        entry = {"kind": FEATURE_GROUPS[name].kind}
        for kind in ("raw", "normalized"):
            d = {}
            for k in keys[:4] if kind == "normalized" else keys:
                samples = np.concatenate(boot[kind][k])[:, j]
                d[k] = float(point[kind][k][0, j])
                d[f"{k}_ci"] = [float(np.percentile(samples, lo_q)), float(np.percentile(samples, hi_q))]
            entry[kind] = d
        entry["raw"]["median"] = float(np.median(g[:, j]))
        if per_atom_mean is not None:
            entry["raw"]["mean_per_atom"] = float(per_atom_mean[j])
        out[name] = entry
    return {"groups": out, "normalization": {"definition": NORMALIZATION, "centre": dict(zip(names, map(float, mu))),
                                             "scale": scale},
            "bootstrap": {"resamples": resamples, "seed": seed, "ci": ci, "method": "percentile, molecules resampled"}}


def plot_groups(stats: dict, unit: str, title: str, out_stem: Path) -> list[Path]:
    """Bar chart: share of |relevance| per group (with CI) and mean signed relevance (with CI);
    atom groups blue, pair groups orange."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names = list(stats["groups"])
    g = stats["groups"]
    colours = ["tab:blue" if g[n]["kind"] == "atom" else "tab:orange" for n in names]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, key, label in ((axes[0], "share", "share of total |relevance|"),
                           (axes[1], "mean", f"mean relevance per molecule / {unit}")):
        v = np.array([g[n]["raw"][key] for n in names])
        lo = np.array([g[n]["raw"][f"{key}_ci"][0] for n in names])
        hi = np.array([g[n]["raw"][f"{key}_ci"][1] for n in names])
        ax.bar(x, v, color=colours, yerr=np.vstack([v - lo, hi - v]), capsize=3, ecolor="black")
        ax.set_xticks(x, names, rotation=45, ha="right")
        ax.set_ylabel(label)
        ax.axhline(0, color="black", lw=0.6)
    axes[0].legend(handles=[Patch(color="tab:blue", label="atom groups"), Patch(color="tab:orange", label="pair groups")],
                   loc="upper right")
    ci = int(round(100 * stats["bootstrap"]["ci"]))
    fig.suptitle(f"{title}\nerror bars: {ci} % bootstrap CI over molecules", fontsize=11)
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        p = out_stem.with_name(out_stem.name + "." + ext)
        tmp = p.with_name(f".{p.name}.tmp")
        fig.savefig(tmp, dpi=120, format=ext)
        tmp.replace(p)
        paths.append(p)
    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------- files
def write_groups_csv(path: Path, rs: RelevanceSet) -> None:
    from molgraph.storage import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "n_atoms", "prediction", "target", "explained", "absorbed", *_group_names()])
    for m in range(len(rs)):
        t = "" if not np.isfinite(rs.target[m]) else repr(float(rs.target[m]))
        w.writerow([str(rs.ids[m]), int(rs.n_atoms[m]), repr(float(rs.prediction[m])), t, repr(float(rs.explained[m])),
                    repr(float(rs.absorbed[m])), *(repr(float(v)) for v in rs.groups[m])])
    atomic_write_text(path, buf.getvalue())


def read_groups_csv(path: str | Path) -> tuple[list[str], np.ndarray, list[dict]]:
    """(ids, G (M, 12), rows as dicts) of a groups.csv."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    names = _group_names()
    return [r["id"] for r in rows], np.array([[float(r[n]) for n in names] for r in rows]).reshape(-1, 12), rows


# ----------------------------------------------------------------------------- heatmap selection
def select_representative(rs: RelevanceSet, k: int) -> list[tuple[int, str]]:
    """Up to k (position, why) pairs: extremes first (largest |error|, largest and smallest
    prediction, largest total |relevance|), then typical molecules (|error| - or, without labels,
    the prediction - and size both near their medians)."""
    m = len(rs)
    if k <= 0 or m == 0:
        return []
    has_labels = bool(np.isfinite(rs.target).any())
    err = np.abs(rs.prediction - rs.target) if has_labels else None
    abs_rel = np.array([np.abs(rs.per_atom[rs.offsets[i]:rs.offsets[i + 1]]).sum() for i in range(m)])
    chosen: list[tuple[int, str]] = []

    def add(i, why):
        for j, (c, w) in enumerate(chosen):
            if c == i:  # one molecule, several reasons: say them all
                if why.startswith("extreme") and w.startswith("extreme"):
                    chosen[j] = (c, f"{w}; {why.removeprefix('extreme: ')}")
                return
        if len(chosen) < k:
            chosen.append((int(i), why))

    extremes = []
    if has_labels:
        e = np.where(np.isfinite(err), err, -np.inf)
        extremes.append((int(np.argmax(e)), "extreme: largest error"))
    extremes += [(int(np.argmax(rs.prediction)), "extreme: largest prediction"),
                 (int(np.argmin(rs.prediction)), "extreme: smallest prediction"),
                 (int(np.argmax(abs_rel)), "extreme: largest total |relevance|")]
    n_ext = min(len(extremes), (k + 1) // 2)
    for i, why in extremes[:n_ext]:
        add(i, why)

    def pct_rank(v):
        r = np.empty(len(v))
        r[np.argsort(v, kind="stable")] = np.arange(len(v))
        return r / max(len(v) - 1, 1)

    basis = err if has_labels else rs.prediction
    basis = np.where(np.isfinite(basis), basis, np.nanmedian(basis))
    closeness = np.abs(pct_rank(basis) - 0.5) + np.abs(pct_rank(rs.n_atoms.astype(float)) - 0.5)
    what = "error" if has_labels else "prediction"
    for i in np.argsort(closeness, kind="stable"):
        if len(chosen) >= k:
            break
        add(i, f"typical: {what} and size near the median")
    return chosen


def heatmap_stem(mol_id: str) -> str:
    """File name (without extension) of a molecule's heatmap: its id, with characters other
    than letters, digits, '.', '_' and '-' replaced by '_' ('qm9:176' -> 'qm9_176'; a ':' is not
    allowed in Windows file names and reads as a URL scheme in a bare link)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in mol_id)


def draw_heatmaps(rs: RelevanceSet, inputs: Inputs, chosen: list[tuple[int, str]], out: Path, unit: str,
                  failures: list[dict]) -> list[dict]:
    import torch

    from molgraph import FEATURE_GROUPS
    from molgraph.relevance import per_pair

    from .heatmap import draw_heatmap, perceived, smiles_of

    made = []
    bt = FEATURE_GROUPS["bond_type"].slice
    for i, why in chosen:
        mr = rs.molecule(i)
        try:
            g = inputs.graph(i)
            bonded = (g.pair_features[..., bt].sum(-1) > 0).numpy()
            mol = perceived(inputs.molecule(i), g.elements, bonded)
            smi = smiles_of(mol)
            pv = per_pair(torch.from_numpy(mr.pair[None].astype(np.float64)))[0].numpy()
            tgt = f"target {mr.target:.4g} {unit}" if np.isfinite(mr.target) else "no target"
            title = [f"{mr.id}   {smi}", f"prediction {mr.prediction:.4g} {unit},  {tgt}"]
            h = draw_heatmap(mol, mr.per_atom, pv, out / "heatmaps" / heatmap_stem(mr.id), title, unit)
        except Exception as exc:  # a depiction problem must not cost the whole run
            failures.append({"source": "heatmap", "molecule": mr.id, "error": f"{type(exc).__name__}: {exc}"})
            continue
        made.append({"id": mr.id, "why": why, "smiles": smi, "png": str(h.png.relative_to(out)),
                     "svg": str(h.svg.relative_to(out)), "prediction": mr.prediction,
                     "target": mr.target if np.isfinite(mr.target) else None, "n_atoms": mr.n_atoms,
                     "colour_scale": h.scale})
    return made


# ----------------------------------------------------------------------------- the command
def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="model directory (qmlrp train) or a directory of fold_*/ models (qmlrp cv)")
    p.add_argument("--fold", type=int, help="with a CV directory: the fold model to explain (default: the first)")
    p.add_argument("files", nargs="*", help="XYZ/SDF/MOL files to explain instead of QM9 molecules")
    p.add_argument("--split", choices=("test", "val", "train"),
                   help="molecules of the model's own split (default: test, when no --ids and no files)")
    p.add_argument("--ids", help="file of QM9 ids to explain")
    p.add_argument("--rule", default="epsilon", help="LRP composite preset (default epsilon)")
    p.add_argument("--histogram-rule", choices=("pass", "rescale"),
                   help="LRP rule of the Gaussian-histogram readout: 'pass' (all membership relevance to the "
                        "value) or 'rescale' (relative to the value 0, a ReLU-dead feature); default: gcnn's "
                        "(gcnn.lrp_rules.DEFAULT_HISTOGRAM_RULE)")
    p.add_argument("--target", help="which target of a multi-target model")
    p.add_argument("--max-molecules", type=int, help="explain a seeded random sample of N of the selected molecules")
    p.add_argument("--heatmaps", type=int, default=12, help="heatmaps of a representative set of K molecules (default 12)")
    p.add_argument("--faithfulness", type=int, default=200,
                   help="perturbation check on a seeded sample of N molecules (default 200; 0 skips it)")
    p.add_argument("--random-orders", type=int, default=5, help="random-order baselines of the faithfulness check (default 5)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CIs (default 2000)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="seed of --max-molecules, the bootstrap and the faithfulness sample")
    p.add_argument("--cache-dir", help="where QM9 caches live (default $QMLRP_CACHE or ~/.cache/qmlrp)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_from_args(args) -> int:
    try:
        return run(model=args.model, out=Path(args.out), files=args.files, split=args.split, ids_file=args.ids,
                   rule=args.rule, histogram_rule=args.histogram_rule, target=args.target, fold=args.fold, max_molecules=args.max_molecules,
                   heatmaps=args.heatmaps, faithfulness=args.faithfulness, random_orders=args.random_orders,
                   bootstrap=args.bootstrap, batch_size=args.batch_size, seed=args.seed, cache_root=args.cache_dir,
                   progress=not args.no_progress)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"qmlrp explain: {msg}", file=sys.stderr)
        return 2


def _read_ids(path: str) -> list[int]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no such ids file")
    toks = p.read_text().replace(",", " ").split()
    bad = [t for t in toks if not t.removeprefix("qm9:").isdigit()]
    if bad:
        raise ValueError(f"{path}: QM9 ids must be integers (optionally 'qm9:123'); got {bad[:3]}")
    return [int(t.removeprefix("qm9:")) for t in toks]


def run(model, out: Path, files: Sequence[str] = (), split: str | None = None, ids_file: str | None = None,
        rule: str = "epsilon", target: str | None = None, fold: int | None = None, max_molecules: int | None = None,
        histogram_rule: str | None = None, heatmaps: int = 12, faithfulness: int = 200, random_orders: int = 5, bootstrap: int = 2000,
        batch_size: int = 128, seed: int = 0, cache_root=None, progress: bool = True,
        log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> int:
    import lrp
    from molgraph.storage import atomic_write_json

    t0 = time.time()
    timings = {}
    chosen_inputs = sum(x is not None and x != [] and x != () for x in (split, ids_file, list(files) or None))
    if chosen_inputs > 1:
        raise ValueError("choose the molecules one way: --split, --ids or files")
    if rule not in lrp.presets():
        raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(lrp.presets())}")
    if histogram_rule is not None:
        from gcnn.lrp_rules import histogram_rule as _check

        _check(histogram_rule)
    lm = load_model(model, fold, target)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta_split = lm.config.get("split", {})
    if files:
        inputs = file_inputs(list(files))
    else:
        if ids_file:
            ids, desc = np.asarray(_read_ids(ids_file)), f"QM9 ids from {ids_file}"
        else:
            ids, desc = split_test_ids(lm.model_dir, split or "test")
        if max_molecules is not None and max_molecules < len(ids):
            ids = np.sort(np.random.default_rng(seed).choice(ids, size=max_molecules, replace=False))
            desc += f", a seeded sample (seed {seed}) of {max_molecules}"
        inputs = qm9_inputs(ids, lm.target, meta_split.get("source", "qm9pack"), meta_split.get("source_checksum"),
                            cache_root, desc, log=log, progress=progress)
    if files and max_molecules is not None and max_molecules < len(inputs.ids):
        keep = np.sort(np.random.default_rng(seed).choice(len(inputs.ids), size=max_molecules, replace=False))
        g, mo = inputs.graph, inputs.molecule
        inputs = Inputs([inputs.ids[i] for i in keep], inputs.n_atoms[keep], inputs.targets[keep],
                        lambda i: g(int(keep[i])), lambda i: mo(int(keep[i])), inputs.failures,
                        inputs.description + f", a seeded sample (seed {seed}) of {max_molecules}")
    timings["load_s"] = round(time.time() - t0, 2)
    for f in inputs.failures:
        log(f"FAILED {f['source']}{'' if f['molecule'] is None else ', molecule ' + str(f['molecule'])}: {f['error']}")
    if not inputs.ids:
        atomic_write_json(out / "summary.json", {"model_dir": str(lm.model_dir), "target": lm.target, "unit": lm.unit,
                                                 "rule": rule, "n_molecules": 0, "failures": inputs.failures})
        raise ValueError(f"no molecule could be featurized ({len(inputs.failures)} failure(s), listed in {out / 'summary.json'})")
    log(f"explaining {len(inputs.ids)} molecules ({inputs.description}) with {lm.note}, rule {rule}")

    t = time.time()
    rs = explain_inputs(lm, inputs, rule, batch_size, progress, histogram_rule)
    timings["explain_s"] = round(time.time() - t, 2)
    rs.meta.update({"model_note": lm.note, "selection": inputs.description})
    conservation = np.abs(rs.groups.sum(1) + rs.absorbed - rs.explained)
    abs_total = np.add.reduceat(np.abs(rs.atom_relevance).sum(1, dtype=np.float64), rs.offsets[:-1]) + \
        np.add.reduceat(np.abs(rs.pair_relevance).sum(1, dtype=np.float64), rs.pair_offsets[:-1])
    amp = abs_total / lm.std
    worst = np.argsort(-amp)[:10]
    amplification = {"quantiles": {q: float(np.percentile(amp, float(q))) for q in ("50", "90", "99", "100")},
                     "n_above_100": int((amp > 100).sum()),
                     "largest": [{"id": str(rs.ids[i]), "sum_abs_relevance": float(abs_total[i]),
                                  "in_training_std": float(amp[i]), "explained": float(rs.explained[i]),
                                  "absorbed": float(rs.absorbed[i])} for i in worst]}
    t = time.time()
    save_relevance(out / "relevance.npz", rs)
    write_groups_csv(out / "groups.csv", rs)
    timings["write_s"] = round(time.time() - t, 2)

    t = time.time()
    stats = group_statistics(rs.groups, rs.n_atoms, resamples=bootstrap, seed=seed)
    timings["statistics_s"] = round(time.time() - t, 2)
    labelled = np.isfinite(rs.target)
    accuracy = None
    if labelled.any():
        err = rs.prediction[labelled] - rs.target[labelled]
        accuracy = {"n": int(labelled.sum()), "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
                    "mae_of_training_mean": float(np.abs(rs.target[labelled] - lm.mean).mean())}
    title = f"{lm.target} ({lm.unit}): LRP {rule}, {len(rs)} molecules, {lm.model_dir}"
    plot_groups(stats, lm.unit, title, out / "group_relevance")

    failures = list(inputs.failures)
    t = time.time()
    chosen = select_representative(rs, heatmaps)
    made = draw_heatmaps(rs, inputs, chosen, out, lm.unit, failures)
    timings["heatmaps_s"] = round(time.time() - t, 2)

    faith = None
    if faithfulness > 0:
        from .faithfulness import run_faithfulness

        t = time.time()
        faith = run_faithfulness(lm, rs, inputs, n=faithfulness, random_orders=random_orders, seed=seed,
                                 batch_size=batch_size, out=out, progress=progress)
        timings["faithfulness_s"] = round(time.time() - t, 2)
    timings["total_s"] = round(time.time() - t0, 2)
    summary = {
        "model_dir": str(lm.model_dir), "model_note": lm.note, "target": lm.target, "unit": lm.unit, "rule": rule,
        "histogram_rule": rs.meta["histogram_rule"], "selection": inputs.description, "n_molecules": len(rs), "n_failed": len(inputs.failures), "failures": failures,
        "accuracy": accuracy,
        "reference": {"training_mean": lm.mean, "training_std": lm.std,
                      "explained": "prediction - training mean (target units); the training mean is not distributed",
                      "identity": "sum of the 12 groups = sum of all feature relevances = explained - absorbed"},
        "explained_mean": float(rs.explained.mean()), "absorbed_mean": float(rs.absorbed.mean()),
        "absorbed_mean_abs": float(np.abs(rs.absorbed).mean()),
        "max_conservation_error": float(conservation.max()),
        "group_names": list(_group_names()),
        "definitions": {
            "group relevance": "relevance summed over the group's features and all atoms (atom groups) or all "
                               "ordered atom pairs (pair groups), target units",
            "mean": "mean over molecules", "mean_abs": "mean over molecules of |group relevance|",
            "share": "sum over molecules of |group| / sum over molecules and groups of |group|",
            "signed_share": "sum over molecules of group / sum over molecules and groups of |group|",
            "mean_per_atom": "mean over molecules of group relevance / number of atoms (the proposal's per-atom average)",
            "molecule_share": "mean over molecules of |group| / sum over groups of |group| in that molecule "
                              "(robust to molecules with very large relevances)",
            "amplification": "sum over a molecule's features of |relevance|, in units of the training std of the "
                             "target; a few std is usual, hundreds mean large cancelling relevances (the rule "
                             "amplifies, e.g. epsilon with a tiny epsilon where a neuron's input nearly cancels)",
        },
        "amplification": amplification,
        **stats,
        "heatmaps": made,
        "faithfulness": faith,
        "timings": timings,
        "files": {"relevance": "relevance.npz", "groups": "groups.csv", "chart": ["group_relevance.png", "group_relevance.svg"],
                  "report": "report.html"},
    }
    atomic_write_json(out / "summary.json", summary)
    from .report_explain import write_report

    write_report(out, summary)
    log(f"{len(rs)} molecules explained in {timings['explain_s']} s (total {timings['total_s']} s), "
        f"{len(failures)} failure(s); max |groups + absorbed - explained| {conservation.max():.2e} {lm.unit} -> {out / 'report.html'}")
    return 1 if inputs.failures else 0
