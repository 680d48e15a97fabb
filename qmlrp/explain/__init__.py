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
from .inputs import Inputs, file_inputs, find_qm9, qm9_inputs, read_ids, split_test_ids
from .models import LoadedModel, load_model, member_dirs, resolve_model_dir
from .relevance_pass import composite_for, explain_inputs
from .statistics import NORMALIZATION, group_statistics, hydrogen_share
from .store import (RELEVANCE_FORMAT, MoleculeRelevance, RelevanceSet, load_relevance, offsets_of, read_groups_csv,
                    save_relevance, write_groups_csv)

__all__ = ["Inputs", "file_inputs", "find_qm9", "qm9_inputs", "read_ids", "split_test_ids", "LoadedModel", "load_model",
           "member_dirs", "resolve_model_dir", "composite_for", "explain_inputs", "NORMALIZATION", "group_statistics",
           "RELEVANCE_FORMAT", "MoleculeRelevance", "RelevanceSet", "load_relevance", "offsets_of", "read_groups_csv", "hydrogen_share",
           "save_relevance", "write_groups_csv"]
