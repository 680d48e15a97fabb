"""Training: size-bucketed batches, standardized targets, Adam with a plateau schedule, early
stopping on validation MAE, atomic resumable checkpoints, a model directory that loads without
executing code.

A model directory holds:
    config.json   model config, targets with units, normalization, training settings, split digest
    weights.pt    the best state_dict (torch.save; loaded with weights_only=True)
    metrics.json  target, unit, MAE, RMSE, R^2 on the test set, n_train, n_val, n_test
    history.csv   one row per epoch
    split.json    the exact train / validation / test ids
    checkpoint.pt last epoch's full state (model, optimizer, scheduler, RNG), for resuming
    checksums.json SHA-256 of config.json and weights.pt; `load` refuses files that do not match
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from molgraph.storage import atomic_torch_save, atomic_write_text, sha256_file

from .flat import build_model, config_from_json
from .model import WeaveConfig, WeaveNet


@dataclass(frozen=True)
class TrainConfig:
    targets: tuple[str, ...] = ("alpha_bohr3",)
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_factor: float = 0.5
    lr_patience: int = 5
    patience: int = 20
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    vector_length: int = 81  # outputs for a vector target (81: the most harmonic modes in QM9)
    set_layout: str = "ascending"  # how a vector target's sorted set sits on the outputs (gcnn.sets)
    loss: str = "mse"  # mse or l1, on the standardized outputs
    clip_grad_norm: float | None = None  # clip each step's gradient to this global L2 norm (None: no clipping)
    # learning-rate schedule: "plateau" (ReduceLROnPlateau on the validation MAE, lr_factor and
    # lr_patience) or "cosine" (cosine annealing from lr to lr * 1e-2 over `epochs`, per epoch)
    schedule: str = "plateau"
    # molecules of how many sizes each optimizer step sees: 1 (the default) takes one size bucket of
    # `batch_size` molecules per step, all of one or two atom counts; K > 1 accumulates the
    # gradients of K buckets of batch_size / K molecules, drawn in random order, into one step of
    # batch_size molecules of K sizes (the same padding as K = 1; smaller tensors per pass)
    mix_sizes: int = 1

    def __post_init__(self):
        from molgraph import TARGETS

        from .sets import LAYOUTS

        if self.set_layout not in LAYOUTS:
            raise ValueError(f"unknown set layout {self.set_layout!r}; valid: {', '.join(LAYOUTS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")

        object.__setattr__(self, "targets", tuple(self.targets))
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
        if not 1 <= int(self.mix_sizes) <= self.batch_size:
            raise ValueError(f"mix_sizes must be between 1 and batch_size = {self.batch_size}, got {self.mix_sizes}")
        object.__setattr__(self, "mix_sizes", int(self.mix_sizes))
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0 (or None), got {self.clip_grad_norm}")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise ValueError(f"unknown target(s) {unknown}; valid: {', '.join(TARGETS)}")
        kinds = [TARGETS[t].kind for t in self.targets]
        if any(k not in ("scalar", "vector") for k in kinds) or ("vector" in kinds and len(kinds) > 1):
            raise ValueError("targets must be scalars, or one vector target (e.g. freqs_cm1) alone")

    @property
    def is_vector(self) -> bool:
        from molgraph import TARGETS

        return TARGETS[self.targets[0]].kind == "vector"

    @property
    def n_outputs(self) -> int:
        return self.vector_length if self.is_vector else len(self.targets)

    @property
    def layout(self):
        """The `gcnn.sets.SetLayout` of a vector target (None for scalars)."""
        from .sets import SetLayout

        return SetLayout(self.set_layout, self.vector_length) if self.is_vector else None

    def to_json(self) -> dict:
        """The settings as saved in config.json and checkpoints; settings at their values from
        before they existed are left out, so earlier runs resume unchanged."""
        d = asdict(self)
        for key, old in (("set_layout", "ascending"), ("loss", "mse"), ("clip_grad_norm", None), ("schedule", "plateau"),
                         ("mix_sizes", 1)):
            if d[key] == old:
                d.pop(key)
        return d


def size_buckets(n_atoms: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of similar-size molecules (little padding): sort by atom count with random tie
    order, cut into batches, shuffle the batch order."""
    order = np.lexsort((rng.random(len(n_atoms)), n_atoms))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def mixed_steps(n_atoms: np.ndarray, batch_size: int, mix: int, rng: np.random.Generator) -> list[list[np.ndarray]]:
    """An epoch's optimizer steps, each a list of `mix` size buckets (`size_buckets` of
    ceil(batch_size / mix) molecules, in random order), so that one step holds about batch_size
    molecules of up to `mix` sizes; mix = 1: one bucket of batch_size per step."""
    buckets = size_buckets(n_atoms, -(-batch_size // mix), rng)
    return [buckets[i:i + mix] for i in range(0, len(buckets), mix)]


def backward_step(model, parts, c: "TrainConfig", mean, std, scaler=None) -> list[tuple[float, int]]:
    """The gradients of one optimizer step over the batches `parts` (MolBatch, one per size
    bucket), accumulated into the parameters' .grad: each bucket's loss is weighted by its share
    of the step's target entries, so that the step's gradient is that of the mean loss over all
    its molecules, as for one batch of them. Returns (loss, molecules) per bucket."""
    targets = [_targets(b, c) for b in parts]
    entries = sum(float(m.sum()) for _, m in targets)  # one bucket: its weight is exactly 1.0
    out = []
    for b, (y, m) in zip(parts, targets):
        device = b.atom_features.device
        with torch.autocast(device.type, enabled=c.amp and device.type == "cuda"):
            pred = model(b.atom_features, b.pair_features, b.atom_mask)
            loss = masked_loss(c.loss, pred.float(), (y - mean) / std, m)
        weight = float(m.sum()) / entries if entries else 1.0
        (scaler.scale(loss * weight) if scaler is not None else loss * weight).backward()
        out.append((float(loss.detach()), int(b.atom_mask.shape[0])))
    return out


def tune_allocator() -> bool:
    """Keep freed memory in the process (glibc malloc): by default glibc hands every block above its
    mmap threshold back to the kernel when it is freed, so each batch's multi-MB tensors are
    page-faulted in again, which cost a third of a CPU training step here. After this call large
    blocks come from the heap and stay there (the resident size stays at its peak). Returns False
    where there is no glibc (nothing changed)."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
        ok = libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 1 << 30) and libc.mallopt(m_top_pad, 64 << 20)
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = bool(ok)
    return _ALLOCATOR_TUNED


_ALLOCATOR_TUNED = False


def read_batch(ds, indices):
    """The MolBatch of dataset entries `indices`: `ds.batch` (vectorized, QM9Dataset) where the
    dataset has it, else `collate` of its items."""
    if hasattr(ds, "batch"):
        return ds.batch(indices)
    from molgraph import collate

    return collate([ds[int(i)] for i in indices])


def batches_in_order(n: int, batch_size: int) -> list[np.ndarray]:
    return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _targets(batch, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(values (B, outputs), mask (B, outputs)) of a batch; a vector target's sorted set is laid
    out on the outputs by config.layout and masked."""
    if not config.is_vector:
        y = torch.stack([batch.targets[t].float() for t in config.targets], dim=1)  # (B, T)
        return y, torch.isfinite(y)
    from .sets import hydrogen_counts

    t, layout = config.targets[0], config.layout
    v, m = batch.targets[t].float(), batch.target_masks[t]  # (B, K), ascending
    n_h = hydrogen_counts(batch.atom_features, batch.atom_mask)
    layout.check(m.sum(1).cpu().numpy(), n_h.cpu().numpy(), batch.names)
    return layout.encode(torch.nan_to_num(v), m, n_h)


def sorted_sets(ds, target: str, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(values (M, length) float64 ascending, mask (M, length)) of a vector target over a dataset."""
    y, mask = np.zeros((len(ds), length)), np.zeros((len(ds), length), dtype=bool)
    for i in range(len(ds)):
        v = np.sort(ds.target_value(i, target).numpy())
        if v.size > length:
            raise ValueError(f"qm9:{int(ds.ids[i])}: {target} has {v.size} values, more than vector_length={length}")
        y[i, : v.size], mask[i, : v.size] = v, True
    return y, mask


def target_matrix(ds, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(values (M, outputs) float64, mask (M, outputs) bool) for a whole dataset, a vector
    target laid out on the outputs as in training."""
    if not config.is_vector:
        y = np.stack([ds.target(t) for t in config.targets], 1)
        return y, np.isfinite(y)
    y, mask = sorted_sets(ds, config.targets[0], config.vector_length)
    n_h = ds.n_hydrogens
    config.layout.check(mask.sum(1), n_h, [f"qm9:{int(q)}" for q in ds.ids])
    return config.layout.encode_np(y, mask, n_h)


def set_errors(pred: np.ndarray, ds, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vector target: (predicted sets, true sets, mask), each (M, length) ascending: the
    molecule's own outputs read back and sorted (`SetLayout.decode`), so |pred - true| over the
    mask is the sorted-set (optimal-transport) error."""
    true, mask = sorted_sets(ds, config.targets[0], config.vector_length)
    sets, _ = config.layout.decode_np(pred, mask.sum(1), ds.n_hydrogens)
    return np.where(mask, sets, 0.0), true, mask


CM1_TO_EV = 1.239841984e-4  # 1 cm^-1 in eV (h c)


def set_metrics(sets: np.ndarray, true: np.ndarray, mask: np.ndarray, ds=None) -> dict:
    """What a spectroscopist reads from predicted frequency sets (cm^-1), beside the MAE over
    all sorted modes: the MAE per spectral region (by the true value), of the highest mode
    omega_1, per molecule, and the ZPVE recomputed from the set (0.5 sum) against QM9's ZPVE
    (and, as the floor, QM9's own set against it) when `ds` has zpve_ev."""
    from .sets import REGION_NAMES, regions_of

    err = np.abs(sets - true)
    reg = regions_of(true)
    n = mask.sum(1)
    rows = np.arange(len(n))[n > 0]
    top = n[n > 0] - 1
    out = {"per_region": {name: {"n_values": int((mask & (reg == r)).sum()),
                                 "mae": float(err[mask & (reg == r)].mean()) if (mask & (reg == r)).any() else None}
                          for r, name in enumerate(REGION_NAMES)},
           "omega_1_mae": float(err[rows, top].mean()) if len(rows) else None,
           "per_molecule_mae_median": float(np.median(err.sum(1)[rows] / n[rows])) if len(rows) else None}
    if ds is not None and hasattr(ds, "_scalar_col") and "zpve_ev" in ds._scalar_col:
        z = np.asarray(ds.with_targets(()).target("zpve_ev"), dtype=np.float64)
        zp = 0.5 * np.where(mask, sets, 0).sum(1) * CM1_TO_EV
        zt = 0.5 * np.where(mask, true, 0).sum(1) * CM1_TO_EV
        out["zpve_from_set_mae_ev"] = float(np.abs(zp - z)[rows].mean()) if len(rows) else None
        out["zpve_from_true_set_mae_ev"] = float(np.abs(zt - z)[rows].mean()) if len(rows) else None
    return out


LOSSES = ("mse", "l1")
SCHEDULES = ("plateau", "cosine")
COSINE_FLOOR = 1e-2  # the cosine schedule ends at lr * COSINE_FLOOR


def masked_loss(kind: str, pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if kind == "l1":
        return torch.where(mask, pred - y, 0.0).abs().sum() / mask.to(pred.dtype).sum().clamp(min=1)
    return masked_mse(pred, y, mask)


def masked_mse(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries where mask is True (padding and NaN targets ignored:
    a NaN in y where mask is False must not reach the sum, since NaN * 0 is NaN)."""
    m = mask.to(pred.dtype)
    return (torch.where(mask, pred - y, 0.0) ** 2).sum() / m.sum().clamp(min=1)


def _distributed() -> tuple[int, int]:
    """(rank, world size) of a torch.distributed run (torchrun), else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int]:
    """Join the process group torchrun describes in the environment (NCCL on CUDA, gloo on CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return _distributed()


def _outputs(models: Sequence[nn.Module], ds, batch_size: int = 128, device: str = "cpu") -> np.ndarray:
    """(n_models, M, outputs): every model's outputs for every molecule, in dataset order; each
    batch is read and collated once for all models."""
    for m in models:
        m.eval()
    if hasattr(ds, "with_targets"):  # the inputs only: no target is read
        ds = ds.with_targets(())
    out = []
    order = np.argsort(ds.n_atoms, kind="stable")
    with torch.no_grad():
        for idx in batches_in_order(len(order), batch_size):
            b = read_batch(ds, order[idx]).to(device)
            out.append(torch.stack([m(b.atom_features, b.pair_features, b.atom_mask).float().cpu() for m in models]))
    pred = torch.cat(out, dim=1).numpy() if out else np.zeros((len(models), 0, 1), np.float32)
    back = np.empty_like(pred)
    back[:, order] = pred
    return back


def predict_dataset(model: nn.Module, ds, batch_size: int = 128, device: str = "cpu") -> np.ndarray:
    """(M, outputs) model outputs (standardized space) for every molecule, in dataset order."""
    return _outputs([model], ds, batch_size, device)[0]


def regression_metrics(pred: np.ndarray, true: np.ndarray) -> dict:
    err = pred - true
    ss_res = float((err ** 2).sum())
    ss_tot = float(((true - true.mean()) ** 2).sum())
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "r2": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan")}


def transfer_state(model: nn.Module) -> tuple[dict, list[str]]:
    """The weights of a trained WeaveNet to start a network for another target from: every
    parameter and buffer but the output layer's (the head's last Linear, which maps onto the old
    target's standardized scale and is left to its fresh initialization). Returns (state dict,
    names left out)."""
    if getattr(model, "head", None) is None:
        raise ValueError("a network with per-atom heads only (skeleton_head) has no molecule-level output layer to "
                         "leave out; start another target from a network with a head")
    last = [k for k, m in model.head.named_children() if isinstance(m, nn.Linear)][-1]
    prefix = f"head.{last}."
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith(prefix)}
    return state, [k for k in model.state_dict() if k.startswith(prefix)]


class Trainer:
    """fit(train_ds, val_ds) trains a WeaveNet into `out`; rerunning resumes from checkpoint.pt."""

    def __init__(self, out: str | os.PathLike, model_config: WeaveConfig | None = None,
                 config: TrainConfig | None = None, log: Callable[[str], None] = print, progress: bool = True,
                 input_stage_state: dict | None = None, input_stage_record: dict | None = None,
                 init_state: dict | None = None, init_record: dict | None = None):
        """input_stage_state: the state dict that initializes the model's input stage (a trained
        autoencoder's encoders) when training starts; input_stage_record: where it came from,
        written to config.json's 'inputs'. init_state: a partial state dict of the whole network
        (`transfer_state`: a trained model's weights but its output layer) that initializes a new
        run, for fine-tuning from a model of another target; init_record: where it came from
        (config.json's 'init_from', part of the checkpoint's identity: a run resumes only from the same start)."""
        self.out = Path(out)
        self.input_stage_state, self.input_stage_record = input_stage_state, input_stage_record
        self.init_state, self.init_record = init_state, init_record
        self.config = config or TrainConfig()
        self.model_config = model_config or WeaveConfig(n_outputs=self.config.n_outputs)
        if self.model_config.n_outputs != self.config.n_outputs:
            raise ValueError(f"model has {self.model_config.n_outputs} outputs; the targets need {self.config.n_outputs}")
        if getattr(self.model_config, "xh_head", None) is not None:
            layout = self.config.layout
            if layout is None or layout.name != "hydrogen" or layout.h_slots != self.model_config.xh_slots:
                raise ValueError(f"a per-hydrogen head (xh_head) fills the X-H block of the hydrogen layout: it needs a "
                                 f"frequency-set target with set_layout 'hydrogen' and {self.model_config.xh_slots} X-H "
                                 f"outputs (got {self.config.targets[0]!r}, layout "
                                 f"{layout.name if layout else None!r})")
        self.log, self.progress = log, progress

    def fit(self, train_ds, val_ds, split_meta: dict | None = None, stop_after: int | None = None,
            deadline: float | None = None) -> "Trainer":
        """Train; `stop_after` ends the call after that many epochs of this call (chunks);
        `deadline` (a time.time() value) ends it at the last epoch boundary before it, judged by
        the previous epoch's duration. Either way the checkpoint resumes the run, and
        `self.finished` says whether training is complete (epochs done or early stopping)."""
        from molgraph import TARGETS

        tune_allocator()
        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        device = torch.device(c.device)
        train_ds, val_ds = train_ds.with_targets(c.targets), val_ds.with_targets(c.targets)
        y, ymask = target_matrix(train_ds, c)
        count = np.maximum(ymask.sum(0), 1)
        mean = np.where(ymask, y, 0).sum(0) / count  # per output, over the molecules that have it
        std = np.sqrt(np.where(ymask, (y - mean) ** 2, 0).sum(0) / count)
        std[std == 0] = 1.0
        if getattr(self.model_config, "xh_head", None) is not None:
            # the X-H outputs are the per-hydrogen values sorted: one scale for all of them, so that
            # sorting the standardized values sorts the frequencies
            k = self.model_config.xh_slots
            vals = y[:, :k][ymask[:, :k]]
            mean[:k], std[:k] = vals.mean(), max(float(vals.std()), 1e-12)
            if getattr(self.model_config, "skeleton_head", None) is not None:  # the same for the skeleton block
                vals = y[:, k:][ymask[:, k:]]
                mean[k:], std[k:] = vals.mean(), max(float(vals.std()), 1e-12)
        if c.is_vector:  # validation: the sorted-set error of the decoded prediction
            val_true, val_mask = sorted_sets(val_ds, c.targets[0], c.vector_length)
            val_nh = val_ds.n_hydrogens
        else:
            val_true, val_mask = target_matrix(val_ds, c)
        torch.manual_seed(c.seed)
        rank, world = _distributed()
        if world > 1 and device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        main = rank == 0  # only the main process writes files
        net = build_model(self.model_config).to(device)  # the module whose weights are saved
        if self.input_stage_state is not None:
            if net.input_stage is None:
                raise ValueError("input_stage_state given but the model config has no input_stage")
            net.input_stage.load_state_dict(self.input_stage_state)
            if hasattr(net, "sync_padding"):  # a flat network's empty slots follow the stage's standardization
                net.sync_padding()
        if hasattr(net, "fit_input_standardization"):  # a flat network without a stage: from the training data
            sample = read_batch(train_ds, np.arange(min(len(train_ds), 4000)))
            net.fit_input_standardization(sample.atom_features, sample.pair_features, sample.atom_mask)
        if self.init_state is not None:
            missing, unexpected = net.load_state_dict(self.init_state, strict=False)
            if unexpected:
                raise ValueError(f"init_state has parameters this network lacks: {', '.join(unexpected)}")
        model = net
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        trainable = [q for q in model.parameters() if q.requires_grad]
        # fused: one kernel for all parameters instead of ~10 small ops per tensor (4x faster steps
        # of the optimizer on one CPU thread; benchmarks/train_throughput.py)
        opt = torch.optim.Adam(trainable, lr=c.lr, weight_decay=c.weight_decay, fused=True)
        if c.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c.epochs, eta_min=c.lr * COSINE_FLOOR)
        else:
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=c.lr_factor, patience=c.lr_patience)
        rng = np.random.default_rng(c.seed)
        state = {"epoch": 0, "best_val": math.inf, "best_epoch": -1, "bad_epochs": 0}
        ckpt = self.out / "checkpoint.pt"
        meta = self._meta(mean, std, train_ds, val_ds, split_meta)
        if ckpt.exists():
            try:
                saved = torch.load(ckpt, weights_only=True, map_location=device)
                saved["meta"], saved["model"], saved["optimizer"], saved["state"]
            except Exception as exc:  # empty, truncated, not a checkpoint, or a pickle that is refused
                raise ValueError(f"{ckpt}: not readable as a training checkpoint ({type(exc).__name__}); delete it to "
                                 f"start this run again from scratch (weights.pt, the best model so far, is kept)") from None
            if saved["meta"] != json.dumps(meta, sort_keys=True):
                raise ValueError(f"{ckpt} belongs to another run (config, targets or split differ); use another --out or delete it")
            net.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            for group in opt.param_groups:  # a checkpoint from before the fused optimizer resumes fused too
                group["fused"], group["foreach"] = True, None
            sched.load_state_dict(saved["scheduler"])
            torch.set_rng_state(saved["torch_rng"])
            rng.bit_generator.state = saved["numpy_rng"]
            state = saved["state"]
            self.log(f"resuming {self.out} at epoch {state['epoch']}")
        if main:
            self._write_config(meta, train_ds)
        mean_t, std_t = torch.tensor(mean, dtype=torch.float32, device=device), torch.tensor(std, dtype=torch.float32, device=device)
        scaler = torch.amp.GradScaler(enabled=c.amp and device.type == "cuda")
        n_atoms = train_ds.n_atoms
        done_here = 0
        from tqdm.auto import tqdm

        last_epoch_s = self._last_epoch_seconds()
        self.stopped_for_time = False
        while state["epoch"] < c.epochs and state["bad_epochs"] < c.patience:
            if stop_after is not None and done_here >= stop_after:
                break
            if deadline is not None and last_epoch_s is not None and time.time() + 1.1 * last_epoch_s > deadline:
                self.stopped_for_time = True
                self.log(f"time limit: stopping {self.out} after epoch {state['epoch']} (an epoch takes "
                         f"~{last_epoch_s:.0f} s); rerun the same command to resume")
                break
            t0 = time.time()
            model.train()
            steps = mixed_steps(n_atoms, c.batch_size, c.mix_sizes, rng)  # the same on every rank (same seed)
            if world > 1:  # each rank takes every world-th step; equal counts keep the all-reduces in step
                # (and every step the same number of buckets, since each backward pass all-reduces:
                # the epoch's last, shorter step is left out)
                steps = [st for st in steps if len(st) == c.mix_sizes] if c.mix_sizes > 1 else steps
                steps = steps[: len(steps) // world * world][rank::world]
            total, seen = 0.0, 0
            bar = tqdm(steps, desc=f"epoch {state['epoch'] + 1}/{c.epochs}", disable=None if self.progress else True, leave=False)  # None: off when not a terminal
            for step in bar:
                opt.zero_grad(set_to_none=True)
                parts = [read_batch(train_ds, idx).to(device) for idx in step]
                for loss, n in backward_step(model, parts, c, mean_t, std_t, scaler):
                    total += loss * n
                    seen += n
                if c.clip_grad_norm is not None:
                    scaler.unscale_(opt)  # clip the true gradient (a no-op without mixed precision)
                    torch.nn.utils.clip_grad_norm_(trainable, c.clip_grad_norm)
                scaler.step(opt)
                scaler.update()
                bar.set_postfix(loss=f"{total / seen:.4f}")
            train_seconds = time.time() - t0
            val_pred = predict_dataset(net, val_ds, device=str(device)) * std + mean  # identical on every rank
            if c.is_vector:
                val_pred = np.nan_to_num(c.layout.decode_np(val_pred, val_mask.sum(1), val_nh)[0])
            val_mae = float(np.abs(val_pred - val_true)[val_mask].mean())
            if c.schedule == "plateau":
                sched.step(val_mae)
            else:
                sched.step()
            state["epoch"] += 1
            done_here += 1
            if val_mae < state["best_val"]:
                state.update(best_val=val_mae, best_epoch=state["epoch"], bad_epochs=0)
                if main:
                    atomic_torch_save(net.state_dict(), self.out / "weights.pt")
                    write_checksums(self.out)
            else:
                state["bad_epochs"] += 1
            row = {"epoch": state["epoch"], "train_loss": total / max(seen, 1), "val_mae": val_mae,
                   "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2),
                   "molecules_per_s": round(seen / train_seconds, 1)}
            if main:
                self._append_history(row)
                atomic_torch_save({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                    "torch_rng": torch.get_rng_state(), "numpy_rng": rng.bit_generator.state,
                                    "state": state, "meta": json.dumps(meta, sort_keys=True)}, ckpt)
            if world > 1:
                torch.distributed.barrier()
            last_epoch_s = time.time() - t0
            unit = TARGETS[c.targets[0]].unit
            if main:
                self.log(f"epoch {state['epoch']}: train loss {row['train_loss']:.4f}, val MAE {val_mae:.4f} {unit}, "
                         f"{row['molecules_per_s']:.0f} training mol/s{' (rank 0)' if world > 1 else ''}")
        self.state_ = state
        return self

    @property
    def finished(self) -> bool:
        s = getattr(self, "state_", None)
        return s is not None and (s["epoch"] >= self.config.epochs or s["bad_epochs"] >= self.config.patience)

    def _last_epoch_seconds(self) -> float | None:
        path = self.out / "history.csv"
        if not path.exists():
            return None
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return float(rows[-1]["seconds"]) if rows else None

    def evaluate(self, test_ds, device: str | None = None) -> dict:
        """Test metrics of the best weights, written to metrics.json."""
        from molgraph import TARGETS

        pred_model = load(self.out, device=device or self.config.device)
        pred = pred_model.predict_dataset(test_ds)
        metrics = {"n_train": self._cfg()["n_train"], "n_val": self._cfg()["n_val"], "n_test": len(test_ds), "targets": {}}
        if self.config.is_vector:  # one target, metrics over every real value of the sorted sets
            t = self.config.targets[0]
            sets, true, mask = set_errors(pred, test_ds, self.config)
            metrics["targets"][t] = {"unit": TARGETS[t].unit, "n_values": int(mask.sum()),
                                     **regression_metrics(sets[mask], true[mask]), **set_metrics(sets, true, mask, test_ds)}
        else:
            true, mask = target_matrix(test_ds, self.config)
            for k, t in enumerate(self.config.targets):
                metrics["targets"][t] = {"unit": TARGETS[t].unit,
                                         **regression_metrics(pred[mask[:, k], k], true[mask[:, k], k])}
            save_test_predictions(self.out, test_ds.ids, self.config.targets, true, pred)
        atomic_write_text(self.out / "metrics.json", json.dumps(metrics, indent=2))
        return metrics

    # -- files
    def _meta(self, mean, std, train_ds, val_ds, split_meta) -> dict:
        return {"model": self.model_config.to_json(), "train": self.config.to_json(), "targets": list(self.config.targets),
                "mean": [float(m) for m in mean], "std": [float(s) for s in std], "n_train": len(train_ds),
                "n_val": len(val_ds), "split": split_meta or {}, "featurizer_version": train_ds.manifest["featurizer_version"],
                **({"init_from": self.init_record} if self.init_record else {})}

    def _write_config(self, meta: dict, train_ds=None) -> None:
        from molgraph import TARGETS

        cfg = {**meta, "units": {t: TARGETS[t].unit for t in meta["targets"]}, "format": "qmlrp-weave-1"}
        cfg["inputs"] = _inputs_record(train_ds)
        if self.input_stage_record:
            cfg["inputs"]["input_stage"] = self.input_stage_record
        atomic_write_text(self.out / "config.json", json.dumps(cfg, indent=2))
        if (self.out / "weights.pt").exists():
            write_checksums(self.out)

    def _cfg(self) -> dict:
        return json.loads((self.out / "config.json").read_text())

    def _append_history(self, row: dict) -> None:
        path = self.out / "history.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)


def _inputs_record(ds) -> dict:
    """What rebuilds the model's inputs and targets, for config.json: the featurized source and,
    for targets from a QM label table (--labels), that table's path and SHA-256. Not part of the
    checkpoint's identity (runs started before this record existed resume unchanged)."""
    if ds is None or not hasattr(ds, "manifest"):
        return {}
    m = ds.manifest
    rec = {"dataset": "qm9", "source": m.get("source"), "source_checksum": m.get("source_checksum"),
           "featurizer_version": m.get("featurizer_version")}
    labels = getattr(ds, "labels", None)
    if labels is not None:
        path = Path(labels.source)
        rec["labels"] = {"table": str(path), "absolute": str(path.resolve()),
                         "sha256": sha256_file(path) if path.is_file() else None}
    return rec


class Predictor:
    """A trained model (or an ensemble of them) that predicts in the targets' units. For a
    vector target (one target, many outputs) the outputs are its values in order, padded: a
    molecule's frequency set is the first 3N-6 (3N-5 if linear) of them."""

    def __init__(self, models: Sequence[nn.Module], targets: Sequence[str], units: dict, n_outputs: int,
                 device: str = "cpu", domains: Sequence | None = None, layout=None):
        self.models, self.targets, self.units = list(models), tuple(targets), dict(units)
        self.n_outputs, self.device = n_outputs, device
        self.domains = list(domains) if domains is not None else [None] * len(self.models)
        if layout is None and self.is_vector:
            from .sets import SetLayout

            layout = SetLayout("ascending", n_outputs)
        self.layout = layout  # vector models: how the sorted set sits on the outputs (gcnn.sets)

    @property
    def has_domain(self) -> bool:
        return any(d is not None for d in self.domains)

    def check_domain(self, graphs) -> list | None:
        """Per MolGraph a `gcnn.domain.Verdict` (inside or not, score, reasons), combined over the
        members that have a recorded domain; None when no member has one."""
        from molgraph import collate
        from molgraph.features import ATOM_FEATURES, PAIR_FEATURES

        from .domain import combine

        if not self.has_domain or not graphs:
            return None
        b = collate([g.with_targets({}) for g in graphs]).to(self.device)
        per = []
        for m, d in zip(self.models, self.domains):
            if d is None:
                continue
            with torch.no_grad():
                pooled = m.model.pooled(b.atom_features, b.pair_features, b.atom_mask).double().cpu().numpy()
            per.append(d.check(graphs, pooled, ATOM_FEATURES, PAIR_FEATURES))
        return combine(per)

    @property
    def is_vector(self) -> bool:
        return len(self.targets) == 1 and self.n_outputs > 1

    def predict_dataset(self, ds) -> np.ndarray:
        """(M, outputs) mean prediction over the ensemble, in target units."""
        return self.predict_dataset_with_spread(ds)[0]

    def predict_dataset_with_spread(self, ds) -> tuple[np.ndarray, np.ndarray]:
        preds = _outputs(self.models, ds, device=self.device)
        return preds.mean(0), preds.std(0)

    def predict_dataset_sets(self, ds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vector models over a dataset: (sets (M, length) ascending, NaN beyond each molecule's
        values; ensemble spread (M, length); mask (M, length)), each member's set decoded and
        sorted before averaging (as `predict_sets`). The number of values per molecule comes from
        the dataset's own sets."""
        if not self.is_vector:
            raise ValueError(f"predict_dataset_sets is for vector models; this one predicts {', '.join(self.targets)}")
        _, mask = sorted_sets(ds, self.targets[0], self.n_outputs)
        n_values, n_h = mask.sum(1), ds.n_hydrogens
        self.layout.check(n_values, n_h, [f"qm9:{int(q)}" for q in ds.ids])
        outs = _outputs(self.models, ds, device=self.device).astype(np.float64)
        sets = np.stack([self.layout.decode_np(o, n_values, n_h)[0] for o in outs])
        return sets.mean(0), sets.std(0), mask

    def predict_sets(self, graphs) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Vector models: per MolGraph its predicted set, sorted ascending (3N-6 values, 3N-5 if
        linear), and the ensemble spread of each sorted value (zeros for one model). Each member's
        set is read back and sorted, then the sorted sets are averaged (in 1-D the average of
        sorted sets is the Wasserstein barycentre of the members' stick spectra)."""
        from molgraph import collate
        from molgraph.targets import n_harmonic_modes

        if not self.is_vector:
            raise ValueError(f"predict_sets is for vector models; this one predicts {', '.join(self.targets)}")
        if not graphs:
            return [], []
        n_values = np.array([n_harmonic_modes(g.positions.numpy()) for g in graphs])
        n_h = np.array([sum(e == "H" for e in g.elements) for g in graphs])
        self.layout.check(n_values, n_h, [g.name or f"molecule {i}" for i, g in enumerate(graphs)])
        b = collate([g.with_targets({}) for g in graphs]).to(self.device)
        with torch.no_grad():
            outs = [m.eval()(b.atom_features, b.pair_features, b.atom_mask).double().cpu().numpy() for m in self.models]
        sets = np.stack([self.layout.decode_np(o, n_values, n_h)[0] for o in outs])  # (members, n, length)
        mean, spread = sets.mean(0), sets.std(0)
        return ([mean[i, :k] for i, k in enumerate(n_values)], [spread[i, :k] for i, k in enumerate(n_values)])

    def predict_graphs(self, graphs) -> tuple[np.ndarray, np.ndarray]:
        """MolGraphs -> ((n, outputs) prediction, (n, outputs) ensemble spread; zeros for one model)."""
        outs = self.member_predictions(graphs)
        return outs.mean(0), outs.std(0)

    def member_predictions(self, graphs) -> np.ndarray:
        """MolGraphs -> (members, n, outputs): each ensemble member's prediction, in target units,
        members in fold order."""
        from molgraph import collate

        if not graphs:
            return np.zeros((len(self.models), 0, self.n_outputs), dtype=np.float32)
        b = collate([g.with_targets({}) for g in graphs]).to(self.device)
        with torch.no_grad():
            return np.stack([m.eval()(b.atom_features, b.pair_features, b.atom_mask).float().cpu().numpy()
                             for m in self.models])


CHECKSUMS = "checksums.json"
_CHECKED_FILES = ("config.json", "weights.pt", "domain.npz")  # domain.npz where recorded


TEST_PREDICTIONS = "test_predictions.npz"


def save_test_predictions(model_dir, ids, targets, true: np.ndarray, pred: np.ndarray) -> None:
    """The test molecules' predictions of a scalar model (QM9 ids, targets, reference and
    predicted values in target units, float32), next to metrics.json: a CV's folds together are
    the out-of-fold predictions of every molecule (`qmlrp cv`'s figure reads them)."""
    import io

    from molgraph.storage import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, ids=np.asarray(ids, dtype=np.int64), targets=np.asarray(list(targets)),
                        true=np.asarray(true, dtype=np.float32), pred=np.asarray(pred, dtype=np.float32))
    atomic_write_bytes(Path(model_dir) / TEST_PREDICTIONS, buf.getvalue())


def load_test_predictions(model_dir, target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(QM9 ids, reference, prediction) of one target from a model directory's test_predictions.npz,
    molecules without a reference value left out; None when the directory kept none."""
    f = Path(model_dir) / TEST_PREDICTIONS
    if not f.is_file():
        return None
    with np.load(f) as z:
        k = list(z["targets"]).index(target)
        ok = np.isfinite(z["true"][:, k])
        return z["ids"][ok], z["true"][ok, k], z["pred"][ok, k]


def write_checksums(model_dir: str | os.PathLike) -> None:
    """Record the SHA-256 of a model directory's config.json and weights.pt in checksums.json;
    `load` refuses a directory whose files no longer match (Trainer writes it with every best
    epoch)."""
    d = Path(model_dir)
    sums = {name: sha256_file(d / name) for name in _CHECKED_FILES if (d / name).exists()}
    atomic_write_text(d / CHECKSUMS, json.dumps({"sha256": sums}, indent=2))


def _verify_checksums(model_dir: Path) -> None:
    path = model_dir / CHECKSUMS
    if not path.exists():
        return  # a directory from before checksums were recorded
    try:
        recorded = json.loads(path.read_text())["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{path}: not a checksum file (expected {{'sha256': {{file: digest}}}})") from None
    for name, digest in recorded.items():
        f = model_dir / name
        if not f.exists():
            raise ValueError(f"{model_dir}: {name} is listed in {CHECKSUMS} but missing")
        actual = sha256_file(f)
        if actual != digest:
            raise ValueError(f"{f}: SHA-256 {actual[:16]}... does not match the {digest[:16]}... recorded in "
                             f"{path}; the file was changed or damaged after training, so the model is refused")


def read_model_config(model_dir: str | os.PathLike, what: str = "a model directory", hint: str = "") -> dict:
    """config.json of a model directory (config.json + weights.pt, checksums verified), as a
    dict; one-line errors that name the file. `what`/`hint` word the error for a directory that
    is not one (a weave model, an autoencoder)."""
    model_dir = Path(model_dir)
    cfg_path, w_path = model_dir / "config.json", model_dir / "weights.pt"
    if not cfg_path.exists() or not w_path.exists():
        raise FileNotFoundError(f"{model_dir}: not {what} (needs config.json and weights.pt{hint})")
    _verify_checksums(model_dir)
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg_path}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def read_weights(w_path: Path, device: str = "cpu") -> dict:
    """A weights.pt state dict, loaded without executing code; a one-line error otherwise."""
    try:
        state = torch.load(w_path, weights_only=True, map_location=device)
    except Exception as exc:  # truncated, empty, not a torch file, or a pickle that is refused
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ValueError(f"{w_path}: not readable as model weights ({type(exc).__name__}: {reason}). "
                         f"Weights load without executing code; a file that needs more than that is refused") from None
    if not isinstance(state, dict):
        raise ValueError(f"{w_path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def _load_one(model_dir: Path, device: str):
    cfg_path, w_path = model_dir / "config.json", model_dir / "weights.pt"
    cfg = read_model_config(model_dir)
    if cfg.get("format") != "qmlrp-weave-1":
        raise ValueError(f"{cfg_path}: unknown model format {cfg.get('format')!r}; expected 'qmlrp-weave-1'")
    missing = [k for k in ("model", "targets", "units", "mean", "std") if k not in cfg]
    if missing:
        raise ValueError(f"{cfg_path}: missing key(s) {', '.join(missing)}")
    if not isinstance(cfg["model"], dict):
        raise ValueError(f"{cfg_path}: 'model' must be an object of network settings, got {type(cfg['model']).__name__}")
    try:
        model = build_model(config_from_json(cfg["model"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{cfg_path}: key 'model': {exc}") from None
    for key in ("mean", "std"):
        v = cfg[key]
        if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise ValueError(f"{cfg_path}: key '{key}' must be a list of numbers, got {v!r}")
        if not all(math.isfinite(x) for x in v):
            raise ValueError(f"{cfg_path}: key '{key}' holds a value that is not finite ({v}); the model cannot "
                             f"be denormalized")
    if any(x <= 0 for x in cfg["std"]):
        raise ValueError(f"{cfg_path}: key 'std' must be positive (got {cfg['std']}); a zero std would predict "
                         f"the training mean for every molecule")
    if not isinstance(cfg["targets"], list) or not all(isinstance(x, str) for x in cfg["targets"]):
        raise ValueError(f"{cfg_path}: key 'targets' must be a list of target names, got {cfg['targets']!r}")
    if not isinstance(cfg["units"], dict) or any(t not in cfg["units"] for t in cfg["targets"]):
        raise ValueError(f"{cfg_path}: key 'units' must give a unit for every target ({cfg['targets']})")
    state = read_weights(w_path, device)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{w_path} does not match {cfg_path}: {str(exc).splitlines()[0]}") from None
    vector = len(cfg["targets"]) == 1 and model.config.n_outputs > 1
    if len(cfg["mean"]) != model.config.n_outputs or (not vector and len(cfg["targets"]) != model.config.n_outputs):
        raise ValueError(f"{cfg_path}: {len(cfg['targets'])} targets and {len(cfg['mean'])} normalization values "
                         f"but the model has {model.config.n_outputs} outputs")
    return model.to(device).eval(), cfg


def model_dirs(root: str | os.PathLike) -> list[Path]:
    """The model directories of `root`: [root] for a model directory (config.json), else its
    fold_*/ members with config.json and weights.pt, in numeric fold order (fold_2 before
    fold_10; names with a non-numeric tail after them, by name). [] when there are none. The one
    lister of fold folders (prediction, explain, stability)."""
    root = Path(root)
    if (root / "config.json").exists():
        return [root]
    members = [p for p in root.glob("fold_*") if (p / "weights.pt").exists() and (p / "config.json").exists()]

    def order(p):
        tail = p.name.split("_", 1)[1]
        return (0, int(tail), "") if tail.isdigit() else (1, 0, tail)

    return sorted(members, key=order)


def load(model_dir: str | os.PathLike, device: str = "cpu", members: Sequence[str | os.PathLike] | None = None
         ) -> Predictor:
    """A model directory, or a directory of fold_*/ model directories (an ensemble: prediction
    = mean, uncertainty = spread), as a Predictor. Loads config + weights; never unpickles code.
    members: only these of the ensemble's model directories (e.g. the fold models that never saw
    the molecules to be predicted)."""
    tune_allocator()
    root = Path(model_dir)
    dirs = model_dirs(root)
    if not dirs:
        raise FileNotFoundError(f"{root}: no config.json + weights.pt, and no fold_*/ model directories")
    if members is not None:
        wanted = {Path(m).resolve() for m in members}
        unknown = wanted - {d.resolve() for d in dirs}
        if unknown:
            raise ValueError(f"{root}: {', '.join(sorted(map(str, unknown)))} is not one of its model directories")
        dirs = [d for d in dirs if d.resolve() in wanted]
        if not dirs:
            raise ValueError(f"{root}: no model directory chosen (members is empty)")
    loaded = [_load_one(d, device) for d in dirs]
    cfg0 = loaded[0][1]
    for _, cfg in loaded[1:]:
        if cfg["targets"] != cfg0["targets"]:
            raise ValueError(f"{root}: ensemble members predict different targets")
    # members may have different normalization: each undoes its own, outputs are in target units
    models = [_Denormalized(m, cfg["mean"], cfg["std"]).to(device) for m, cfg in loaded]
    from .domain import Domain

    layouts = {_layout_of(cfg) for _, cfg in loaded}
    if len(layouts) > 1:
        raise ValueError(f"{root}: ensemble members lay out their sets differently ({', '.join(sorted(layouts))})")
    layout = None
    if len(cfg0["targets"]) == 1 and len(cfg0["mean"]) > 1:
        from .sets import SetLayout

        layout = SetLayout(_layout_of(cfg0), len(cfg0["mean"]))
    return Predictor(models, cfg0["targets"], cfg0["units"], len(cfg0["mean"]), device,
                     domains=[Domain.load(d) for d in dirs], layout=layout)


def _layout_of(cfg: dict) -> str:
    """The set layout a model's config.json records (models from before layouts: ascending)."""
    from .sets import LAYOUTS

    name = (cfg.get("train") or {}).get("set_layout", "ascending")
    if name not in LAYOUTS:
        raise ValueError(f"config.json: unknown set_layout {name!r}; valid: {', '.join(LAYOUTS)}")
    return name


class _Denormalized(nn.Module):
    """A member with its own target normalization undone: outputs in target units."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, a, p, m):
        return self.model(a, p, m) * self.std + self.mean
