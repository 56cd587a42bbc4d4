"""The ``interpret-segmentation`` command: a module per command, each with ``add_parser`` and
``run``; :func:`main` parses, dispatches, and turns a user error into one line and status 2."""

from __future__ import annotations

import argparse
import sys

from . import datasets, demo, evaluate, explain, explain_dataset, reliability, reproduce, sweep

COMMANDS = (datasets, explain, explain_dataset, evaluate, sweep, reliability, reproduce, demo)
"""The command modules, in the order ``--help`` lists them."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2), naming the
    command and the flag, not a usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each command's ``run`` is ``args.run``."""
    from ..methods import registry

    parser = OneLineParser(
        prog="interpret-segmentation",
        description="Explain PyTorch image-segmentation models with the registered methods "
                    f"({', '.join(registry.available('segmentation'))}), evaluate them on data "
                    "sets and run the testnet demo. Every command has its own --help.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv=None) -> int:
    """Run the command ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    A user error (OSError such as FileExistsError, ValueError, TypeError, or a
    ModuleNotFoundError for an optional package such as nibabel) is printed as one line on
    stderr and gives status 2; argparse's own errors exit with status 2 as well.
    """
    try:
        args = build_parser().parse_args(argv)
        status = args.run(args)
    except (OSError, ValueError, TypeError, ModuleNotFoundError) as error:
        message = " ".join(str(error).split())  # one line
        print(f"interpret-segmentation: error: {message}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
