"""Atomic file writes: a reader never sees a half-written file, a killed writer leaves
either the old file or the new one."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _file_mode() -> int:
    """The mode a plainly created file gets (0666 minus the umask); mkstemp's temporary files
    are 0600, which would make every result readable by its owner only."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def _atomic(path, write, mode: str):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path, text: str) -> None:
    _atomic(path, lambda f: f.write(text), "w")


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_npz(file, /, **arrays) -> None:
    _atomic(file, lambda f: np.savez(f, **arrays), "wb")


def atomic_save_npy(path, array) -> None:
    _atomic(path, lambda f: np.save(f, array), "wb")


def atomic_write_bytes(path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data), "wb")


def atomic_torch_save(obj, path) -> None:
    """torch.save to `path` atomically (checkpoints, weights)."""
    import torch

    _atomic(path, lambda f: torch.save(obj, f), "wb")


def sha256_file(path) -> str:
    """Hex SHA-256 of a file's bytes (model checksums, label-table records)."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
