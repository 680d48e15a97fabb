"""Model loading for explanation: a model directory, or one member of a folder of fold models."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class OutputSelection:
    """Which outputs of a vector model (a sorted, padded set such as freqs_cm1) are explained,
    summed; the explained quantity is the sum over them of (prediction - training mean).

    'sum': all of a molecule's own values (its 3N-6 modes, 3N-5 if linear); 'mode:K': the K-th
    value of the set (1-based); 'above:X' / 'below:X': the values whose *prediction* is above /
    below X (target units), e.g. above:2600 for the X-H stretches of a frequency set."""

    kind: str
    k: int | None = None
    threshold: float | None = None

    @classmethod
    def parse(cls, text: str) -> "OutputSelection":
        head, _, tail = str(text).partition(":")
        try:
            if head == "sum" and not tail:
                return cls("sum")
            if head == "mode" and int(tail) >= 1:
                return cls("mode", k=int(tail))
            if head in ("above", "below"):
                return cls(head, threshold=float(tail))
        except ValueError:
            pass
        raise ValueError(f"unknown output selection {text!r}; valid: sum, mode:K (K >= 1), above:X, below:X")

    @property
    def text(self) -> str:
        if self.kind in ("sum", "mode"):
            return "sum" if self.kind == "sum" else f"mode:{self.k}"
        return f"{self.kind}:{self.threshold:g}"

    def describe(self, target: str, unit: str) -> str:
        if self.kind == "sum":
            return f"the sum of all of a molecule's {target} values"
        if self.kind == "mode":
            return f"value {self.k} of the sorted {target} set"
        return f"the sum of the {target} values predicted {self.kind} {self.threshold:g} {unit}"

    def mask(self, prediction: np.ndarray, own: np.ndarray) -> np.ndarray:
        """(B, K) outputs in target units, (B, K) bool the outputs that hold a value of each
        molecule (`SetLayout.own`) -> (B, K) bool: the outputs explained. 'mode:K' is the output
        whose value ranks K-th (ascending) among the molecule's own outputs: the K-th member of
        the predicted set, whatever the layout."""
        pred, own = np.asarray(prediction), np.asarray(own, dtype=bool)
        if self.kind == "sum":
            return own
        if self.kind == "mode":
            rank = np.argsort(np.argsort(np.where(own, pred, np.inf), axis=1, kind="stable"), axis=1, kind="stable")
            return own & (rank == self.k - 1)
        return own & (pred > self.threshold if self.kind == "above" else pred < self.threshold)


@dataclass
class LoadedModel:
    net: object  # the WeaveNet, standardized output
    model_dir: Path
    target: str
    unit: str
    output: int  # column of the network output that is explained (scalar models)
    mean: float
    std: float
    note: str
    config: dict
    # vector models: per-output normalization and the explained selection
    selection: OutputSelection | None = None
    means: np.ndarray | None = None
    stds: np.ndarray | None = None
    layout: object | None = None  # gcnn.sets.SetLayout of a vector model

    @property
    def is_vector(self) -> bool:
        return self.selection is not None


def member_dirs(models: str | Path) -> list[Path]:
    """A single model directory -> [it]; a folder of fold models -> its fold_*/ members in
    numeric fold order (`gcnn.model_dirs`)."""
    from gcnn import model_dirs

    dirs = model_dirs(models)
    if not dirs:
        raise FileNotFoundError(f"{models}: no config.json + weights.pt, and no fold_*/ model directories")
    return dirs


def resolve_model_dir(model: str | Path, fold: int | None = None) -> tuple[Path, str]:
    """A model directory, or the fold to use from a CV directory of fold_*/ models (or a published
    model's name, `qmlrp models`)."""
    from ..published import resolve

    root = resolve(model)
    folds = member_dirs(root)
    if folds == [root]:
        if fold is not None:
            raise ValueError(f"{root} is a single model directory; --fold is for a directory of fold_*/ models")
        return root, f"model {root}"
    if fold is None:
        chosen = folds[0]
        note = (f"{root} holds {len(folds)} fold models; explained with the first, {chosen.name} "
                f"(choose another with --fold; every fold is the stability study's job)")
    else:
        chosen = root / f"fold_{fold}"
        if chosen not in folds:
            raise FileNotFoundError(f"{root}: no fold_{fold}/ model; present: {', '.join(p.name for p in folds)}")
        note = f"fold {fold} of the {len(folds)} fold models in {root}"
    return chosen, note


def load_model(model: str | Path, fold: int | None = None, target: str | None = None,
               output: str | None = None) -> LoadedModel:
    """The explained model. A vector model (e.g. a frequency set) is explained through an output
    selection (`output`, see OutputSelection; default 'sum'); `output` is refused for a scalar one."""
    import gcnn

    model_dir, note = resolve_model_dir(model, fold)
    predictor = gcnn.load(model_dir)
    if predictor.is_vector:
        if target not in (None, predictor.targets[0]):
            raise ValueError(f"{model_dir} does not predict {target!r}; it predicts {predictor.targets[0]}")
        selection = OutputSelection.parse(output or "sum")
        member = predictor.models[0]
        cfg = json.loads((model_dir / "config.json").read_text())
        net = member.model.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        means, stds = member.mean.double().numpy(), member.std.double().numpy()
        t = predictor.targets[0]
        return LoadedModel(net, model_dir, t, predictor.units[t], -1, float("nan"), float(stds.mean()), note, cfg,
                           selection, means, stds, predictor.layout)
    if output is not None:
        raise ValueError(f"{model_dir} predicts scalar targets ({', '.join(predictor.targets)}); --output is for vector "
                         f"models (choose a target with --target)")
    targets = list(predictor.targets)
    if target is None:
        if len(targets) > 1:
            raise ValueError(f"{model_dir} predicts {', '.join(targets)}; choose one with --target")
        target = targets[0]
    if target not in targets:
        raise ValueError(f"{model_dir} does not predict {target!r}; it predicts {', '.join(targets)}")
    k = targets.index(target)
    member = predictor.models[0]
    cfg = json.loads((model_dir / "config.json").read_text())
    net = member.model.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return LoadedModel(net, model_dir, target, predictor.units[target], k, float(member.mean[k]), float(member.std[k]),
                       note, cfg)


