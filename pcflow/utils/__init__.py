"""Utilities: atomic checkpoints and small helpers."""

from __future__ import annotations

from pcflow.utils.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    load_checkpoint,
    remove_partial_checkpoints,
    save_checkpoint,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "load_checkpoint",
    "remove_partial_checkpoints",
    "save_checkpoint",
]
