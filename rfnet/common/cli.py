"""Small helpers shared by every command-line entry point (torch-free).

Exit codes: every ``main(argv) -> int`` returns one of :class:`ExitCode` (the README's table).
"""
from __future__ import annotations

import argparse
import enum
import logging
from typing import Sequence


class ExitCode(enum.IntEnum):
    """The one table of exit codes of every command-line tool of the project.

    ``USAGE`` is argparse's own code for bad arguments; the project uses it for every
    "cannot run as given" case (a bad or missing input file, a missing optional dependency
    such as TensorRT), and the message names the file or the package.
    """

    OK = 0
    #: The job ran, but not everything succeeded: some images were skipped as unreadable,
    #: a parity or accuracy gate failed, a training loss became non-finite.
    FAILED = 1
    #: Cannot run as given: bad arguments, unreadable or invalid input, missing dependency.
    USAGE = 2
    #: Interrupted by the user (Ctrl-C, SIGINT); resumable jobs say how to continue.
    INTERRUPTED = 130


def setup_logging(verbose: bool = False) -> None:
    """Configure the root logger once per process, for ``main()`` functions only."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def new_parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """The parser every command starts from: its name, one-line description, exit statuses (the
    epilog), and defaults shown in ``--help``."""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def images_run_epilog(errors: str) -> str:
    """The exit statuses of a command that runs a set of images and writes what ``rfnet infer``
    writes (infer, client); ``errors`` lists what exits 2."""
    return f"Exit status: 0 ok, 1 some images failed (listed), 2 {errors}, 130 interrupted."


def add_test_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The inference-only settings that override a checkpoint's (rfnet.checkpoint.apply_test_settings;
    no weight depends on them), shared by export and evaluate: ``--proposals N``, the RPN proposals
    per image kept at test (``rpn.post_nms_top_n_test``), and ``--crop-margin X``, the letterbox
    margin of disc-centred crops (``input.crop_margin``)."""
    parser.add_argument("--proposals", type=int, default=None,
                        help="RPN proposals per image kept at test (default: the checkpoint's "
                             "rpn.post_nms_top_n_test); the box head scores each, so fewer is faster")
    parser.add_argument("--crop-margin", type=float, default=None,
                        help="an image whose fundus field's edge does not show (a disc-centred crop) fills 1/X "
                             "of the model's input side, black around it (default: the checkpoint's "
                             "input.crop_margin; 1 = as whole fields)")


def start(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """The first step of a ``main(argv) -> int``: :func:`parse_args`, then :func:`setup_logging`
    (``--verbose`` where the parser has it); an int is the exit code to return at once."""
    args = parse_args(parser, argv)
    if not isinstance(args, int):
        setup_logging(bool(getattr(args, "verbose", False)))
    return args


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """``parser.parse_args(argv)``, or instead of exiting the code argparse chose (0 after
    ``--help``, :attr:`ExitCode.USAGE` for bad arguments), for ``main(argv) -> int`` to return."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else ExitCode.USAGE
