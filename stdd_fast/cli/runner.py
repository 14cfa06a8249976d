"""How every stdd-fast command runs: one exit-code table, one-line errors, the same parser behaviour.

Exit codes (all entry points: ``stdd``, ``stdd-export``, ``stdd-train``, ``stdd-eval``, ``stdd-bench``):

* 0: success;
* 1: the command ran but part of its work failed (some videos, streams or rows; an export that
  did not verify); the rest is still printed or written;
* 2: usage or configuration error (arguments, class list, classifier artifact, device, an input or
  output path that cannot be used);
* 3: the checkpoint could not be loaded (missing, corrupt, needs code, wrong architecture);
* 4: an optional backend is not available here (e.g. ``--impl triton`` without Triton);
* 70: an internal error (a bug; ``--debug`` prints the traceback);
* 130: interrupted (Ctrl-C).

Errors are one line on stderr, ``<command>: error: ...``; warnings one line too, ``<command>: warning:
...``, and so is each notice of one-time work (:mod:`stdd_fast.notices`); ``--debug`` adds the traceback.
A bad flag prints that one line and a pointer to ``--help``, not the whole usage block. Everything a
command prints passes :func:`stdd_fast.terminal.guarded_output`: control characters in file names, class
names or server messages are shown as escapes.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence

from stdd_fast.errors import BackendUnavailableError, CheckpointError, ExportError, StddError
from stdd_fast.notices import speaking_as
from stdd_fast.terminal import guarded_output

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CHECKPOINT = 3
EXIT_BACKEND = 4
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_CODES_HELP = (
    "exit codes: 0 ok, 1 part of the work failed, 2 usage or configuration error, 3 checkpoint error, "
    "4 backend unavailable, 70 internal error, 130 interrupted"
)


class UsageError(StddError):
    """A bad command line (unknown flag, missing value, conflicting options)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (raised, so the runner reports them with the others)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("epilog", EXIT_CODES_HELP)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # argparse would print the usage block and exit
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def exit_code(error: BaseException) -> int:
    """The exit code of an error that ended a command (see the module docstring)."""
    if isinstance(getattr(error, "exit_code", None), int):  # an error class that says which it is
        return error.exit_code
    if isinstance(error, CheckpointError):
        return EXIT_CHECKPOINT
    if isinstance(error, BackendUnavailableError):
        return EXIT_BACKEND
    if isinstance(error, ExportError):
        return EXIT_FAILED
    if isinstance(error, StddError | OSError):
        return EXIT_USAGE
    return EXIT_INTERNAL


def one_line(error: BaseException) -> str:
    """An error's message on one line (an OSError names its file)."""
    if isinstance(error, OSError) and not isinstance(error, StddError) and error.filename:
        text = f"{error.filename}: {error.strerror or error}"
    else:
        text = str(error)
    return " ".join(text.split()) or type(error).__name__


def run(prog: str, parser: Callable[[], argparse.ArgumentParser], handler, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` with ``parser()`` and run ``handler(args)`` (or ``args.func``), mapping errors to exit codes.

    ``handler`` returns the exit code (0 or 1); every error it raises is reported as one line.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    with guarded_output(), warnings.catch_warnings(), speaking_as(prog):
        warnings.showwarning = lambda message, *_: print(f"{prog}: warning: {one_line(message)}", file=sys.stderr)
        return _run(prog, parser, handler, argv)


def _run(prog: str, parser, handler, argv: list[str]) -> int:
    debug = "--debug" in argv
    try:
        args = parser().parse_args(argv)
        return (handler or args.func)(args)
    except SystemExit as e:  # --help / --version
        return int(e.code or 0) if isinstance(e.code, int | None) else EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException as e:
        if debug:
            traceback.print_exc()
        code = exit_code(e)
        if code == EXIT_INTERNAL:
            message = f"internal error: {type(e).__name__}: {one_line(e)} (rerun with --debug for the traceback)"
            print(f"{prog}: {message}", file=sys.stderr)
        else:
            print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return code
