from molgraph import ATOM_FEATURES, FEATURE_GROUPS, PAIR_FEATURES, flat_size

EXPECTED_GROUPS = ("atom_type", "chirality", "formal_charge", "partial_charge", "ring_sizes", "hybridization",
                   "hydrogen_bonding", "aromaticity", "bond_type", "graph_distance", "same_ring", "spatial_distance")


def test_layout_sizes_match_the_proposal_tables():
    assert len(ATOM_FEATURES) == 21 and len(PAIR_FEATURES) == 13
    assert tuple(FEATURE_GROUPS) == EXPECTED_GROUPS
    sizes = {g: len(FEATURE_GROUPS[g].indices) for g in EXPECTED_GROUPS}
    assert sizes == {"atom_type": 5, "chirality": 2, "formal_charge": 1, "partial_charge": 1, "ring_sizes": 6,
                     "hybridization": 3, "hydrogen_bonding": 2, "aromaticity": 1, "bond_type": 4,
                     "graph_distance": 7, "same_ring": 1, "spatial_distance": 1}


def test_groups_partition_the_features_in_order():
    for kind, names in (("atom", ATOM_FEATURES), ("pair", PAIR_FEATURES)):
        idx = [i for g in FEATURE_GROUPS.values() if g.kind == kind for i in g.indices]
        assert idx == list(range(len(names)))
        for g in FEATURE_GROUPS.values():
            if g.kind == kind:
                assert tuple(names[i] for i in g.indices) == g.names
                assert list(range(len(names)))[g.slice] == list(g.indices)


def test_flat_size_is_5887_for_29_atoms():
    assert flat_size(29) == 5887
    assert flat_size(2) == 2 * 21 + 13
