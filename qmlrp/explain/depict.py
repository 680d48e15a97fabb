"""Relevance heatmaps: the 2D depiction of a molecule with every atom (hydrogens included)
coloured by its relevance and every bond by the relevance of the bonded atom pair; atoms whose
|relevance| is at least 30 % of the picture's scale have their value written next to them.

Colours: a diverging red (positive: pushes the prediction up) / white (0) / blue (negative)
map, symmetric around 0; one scale per picture, shared by atoms and bonds, set by the largest
|value| drawn, and printed on the colour bar in the target's units. Atoms are coloured by the
per-atom relevance (own features + half of each of their pairs, `molgraph.relevance.per_atom`);
bonds by the relevance of the unordered pair, both orders (`molgraph.relevance.per_pair`), which
the two atoms already hold half each: the bond colour shows where within the molecule that
part of the atoms' relevance comes from, it is not extra.

Drawn with RDKit's MolDraw2D (Cairo for PNG, SVG); the RDKit molecule is molgraph's own
perception of the molecule, so atom k of the picture is atom k of the features (checked:
elements and bonds must match the featurized graph).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from molgraph.storage import atomic_write_bytes

from molgraph.storage import atomic_write_text

WIDTH, HEIGHT = 760, 640
NOTE_FRACTION = 0.3  # atoms at least this fraction of the colour scale get their value written next to them
TITLE_H, BAR_H = 70, 90


def perceived(molecule, elements: Sequence[str] | None = None, bonded: np.ndarray | None = None):
    """molgraph's RDKit molecule for `molecule` (explicit hydrogens, atom order of the input).

    elements / bonded ((n, n) bool, from the features' bond_type group): when given, the
    perceived molecule must have the same elements in the same order and the same bonds, else
    ValueError: the picture would put relevance on the wrong atoms."""
    from molgraph.perception import to_rdkit

    m, _ = to_rdkit(molecule)
    got = tuple(a.GetSymbol() for a in m.GetAtoms())
    where = molecule.name or f"{molecule.source}, molecule {molecule.index}"
    if elements is not None and tuple(elements) != got:
        raise ValueError(f"{where}: depiction atoms {got} do not match the featurized atoms {tuple(elements)}")
    if bonded is not None:
        b = np.zeros((m.GetNumAtoms(),) * 2, dtype=bool)
        for bond in m.GetBonds():
            i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            b[i, j] = b[j, i] = True
        if b.shape != bonded.shape or not np.array_equal(b, bonded):
            raise ValueError(f"{where}: depiction bonds do not match the featurized bond_type features")
    return m


def smiles_of(mol) -> str:
    """Canonical SMILES, hydrogens implicit, of an RDKit molecule."""
    from rdkit import Chem

    return Chem.MolToSmiles(Chem.RemoveHs(mol))


def _cmap():
    import matplotlib

    return matplotlib.colormaps["RdBu_r"]


def colour(value: float, scale: float) -> tuple[float, float, float]:
    """RGB of `value` on the symmetric diverging map [-scale, scale] (red > 0, blue < 0)."""
    t = 0.5 if scale <= 0 else 0.5 + 0.5 * float(np.clip(value / scale, -1.0, 1.0))
    r, g, b, _ = _cmap()(t)
    return (float(r), float(g), float(b))


def _fmt(v: float) -> str:
    """Colour-bar tick: three significant digits, one style for every tick."""
    return "0" if v == 0 else f"{v:+.3g}"


@dataclass
class Heatmap:
    png: Path
    svg: Path
    scale: float
    n_atoms_coloured: int
    n_bonds_coloured: int


def _draw(drawer, mol, atom_values, bond_values, scale, title: Sequence[str], unit: str, bar_label: str):
    from rdkit.Geometry import Point2D

    n = mol.GetNumAtoms()
    opts = drawer.drawOptions()
    opts.atomHighlightsAreCircles = True
    opts.fillHighlights = True
    opts.highlightRadius = 0.38
    opts.continuousHighlight = True
    opts.highlightBondWidthMultiplier = 14
    opts.padding = 0.06
    opts.clearBackground = True
    opts.setBackgroundColour((1, 1, 1, 1))
    atoms = list(range(n))
    atom_cols = {i: colour(atom_values[i], scale) for i in atoms}
    bonds = [b.GetIdx() for b in mol.GetBonds()]
    bond_cols = {b: colour(bond_values[b], scale) for b in bonds}
    drawer.SetOffset(0, TITLE_H)
    drawer.DrawMolecule(mol, highlightAtoms=atoms, highlightAtomColors=atom_cols, highlightBonds=bonds,
                        highlightBondColors=bond_cols)
    drawer.SetOffset(0, 0)
    # title
    drawer.SetColour((0, 0, 0))
    drawer.SetFontSize(15)
    for k, line in enumerate(title):
        drawer.DrawString(line, Point2D(WIDTH / 2, 20 + 22 * k), 0, rawCoords=True)
    # colour bar: 101 cells from -scale to +scale
    x0, x1, y0, y1 = 80, WIDTH - 80, HEIGHT - BAR_H + 28, HEIGHT - BAR_H + 48
    drawer.SetFillPolys(True)
    cells = 101
    w = (x1 - x0) / cells
    for k in range(cells):
        v = -scale + 2 * scale * k / (cells - 1)
        drawer.SetColour(colour(v, scale))
        drawer.DrawRect(Point2D(x0 + k * w, y0), Point2D(x0 + (k + 1) * w + 0.5, y1), rawCoords=True)
    drawer.SetFillPolys(False)
    drawer.SetColour((0, 0, 0))
    drawer.DrawRect(Point2D(x0, y0), Point2D(x1, y1), rawCoords=True)
    drawer.SetFontSize(13)
    for frac, v in ((0.0, -scale), (0.25, -scale / 2), (0.5, 0.0), (0.75, scale / 2), (1.0, scale)):
        x = x0 + frac * (x1 - x0)
        drawer.DrawLine(Point2D(x, y1), Point2D(x, y1 + 5), rawCoords=True)
        drawer.DrawString(_fmt(v), Point2D(x, y1 + 16), 0, rawCoords=True)
    drawer.DrawString(bar_label, Point2D(WIDTH / 2, y0 - 14), 0, rawCoords=True)


def draw_heatmap(mol, atom_values: np.ndarray, pair_values: np.ndarray, stem: str | Path, title: Sequence[str],
                 unit: str, scale: float | None = None) -> Heatmap:
    """Write `stem`.png and `stem`.svg.

    mol: RDKit molecule with explicit hydrogens in feature order (`perceived`).
    atom_values: (n,) per-atom relevance; pair_values: (n, n) symmetric pair relevance (both
    orders), in target units. scale: colour-bar limit (default: the largest |value| drawn).
    """
    from rdkit import Chem
    from rdkit.Chem import rdDepictor
    from rdkit.Chem.Draw import rdMolDraw2D

    n = mol.GetNumAtoms()
    atom_values = np.asarray(atom_values, dtype=np.float64)
    pair_values = np.asarray(pair_values, dtype=np.float64)
    if atom_values.shape != (n,) or pair_values.shape != (n, n):
        raise ValueError(f"{n} atoms but atom values {atom_values.shape} and pair values {pair_values.shape}")
    m = Chem.Mol(mol)
    m.RemoveAllConformers()
    rdDepictor.SetPreferCoordGen(True)
    rdDepictor.Compute2DCoords(m)
    bond_values = np.array([pair_values[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] for b in m.GetBonds()])
    if scale is None:
        scale = float(max(np.abs(atom_values).max(initial=0.0), np.abs(bond_values).max(initial=0.0)))
    for a in m.GetAtoms():  # the value of every strongly coloured atom, readable next to it
        v = atom_values[a.GetIdx()]
        if scale > 0 and abs(v) >= NOTE_FRACTION * scale:
            a.SetProp("atomNote", f"{v:+.3g}")
    label = f"relevance / {unit}  (atoms: per-atom; bonds: bonded pair)  red raises, blue lowers the prediction"
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    panel_h = HEIGHT - TITLE_H - BAR_H
    png = rdMolDraw2D.MolDraw2DCairo(WIDTH, HEIGHT, WIDTH, panel_h)
    _draw(png, m, atom_values, bond_values, scale, title, unit, label)
    png.FinishDrawing()
    svg = rdMolDraw2D.MolDraw2DSVG(WIDTH, HEIGHT, WIDTH, panel_h)
    _draw(svg, m, atom_values, bond_values, scale, title, unit, label)
    svg.FinishDrawing()
    png_path, svg_path = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")
    atomic_write_bytes(png_path, png.GetDrawingText())
    atomic_write_text(svg_path, svg.GetDrawingText())
    return Heatmap(png_path, svg_path, scale, n, len(bond_values))
