"""dae: tied-weight denoising autoencoders over the Molecular Graph (imports only torch).

    import dae
    ae = dae.TiedAutoencoder((21, 32, 8), layout)   # decoder = encoder's transposes
    losses = ae.losses(x, weight, masking=0.2, noise=0.1)  # per feature kind
    code = ae.encode(x); x_hat = ae.reconstruct(x)

`dae.GraphAutoencoder` codes atoms and pairs separately (the weave network's input stage,
`GraphEncoder`), optionally with each atom's bonded neighbourhood as context (`NeighbourContext`); a single TiedAutoencoder over `molgraph.flatten` is the proposal's flat design.
"""
from .layout import KINDS, Layout, Segment, corrupt, segment_losses, to_features
from .model import GraphAutoencoder, GraphEncoder, NeighbourContext, Standardize, TiedAutoencoder, TiedLinear

__all__ = ["TiedAutoencoder", "TiedLinear", "Standardize", "GraphAutoencoder", "GraphEncoder", "NeighbourContext", "Layout", "Segment",
           "KINDS", "corrupt", "segment_losses", "to_features"]
