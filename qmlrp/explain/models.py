"""Model loading for explanation: a model directory, or one member of a folder of fold models."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LoadedModel:
    net: object  # the WeaveNet, standardized output
    model_dir: Path
    target: str
    unit: str
    output: int  # column of the network output that is explained
    mean: float
    std: float
    note: str
    config: dict


def member_dirs(models: str | Path) -> list[Path]:
    """A single model directory -> [it]; a folder of fold models -> its fold_*/ members in
    numeric fold order (`gcnn.model_dirs`)."""
    from gcnn import model_dirs

    dirs = model_dirs(models)
    if not dirs:
        raise FileNotFoundError(f"{models}: no config.json + weights.pt, and no fold_*/ model directories")
    return dirs


def resolve_model_dir(model: str | Path, fold: int | None = None) -> tuple[Path, str]:
    """A model directory, or the fold to use from a CV directory of fold_*/ models."""
    root = Path(model)
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


def load_model(model: str | Path, fold: int | None = None, target: str | None = None) -> LoadedModel:
    import gcnn

    model_dir, note = resolve_model_dir(model, fold)
    predictor = gcnn.load(model_dir)
    if predictor.is_vector:
        raise ValueError(f"{model_dir} predicts a vector target ({predictor.targets[0]}); explain handles scalar targets")
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


