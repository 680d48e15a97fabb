"""Molecular Graph features: hand-checked molecules and the laws every molecule obeys."""
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import shortest_path

from molgraph import FEATURE_GROUPS as G
from molgraph import ATOM_FEATURES, PAIR_FEATURES, MolecularGraphFeaturizer, Molecule, MoleculeError

from ..conftest import QM9_IDS, embed

F = MolecularGraphFeaturizer()
A = {name: i for i, name in enumerate(ATOM_FEATURES)}
P = {name: i for i, name in enumerate(PAIR_FEATURES)}


def heavy(g, element):
    return [i for i, e in enumerate(g.elements) if e == element]


# ----------------------------------------------------------------------------- hand-checked
@pytest.mark.parametrize("template", [False, True])
def test_benzene_aromatic_ring(template):
    g = F(embed("c1ccccc1", with_template=template))
    c, h = heavy(g, "C"), heavy(g, "H")
    x, p = g.atom_features, g.pair_features
    assert (x[c, A["aromatic"]] == 1).all() and (x[h, A["aromatic"]] == 0).all()
    assert (x[c, A["ring_size_6"]] == 1).all() and x[:, G["ring_sizes"].slice].sum() == 6
    assert (x[c, A["hybridization_sp2"]] == 1).all() and (x[h, G["hybridization"].slice] == 0).all()
    assert (x[c, A["atom_type_C"]] == 1).all() and (x[h, A["atom_type_H"]] == 1).all()
    ring_pairs = p[c][:, c]
    bonded = ring_pairs[..., P["bond_aromatic"]]
    assert bonded.sum() == 12 and ring_pairs[..., P["bond_single"]].sum() == 0  # 6 bonds, both orders
    off = ~torch.eye(6, dtype=torch.bool)
    assert (ring_pairs[..., P["same_ring"]][off] == 1).all()
    # every C has one C at graph distance 3 (para), which sets bits 3..7 only
    para = (ring_pairs[..., P["graph_distance_le_2"]] == 0) & off
    assert para.sum() == 6
    i, j = [int(t[0]) for t in torch.nonzero(para, as_tuple=True)]
    bits = ring_pairs[i, j, G["graph_distance"].slice]
    assert bits.tolist() == [0, 0, 1, 1, 1, 1, 1]
    # H...H paths: ortho 3 bonds, meta 4, para 5; a path of L bonds sets 8 - L of the 7 bits
    hh = p[h][:, h][..., G["graph_distance"].slice].sum(-1)
    assert sorted(hh[0].tolist()) == [0, 3, 4, 4, 5, 5]
    cc = ring_pairs[..., P["distance_angstrom"]][bonded == 1]
    assert ((cc > 1.37) & (cc < 1.42)).all()  # aromatic C-C bond length


def test_naphthalene_fused_rings():
    g = F(embed("c1ccc2ccccc2c1"))
    x = g.atom_features
    c = heavy(g, "C")
    counts = sorted(int(x[i, A["ring_size_6"]]) for i in c)
    assert counts == [1] * 8 + [2, 2]  # the two fusion carbons are in both six-membered rings
    assert (x[c, A["aromatic"]] == 1).all()


def test_norbornane_bridged_rings():
    g = F(embed("C1CC2CCC1C2"))
    x = g.atom_features
    c = heavy(g, "C")
    n_h = [sum(1 for j in range(g.n_atoms) if g.elements[j] == "H" and g.pair_features[i, j, P["bond_single"]] == 1) for i in c]
    five = [int(x[i, A["ring_size_5"]]) for i in c]
    # bridgeheads (CH) and the one-carbon bridge sit in both five-membered rings of the SSSR
    for k, i in enumerate(c):
        expected = 2 if n_h[k] == 1 or sum(int(g.pair_features[i, j, P["bond_single"]]) for j in c) == 2 and _is_bridge(g, i, c) else 1
        assert five[k] == expected, (k, n_h, five)
    assert x[c, A["ring_size_6"]].sum() == 0
    assert x[c, G["hybridization"].slice][:, 2].sum() == 7  # all sp3


def _is_bridge(g, i, c):
    """The one-carbon bridge of norbornane: both C neighbours are bridgeheads (CH)."""
    nbrs = [j for j in c if g.pair_features[i, j, P["bond_single"]] == 1]
    return all(sum(1 for k in range(g.n_atoms) if g.elements[k] == "H" and g.pair_features[j, k, P["bond_single"]] == 1) == 1 for j in nbrs)


@pytest.mark.parametrize("template", [False, True])
def test_l_alanine_stereocentre_is_s_and_its_mirror_image_r(template):
    mol = embed("C[C@H](N)C(=O)O", with_template=template)  # L-alanine, (S)
    g = F(mol)
    x = g.atom_features
    stereo = [i for i in range(g.n_atoms) if x[i, G["chirality"].slice].sum() > 0]
    assert len(stereo) == 1
    (i,) = stereo
    assert g.elements[i] == "C" and x[i, A["chirality_S"]] == 1 and x[i, A["chirality_R"]] == 0
    mirror = Molecule(mol.elements, mol.positions * np.array([-1.0, 1.0, 1.0]), smiles=mol.smiles)
    xm = F(mirror).atom_features
    assert xm[i, A["chirality_R"]] == 1 and xm[i, A["chirality_S"]] == 0
    assert xm[:, G["chirality"].slice].sum() == 1


def test_triple_bond_and_sp_carbons():
    g = F(embed("CC#N"))
    c, n = heavy(g, "C"), heavy(g, "N")[0]
    nitrile_c = [i for i in c if g.pair_features[i, n, P["bond_triple"]] == 1]
    assert len(nitrile_c) == 1
    assert g.atom_features[nitrile_c[0], A["hybridization_sp"]] == 1
    assert g.atom_features[n, A["hybridization_sp"]] == 1
    # BaseFeatures.fdef's nitrile clause sits inside an aromatic-n conjunction, so RDKit does
    # not flag a nitrile N as acceptor; we follow RDKit's definition (docs/features.md)
    assert g.atom_features[n, G["hydrogen_bonding"].slice].tolist() == [0, 0]


@pytest.mark.parametrize("smiles, element, donor, acceptor", [
    ("CO", "O", 1, 1),       # hydroxyl O: donor and acceptor
    ("N", "N", 1, 0),        # ammonia: donor; BaseFeatures.fdef lists no sp3 amine N as acceptor
    ("C=O", "O", 0, 1),      # carbonyl O: acceptor
    ("CF", "F", 0, 1),       # F on carbon: acceptor
    ("c1ccncc1", "N", 0, 1), # pyridine N: acceptor
    ("c1cc[nH]c1", "N", 1, 0),  # pyrrole NH: donor
    ("C", "C", 0, 0),
])
def test_hydrogen_bond_donors_and_acceptors(smiles, element, donor, acceptor):
    g = F(embed(smiles))
    (i,) = heavy(g, element)[:1]
    assert g.atom_features[i, A["hbond_donor"]] == donor
    assert g.atom_features[i, A["hbond_acceptor"]] == acceptor
    assert g.atom_features[heavy(g, "H"), G["hydrogen_bonding"].slice].sum() == 0


def test_zwitterion_formal_charges_from_the_qm9_template(qm9_molecules, qm9_rows):
    mol = qm9_molecules[qm9_rows["zwitterion"]]
    x = F(mol).atom_features
    fc = x[:, A["formal_charge"]]
    assert fc.sum() == 0 and (fc == 1).sum() == 1 and (fc == -1).sum() == 1
    assert mol.elements[int(torch.nonzero(fc == 1)[0])] == "N"
    assert mol.elements[int(torch.nonzero(fc == -1)[0])] == "O"


def test_bicyclopentane_transannular_contact_is_not_a_bond(qm9_molecules):
    g = F(qm9_molecules[105])  # bicyclo[1.1.1]pentane C1C2CC1C2, bridgeheads 1.88 A apart
    c = heavy(g, "C")
    bonds = g.pair_features[c][:, c][..., G["bond_type"].slice].sum() / 2
    assert bonds == 6
    # RDKit's ring information (symmetrized SSSR) holds all three four-membered rings:
    # each bridgehead is in 3 of them, each bridge CH2 in 2
    assert sorted(g.atom_features[c, A["ring_size_4"]].tolist()) == [2, 2, 2, 3, 3]


def test_gasteiger_charges_match_rdkit_on_the_same_graph():
    from rdkit import Chem
    from rdkit.Chem import AllChem

    smiles = "OCC(=O)N"
    g = F(embed(smiles, with_template=True))
    ref = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.ComputeGasteigerCharges(ref)
    q_ref = sorted(round(a.GetDoubleProp("_GasteigerCharge"), 5) for a in ref.GetAtoms())
    q = sorted(round(float(v), 5) for v in g.atom_features[:, A["partial_charge_gasteiger"]])
    assert q == pytest.approx(q_ref, abs=2e-5)
    assert abs(sum(q)) < 1e-4


def test_hbond_flags_equal_rdkit_feature_factory(qm9_molecules):
    """The compiled fdef patterns give exactly what ChemicalFeatures' factory gives."""
    from rdkit import RDConfig
    from rdkit.Chem import ChemicalFeatures

    from molgraph.perception import to_rdkit

    factory = ChemicalFeatures.BuildFeatureFactory(os.path.join(RDConfig.RDDataDir, "BaseFeatures.fdef"))
    for qid, mol in qm9_molecules.items():
        m, _ = to_rdkit(mol)
        x = F(mol).atom_features
        for family, col in (("Donor", A["hbond_donor"]), ("Acceptor", A["hbond_acceptor"])):
            ref = np.zeros(mol.n_atoms)
            for feat in factory.GetFeaturesForMol(m, includeOnly=family):
                ref[list(feat.GetAtomIds())] = 1
            np.testing.assert_array_equal(x[:, col].numpy(), ref, err_msg=f"qm9:{qid} {family}")


def test_sdf_bonds_and_template_route_agree(qm9_molecules):
    """Bonds given explicitly give the same features as perception from the geometry."""
    from molgraph.perception import to_rdkit

    for qid in (1000, 20332, 133885):
        mol = qm9_molecules[qid]
        m, _ = to_rdkit(mol)
        from rdkit import Chem

        Chem.Kekulize(m, clearAromaticFlags=True)
        order = {Chem.BondType.SINGLE: 1.0, Chem.BondType.DOUBLE: 2.0, Chem.BondType.TRIPLE: 3.0}
        bonds = tuple((b.GetBeginAtomIdx(), b.GetEndAtomIdx(), order[b.GetBondType()]) for b in m.GetBonds())
        given = Molecule(mol.elements, mol.positions, bonds=bonds, atom_charges=tuple(a.GetFormalCharge() for a in m.GetAtoms()))
        a, b = F(mol), F(given)
        torch.testing.assert_close(a.atom_features, b.atom_features, atol=1e-6, rtol=0)
        torch.testing.assert_close(a.pair_features, b.pair_features)


def test_featurizer_refuses_elements_outside_its_one_hot():
    with pytest.raises(ValueError, match="covers"):
        MolecularGraphFeaturizer(elements=("H", "C", "S"))
    with pytest.raises(MoleculeError, match="handles only H, C"):
        MolecularGraphFeaturizer(elements=("H", "C"))(embed("CO"))


# ----------------------------------------------------------------------------- laws (hypothesis)
def _laws(g):
    p = g.pair_features
    n = g.n_atoms
    torch.testing.assert_close(p, p.transpose(0, 1), rtol=0, atol=0)
    assert (p[torch.arange(n), torch.arange(n)] == 0).all()
    bits = p[..., G["graph_distance"].slice]
    assert (bits[..., 1:] >= bits[..., :-1]).all()  # monotone in k
    bonded = p[..., G["bond_type"].slice].sum(-1)
    assert ((bonded == 0) | (bonded == 1)).all()
    torch.testing.assert_close(bits[..., 0], bonded)  # "<= 1 bond" is exactly "bonded"
    sp = shortest_path(bonded.numpy(), unweighted=True)
    for k in range(1, 8):
        expected = (sp >= 1) & (sp <= k)
        np.testing.assert_array_equal(bits[..., k - 1].numpy().astype(bool), expected)
    d = torch.cdist(g.positions.double(), g.positions.double()).float()
    torch.testing.assert_close(p[..., P["distance_angstrom"]], d, atol=1e-5, rtol=0)
    x = g.atom_features
    assert (x[:, G["atom_type"].slice].sum(-1) == 1).all()
    assert (x[:, G["hybridization"].slice].sum(-1) <= 1).all() and (x[:, G["chirality"].slice].sum(-1) <= 1).all()
    in_ring = x[:, G["ring_sizes"].slice].sum(-1) > 0
    same = p[..., P["same_ring"]] == 1
    assert (~same | (in_ring[:, None] & in_ring[None, :])).all()  # same ring => both atoms in a ring


molecule_ids = st.sampled_from([q for q in QM9_IDS])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(qid=molecule_ids, data=st.data())
def test_permuting_atoms_permutes_features(qm9_molecules, qid, data):
    mol = qm9_molecules[qid]
    perm = data.draw(st.permutations(range(mol.n_atoms)))
    moved = Molecule(tuple(mol.elements[i] for i in perm), mol.positions[list(perm)], smiles=mol.smiles)
    a, b = F(mol).permute(perm), F(moved)
    assert a.elements == b.elements
    torch.testing.assert_close(a.atom_features, b.atom_features, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.pair_features, b.pair_features, atol=1e-5, rtol=0)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(qid=molecule_ids)
def test_pair_feature_laws_on_qm9(qm9_molecules, qid):
    _laws(F(qm9_molecules[qid]))


@pytest.mark.parametrize("smiles", ["c1ccc2ccccc2c1", "C1CC2CCC1C2", "OC(=O)C#CC1CC1", "C1=CC=CN=C1", "O=C1NC=CC1=O"])
def test_pair_feature_laws_on_hand_picked(smiles):
    _laws(F(embed(smiles)))
    _laws(F(embed(smiles, with_template=True)))
