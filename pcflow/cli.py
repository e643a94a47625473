"""Command-line plumbing shared by pcflow's programs (FlowGAN's, DPF-Nets', your own).

One-line errors instead of tracebacks for bad input, the output-folder check, ``--preset``,
``--config``, ``--set`` and ``--data`` for any `pcflow.training.RunConfig`, and the sampling
flags ``--temperature``, ``--trim`` and ``--spread`` (`pcflow.flows.SamplingOptions`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from PIL.Image import DecompressionBombError

from pcflow.flows import SamplingOptions
from pcflow.flows.sampling import DRAWS
from pcflow.training import RunConfig
from pcflow.utils import CheckpointError, load_checkpoint

C = TypeVar("C", bound=RunConfig)

__all__ = [
    "add_config_arguments",
    "add_run_arguments",
    "add_sampling_arguments",
    "add_set_argument",
    "check_output_folder",
    "check_sampling_arguments",
    "command_line_program",
    "resolve_config",
    "run_config",
    "sampling_settings",
    "user_errors",
]

# What bad input raises: a missing or unreadable file, a full or read-only disk, a corrupt
# checkpoint, a setting or a file the library refuses with a message that names it.
_USER_ERRORS = (
    CheckpointError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
    yaml.YAMLError,
    DecompressionBombError,  # an image in a dataset too large to open safely
)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Answer bad input with one line, ``error: ...``, and exit status 1, not a traceback.

    Set ``PCFLOW_TRACEBACK=1`` to see the traceback instead.
    """
    try:
        yield
    except _USER_ERRORS as error:
        if os.environ.get("PCFLOW_TRACEBACK"):
            raise
        raise SystemExit(f"error: {_describe(error)}") from None


def _describe(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {error.filename}" if error.filename else "")
    return " ".join(str(error).split()) or type(error).__name__


def command_line_program(main: Callable[[list[str] | None], int]) -> Callable[..., int]:
    """Decorate a program's ``main(argv)`` with `user_errors`."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        with user_errors():
            return main(argv)

    return run


def check_output_folder(path: Path) -> None:
    """Create ``path`` and write a file there now, so that a read-only or missing output
    folder stops the program before any data loads, not hours later at the first checkpoint."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise SystemExit(
            f"error: cannot write to the output folder {str(path)!r}: {error.strerror or error}"
        ) from None


def add_set_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable; values are YAML), collected in ``args.overrides``.

    Arguments:
        parser: The program's parser.
        help: What the flag overrides, for ``--help``.
    """
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help=f"{help} (repeatable; values are YAML)",
    )  # fmt: skip


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """``--temperature T``, ``--trim Q``, ``--spread S`` and ``--draws``: how the flow samples
    (see `sampling_settings`).

    Arguments:
        parser: The program's parser.
    """
    parser.add_argument(
        "--temperature", type=float, default=None,
        help="scale of the flow's base noise when sampling (default: the checkpoint's "
        "eval.temperature)",
    )  # fmt: skip
    parser.add_argument(
        "--trim", type=float, default=None,
        help="fraction of the flow's least dense draws to drop, in [0, 1) (default: the "
        "checkpoint's eval.trim)",
    )  # fmt: skip
    parser.add_argument(
        "--spread", type=int, default=None,
        help="draws kept per point (after --trim), thinned by farthest point sampling so that "
        "the points cover the shape evenly; 1 or more (default: the checkpoint's eval.spread)",
    )  # fmt: skip
    parser.add_argument(
        "--draws", choices=list(DRAWS), default=None,
        help="the flow's base draws: 'random' (independent) or 'sobol' (a scrambled Sobol "
        "sequence per shape, which covers the shape evenly) (default: the checkpoint's "
        "eval.draws)",
    )  # fmt: skip


def check_sampling_arguments(args: argparse.Namespace) -> None:
    """Check ``--temperature``, ``--trim`` and ``--spread`` of the parsed ``args`` where given
    (before any checkpoint is loaded).

    Arguments:
        args: The parsed arguments.

    Raises:
        ValueError: Naming the argument out of range.
    """
    for name in ("temperature", "trim", "spread"):
        value = getattr(args, name)
        if value is not None:
            try:
                SamplingOptions(**{name: value})
            except ValueError as error:
                raise ValueError(f"--{error}") from None


def sampling_settings(args: argparse.Namespace, defaults: Any) -> SamplingOptions:
    """The `pcflow.flows.SamplingOptions` of the parsed ``args``, or where not given, of
    ``defaults`` (anything with ``temperature``, ``trim`` and ``spread``, such as a
    checkpoint's ``eval`` section).

    Arguments:
        args: The parsed arguments.
        defaults: The settings where a flag is not given.

    Raises:
        ValueError: Naming the argument out of range (`check_sampling_arguments`).
    """
    check_sampling_arguments(args)
    temperature = defaults.temperature if args.temperature is None else args.temperature
    trim = defaults.trim if args.trim is None else args.trim
    spread = defaults.spread if args.spread is None else args.spread
    draws = getattr(defaults, "draws", "random") if args.draws is None else args.draws
    return SamplingOptions(temperature, trim, spread, draws=draws)


def add_config_arguments(parser: argparse.ArgumentParser, presets: list[str]) -> None:
    """``--preset`` (one of ``presets``), ``--config``, ``--set`` and ``--data``.

    Arguments:
        parser: The program's parser.
        presets: The preset names ``--preset`` accepts.
    """
    parser.add_argument(
        "--preset", choices=sorted(presets), default=None, help="named settings (default: quick)"
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML file of settings, applied over the preset"
    )
    add_set_argument(parser, "override one setting, e.g. --set train.epochs=5")
    parser.add_argument(
        "--data",
        default=None,
        help="'synthetic' (the built-in dataset, generated on first use) or a data path "
        "(ShapeNet, FlowGAN's or DPF-Nets' HDF5 files, PointFlow's PC15k)",
    )


def resolve_config(args: argparse.Namespace, config_class: type[C], base: C | None = None) -> C:
    """The configuration: ``base`` (or the preset of ``config_class``), the YAML file over it,
    then ``--set``; ``--data`` sets ``data.source``.

    Arguments:
        args: The parsed arguments (`add_config_arguments`').
        config_class: The method's `pcflow.training.RunConfig`.
        base: The configuration to start from; ``None`` for the preset.
    """
    config = config_class.preset(args.preset or "quick") if base is None else base
    try:
        if args.config is not None:
            config = config.with_yaml(args.config)
        config = config.with_overrides(args.overrides)
    except (KeyError, TypeError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise SystemExit(f"error: {message}") from None
    if args.data is not None:
        config.data.source = args.data if args.data == "synthetic" else os.fspath(args.data)
    return config


def add_run_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """A training program's run folder flags: ``--out``, ``--resume``, ``--overwrite``,
    ``--max-steps`` and ``--no-progress`` (as FlowGAN's ``train.py``).

    Arguments:
        parser: The program's parser.
        default_out: The output folder when ``--out`` is not given.
    """
    parser.add_argument("--out", type=Path, default=Path(default_out), help="output folder")
    parser.add_argument(
        "--resume", action="store_true",
        help="continue from OUT/checkpoints/last.pt (its config, with --set applied over it)",
    )  # fmt: skip
    parser.add_argument(
        "--overwrite", action="store_true",
        help="start again in an OUT that holds a run, deleting its checkpoints, logs, pictures "
        "and eval/ (without it, or --resume, such an OUT is refused)",
    )  # fmt: skip
    parser.add_argument(
        "--max-steps", type=int, default=None,
        help="stop after this many steps in total, writing last.pt (as if interrupted)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_config(args: argparse.Namespace, config_class: type[C], *, notice: bool = True) -> C:
    """The configuration of a training program: with ``--resume`` and a checkpoint in
    ``args.out``, the checkpoint's (``--preset`` and ``--config`` ignored, ``--set`` and
    ``--data`` applied over it); otherwise `resolve_config`'s.

    Arguments:
        args: The parsed arguments (`add_config_arguments`' and `add_run_arguments`').
        config_class: The method's `pcflow.training.RunConfig`.
        notice: Say on stderr when ``--preset`` or ``--config`` is ignored (one process of
            several: only the first).

    Raises:
        CheckpointError: If the checkpoint holds no config or one ``config_class`` refuses.
    """
    last = Path(args.out) / "checkpoints" / "last.pt"
    if not (args.resume and last.exists()):
        return resolve_config(args, config_class)
    saved = load_checkpoint(last, required_keys=("config",))
    if notice and (args.preset or args.config):
        print(
            "--resume: the settings come from the checkpoint (--preset/--config ignored, "
            "--set applied)",
            file=sys.stderr,
        )
    try:
        base = config_class.from_dict(saved["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{last} holds an incompatible config: {error}") from error
    args.config = None
    return resolve_config(args, config_class, base)
