"""`qmlrp dae`: train and inspect the denoising autoencoders of `dae` on QM9 (no labels).

Two designs (issue 13): 'graph' codes every atom (21 features) and every pair (13) with its
own tied autoencoder, so the codes can replace the weave network's input; 'flat' is the
proposal's literal design, one tied autoencoder over `molgraph.flatten`'s 5,887-long vector.

Data: the seeded 10-fold split of the supervised protocol (`qmlrp cv`); the autoencoder trains
on fold 0's training bins, selects its epoch on fold 0's validation slice and is reported on
fold 0's test bin, so no test molecule of fold 0 enters its training or model selection.

A model directory holds config.json (format 'qmlrp-dae-1': variant, autoencoder configs,
training settings, data record), weights.pt (float32 state dict, loaded with
weights_only=True), checksums.json, history.csv, metrics.json and, while training,
checkpoint.pt (resumable, removed when training is done).
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import dae
from molgraph import FEATURE_GROUPS, FEATURE_KINDS
from molgraph.features import N_ATOM_FEATURES
from molgraph.batch import flatten
from molgraph.storage import atomic_torch_save, atomic_write_text

FORMAT = "qmlrp-dae-1"
VARIANTS = ("graph", "flat")


def atom_layout() -> dae.Layout:
    return _layout("atom")


def pair_layout() -> dae.Layout:
    return _layout("pair")


def _layout(kind: str) -> dae.Layout:
    return dae.Layout(tuple(dae.Segment(g.name, g.indices[0], g.indices[-1] + 1, FEATURE_KINDS[g.name])
                            for g in FEATURE_GROUPS.values() if g.kind == kind))


def context_atom_layout() -> dae.Layout:
    """The atom layout followed by the neighbour sums (`dae.NeighbourContext`): each atom group
    summed over the bonded neighbours, a count (continuous: squared error, Gaussian noise)."""
    own = atom_layout()
    return own + dae.Layout(tuple(dae.Segment(f"neighbours.{g.name}", g.start, g.stop, "continuous") for g in own.segments))


def context_names() -> tuple[str, ...]:
    """The 42 names of an atom row with its neighbourhood."""
    from molgraph import ATOM_FEATURES

    return tuple(ATOM_FEATURES) + tuple(f"neighbours.{n}" for n in ATOM_FEATURES)


def adjacency_column() -> int:
    """The pair feature that says two atoms are bonded (graph distance <= 1)."""
    from molgraph import PAIR_FEATURES

    return PAIR_FEATURES.index("graph_distance_le_1")


def flat_layout(max_atoms: int = 29) -> dae.Layout:
    """The flat vector's layout: max_atoms atom slots, then the upper-triangle pair slots."""
    n_pairs = max_atoms * (max_atoms - 1) // 2
    return atom_layout().tile(max_atoms, "atom") + pair_layout().tile(n_pairs, "pair")


# ------------------------------------------------------------------------------ rows of a batch
def graph_rows(batch, model=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(atoms, 21) of the real atoms and (pairs, 13) of the real atom pairs i < j of a MolBatch;
    (atoms, 42), each atom with its neighbourhood, for a graph autoencoder `model` with a
    context."""
    mask = batch.atom_mask.bool()
    n = mask.shape[1]
    iu = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    pm = mask[:, :, None] & mask[:, None, :] & iu
    atoms = batch.atom_features if model is None else model.atom_inputs(batch.atom_features, batch.pair_features)
    return atoms[mask], batch.pair_features[pm]


def flat_rows(batch, max_atoms: int = 29) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 5887) flat vectors and the (B, 5887) 0/1 weight of their non-padding entries."""
    x = flatten(batch, max_atoms)
    m = batch.atom_mask.to(x.dtype)
    ones = type(batch)(m[..., None].expand_as(batch.atom_features), (m[:, :, None] * m[:, None, :])[..., None]
                       .expand_as(batch.pair_features), batch.atom_mask, batch.positions, batch.n_atoms)
    return x, flatten(ones, max_atoms)


# ------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class DAEConfig:
    variant: str = "graph"
    atom_sizes: tuple[int, ...] = (21, 32, 8)  # (42, ...) with atom_context
    pair_sizes: tuple[int, ...] = (13, 16, 4)
    flat_sizes: tuple[int, ...] = (5887, 512, 64)
    activation: str = "relu"
    masking: float = 0.15
    noise: float = 0.1
    epochs: int = 20
    batch_size: int = 128
    lr: float = 3e-3
    patience: int = 5
    seed: int = 0
    train_size: int | None = None
    val_size: int | None = 2000  # molecules of fold 0's validation slice that pick the epoch (None: all)
    atom_context: bool = False  # graph variant: code each atom with the sum of its bonded neighbours' features

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; valid: {', '.join(VARIANTS)}")
        for k in ("atom_sizes", "pair_sizes", "flat_sizes"):
            object.__setattr__(self, k, tuple(int(s) for s in getattr(self, k)))
        n_atom_in = 42 if self.atom_context else 21
        if self.atom_sizes[0] != n_atom_in or self.pair_sizes[0] != 13:
            raise ValueError(f"atom sizes start with {n_atom_in} and pair sizes with 13 (the Molecular Graph's features"
                             f"{', each atom with its neighbour sums' if self.atom_context else ''})")
        if self.atom_context and self.variant != "graph":
            raise ValueError("atom_context is a setting of the graph variant (codes per atom)")
        if not (0 <= self.masking < 1 and self.noise >= 0):
            raise ValueError(f"masking must be in [0, 1) and noise >= 0, got {self.masking}, {self.noise}")

    def build(self) -> torch.nn.Module:
        if self.variant == "graph":
            layout = context_atom_layout() if self.atom_context else atom_layout()
            return dae.GraphAutoencoder(dae.TiedAutoencoder(self.atom_sizes, layout, self.activation),
                                        dae.TiedAutoencoder(self.pair_sizes, pair_layout(), self.activation),
                                        {"adjacency_column": adjacency_column()} if self.atom_context else None)
        max_atoms = _max_atoms_of(self.flat_sizes[0])
        return dae.TiedAutoencoder(self.flat_sizes, flat_layout(max_atoms), self.activation)


def _max_atoms_of(size: int) -> int:
    for n in range(1, 200):
        if 21 * n + 13 * n * (n - 1) // 2 == size:
            return n
    raise ValueError(f"{size} is not a flat Molecular Graph length (21 n + 13 n(n-1)/2)")


def model_config(model: torch.nn.Module, variant: str) -> dict:
    return model.config() if variant == "graph" else {"flat": model.config()}


def build_from_config(variant: str, cfg: dict) -> torch.nn.Module:
    if variant == "graph":
        return dae.GraphAutoencoder.from_config(cfg)
    return dae.TiedAutoencoder.from_config(cfg["flat"])


# ------------------------------------------------------------------------------ losses
def batch_losses(model, variant: str, batch, cfg: DAEConfig, gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """{'atoms.kind' / 'pairs.kind' / 'kind': loss}: per atom row and per pair row for 'graph',
    per molecule for 'flat'."""
    if variant == "graph":
        a, p = graph_rows(batch, model)
        out = {f"atoms.{k}": v for k, v in model.atoms.losses(a, None, cfg.masking, cfg.noise, gen).items()}
        out.update({f"pairs.{k}": v for k, v in model.pairs.losses(p, None, cfg.masking, cfg.noise, gen).items()})
        return out
    x, w = flat_rows(batch, _max_atoms_of(model.sizes[0]))
    return model.losses(x, w, cfg.masking, cfg.noise, gen)


def fit_standardization(model, variant: str, ds, indices: np.ndarray) -> None:
    from gcnn import read_batch

    b = read_batch(ds, np.sort(indices[:4000]))
    if variant == "graph":
        a, p = graph_rows(b, model)
        model.atoms.fit_standardization(a)
        model.pairs.fit_standardization(p)
    else:
        set_flat_standardization(model, *graph_rows(b))


@torch.no_grad()
def set_flat_standardization(model: "dae.TiedAutoencoder", atoms: torch.Tensor, pairs: torch.Tensor) -> None:
    """A flat autoencoder's standardization from the statistics of each feature over all real
    atoms (pairs) of the data, the same for every slot. Per-slot statistics would be estimated
    from the few molecules that fill the last slots (29-atom molecules are rare), and a slot's
    tiny std then blows held-out values up by orders of magnitude."""
    from gcnn.flat import tiled_standardization

    mean, std = tiled_standardization(atoms, pairs, _max_atoms_of(model.sizes[0]), model._kinds.continuous())
    s = model.standardize
    s.mean.copy_(mean)
    s.std.copy_(std)


# ------------------------------------------------------------------------------ training
def fold0(ds, k: int = 10, seed: int = 0):
    from molgraph import splits

    kf = splits.kfold(ds.ids, k=k, seed=seed, source=ds.manifest["source"], source_checksum=ds.manifest["source_checksum"])
    return kf.fold(0)


def train(ds, out: str | Path, cfg: DAEConfig, deadline: float | None = None, log: Callable[[str], None] = print,
          progress: bool = True) -> dict:
    """Train (or resume) an autoencoder into `out`; returns {'finished': bool, 'epoch': n}."""
    from gcnn import read_batch, size_buckets, tune_allocator, write_checksums
    from tqdm.auto import tqdm

    tune_allocator()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sp = fold0(ds)
    rng = np.random.default_rng(cfg.seed)
    train_ids = np.asarray(sp.train)
    if cfg.train_size:
        train_ids = np.sort(rng.permutation(train_ids)[: cfg.train_size])
    val_ids = np.asarray(sp.val)
    if cfg.val_size:
        val_ids = np.sort(np.random.default_rng(cfg.seed + 1).permutation(val_ids)[: cfg.val_size])
    tr, va = ds.subset(train_ids), ds.subset(val_ids)
    if cfg.variant == "flat" and int(max(tr.n_atoms.max(), va.n_atoms.max())) > _max_atoms_of(cfg.flat_sizes[0]):
        raise ValueError(f"the flat input has room for {_max_atoms_of(cfg.flat_sizes[0])} atoms; QM9 has molecules with more")
    torch.manual_seed(cfg.seed)
    model = cfg.build()
    meta = {"config": asdict(cfg), "split_digest": sp.digest, "n_train": len(tr), "n_val": len(va)}
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state = {"epoch": 0, "best_val": math.inf, "best_epoch": -1, "bad_epochs": 0}
    ckpt = out / "checkpoint.pt"
    gen = torch.Generator().manual_seed(cfg.seed)
    if ckpt.exists():
        try:
            saved = torch.load(ckpt, weights_only=True)
            if saved["meta"] != json.dumps(meta, sort_keys=True):
                raise ValueError(f"{ckpt} belongs to another run (settings or data differ); use another --out or delete it")
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            rng.bit_generator.state, state = saved["numpy_rng"], saved["state"]
            gen.set_state(saved["gen"])
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"{ckpt}: not readable as an autoencoder checkpoint ({type(exc).__name__}); delete it "
                             f"to start again") from None
        log(f"resuming {out} at epoch {state['epoch']}")
    else:
        fit_standardization(model, cfg.variant, tr, np.arange(len(tr)))
    _write_config(out, model, cfg, meta, ds)
    last = None
    finished = False
    while True:
        if state["epoch"] >= cfg.epochs or state["bad_epochs"] >= cfg.patience:
            finished = True
            break
        if deadline is not None and last is not None and time.time() + 1.1 * last > deadline:
            log(f"time limit: stopping {out} after epoch {state['epoch']}; rerun the same command to resume")
            break
        t0 = time.time()
        model.train()
        total, seen = 0.0, 0
        batches = size_buckets(tr.n_atoms, cfg.batch_size, rng)
        for idx in tqdm(batches, desc=f"dae epoch {state['epoch'] + 1}/{cfg.epochs}", leave=False,
                        disable=None if progress else True):
            losses = batch_losses(model, cfg.variant, read_batch(tr, np.sort(idx)), cfg, gen)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        val = evaluate_loss(model, cfg.variant, va, cfg)
        state["epoch"] += 1
        if val < state["best_val"] - 1e-6:
            state.update(best_val=val, best_epoch=state["epoch"], bad_epochs=0)
            atomic_torch_save({k: v.detach().float().contiguous() for k, v in model.state_dict().items()}, out / "weights.pt")
            write_checksums(out)
        else:
            state["bad_epochs"] += 1
        last = time.time() - t0
        row = {"epoch": state["epoch"], "train_loss": total / max(seen, 1), "val_loss": val, "seconds": round(last, 2)}
        _append(out / "history.csv", row)
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "numpy_rng": rng.bit_generator.state,
                           "gen": gen.get_state(), "state": state, "meta": json.dumps(meta, sort_keys=True)}, ckpt)
        log(f"dae epoch {state['epoch']}: train loss {row['train_loss']:.4f}, validation loss {val:.4f} ({last:.0f} s)")
    if finished and ckpt.exists():
        ckpt.unlink()
    return {"finished": finished, "epoch": state["epoch"], "best_epoch": state["best_epoch"]}


@torch.no_grad()
def evaluate_loss(model, variant, ds, cfg: DAEConfig, batch_size: int = 256) -> float:
    from gcnn import read_batch

    model.eval()
    total, n = 0.0, 0
    for s in range(0, len(ds), batch_size):
        idx = np.arange(s, min(s + batch_size, len(ds)))
        total += float(sum(batch_losses(model, variant, read_batch(ds, idx), cfg).values())) * len(idx)
        n += len(idx)
    return total / max(n, 1)


def _write_config(out: Path, model, cfg: DAEConfig, meta: dict, ds) -> None:
    from gcnn.training import _inputs_record

    doc = {"format": FORMAT, "variant": cfg.variant, "autoencoder": model_config(model, cfg.variant),
           "training": asdict(cfg), "data": {**_inputs_record(ds), "split": "10-fold seed 0, fold 0 (train bins; "
                                             "validation slice for the epoch; test bin held out)",
                                             "split_digest": meta["split_digest"], "n_train": meta["n_train"],
                                             "n_val": meta["n_val"]}}
    atomic_write_text(out / "config.json", json.dumps(doc, indent=2))


def _append(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


# ------------------------------------------------------------------------------ loading
def load(model_dir: str | Path) -> tuple[str, torch.nn.Module, dict]:
    """(variant, autoencoder, config.json) of a `qmlrp dae train` directory; never unpickles."""
    from gcnn.training import read_model_config, read_weights

    d = Path(model_dir)
    cfg_path, w_path = d / "config.json", d / "weights.pt"
    cfg = read_model_config(d, "an autoencoder directory", " from `qmlrp dae train`")
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{cfg_path}: not an autoencoder config (format {FORMAT!r} expected)")
    if cfg.get("variant") not in VARIANTS:
        raise ValueError(f"{cfg_path}: key 'variant' must be one of {VARIANTS}, got {cfg.get('variant')!r}")
    try:
        model = build_from_config(cfg["variant"], cfg["autoencoder"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{cfg_path}: key 'autoencoder': {exc}") from None
    try:
        model.load_state_dict(read_weights(w_path))
    except RuntimeError as exc:
        raise ValueError(f"{w_path} does not match {cfg_path}: {str(exc).splitlines()[0]}") from None
    return cfg["variant"], model.eval(), cfg


# ------------------------------------------------------------------------------ held-out metrics
@torch.no_grad()
def reconstruction_metrics(model, variant: str, ds, base: dict[str, torch.Tensor], batch_size: int = 256) -> dict:
    """Per feature group, on the molecules of `ds` (real atoms and pairs only): 'accuracy' of
    the reconstructed class (one-hot groups) or of every flag (binary groups), 'mae' (continuous
    groups), each beside the same figure for the baseline that ignores its input (the training
    training data's mean for continuous features, the majority class / value otherwise: see
    `baselines`)."""
    from gcnn import read_batch

    model.eval()
    acc: dict[str, list] = {g: [0.0, 0.0, 0.0] for g in FEATURE_GROUPS}  # model, baseline, count
    context = variant == "graph" and model.context_column is not None
    if context:
        acc["neighbour_sums"] = [0.0, 0.0, 0.0]
    for s in range(0, len(ds), batch_size):
        b = read_batch(ds, np.arange(s, min(s + batch_size, len(ds))))
        if variant == "graph":
            a, p = graph_rows(b, model)
            rec_a = model.atoms.reconstruct(a)
            parts = {"atom": (a, rec_a, model.atoms), "pair": (p, model.pairs.reconstruct(p), model.pairs)}
            if context:  # the neighbour sums the atom code rebuilds too (counts: MAE)
                t, r = a[:, N_ATOM_FEATURES:], rec_a[:, N_ATOM_FEATURES:]
                n_ = acc["neighbour_sums"]
                n_[0] += float((r - t).abs().sum()); n_[1] += float((base["neighbour_sums"] - t).abs().sum()); n_[2] += t.numel()
        else:
            x, w = flat_rows(b, _max_atoms_of(model.sizes[0]))
            rec = model.reconstruct(x)
            n = _max_atoms_of(model.sizes[0])
            na = 21 * n
            keep_a = w[:, :na].reshape(-1, n, 21)[..., 0].bool()
            keep_p = w[:, na:].reshape(len(x), -1, 13)[..., 0].bool()
            parts = {"atom": (x[:, :na].reshape(-1, n, 21)[keep_a], rec[:, :na].reshape(-1, n, 21)[keep_a], None),
                     "pair": (x[:, na:].reshape(len(x), -1, 13)[keep_p], rec[:, na:].reshape(len(x), -1, 13)[keep_p], None)}
        for g in FEATURE_GROUPS.values():
            t, r, _ = parts[g.kind]
            t, r = t[:, g.slice], r[:, g.slice]
            kind = FEATURE_KINDS[g.name]
            bl_rec = base[g.name].expand_as(t)
            if kind.startswith("categorical"):
                m, bl, cnt = (r == t).all(1).float().sum(), (bl_rec == t).all(1).float().sum(), len(t)
            elif kind == "binary":
                m, bl, cnt = (r == t).float().sum(), (bl_rec == t).float().sum(), t.numel()
            else:
                m, bl, cnt = (r - t).abs().sum(), (bl_rec - t).abs().sum(), t.numel()
            a_ = acc[g.name]
            a_[0] += float(m); a_[1] += float(bl); a_[2] += cnt
    out = {}
    for g, (m, bl, cnt) in acc.items():
        kind = FEATURE_KINDS.get(g, "continuous")
        key = "mae" if kind == "continuous" else "accuracy"
        out[g] = {"kind": kind, key: m / max(cnt, 1), f"baseline_{key}": bl / max(cnt, 1), "n": int(cnt)}
    return out


def baselines(ds, n: int = 4000, seed: int = 0) -> dict[str, torch.Tensor]:
    """The input-free reconstruction of each group, from n molecules of `ds` (training data):
    the majority class (one-hot groups), the majority value of each flag (binary), the mean
    (continuous)."""
    from gcnn import read_batch

    idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    b = read_batch(ds, idx)
    a, p = graph_rows(b)
    ctx = dae.NeighbourContext()(b.atom_features, b.pair_features[..., adjacency_column()])[b.atom_mask.bool()]
    ctx = ctx[:, N_ATOM_FEATURES:]
    out = {"neighbour_sums": ctx.mean(0)}  # what an input-free model rebuilds of an atom's neighbourhood
    for g in FEATURE_GROUPS.values():
        t = (a if g.kind == "atom" else p)[:, g.slice]
        kind = FEATURE_KINDS[g.name]
        if kind.startswith("categorical"):
            vals, counts = torch.unique(t, dim=0, return_counts=True)
            out[g.name] = vals[counts.argmax()]
        elif kind == "binary":
            out[g.name] = (t.mean(0) > 0.5).to(t.dtype)
        else:
            out[g.name] = t.mean(0)
    return out


# ------------------------------------------------------------------------------ what code units encode
@torch.no_grad()
def code_units(ae: "dae.TiedAutoencoder", rows: torch.Tensor, names) -> list[dict]:
    """What each code unit of a row autoencoder encodes, read through its tied decoder: the
    change of the decoder's raw output (logits of one-hot groups and flags, standardized values
    of continuous features) when the unit moves one standard deviation above the mean code of
    `rows`, the other units held at their means. Returns per unit its code mean and std and the
    (n_features,) effect, with the three largest effects named."""
    codes = ae.encode(rows)
    mean, std = codes.mean(0), codes.std(0)
    base = ae.decode(mean[None])[0]
    out = []
    for u in range(codes.shape[1]):
        c = mean.clone()
        c[u] += std[u]
        eff = ae.decode(c[None])[0] - base
        top = torch.argsort(eff.abs(), descending=True)[:3]
        out.append({"unit": u, "mean": float(mean[u]), "std": float(std[u]), "effect": eff.tolist(),
                    "top": [f"{names[i]} {eff[i]:+.2f}" for i in top.tolist()]})
    return out


def draw_code_units(units: dict[str, list[dict]], names: dict[str, tuple], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(units), figsize=(6 * len(units), 4.5), squeeze=False)
    for ax, (part, us) in zip(axes[0], units.items()):
        m = np.array([u["effect"] for u in us])
        lim = float(np.abs(m).max()) or 1.0
        im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(names[part])), names[part], rotation=90, fontsize=7)
        ax.set_yticks(range(len(us)), [f"code {u['unit']}" for u in us], fontsize=8)
        ax.set_title(f"{part}: decoder response to +1 sd of each code unit", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


@torch.no_grad()
def flat_diagnostics(model: "dae.TiedAutoencoder", ds, n: int = 500, seed: int = 0) -> dict:
    """What the flat design costs, measured on `ds`: the share of the flat vector that is
    padding, and how much a molecule's code moves when only the numbering of its atoms changes
    (a random permutation of its real atoms; the molecule is the same): the distance between
    the two codes over the typical distance between codes of different molecules."""
    from gcnn import read_batch

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.permutation(len(ds))[:n])
    b = read_batch(ds, idx)
    n_max = _max_atoms_of(model.sizes[0])
    x, w = flat_rows(b, n_max)
    perm = torch.arange(b.atom_features.shape[1]).repeat(len(idx), 1)
    for i, k in enumerate(b.n_atoms.tolist()):
        perm[i, :k] = torch.from_numpy(rng.permutation(k))
    ar = torch.arange(len(idx))[:, None]
    pb = type(b)(b.atom_features[ar, perm], b.pair_features[ar[:, :, None], perm[:, :, None], perm[:, None, :]],
                 b.atom_mask, b.positions, b.n_atoms)
    xp, _ = flat_rows(pb, n_max)
    c, cp = model.encode(x), model.encode(xp)
    between = torch.cdist(c, c).sum() / (len(c) * (len(c) - 1))
    moved = (c - cp).norm(dim=1)
    return {"padding_share": float(1 - w.mean()), "n_molecules": len(idx),
            "renumbering_code_shift_over_between_molecule_distance": float(moved.mean() / between),
            "reconstruction_loss_renumbered_over_original": float(sum(model.losses(xp, w).values()) / sum(model.losses(x, w).values()))}


class _FromCodes(torch.nn.Module):
    def __init__(self, net, pair_mask=None):
        super().__init__()
        self.net, self.pair_mask = net, pair_mask  # the batch's pair mask (a pair cutoff is not in the codes)

    def forward(self, atom_codes, pair_codes, atom_mask):
        return self.net.from_codes(atom_codes, pair_codes, atom_mask, self.pair_mask)


def code_relevance(net, batch, composite="weave", reference=None) -> dict:
    """LRP relevance of every code unit of a weave network with an autoencoder input stage, for
    a MolBatch: the network after its input stage explained on the (masked) codes. Returns
    {'atoms': (B, N, n_atom_code), 'pairs': (B, N, N, n_pair_code), 'explanation': the lrp
    Explanation} ({'code': (B, n_code), ...} for a flat network, whose code is one per molecule); per molecule, the code relevance and the absorbed parts add up to the
    explained output (see `lrp.Explanation.conservation_error`)."""
    import lrp

    if getattr(net, "input_stage", None) is None:
        raise ValueError("the network has no autoencoder input stage (train it with --input-stage)")
    if not hasattr(net, "masks"):  # a flat network (gcnn.FlatNet): its head explained on the molecule's code
        dtype = next(net.parameters()).dtype
        with torch.no_grad():
            code = net.pooled(batch.atom_features.to(dtype), batch.pair_features.to(dtype), batch.atom_mask)
        head = torch.nn.Sequential()
        head.add_module("head", net.head)  # named as in the network, so the composite gives the same rules
        e = lrp.explain(head, code, composite, reference=reference, track_absorbed=True)  # reference: a code
        return {"code": e.relevance, "explanation": e}
    dtype = next(net.parameters()).dtype
    mask, pair_mask = net.masks(batch.atom_mask, batch.pair_features)
    with torch.no_grad():
        ca, cp = net.encode_inputs(batch.atom_features.to(dtype), batch.pair_features.to(dtype), mask, pair_mask)
    e = lrp.explain(_FromCodes(net, pair_mask), (ca, cp, batch.atom_mask), composite, reference=reference, track_absorbed=True)
    return {"atoms": e.relevance[0], "pairs": e.relevance[1], "explanation": e}


def code_relevance_per_molecule(net, batches, composite="weave") -> tuple[dict[str, np.ndarray], float]:
    """({'atoms': (M, units), 'pairs': (M, units)} or {'code': (M, units)} for a flat network:
    each code unit's relevance per molecule, summed over its atoms / pairs; standardized output
    units), and the largest conservation error, over the MolBatches `batches` (float64)."""
    import copy

    import gcnn

    net = copy.deepcopy(net).double().eval()  # the caller's network stays as it is
    parts = (("code", ()),) if isinstance(net, gcnn.FlatNet) else (("atoms", (1,)), ("pairs", (1, 2)))
    per_mol = {part: [] for part, _ in parts}
    err = 0.0
    for b in batches:
        r = code_relevance(net, b, composite)
        for part, dims in parts:
            per_mol[part].append((r[part].sum(dim=dims) if dims else r[part]).numpy())
        err = max(err, float(r["explanation"].conservation_error().max()))
    return {k: np.concatenate(v) for k, v in per_mol.items()}, err


def code_unit_table(per_mol: dict[str, np.ndarray], scale: float = 1.0, resamples: int = 200, seed: int = 0) -> list[dict]:
    """Per code unit: mean relevance per molecule and mean |relevance| (x scale, target units),
    its share of the summed |relevance| over all units and molecules, and a 95 % bootstrap
    interval of that share (molecules resampled)."""
    names = [(part, u) for part, v in per_mol.items() for u in range(v.shape[1])]
    signed = np.concatenate(list(per_mol.values()), axis=1)  # (M, all units)
    absall = np.abs(signed)
    n = len(signed)
    total = absall.sum()
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(resamples):
        t = absall[rng.integers(0, n, n)].sum(0)
        boot.append(t / max(t.sum(), 1e-300))
    lo, hi = np.percentile(np.array(boot), [2.5, 97.5], axis=0)
    return [{"unit": f"{part} {u}", "mean": float(signed[:, k].mean()) * scale,
             "mean_abs": float(absall[:, k].mean()) * scale, "share": float(absall[:, k].sum() / max(total, 1e-300)),
             "share_ci": [float(lo[k]), float(hi[k])]} for k, (part, u) in enumerate(names)]


# ------------------------------------------------------------------------------ CLI
def add_parser(sub) -> None:
    d = sub.add_parser("dae", help="the denoising autoencoder over the Molecular Graph: train (no labels), inspect")
    acts = d.add_subparsers(dest="dae_command", required=True, metavar="ACTION")
    t = acts.add_parser("train", help="train a tied-weight denoising autoencoder on QM9 (resumable)")
    from .cli import _dataset_args

    _dataset_args(t)
    t.add_argument("--out", required=True, help="model directory (rerunning the command resumes)")
    t.add_argument("--variant", choices=VARIANTS, default="graph",
                   help="graph: codes per atom and per pair (default; the weave network's input stage); flat: one "
                        "code per molecule from the 5,887-long flattened Molecular Graph (the proposal's design)")
    t.add_argument("--atom-sizes", default="21,32,8", help="atom autoencoder sizes input,hidden,code (default 21,32,8; "
                   "with --atom-context the input is 42, and 42,32,8 the default)")
    t.add_argument("--atom-context", action="store_true", help="graph variant: code each atom with its bonded "
                   "neighbourhood, [its 21 features, their sum over its bonded neighbours] (42 inputs, rebuilt by the "
                   "decoder too)")
    t.add_argument("--pair-sizes", default="13,16,4", help="pair autoencoder sizes (default 13,16,4)")
    t.add_argument("--flat-sizes", default="5887,512,64", help="flat autoencoder sizes (default 5887,512,64)")
    t.add_argument("--masking", type=float, default=0.15, help="masking-noise probability (one-hot groups, flags)")
    t.add_argument("--noise", type=float, default=0.1, help="Gaussian noise on continuous features, in their std")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--train-size", type=int, help="train on N molecules of fold 0's training bins (default all)")
    t.add_argument("--limit-minutes", type=float, help="stop cleanly at an epoch boundary before this many minutes")
    t.set_defaults(func=cmd_train)
    i = acts.add_parser("inspect", help="held-out reconstruction per feature group, what each code unit encodes, a picture")
    _dataset_args(i)
    i.add_argument("model", help="directory written by qmlrp dae train")
    i.add_argument("--n-test", type=int, default=2000, help="molecules of fold 0's test bin to evaluate (default 2000)")
    i.set_defaults(func=cmd_inspect)
    r = acts.add_parser("relevance", help="LRP relevance of each code unit of a network with an autoencoder input stage (weave: per atom and pair; flat: per molecule), with bootstrap CIs of the shares")
    _dataset_args(r)
    r.add_argument("model", help="model directory of qmlrp train --input-stage")
    r.add_argument("--n-test", type=int, default=1000, help="molecules of fold 0's test bin (default 1000)")
    r.add_argument("--rule", default="weave", help="LRP composite (default weave)")
    r.set_defaults(func=cmd_relevance)


def _sizes(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise SystemExit(f"qmlrp dae train: {flag} must be comma-separated integers, got {text!r}") from None


def cmd_train(args) -> int:
    import sys

    from .cli import _deadline, _load

    try:
        atom_sizes = _sizes(args.atom_sizes, "--atom-sizes")
        if args.atom_context and atom_sizes[0] == 21:
            atom_sizes = (42,) + atom_sizes[1:]  # the default sizes, read with the neighbourhood
        cfg = DAEConfig(variant=args.variant, atom_sizes=atom_sizes, atom_context=args.atom_context,
                        pair_sizes=_sizes(args.pair_sizes, "--pair-sizes"), flat_sizes=_sizes(args.flat_sizes, "--flat-sizes"),
                        masking=args.masking, noise=args.noise, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        seed=args.seed, train_size=args.train_size)
        ds = _load(args)
        r = train(ds, args.out, cfg, deadline=_deadline(args), log=lambda m: print(m, file=sys.stderr))
    except ValueError as exc:
        print(f"qmlrp dae train: {exc}", file=sys.stderr)
        return 2
    if not r["finished"]:
        print(f"stopped at epoch {r['epoch']} (time limit); rerun the same command to resume -> {args.out}")
        return 0
    print(f"autoencoder trained: {r['epoch']} epochs, best validation loss at epoch {r['best_epoch']} -> {args.out}; "
          f"next: qmlrp dae inspect {args.out}")
    return 0


def cmd_inspect(args) -> int:
    import sys

    from molgraph import ATOM_FEATURES, PAIR_FEATURES

    from .cli import _load

    try:
        variant, model, cfg = load(args.model)
    except (FileNotFoundError, ValueError) as exc:
        print(f"qmlrp dae inspect: {exc}", file=sys.stderr)
        return 2
    ds = _load(args)
    sp = fold0(ds)
    test = ds.subset(np.sort(np.random.default_rng(0).permutation(sp.test)[: args.n_test]))
    train_ds = ds.subset(sp.train)
    metrics = reconstruction_metrics(model, variant, test, baselines(train_ds))
    out = Path(args.model)
    doc = {"variant": variant, "n_test_molecules": len(test), "test": "fold 0's test bin (seeded 10-fold split)",
           "groups": metrics}
    lines = [f"held-out reconstruction ({len(test)} molecules of fold 0's test bin; baseline: input-free reconstruction)",
             f"{'group':18s} {'kind':20s} {'model':>9s} {'baseline':>9s}"]
    for g, m in metrics.items():
        key = "mae" if m["kind"] == "continuous" else "accuracy"
        lines.append(f"{g:18s} {m['kind']:20s} {m[key]:9.4f} {m['baseline_' + key]:9.4f}  ({key})")
    if variant == "graph":
        from gcnn import read_batch

        a, p = graph_rows(read_batch(train_ds, np.sort(np.random.default_rng(1).permutation(len(train_ds))[:2000])), model)
        atom_names = ATOM_FEATURES if model.context_column is None else context_names()
        units = {"atoms": code_units(model.atoms, a, atom_names), "pairs": code_units(model.pairs, p, PAIR_FEATURES)}
        doc["code_units"] = units
        draw_code_units(units, {"atoms": atom_names, "pairs": PAIR_FEATURES}, out / "code_units.png")
        lines.append("code units (decoder response to +1 sd; largest three):")
        for part, us in units.items():
            for u in us:
                lines.append(f"  {part} {u['unit']}: {', '.join(u['top'])}")
        lines.append(f"picture: {out / 'code_units.png'}")
    else:
        diag = flat_diagnostics(model, test)
        doc["flat_diagnostics"] = diag
        lines += [f"padding: {diag['padding_share']:.1%} of the flat vector's entries",
                  f"renumbering the atoms of a molecule moves its code by "
                  f"{diag['renumbering_code_shift_over_between_molecule_distance']:.2f} of the mean distance between two "
                  f"different molecules' codes; reconstruction loss renumbered / original: "
                  f"{diag['reconstruction_loss_renumbered_over_original']:.2f}"]
    atomic_write_text(out / "metrics.json", json.dumps(doc, indent=2))
    print("\n".join(lines))
    return 0


def cmd_relevance(args) -> int:
    """Per code unit: mean relevance per molecule (summed over atoms or pairs), mean |relevance|,
    and its share of the summed |relevance|; conservation error over the molecules."""
    import sys

    import gcnn
    from gcnn import read_batch

    from .cli import _load

    try:
        pred = gcnn.load(args.model)
    except (FileNotFoundError, ValueError) as exc:
        print(f"qmlrp dae relevance: {exc}", file=sys.stderr)
        return 2
    wrapped = pred.models[0]
    net = wrapped.model
    if net.input_stage is None:
        print(f"qmlrp dae relevance: {args.model} has no autoencoder input stage (train it with --input-stage)", file=sys.stderr)
        return 2
    ds = _load(args)
    test = ds.subset(np.sort(np.random.default_rng(0).permutation(fold0(ds).test)[: args.n_test]))
    per_mol, err = code_relevance_per_molecule(net, (read_batch(test, np.arange(s, min(s + 128, len(test))))
                                                     for s in range(0, len(test), 128)), args.rule)
    n = len(test)
    scale = float(wrapped.std[0])
    unit = pred.units[pred.targets[0]]
    rows = code_unit_table(per_mol, scale)
    print(f"code-unit relevance of {args.model} ({pred.targets[0]}, composite {args.rule}, {n} molecules of fold 0's "
          f"test bin; in {unit} after multiplying by the target std {scale:.4g}; max conservation error "
          f"{err * scale:.2g} {unit})")
    print(f"{'unit':10s} {'mean R':>10s} {'mean |R|':>10s} {'share':>7s}  95% CI")
    for r in rows:
        print(f"{r['unit']:10s} {r['mean']:10.3f} {r['mean_abs']:10.3f} {r['share']:7.1%}  "
              f"{r['share_ci'][0]:.1%}-{r['share_ci'][1]:.1%}")
    atomic_write_text(Path(args.model) / "code_relevance.json", json.dumps({"composite": args.rule, "n_molecules": n,
                      "unit": unit, "units": rows, "max_conservation_error": err * scale}, indent=2))
    return 0
