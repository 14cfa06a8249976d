"""The ``stdd`` command: classify videos or live streams, build a classifier artifact, describe the environment.

Each subcommand is a module of this package (``classify``, ``stream``, ``build_classifier``,
``info``); :mod:`stdd_fast.cli.runner` runs them with the exit-code table every stdd-fast command
shares, and :mod:`stdd_fast.cli.options` holds the flags they share. Nothing here imports torch
before the command runs, so ``stdd --help`` answers at once.
"""

from __future__ import annotations

import sys

from stdd_fast.cli import batch, build_classifier, calibrate, classify, info, prompts, serve, stream, timeline
from stdd_fast.cli.runner import EXIT_CODES_HELP, EXIT_USAGE, Parser, run

SUBCOMMANDS = (classify, batch, stream, timeline, build_classifier, calibrate, prompts, serve, info)


def build_parser() -> Parser:
    parser = Parser(prog="stdd", description=f"STDD zero-shot action recognition. {EXIT_CODES_HELP}.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    return parser


def _dispatch(args) -> int:
    if args.command is None:
        build_parser().print_help(sys.stderr)
        return EXIT_USAGE
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stdd`` console script; returns the exit code (:mod:`stdd_fast.cli.runner`)."""
    return run("stdd", build_parser, _dispatch, argv)


if __name__ == "__main__":
    sys.exit(main())
