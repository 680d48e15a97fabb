"""Relevance heatmaps: valid PNG/SVG, every atom coloured, diverging colours, atom order checked."""
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from molgraph import FEATURE_GROUPS, MolecularGraphFeaturizer
from qmlrp.explain.depict import colour, draw_heatmap, perceived, smiles_of

from ..conftest import embed


@pytest.fixture(scope="module")
def ethanol():
    """Ethanol in 3D (bonds from the geometry), its featurized graph and the bonds the features say it has."""
    mol = embed("CCO")
    g = MolecularGraphFeaturizer()(mol)
    bonded = (g.pair_features[..., FEATURE_GROUPS["bond_type"].slice].sum(-1) > 0).numpy()
    return mol, g, bonded


def _fills(root, prefix):
    out = {}
    for e in root.iter():
        m = re.match(rf"{prefix}-(\d+)$", e.get("class", "")) if e.tag.endswith("ellipse") else None
        if m:
            out[int(m.group(1))] = re.search(r"fill:(#[0-9A-Fa-f]{6})", e.get("style")).group(1)
    return out


def test_png_and_svg_colour_every_atom(ethanol, tmp_path):
    mol, g, bonded = ethanol
    m = perceived(mol, g.elements, bonded)
    n = g.n_atoms
    atom = np.linspace(-2.0, 1.0, n)
    pair = np.zeros((n, n))
    h = draw_heatmap(m, atom, pair, tmp_path / "x", ["title", "line 2"], "bohr^3")
    assert h.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert h.scale == 2.0 and h.n_atoms_coloured == n
    fills = _fills(ET.parse(h.svg).getroot(), "atom")
    assert sorted(fills) == list(range(n))
    # the most negative atom is blue, the most positive red-ish, a zero atom white
    r0, g0, b0 = (int(fills[0][k:k + 2], 16) for k in (1, 3, 5))
    assert b0 > r0 + 80
    last = fills[n - 1]
    assert int(last[1:3], 16) > int(last[5:7], 16)


def test_colour_map_is_symmetric_and_white_at_zero():
    assert np.allclose(colour(0.0, 3.0), colour(0.0, 1.0))
    assert min(colour(0.0, 1.0)) > 0.9
    r, g, b = colour(5.0, 5.0)
    assert r > 0.3 and b < 0.2
    r, g, b = colour(-5.0, 5.0)
    assert b > 0.3 and r < 0.2
    assert colour(10.0, 5.0) == colour(5.0, 5.0)  # clipped at the scale
    pos, neg = np.array(colour(2.0, 4.0)), np.array(colour(-2.0, 4.0))
    assert np.allclose(pos[[0, 2]], neg[[2, 0]], atol=0.08)  # red/blue mirror each other


def test_atom_order_and_bonds_are_checked(ethanol):
    mol, g, bonded = ethanol
    with pytest.raises(ValueError, match="do not match the featurized atoms"):
        perceived(mol, tuple(reversed(g.elements)), bonded)
    wrong = bonded.copy()
    wrong[0, -1] = wrong[-1, 0] = not wrong[0, -1]
    with pytest.raises(ValueError, match="bonds do not match"):
        perceived(mol, g.elements, wrong)
    assert smiles_of(perceived(mol)) == "CCO"
