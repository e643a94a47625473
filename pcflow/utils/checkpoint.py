"""Atomic checkpoint files: written whole or not at all, read back safely."""

from __future__ import annotations

import errno
import glob
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "load_checkpoint",
    "remove_partial_checkpoints",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "pcflow-checkpoint"
"""Marker stored in every checkpoint written by `save_checkpoint`."""

CHECKPOINT_VERSION = 1
"""Version of the checkpoint layout; files from a newer version are refused."""


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, corrupt or incompatible."""


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the new one, whole.

    The state is written to a temporary file in the same directory, flushed and ``fsync``-ed,
    then moved over ``path`` with ``os.replace`` (atomic on POSIX and Windows), and the directory
    is ``fsync``-ed. If anything fails or the process is killed on the way, ``path`` keeps its
    previous content and the temporary file is removed (or, after a hard kill, left as a
    hidden ``.<name>.*.tmp`` file that is never read; `remove_partial_checkpoints` deletes
    those). The file gets the usual permissions for a new file (``0o666`` less the umask).

    The state must hold only what ``torch.load(weights_only=True)`` reads back: tensors,
    numbers, strings, ``None``, and lists, tuples and dicts of those (state dicts qualify).

    Arguments:
        path: Destination file; parent directories are created.
        state: A mapping with string keys.

    Returns:
        The path written.

    Raises:
        OSError: With ``errno.ENOSPC`` and a message naming the file and the free space, when
            the disk is full.

    Example:
        >>> import tempfile, torch
        >>> from pcflow.utils import load_checkpoint, save_checkpoint
        >>> path = save_checkpoint(tempfile.mkdtemp() + "/last.pt", {"step": 3, "w": torch.ones(2)})
        >>> load_checkpoint(path)["step"]
        3
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping with string keys, got {type(state).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "state": dict(state)}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0o600); a checkpoint is as readable as other outputs.
        os.chmod(temporary, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        full = _disk_full(error)
        if full is not None:
            # torch reports a full disk as "unexpected pos ...", the real cause only chained.
            free = shutil.disk_usage(path.parent).free
            raise OSError(
                full.errno,
                f"No space left on device: cannot write checkpoint {str(path)!r} "
                f"({free / 2**20:.1f} MiB free in {str(path.parent)!r})",
            ) from error
        raise
    _fsync_directory(path.parent)
    return path


def remove_partial_checkpoints(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that interrupted `save_checkpoint` calls left for ``path``.

    A process killed while writing leaves a hidden ``.<name>.*.tmp`` file next to ``path``
    (possibly hundreds of MB). Call this when a run starts, before any checkpoint of ``path`` is
    being written; only files named the way `save_checkpoint` names them are removed.

    Arguments:
        path: The checkpoint file whose partial copies are removed (it need not exist).

    Returns:
        The files removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for temporary in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if temporary.is_file() and not temporary.is_symlink():
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    return removed


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device | None = "cpu",
    *,
    required_keys: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, safely (``weights_only=True``).

    Arguments:
        path: The checkpoint file.
        map_location: Where tensors are loaded (``torch.load``'s ``map_location``).
        required_keys: Keys the state must hold; a missing one is an incompatibility error.

    Returns:
        The saved state (a dict).

    Raises:
        CheckpointError: If the file is missing, is not a readable torch file (truncated,
            corrupt, or holding objects other than tensors and plain containers), is not a
            pcflow checkpoint, comes from a newer pcflow, or lacks a required key.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read: it is corrupt, truncated or not a "
            f"pcflow checkpoint ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a pcflow checkpoint (no {CHECKPOINT_FORMAT!r} "
            "marker); write checkpoints with pcflow.utils.save_checkpoint"
        )
    version = payload.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has layout version {version!r}; this pcflow reads "
            f"versions up to {CHECKPOINT_VERSION}: upgrade pcflow"
        )
    state = payload.get("state")
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds no state dict")
    missing = [key for key in required_keys if key not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is incompatible: it lacks {missing} "
            f"(it holds {sorted(state)})"
        )
    return state


def _disk_full(error: BaseException) -> OSError | None:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        error = error.__cause__ or error.__context__
    return None


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows).
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
