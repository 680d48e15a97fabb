"""gcnn: weave graph-convolution networks (Kearnes et al. 2016; MG/GC of Faber et al. 2017),
training with resumable checkpoints, prediction from a model directory, and the applicability
domain every model directory records (`gcnn.domain`)."""
from . import domain
from .flat import FlatConfig, FlatNet, build_model, config_from_json
from .model import WeaveConfig, WeaveLayer, WeaveNet
from .protocol import cross_validate, learning_curve
from .training import (Predictor, TrainConfig, Trainer, load, model_dirs, read_batch, write_checksums, regression_metrics, size_buckets,
                       transfer_state, tune_allocator)

__all__ = ["WeaveNet", "WeaveConfig", "WeaveLayer", "FlatNet", "FlatConfig", "build_model", "config_from_json", "Trainer", "TrainConfig", "Predictor", "load",
           "regression_metrics", "size_buckets",
           "read_batch", "tune_allocator", "model_dirs", "write_checksums", "cross_validate", "learning_curve", "transfer_state",
           "domain"]
