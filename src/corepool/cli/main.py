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


def _run(args: argparse.Namespace) -> int:
    from .run import run

    return run(args)


def _status(args: argparse.Namespace) -> int:
    from .status import run

    return run(args.journal, as_json=args.json)


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

    _run_options(_subcommand(
        subparsers, "run", _run,
        "run MODULE:FUNC on every line of a JSON Lines file, resumably (SQLite journal)",
    ))
    status = _subcommand(
        subparsers, "status", _status, "show what a corepool run journal holds",
    )
    status.add_argument("journal", metavar="FILE.db", help="the journal of a corepool run")
    _json_option(status, "the report")
    return parser


def _run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("target", metavar="MODULE:FUNC",
                     help="the function: an importable module or a path to a .py file")
    run.add_argument("input", metavar="INPUT.jsonl", nargs="?", default=None,
                     help="one JSON value per line; '-' or nothing reads standard input")
    run.add_argument("-o", "--output", metavar="OUTPUT.jsonl", default=None,
                     help="result rows in input order (default: standard output)")
    run.add_argument("--workers", type=int, default=None, help="worker count (default: CPUs)")
    run.add_argument("--timeout", type=float, default=None, metavar="S",
                     help="seconds one task may run before it fails as a timeout")
    run.add_argument("--retries", type=int, default=0, metavar="K",
                     help="run a failed task up to K more times")
    run.add_argument("--journal", metavar="FILE.db", default=None,
                     help="the SQLite journal (default: OUTPUT.jsonl.journal.db, or with stdout "
                          "corepool-run-FUNC-KEY.journal.db in the current directory, KEY "
                          "naming the function, input and mode)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--star", dest="mode", action="store_const", const="star",
                      help="each line is a JSON array of positional arguments")
    mode.add_argument("--kwargs", dest="mode", action="store_const", const="kwargs",
                      help="each line is a JSON object of keyword arguments")
    run.set_defaults(mode="single")
    run.add_argument("--backend", default=None,
                     help="process (default), thread, serial, dask or ray")
    run.add_argument("--address", metavar="ADDR", default=None,
                     help="the cluster's scheduler address (with --backend dask or ray)")
    run.add_argument("--max-failures", metavar="N|P%", default=None,
                     help="stop cleanly once N tasks (or P%% of the finished ones) failed")
    run.add_argument("--retry-failed", action="store_true",
                     help="run again the tasks the journal holds as failed")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--force", action="store_true",
                     help="use a journal made for another function or mode")
    run.add_argument("--accept-changed-code", action="store_true",
                     help="keep the journal's results although the function's module changed "
                          "since they were computed")
    run.add_argument("--recover", action="store_true",
                     help="if the journal is damaged, move it aside and keep every task it "
                          "still holds")


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
