"""The relevance pass: one function that explains molecules with LRP for every command
(explain, stability, quickstart), so that all of them apply the same composite and rules."""
from __future__ import annotations

import sys
from pathlib import Path

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .inputs import Inputs
from .models import LoadedModel
from .store import N_ATOM_FEATURES, N_PAIR_FEATURES, RelevanceSet, offsets_of


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


@dataclass
class BatchRelevance:
    """One batch of the relevance pass (standardized output units).

    relevance: (atom (B, N, 21), pair (B, N, N, 13), None for the mask); output: (B, outputs) f(x);
    explained: (B,) the distributed quantity, w . f(x) (no reference) or w . (f(x) - f(ref));
    absorbed: (B,) what biases and stabilizers keep (explained - input relevance), by module in
    absorbed_by; atom_contribution: (B, N) each atom's relevance at the pooling (the atoms'
    histograms summed), which sums to explained minus what the head absorbs (nothing against a
    reference); pooled: (B, D) the pooled vectors."""

    relevance: tuple
    output: object
    explained: object
    absorbed: object
    absorbed_by: dict
    atom_contribution: object
    pooled: object

    def total(self):
        return sum(r.reshape(r.shape[0], -1).sum(1) for r in self.relevance if r is not None)

    def conservation_error(self):
        """(B,) |sum(relevance) + absorbed - explained|."""
        return (self.total() + self.absorbed - self.explained).abs()


def _pooled_module(net):
    import torch.nn as nn

    class Pooled(nn.Module):  # the network up to its pooling, as a module the composite can walk
        def __init__(self, inner):
            super().__init__()
            self.net = inner

        def forward(self, atoms, pairs, atom_mask):
            return self.net.pooled(atoms, pairs, atom_mask)

    return Pooled(net).eval()


def _weights(target, b, graphs, out):
    """(B, outputs) weights of the explained combination of outputs."""
    import torch

    if callable(target):
        return torch.as_tensor(target(b, graphs, out), dtype=out.dtype)
    w = torch.zeros_like(out)
    if target is None:
        return w + 1
    w[:, int(target)] = 1
    return w


def relevance_batches(net, graph: Callable[[int], object], n_atoms: np.ndarray, rule: str,
                      histogram_rule: str | None = None, target=None, batch_size: int = 128, progress: bool = False,
                      reference=None):
    """The relevance pass of every command: LRP of molecules graph(0..M-1) with the composite
    `composite_for(rule, histogram_rule)`, in batches of similar size (sorted by atom count, so a
    batch pads little). Yields (indices, graphs, BatchRelevance) per batch; relevance in the
    network's own (standardized) output units, absorbed parts tracked module by module.

    target: None (the output itself), an output column, or a function (batch, graphs, output) ->
    (B, outputs) weights of the explained combination w . f. reference: None explains w . f(x)
    with the composite all the way (for a standardized output: the distance from the training
    mean); a pooled reference vector (`reference_pooled`) explains w . (f(x) - f(ref)): the head
    (the layers above the sum over atoms) by the exact difference rule
    (`lrp.difference_relevance`, nothing absorbed), the layers below by the composite."""
    import lrp
    import torch

    from molgraph import collate

    n = np.asarray(n_atoms, dtype=np.int64)
    order = np.argsort(n, kind="stable")
    chunks = [order[i:i + batch_size] for i in range(0, len(n), batch_size)]
    composite = composite_for(rule, histogram_rule)
    if getattr(net, "xh", None) is not None:  # outputs from two branches: the composite through the whole network
        if reference is not None:
            raise ValueError("a network with a per-hydrogen head (xh_head) is explained against the training mean "
                             "only (--reference mean): its X-H outputs are not a function of the pooled vector, "
                             "which the other references are measured at")
        yield from _whole_network_batches(net, graph, chunks, composite, target, progress)
        return
    below = _pooled_module(net)
    pools = hasattr(net, "mask_histogram")  # a weave network sums atoms' histograms; a flat one has no pooling
    for idx in _tqdm(chunks, progress, desc="explain", unit="batch"):
        graphs = [graph(int(i)) for i in idx]
        b = collate([g.with_targets({}) for g in graphs])
        x = (b.atom_features, b.pair_features, b.atom_mask)
        seen = {}
        # the hook also keeps the forward on the module-by-module path (the fused readout is skipped
        # when a hook watches it), so g is bit for bit the pooled vector the LRP pass below sees
        hook = (net.mask_histogram.register_forward_hook(lambda mod, inp, o: seen.__setitem__("h", o.detach()))
                if pools else None)
        try:
            with torch.no_grad():
                g = net.pooled(*x)
                out = net.head(g)
            w = _weights(target, b, graphs, out)
            if reference is None:
                top = lrp.explain(net.head, g, composite, target=out * w, track_absorbed=True)
                r_g, explained = top.relevance, top.explained
                absorbed_by = {f"head.{k}": v for k, v in top.absorbed_by.items()}
            else:
                g0 = torch.as_tensor(reference, dtype=g.dtype).reshape(1, -1)
                r_g = lrp.difference_relevance(net.head, g, g0, w)
                with torch.no_grad():
                    explained = (w * (out - net.head(g0))).sum(1)
                absorbed_by = {"head": explained - r_g.sum(1)}  # round-off only: the difference rule is exact
            e = lrp.explain(below, x, composite, target=r_g, track_absorbed=True)
        finally:
            if hook is not None:
                hook.remove()
        absorbed_by.update({k.removeprefix("net."): v for k, v in e.absorbed_by.items()})
        if pools:
            hist = seen["h"]  # (B, N, R, n): each atom's masked histogram; pooled = its sum over atoms
            mult = torch.where(g != 0, r_g / torch.where(g != 0, g, torch.ones_like(g)), torch.zeros_like(g))
            contribution = (hist * mult.reshape(len(idx), 1, -1, net.config.n_gaussians)).sum((2, 3))
        else:  # no pooling over atoms: an atom's contribution is its input relevance (own + half its pairs)
            from molgraph.relevance import per_atom

            contribution = per_atom(e.relevance[0], e.relevance[1])
        absorbed = sum(absorbed_by.values()) if absorbed_by else torch.zeros_like(explained)
        yield idx, graphs, BatchRelevance(tuple(e.relevance), out, explained, absorbed, absorbed_by, contribution, g)


def _whole_network_batches(net, graph, chunks, composite, target, progress):
    """The relevance pass of a network whose outputs do not all come from the pooled vector (a
    per-hydrogen head: `gcnn.WeaveNet` with xh_head): one composite pass from the outputs to the
    inputs. The selection and sorting of the hydrogens' values are not modules: they pass each
    value's relevance to that hydrogen's head unchanged. An atom's contribution is its own input
    relevance plus half of its pairs' (`molgraph.relevance.per_atom`)."""
    import lrp
    import torch

    from molgraph import collate
    from molgraph.relevance import per_atom

    for idx in _tqdm(chunks, progress, desc="explain", unit="batch"):
        graphs = [graph(int(i)) for i in idx]
        b = collate([g.with_targets({}) for g in graphs])
        x = (b.atom_features, b.pair_features, b.atom_mask)
        with torch.no_grad():
            out = net(*x)
            g = net.pooled(*x)
        w = _weights(target, b, graphs, out)
        e = lrp.explain(net, x, composite, target=out * w, track_absorbed=True)
        absorbed_by = dict(e.absorbed_by)
        absorbed = sum(absorbed_by.values()) if absorbed_by else torch.zeros_like(e.explained)
        yield idx, graphs, BatchRelevance(tuple(e.relevance), out, e.explained, absorbed, absorbed_by,
                                          per_atom(e.relevance[0], e.relevance[1]), g)


REFERENCES = ("mean", "empty")  # or the path of a molecule file


def reference_output(net, reference: str | object = "mean"):
    """The network's standardized output (1, outputs) for a reference, as a float64 tensor:
    'mean', the training mean (0 in the standardized space, by construction); 'empty', the
    molecule with no atoms (an all-padding input: the network's constant part, so relevance adds
    up to the property itself above it); or a MolGraph (a reference molecule)."""
    import torch

    from molgraph import collate

    n_out = net.config.n_outputs
    if isinstance(reference, str) and reference == "mean":
        return torch.zeros(1, n_out, dtype=torch.float64)
    if isinstance(reference, str) and reference == "empty":
        a, p, m = torch.zeros(1, 1, net.config.n_atom_features), torch.zeros(1, 1, 1, net.config.n_pair_features), \
            torch.zeros(1, 1, dtype=torch.bool)
    elif hasattr(reference, "atom_features"):
        b = collate([reference.with_targets({})])
        a, p, m = b.atom_features, b.pair_features, b.atom_mask
    else:
        raise ValueError(f"unknown reference {reference!r}; valid: mean, empty, or a molecule file")
    with torch.no_grad():
        return net(a, p, m).double()


def reference_graph(spec: str):
    """A reference given on the command line: 'mean', 'empty', or a file with one molecule
    (featurized; its name is the reference's label)."""
    if spec in REFERENCES:
        return spec
    from molgraph import MolecularGraphFeaturizer, MoleculeError, iter_molecules

    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"--reference {spec}: not 'mean' or 'empty', and no such molecule file")
    items = list(iter_molecules(path))
    if len(items) != 1:
        raise ValueError(f"--reference {spec}: a reference file holds exactly one molecule, this one has {len(items)}")
    if isinstance(items[0], MoleculeError):
        raise ValueError(f"--reference {spec}: {items[0]}")
    return MolecularGraphFeaturizer()(items[0])


def reference_pooled(net, reference: str | object = "mean"):
    """The pooled vector (1, D) of a reference, for `relevance_batches(reference=...)`: None for
    'mean' (the standardized output is already measured from the training mean), zeros for
    'empty' (no atoms: nothing to sum), the molecule's own pooled vector for a MolGraph."""
    import torch

    from molgraph import collate

    if isinstance(reference, str) and reference == "mean":
        return None
    pools = hasattr(net, "mask_histogram")
    if isinstance(reference, str) and reference == "empty":
        if pools:
            return torch.zeros(1, net.config.readout_hidden * net.config.n_gaussians)
        with torch.no_grad():  # a flat network: the vector its head reads for all-empty slots
            return net.pooled(torch.zeros(1, 1, net.config.n_atom_features),
                              torch.zeros(1, 1, 1, net.config.n_pair_features), torch.zeros(1, 1, dtype=torch.bool))
    if hasattr(reference, "atom_features"):
        bt = collate([reference.with_targets({})])
        # the module path, as in the pass
        hook = net.mask_histogram.register_forward_hook(lambda *_: None) if pools else None
        try:
            with torch.no_grad():
                return net.pooled(bt.atom_features, bt.pair_features, bt.atom_mask)
        finally:
            if hook is not None:
                hook.remove()
    raise ValueError(f"unknown reference {reference!r}; valid: mean, empty, or a molecule file")


def explain_inputs(lm: LoadedModel, inputs: Inputs, rule: str, batch_size: int = 128,
                   progress: bool = True, histogram_rule: str | None = None, reference="mean") -> RelevanceSet:
    """LRP of every molecule, batched by size (molecules sorted by atom count, so a batch pads
    little); relevance in target units. `histogram_rule` overrides gcnn's GaussianHistogram rule.
    `reference` ('mean', 'empty' or a MolGraph, see `reference_output`): what the explained
    quantity is measured from; explained = prediction - the model's prediction for the reference."""

    from gcnn.lrp_rules import DEFAULT_HISTOGRAM_RULE
    from molgraph.relevance import group_sums, per_atom

    n = np.asarray(inputs.n_atoms, dtype=np.int64)
    m_count = len(n)
    target = None if lm.net.config.n_outputs == 1 else lm.output
    scale = lm.std  # relevance of the standardized output -> target units
    ref_out = reference_output(lm.net, reference)  # f(ref), standardized
    ref_pooled = reference_pooled(lm.net, reference)
    selected: dict[int, np.ndarray] = {}
    n_h_of: dict[int, int] = {}
    if lm.is_vector:
        target, scale = _vector_weights(lm), 1.0  # the weights carry std_k: relevance in target units already
    off, poff = offsets_of(n)
    atom_rel = np.zeros((off[-1], N_ATOM_FEATURES), np.float32)
    pair_rel = np.zeros((poff[-1], N_PAIR_FEATURES), np.float32)
    pa = np.zeros(off[-1], np.float32)
    contribution = np.zeros(off[-1], np.float32)
    groups = np.zeros((m_count, 12))
    pred, explained, absorbed = np.zeros(m_count), np.zeros(m_count), np.zeros(m_count)
    elements = np.empty(off[-1], dtype="<U2")
    from gcnn.domain import Domain
    from molgraph.features import ATOM_FEATURES, PAIR_FEATURES

    domain = Domain.load(lm.model_dir)  # None for models from before domains were recorded
    domain_score = np.full(m_count, np.nan)
    outside: dict[str, list[str]] = {}
    absorbed_sum: dict[str, float] = {}
    absorbed_abs: dict[str, float] = {}
    for idx, graphs, e in relevance_batches(lm.net, inputs.graph, n, rule, histogram_rule, target, batch_size,
                                            progress, reference=ref_pooled):
        ra = e.relevance[0].double() * scale  # (B, N, 21)
        rp = e.relevance[1].double() * scale  # (B, N, N, 13)
        gs = group_sums(ra, rp).numpy()
        pat = per_atom(ra, rp).numpy()
        out = e.output[:, lm.output].double().numpy()  # f(x), standardized
        ra32, rp32 = ra.float().numpy(), rp.float().numpy()
        ct = (e.atom_contribution.double() * scale).numpy()
        for j, i in enumerate(idx):
            k = int(n[i])
            atom_rel[off[i]:off[i + 1]] = ra32[j, :k]
            pair_rel[poff[i]:poff[i + 1]] = rp32[j, :k, :k].reshape(k * k, N_PAIR_FEATURES)
            pa[off[i]:off[i + 1]] = pat[j, :k]
            contribution[off[i]:off[i + 1]] = ct[j, :k]
            elements[off[i]:off[i + 1]] = graphs[j].elements
        groups[idx] = gs
        if domain is not None:
            for j, v in enumerate(domain.check(graphs, e.pooled.double().numpy(), ATOM_FEATURES, PAIR_FEATURES)):
                domain_score[idx[j]] = v.score
                if not v.inside:
                    outside[str(inputs.ids[idx[j]])] = v.reasons
        if lm.is_vector:
            for j, i in enumerate(idx):
                selected[int(i)] = target.last[j]
                n_h_of[int(i)] = sum(e == "H" for e in graphs[j].elements)
            full = e.output.double().numpy() * lm.stds + lm.means  # (B, outputs), target units
            for j, i in enumerate(idx):
                pred[i] = float(full[j][selected[int(i)]].sum())
        else:
            pred[idx] = out * lm.std + lm.mean
        explained[idx] = e.explained.double().numpy() * scale
        absorbed[idx] = e.absorbed.double().numpy() * scale
        for name, v in e.absorbed_by.items():  # summed over molecules, module by module
            absorbed_sum[name] = absorbed_sum.get(name, 0.0) + float(v.double().sum()) * scale
            absorbed_abs[name] = absorbed_abs.get(name, 0.0) + float(v.double().abs().sum()) * scale
    ref_label = reference if isinstance(reference, str) else f"molecule {getattr(reference, 'name', '') or '?'}"
    ref_value = (ref_out.numpy()[0] * (lm.stds if lm.is_vector else lm.std) +
                 (lm.means if lm.is_vector else lm.mean))
    meta = {"model_dir": str(lm.model_dir), "target": lm.target, "unit": lm.unit, "rule": rule,
            "histogram_rule": histogram_rule or DEFAULT_HISTOGRAM_RULE,
            "training_mean": lm.mean, "training_std": lm.std,
            "explained": "prediction - training mean, in target units (LRP of the standardized output x std)",
            **({"output": lm.selection.text, "output_description": lm.selection.describe(lm.target, lm.unit),
                "training_mean": None, "training_std": None,
                "explained": "sum over the selected outputs of (prediction - training mean of that output), "
                             "target units (LRP started from std_k x standardized output k on the selected k)"}
               if lm.is_vector else {}),
            "per_atom": "own atom features + half of each pair (i, j) and (j, i)",
            "atom_contribution": ("each atom's relevance at the pooling (its histogram's share of the summed "
                                  "histograms the head reads), before the rules below the pooling"
                                  if hasattr(lm.net, "mask_histogram") else
                                  "a flat network has no pooling over atoms: each atom's input relevance (own "
                                  "features + half of its pairs); the empty slots' share is absorbed_by['padding']")}
    # what each module keeps (biases, stabilizers; a flat network's empty slots under 'padding'), per
    # molecule, against the mean |explained|: the part of the prediction the input features do not carry
    denom = max(float(np.abs(explained).sum()), 1e-300)
    meta["absorbed_by"] = {k: {"mean": absorbed_sum[k] / max(m_count, 1), "mean_abs": absorbed_abs[k] / max(m_count, 1),
                               "abs_over_abs_explained": absorbed_abs[k] / denom}
                           for k in sorted(absorbed_abs, key=lambda k: -absorbed_abs[k])}
    meta["domain"] = None if domain is None else {
        "threshold": domain.threshold, "n_outside": len(outside), "n_molecules": m_count,
        "score_quantiles": {q: float(np.nanpercentile(domain_score, q)) for q in (50, 90, 99)} if m_count else {},
        "outside": outside}
    if not (isinstance(reference, str) and reference == "mean"):
        meta.update({"reference": ref_label,
                     "reference_prediction": ref_value.tolist() if lm.is_vector else float(ref_value[lm.output]),
                     "explained": f"prediction - the model's prediction for the reference ({ref_label}), "
                                  f"target units" + (" (summed over the selected outputs)" if lm.is_vector else "")})
    targets = np.asarray(inputs.targets, dtype=np.float64)
    if lm.is_vector and inputs.vector_target is not None:  # the true values on the selected outputs
        targets = np.full(m_count, np.nan)
        for i, sel in selected.items():
            true = np.sort(np.asarray(inputs.vector_target(i), dtype=np.float64))
            if len(true) > lm.layout.length:
                continue
            vals = np.zeros((1, lm.layout.length))
            vals[0, : len(true)] = true
            laid, has = lm.layout.encode_np(vals, np.arange(lm.layout.length)[None] < len(true), np.array([n_h_of[i]]))
            targets[i] = float(laid[0][sel].sum()) if has[0][sel].all() else np.nan
    return RelevanceSet(np.asarray(inputs.ids, dtype=str), n, off, poff, atom_rel, pair_rel, pa, groups, pred,
                        targets, explained, absorbed, elements, meta, contribution)


def _vector_weights(lm):
    """Weights of a vector model's explained outputs: std_k on the selected outputs k, 0 elsewhere
    (so relevance is in target units and sums to the selection's prediction - reference); the
    selection is made on the prediction f(x). The last batch's (B, outputs) selection is left in
    `weights.last`."""
    from molgraph.targets import n_harmonic_modes

    def weights(b, graphs, out):
        pred = out.double().numpy() * lm.stds + lm.means
        n_values = np.array([n_harmonic_modes(g.positions.numpy()) for g in graphs])
        n_h = np.array([sum(e == "H" for e in g.elements) for g in graphs])
        mask = lm.selection.mask(pred, lm.layout.own_np(n_values, n_h))
        weights.last = mask  # the batch's selection, read by explain_inputs
        return (lm.stds * mask).astype(np.float32)

    return weights


def _tqdm(it, progress: bool, **kw):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, file=sys.stderr, disable=None, **kw)  # None: off when stderr is not a terminal


