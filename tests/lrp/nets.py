"""Small networks for the lrp tests: MLP, CNN and a weave-like graph network with atom and
pair inputs, neighbour sums and a Gaussian-membership readout (every op a module)."""
import torch
from torch import nn

import lrp
from lrp import rules as R


def mlp(sizes=(12, 16, 8, 1), bias=True):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double()


def cnn(bias=True):
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=bias), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3, bias=bias), nn.ReLU(), nn.Flatten(), nn.Linear(6, 5, bias=bias), nn.ReLU(),
        nn.Linear(5, 1, bias=bias),
    ).double()


class SumOver(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.sum(self.dim)


class Add(nn.Module):
    def forward(self, a, b):
        return a + b


class BothOrders(nn.Module):
    """(B, N, F) -> (B, N, N, F): h_i + h_j, symmetric in the atom pair."""

    def forward(self, h):
        return h[:, :, None, :] + h[:, None, :, :]


class Gaussian(nn.Module):
    """(B, N, F) -> (B, N, F, M) Gaussian memberships."""

    def __init__(self, m=5):
        super().__init__()
        self.register_buffer("mu", torch.linspace(-2, 2, m, dtype=torch.float64))

    def forward(self, x):
        return torch.exp(-((x[..., None] - self.mu) ** 2))


class WeaveLike(nn.Module):
    def __init__(self, fa=6, fp=4, h=8, m=5, bias=True):
        super().__init__()
        self.atom_in, self.pair_in = nn.Linear(fa, h, bias=bias), nn.Linear(fp, h, bias=bias)
        self.aa, self.pa = nn.Linear(h, h, bias=bias), nn.Linear(h, h, bias=bias)
        self.ap, self.pp = nn.Linear(h, h, bias=bias), nn.Linear(h, h, bias=bias)
        self.pair_sum, self.both = SumOver(2), BothOrders()
        self.add_a, self.add_p = Add(), Add()
        self.relu_a0, self.relu_p0, self.relu_a, self.relu_p = nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.readout_in = nn.Linear(h, 3, bias=False)
        self.gauss, self.atom_sum, self.flat = Gaussian(m), SumOver(1), nn.Flatten()
        self.head = nn.Sequential(nn.Linear(3 * m, 6, bias=bias), nn.ReLU(), nn.Linear(6, 1, bias=bias))

    def forward(self, atoms, pairs):
        a = self.relu_a0(self.atom_in(atoms))  # (B, N, H)
        p = self.relu_p0(self.pair_in(pairs))  # (B, N, N, H)
        a2 = self.relu_a(self.add_a(self.aa(a), self.pa(self.pair_sum(p))))  # A->A + P->A
        p2 = self.relu_p(self.add_p(self.both(self.ap(a)), self.pp(p)))  # A->P (both orders) + P->P
        r = self.readout_in(self.add_a(a2, self.pair_sum(p2)))  # (B, N, 3), not clipped: non-zero
        g = self.gauss(r)  # (B, N, 3, M)
        return self.head(self.flat(self.atom_sum(g)))


WEAVE_RULES = {
    SumOver: R.Norm(), Add: R.Norm(), BothOrders: R.Norm(),
    Gaussian: R.Pass(expand=lambda x, y: x.unsqueeze(-1).expand_as(y)),
}


def weave_composite(rule):
    return lrp.Composite(layer_map=((nn.Linear, rule),)).with_rules(WEAVE_RULES)


def weave_inputs(b=3, n=5, fa=6, fp=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(b, n, fa, generator=g, dtype=torch.float64)
    pairs = torch.randn(b, n, n, fp, generator=g, dtype=torch.float64)
    pairs = 0.5 * (pairs + pairs.transpose(1, 2))
    return atoms, pairs



class NormalizedGaussian(nn.Module):
    """(..., F) -> (..., F, M) Gaussian memberships normalized to sum to one over the M bins
    (a fuzzy histogram like Kearnes et al.'s readout): every value, 0 included, has memberships."""

    def __init__(self, m=5, width=0.6):
        super().__init__()
        self.register_buffer("mu", torch.linspace(-1.5, 1.5, m, dtype=torch.float64))
        self.width = width

    def forward(self, x):
        p = torch.exp(-0.5 * ((x[..., None] - self.mu) / self.width) ** 2)
        return p / p.sum(-1, keepdim=True)


def bins(x, y):
    return x.unsqueeze(-1).expand_as(y)


class WeaveHist(WeaveLike):
    """WeaveLike with a ReLU before a normalized-Gaussian histogram readout, so that some
    readout features are exactly 0 (ReLU-dead) and still have memberships."""

    def __init__(self, fa=6, fp=4, h=8, m=5, bias=True):
        super().__init__(fa, fp, h, m, bias)
        self.gauss, self.relu_r = NormalizedGaussian(m), nn.ReLU()

    def forward(self, atoms, pairs):
        a = self.relu_a0(self.atom_in(atoms))
        p = self.relu_p0(self.pair_in(pairs))
        a2 = self.relu_a(self.add_a(self.aa(a), self.pa(self.pair_sum(p))))
        p2 = self.relu_p(self.add_p(self.both(self.ap(a)), self.pp(p)))
        r = self.relu_r(self.readout_in(self.add_a(a2, self.pair_sum(p2))))  # (B, N, 3), some exactly 0
        g = self.gauss(r)  # (B, N, 3, M)
        return self.head(self.flat(self.atom_sum(g)))
