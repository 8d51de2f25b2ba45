"""Argument parsing and dispatch for the ``corepool`` command.

To add a subcommand: write a small ``_name(args) -> int`` handler that imports its
module and calls it, and add one ``_subcommand(...)`` entry (plus its options) in
:func:`build_parser`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(quick=args.quick, as_json=args.json)


def _info(args: argparse.Namespace) -> int:
    from .info import run

    return run(as_json=args.json)


def _subcommand(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Handler,
    summary: str,
) -> argparse.ArgumentParser:
    """Register one subcommand whose ``handler`` returns the exit code."""
    parser = subparsers.add_parser(name, help=summary, description=summary)
    parser.set_defaults(handler=handler)
    return parser


def _json_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def build_parser() -> argparse.ArgumentParser:
    """The ``corepool`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="corepool",
        description="Run Python functions on every core, without the multiprocessing traps.",
    )
    parser.add_argument("--version", action="version", version=f"corepool {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")

    demo = _subcommand(
        subparsers, "demo", _demo,
        "measure serial vs threads vs processes on CPU- and I/O-bound work on this machine",
    )
    demo.add_argument("--quick", action="store_true", help="smaller workloads (for tests)")
    _json_option(demo, "the measurements")

    info = _subcommand(
        subparsers, "info", _info,
        "show usable CPUs and why, the start method, versions and available backends",
    )
    _json_option(info, "the report")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``corepool`` command; returns the exit code (2 without a subcommand)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("corepool: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``corepool info | head``): silence the flush at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
