"""The relevance pass: one function that explains molecules with LRP for every command
(explain, stability, quickstart), so that all of them apply the same composite and rules."""
from __future__ import annotations

import sys
from pathlib import Path

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


def relevance_batches(net, graph: Callable[[int], object], n_atoms: np.ndarray, rule: str,
                      histogram_rule: str | None = None, target=None, batch_size: int = 128, progress: bool = False):
    """The relevance pass of every command: LRP of molecules graph(0..M-1) with the composite
    `composite_for(rule, histogram_rule)`, in batches of similar size (sorted by atom count, so a
    batch pads little). Yields (indices, graphs, lrp.Explanation) per batch; relevance in the
    network's own (standardized) output units, absorbed parts tracked module by module. `target`
    is lrp.explain's (None, an output column, a start relevance), or a function (batch, graphs) ->
    start relevance (B, outputs) computed per batch."""
    import lrp
    from molgraph import collate

    n = np.asarray(n_atoms, dtype=np.int64)
    order = np.argsort(n, kind="stable")
    chunks = [order[i:i + batch_size] for i in range(0, len(n), batch_size)]
    composite = composite_for(rule, histogram_rule)
    for idx in _tqdm(chunks, progress, desc="explain", unit="batch"):
        graphs = [graph(int(i)) for i in idx]
        b = collate([g.with_targets({}) for g in graphs])
        t = target(b, graphs) if callable(target) else target
        e = lrp.explain(net, (b.atom_features, b.pair_features, b.atom_mask), composite, target=t,
                        track_absorbed=True)
        yield idx, graphs, e


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


def output_layer(net):
    """The network's output layer: the last nn.Linear whose out_features is the number of outputs
    (WeaveNet: head[-1], nothing after it)."""
    import torch.nn as nn

    n_out = net.config.n_outputs
    last = [m for m in net.modules() if isinstance(m, nn.Linear) and m.out_features == n_out]
    if not last or last[-1].bias is None:
        raise ValueError(f"{type(net).__name__}: no output nn.Linear with a bias to hold a reference")
    return last[-1]


def reference_network(net, reference: str | object = "mean"):
    """(network to explain, reference output (1, outputs) float64). For 'mean' the network itself
    (its standardized output is already measured from the training mean). For any other
    reference, a copy whose output layer's bias is lowered by the reference's output, so that it
    computes g(x) = f(x) - f(ref) and g(ref) = 0: LRP of g starts from g(x) itself, the same start
    as for the mean. (Starting the unchanged network from f(x) - f(ref) instead would scale every
    relevance by (f(x) - f(ref)) / f(x), which diverges where f(x) crosses 0, i.e. for molecules
    near the training mean.) Everything before the output layer is unchanged."""
    import copy

    import torch

    ref_out = reference_output(net, reference)
    if isinstance(reference, str) and reference == "mean":
        return net, ref_out
    shifted = copy.deepcopy(net)
    layer = output_layer(shifted)
    with torch.no_grad():
        layer.bias -= ref_out[0].to(layer.bias.dtype)
    return shifted.eval(), ref_out


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
    net, ref_out = reference_network(lm.net, reference)  # net computes f(x) - f(ref) (standardized)
    shift = ref_out.numpy()[0]
    selected: dict[int, np.ndarray] = {}
    if lm.is_vector:
        target, scale = _vector_start(lm, net, shift), 1.0  # the start relevance is in target units already
    off, poff = offsets_of(n)
    atom_rel = np.zeros((off[-1], N_ATOM_FEATURES), np.float32)
    pair_rel = np.zeros((poff[-1], N_PAIR_FEATURES), np.float32)
    pa = np.zeros(off[-1], np.float32)
    groups = np.zeros((m_count, 12))
    pred, explained, absorbed = np.zeros(m_count), np.zeros(m_count), np.zeros(m_count)
    elements = np.empty(off[-1], dtype="<U2")
    for idx, graphs, e in relevance_batches(net, inputs.graph, n, rule, histogram_rule, target, batch_size,
                                            progress):
        ra = e.relevance[0].double() * scale  # (B, N, 21)
        rp = e.relevance[1].double() * scale  # (B, N, N, 13)
        gs = group_sums(ra, rp).numpy()
        pat = per_atom(ra, rp).numpy()
        out = e.output[:, lm.output].double().numpy() + shift[lm.output]  # f(x), standardized
        ra32, rp32 = ra.float().numpy(), rp.float().numpy()
        for j, i in enumerate(idx):
            k = int(n[i])
            atom_rel[off[i]:off[i + 1]] = ra32[j, :k]
            pair_rel[poff[i]:poff[i + 1]] = rp32[j, :k, :k].reshape(k * k, N_PAIR_FEATURES)
            pa[off[i]:off[i + 1]] = pat[j, :k]
            elements[off[i]:off[i + 1]] = graphs[j].elements
        groups[idx] = gs
        if lm.is_vector:
            for j, i in enumerate(idx):
                selected[int(i)] = target.last[j]
            full = (e.output.double().numpy() + shift) * lm.stds + lm.means  # (B, outputs), target units
            for j, i in enumerate(idx):
                pred[i] = float(full[j][selected[int(i)]].sum())
        else:
            pred[idx] = out * lm.std + lm.mean
        explained[idx] = e.explained.double().numpy() * scale
        absorbed[idx] = e.absorbed.double().numpy() * scale
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
            "per_atom": "own atom features + half of each pair (i, j) and (j, i)"}
    if not (isinstance(reference, str) and reference == "mean"):
        meta.update({"reference": ref_label,
                     "reference_prediction": ref_value.tolist() if lm.is_vector else float(ref_value[lm.output]),
                     "explained": f"prediction - the model's prediction for the reference ({ref_label}), "
                                  f"target units" + (" (summed over the selected outputs)" if lm.is_vector else "")})
    targets = np.asarray(inputs.targets, dtype=np.float64)
    if lm.is_vector and inputs.vector_target is not None:  # the true values at the selected positions
        targets = np.full(m_count, np.nan)
        for i, sel in selected.items():
            true = inputs.vector_target(i)
            k = np.flatnonzero(sel)
            targets[i] = float(true[k].sum()) if (k < len(true)).all() else np.nan
    return RelevanceSet(np.asarray(inputs.ids, dtype=str), n, off, poff, atom_rel, pair_rel, pa, groups, pred,
                        targets, explained, absorbed, elements, meta)


def _vector_start(lm, net, shift: np.ndarray):
    """Start relevance of a vector model: std_k x standardized output k of `net` (which computes
    f(x) - f(ref), `shift` = f(ref) standardized) on the selected outputs, so relevance is in
    target units and sums to the selection's prediction - reference; the selection is made on the
    prediction f(x). The last batch's (B, outputs) selection is left in `start.last`."""
    import torch

    from molgraph.targets import n_harmonic_modes

    def start(b, graphs):
        with torch.no_grad():
            out = net(b.atom_features, b.pair_features, b.atom_mask).double()
        pred = (out.numpy() + shift) * lm.stds + lm.means
        n_values = np.array([n_harmonic_modes(g.positions.numpy()) for g in graphs])
        mask = lm.selection.mask(pred, n_values)
        start.last = mask  # the batch's selection, read by explain_inputs
        r0 = out * torch.from_numpy(lm.stds) * torch.from_numpy(mask.astype(np.float64))
        return r0.float()

    return start


def _tqdm(it, progress: bool, **kw):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, file=sys.stderr, disable=None, **kw)  # None: off when stderr is not a terminal


