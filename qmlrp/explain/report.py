"""`report.html` of `qmlrp explain`: one page for a chemist, every link relative to the page."""
from __future__ import annotations

import html
from pathlib import Path

from molgraph.storage import atomic_write_text

_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4;color:#222}
td,th{padding:2px 9px;text-align:right;border-bottom:1px solid #eee}td:first-child,th:first-child{text-align:left}
table{border-collapse:collapse;margin:0.5em 0}.gallery{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;width:340px}figure img{width:340px;border:1px solid #ddd}figcaption{font-size:0.85em}
.note{color:#555;font-size:0.92em}code{background:#f4f4f4;padding:0 3px}"""

_GROUP_WORDS = {
    "atom_type": "element (H, C, N, O, F)", "chirality": "R/S stereocentre", "formal_charge": "formal charge",
    "partial_charge": "Gasteiger partial charge", "ring_sizes": "rings of size 3-8 the atom is in",
    "hybridization": "sp / sp2 / sp3", "hydrogen_bonding": "H-bond donor / acceptor", "aromaticity": "aromatic atom",
    "bond_type": "bond order of the pair", "graph_distance": "bonds between the two atoms (<= 1..7)",
    "same_ring": "both atoms in one ring", "spatial_distance": "interatomic distance",
}


def _e(x) -> str:
    return html.escape(str(x))


def _num(v, digits: int = 4) -> str:
    if v is None:
        return ""
    return f"{v:.{digits}g}"


def _ci(c, digits: int = 3) -> str:
    return f"[{c[0]:.{digits}g}, {c[1]:.{digits}g}]"


def write_report(out: Path, s: dict) -> Path:
    """Write out/report.html from the summary dict `qmlrp explain` builds."""
    unit = s["unit"]
    acc = s.get("accuracy")
    acc_txt = (f"On these {acc['n']} molecules the model's mean absolute error is <b>{acc['mae']:.4g} {_e(unit)}</b> "
               f"(RMSE {acc['rmse']:.4g}; always predicting the training mean would give {acc['mae_of_training_mean']:.4g})."
               if acc else "The molecules have no reference values, so no accuracy is reported.")
    ref = s["reference"]
    can = s.get("cancellation") or {}
    cq = can.get("per_molecule_quantiles") or {}
    cancel_txt = (f" Cancellation (sum of |group relevance| over |their sum|, 1 = none): median {cq['50']:.3g}, "
                  f"90th percentile {cq['90']:.3g} over the molecules, {can['pooled']:.3g} pooled; shares of "
                  f"|relevance| are dominated by cancelling terms where this is large." if cq else "")
    dom = s.get("domain")
    if dom is None:
        domain_txt = " The model has no recorded applicability domain (<code>qmlrp domain MODEL</code> adds one)."
    else:
        first = list(dom["outside"].items())[:3]
        domain_txt = (f" Applicability domain: {dom['n_outside']} of {dom['n_molecules']} molecules lie outside it"
                      + (" (e.g. " + "; ".join(f"{_e(k)}: {_e(v[0])}" for k, v in first) + ")" if first else "")
                      + "; their relevance explains an extrapolation.")
    cancel_txt += domain_txt
    hs = (s.get("hydrogen_share") or {}).get("atoms")
    if hs:
        cancel_txt += (f" Hydrogens hold {100 * hs['share']:.1f} % {_ci([100 * c for c in hs['share_ci95']], 3)} of the "
                       f"absolute per-atom relevance and are {100 * hs['fraction']:.1f} % of the atoms (mean over "
                       f"molecules).")
    pad = (s.get("absorbed_by") or {}).get("padding")
    if pad:
        cancel_txt += (f" This is a flat network: its empty atom and pair slots (the padding of the flattened graph) "
                       f"carry {pad['mean']:.4g} {_e(unit)} per molecule on average (mean |.| {pad['mean_abs']:.4g}, "
                       f"{100 * pad['abs_over_abs_explained']:.1f} % of the mean |explained|), booked as absorbed by "
                       f"'padding': the network reads the molecule's size from the empty slots.")
    if ref.get("kind", "mean") != "mean":
        what = ("the molecule with no atoms (the network's constant part)" if ref["kind"] == "empty"
                else f"the reference {_e(ref.get('label', ''))}")
        pred = ref.get("prediction")
        value = f" ({pred:.4g} {_e(unit)})" if isinstance(pred, (int, float)) else ""
        baseline_txt = f"Explained: how far each prediction lies above the model's prediction for {what}{value}"
    elif ref.get("training_mean") is None:  # a vector model explained through an output selection
        baseline_txt = (f"Explained: {_e(s.get('output_description', ''))} (output <code>{_e(s.get('output', ''))}</code>), "
                        f"as its distance from the training means of the same outputs")
    else:
        baseline_txt = (f"The network predicts how far a\nmolecule's value lies from the training mean "
                        f"({ref['training_mean']:.4g} {_e(unit)})")
    rows = []
    for name, g in s["groups"].items():
        r, z = g["raw"], g["normalized"]
        rows.append(
            f"<tr><td>{_e(name)}</td><td>{g['kind']}</td><td style='text-align:left'>{_e(_GROUP_WORDS.get(name, ''))}</td>"
            f"<td>{_num(r['mean'])}</td><td>{_ci(r['mean_ci'])}</td><td>{_num(r['mean_abs'])}</td>"
            f"<td>{100 * r['share']:.1f} %</td><td>{_ci([100 * c for c in r['share_ci']])} %</td>"
            f"<td>{100 * r['signed_share']:+.1f} %</td>"
            f"<td>{100 * r['molecule_share']:.1f} %</td><td>{_ci([100 * c for c in r['molecule_share_ci']])} %</td>"
            f"<td>{100 * z['share']:.1f} %</td><td>{_ci([100 * c for c in z['share_ci']])} %</td></tr>")
    ci = int(round(100 * s["bootstrap"]["ci"]))
    gallery = []
    for h in s.get("heatmaps", []):
        tgt = f", target {h['target']:.4g}" if h.get("target") is not None else ""
        gallery.append(
            f"<figure><a href='{_e(h['svg'])}'><img src='{_e(h['png'])}' alt='relevance heatmap of {_e(h['id'])}'></a>"
            f"<figcaption><b>{_e(h['why'])}</b><br>{_e(h['id'])} <code>{_e(h['smiles'])}</code><br>"
            f"prediction {h['prediction']:.4g}{tgt} {_e(unit)}; {h['n_atoms']} atoms; colour scale "
            f"&plusmn;{h['colour_scale']:.3g} {_e(unit)}</figcaption></figure>")
    gallery_html = "<div class='gallery'>" + "".join(gallery) + "</div>" if gallery else "<p>No heatmaps were requested.</p>"
    f = s.get("faithfulness")
    if f:
        frows = []
        for kind in ("atoms", "features"):
            for mode in ("signed", "absolute"):
                a = f["aopc"][kind][mode]
                ratio = a.get("lrp_over_random")
                frows.append(
                    f"<tr><td>{kind}</td><td>{mode}</td><td>{a['lrp']:.4g}</td><td>{a['gradient_x_input']:.4g}</td>"
                    f"<td>{a.get('random_mean', float('nan')):.4g}</td>"
                    f"<td>{'' if ratio is None else f'{ratio:.2f}'}</td>"
                    f"<td>{100 * a.get('fraction_of_molecules_lrp_above_random', float('nan')):.0f} %</td></tr>")
        faith_html = f"""<p>{f['n_molecules']} molecules (a seeded sample). Parts of each molecule are removed in the order an
explanation ranks them, and the prediction change is tracked: atoms are masked out with all their pairs; features are set
to 0, the value LRP and gradient x input decompose against (pair features in both orders). <i>Signed</i>: most positive
relevance first, curve = f(x) - f(perturbed); <i>absolute</i>: largest |relevance| first, curve = |f(x) - f(perturbed)|.
AOPC = mean of the curve over 0, 10, ..., 100 % removed, in {_e(unit)}; the random baseline is the mean of
{f['random_orders']} seeded orders. A ratio above 1 means the explanation finds the parts that matter faster than chance.
With every atom removed the model predicts {f['empty_output']:.4g} {_e(unit)} (the empty molecule).</p>
<table><tr><th>parts</th><th>mode</th><th>AOPC LRP</th><th>AOPC gradient x input</th><th>AOPC random</th>
<th>LRP / random</th><th>molecules where LRP beats random</th></tr>{''.join(frows)}</table>
<p><img src="{_e(f['figure'])}" alt="perturbation curves" width="900"></p>
<p class='note'>Numbers and curves: <a href="{_e(f['file'])}">{_e(f['file'])}</a>.</p>"""
    else:
        faith_html = "<p>The faithfulness check was not run (<code>--faithfulness 0</code>).</p>"
    fails = s.get("failures", [])
    fail_html = "".join(
        f"<li>{_e(x['source'])}{'' if x.get('molecule') is None else ', molecule ' + _e(x['molecule'])}: {_e(x['error'])}</li>"
        for x in fails) or "<li>none</li>"
    amp = s.get("amplification")
    amp_html = ""
    if amp:
        q = amp["quantiles"]
        worst = ", ".join(f"{_e(w['id'])} ({w['sum_abs_relevance']:.3g})" for w in amp["largest"][:5])
        amp_html = (f"<p class='note'>Size of the explanations: a molecule's total |relevance| is {q['50']:.3g} training "
                    f"standard deviations of {_e(s['target'])} in the median molecule, {q['99']:.3g} at the 99th percentile and "
                    f"{q['100']:.3g} at most; {amp['n_above_100']} molecule(s) exceed 100. Large values are large relevances "
                    f"of opposite sign that cancel (and a large absorbed part); they dominate the pooled shares, not the "
                    f"per-molecule shares. Largest ({_e(unit)}): {worst}.</p>")
    cu = s.get("code_units")
    code_html = ""
    if cu and "skipped" in cu:
        code_html = f"<h2>Code units of the input stage</h2><p>Not computed: {_e(cu['skipped'])}.</p>"
    elif cu:
        crow = "".join(f"<tr><td>{_e(r['unit'])}</td><td>{_num(r['mean'])}</td><td>{_num(r['mean_abs'])}</td>"
                       f"<td>{100 * r['share']:.1f} %</td><td>{_ci([100 * c for c in r['share_ci']])} %</td></tr>"
                       for r in sorted(cu["units"], key=lambda r: -r["share"]))
        code_html = (f"<h2>Code units of the input stage</h2><p>The network reads the autoencoder's code, not the raw "
                     f"features: the network above its input stage explained on the codes (rule <code>{_e(cu['composite'])}"
                     f"</code>, against the training mean), {cu['n_molecules']} molecules, a unit's relevance summed over "
                     f"atoms or pairs; largest conservation error {cu['max_conservation_error']:.1e} {_e(unit)}. "
                     f"Intervals: 95 % bootstrap over molecules. What a unit encodes: <code>qmlrp dae inspect</code> "
                     f"on the autoencoder (its tied decoder row).</p><table><tr><th>unit</th><th>mean / {_e(unit)}</th>"
                     f"<th>mean |.|</th><th>share</th><th>95 % CI</th></tr>{crow}</table>")
    timings = ", ".join(f"{k.removesuffix('_s')} {v} s" for k, v in s.get("timings", {}).items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>qmlrp explain: {_e(s['target'])}</title>
<style>{_STYLE}</style></head><body>
<h1>What the network uses to predict {_e(s['target'])}</h1>
<p>Model: <code>{_e(s['model_dir'])}</code> ({_e(s.get('model_note', ''))}). Target <b>{_e(s['target'])}</b> in {_e(unit)}.
Molecules: {_e(s['selection'])}; {s['n_molecules']} explained, {s['n_failed']} could not be read or featurized.
{acc_txt}</p>
<p>Explanation: layer-wise relevance propagation, rule preset <code>{_e(s['rule'])}</code>. {baseline_txt}; LRP splits that difference
(the <i>explained</i> part, on average {s['explained_mean']:.3g} {_e(unit)}) over every feature of every atom and atom pair,
in {_e(unit)}. Positive relevance raises the prediction, negative lowers it. A part (on average {s['absorbed_mean']:.3g}
{_e(unit)}) is kept by the network's biases (<i>absorbed</i>); the feature relevances sum to explained - absorbed
(largest deviation over all molecules: {s['max_conservation_error']:.1e} {_e(unit)}).{cancel_txt}</p>

<h2>Which kinds of features matter</h2>
<p>Relevance summed per molecule over each of the 12 feature groups of the Molecular Graph (all atoms, or all ordered
atom pairs), then averaged over the molecules. <i>Share</i>: the group's part of all absolute relevance, pooled over the
molecules (molecules with large relevances weigh more); <i>per-molecule share</i>: each molecule's own share, averaged
(every molecule weighs the same).
Intervals: {ci} % bootstrap ({s['bootstrap']['resamples']} resamples of the molecules, seed {s['bootstrap']['seed']}).
<i>Normalized share</i>: the same after the proposal's normalization (each group centred on its dataset mean, all scaled by
the largest absolute value, {s['normalization']['scale']:.3g} {_e(unit)}): it measures how much a group's relevance
<i>varies</i> between molecules rather than its typical size.</p>
<p><img src="group_relevance.png" alt="group relevance with confidence intervals" width="1000"></p>
{amp_html}
<table><tr><th>group</th><th>kind</th><th style='text-align:left'>what it encodes</th><th>mean / {_e(unit)}</th><th>{ci} % CI</th>
<th>mean |.|</th><th>share</th><th>{ci} % CI</th><th>signed share</th><th>per-molecule share</th><th>{ci} % CI</th>
<th>normalized share</th><th>{ci} % CI</th></tr>
{''.join(rows)}</table>
<p class='note'>Vector version of the chart: <a href="group_relevance.svg">group_relevance.svg</a>.</p>

{code_html}

<h2>Molecules: where in the molecule the relevance sits</h2>
<p>Each atom (hydrogens included) is coloured by its relevance: its own features plus half of every atom pair it belongs
to, so the atoms of a molecule add up to its total relevance. Each bond is coloured by the relevance of the bonded pair
(both orders; its two atoms already hold it half each). Red raises, blue lowers the prediction; the scale is symmetric
and per picture, in {_e(unit)}. Extremes first, then typical molecules. Click a picture for the SVG.</p>
{gallery_html}

<h2>Can the explanation be trusted? Perturbation check</h2>
{faith_html}

<h2>Molecules that failed</h2><ul>{fail_html}</ul>

<h2>Files</h2>
<p><a href="summary.json">summary.json</a> (all numbers and definitions), <a href="groups.csv">groups.csv</a> (one row
per molecule, the 12 group relevances), <a href="relevance.npz">relevance.npz</a> (every feature's relevance;
<code>qmlrp.explain.load_relevance</code>). Time: {_e(timings)}.</p>
</body></html>
"""
    path = Path(out) / "report.html"
    atomic_write_text(path, page)
    return path
