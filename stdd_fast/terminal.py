"""What reaches a terminal: user-controlled text with its control characters made visible.

File names, class names, URLs and server messages come from users and from the files themselves; a
corpus file named ``ESC]0;...BEL`` or ``ESC[2J`` would retitle or clear the terminal of whoever runs
``stdd batch`` on it. Every stdd-fast command therefore writes through :class:`SafeStream`
(installed by :func:`guarded_output`, which :func:`stdd_fast.cli.runner.run` wraps every command
in): C0 controls other than newline and tab, DEL, C1 controls and the bidirectional overrides that
reorder what a line shows are written as visible escapes (``\\x1b``, ``\\u202e``). Progress bars
are ours: they write their carriage returns to the real stream (:func:`progress_bar`), with their
descriptions escaped.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TextIO

# what a terminal acts on instead of showing: C0 (but \t and \n), DEL, C1, and the bidi controls
_ACTIVE = [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0)]
_ACTIVE += [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]


def _visible(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_TABLE = {code: _visible(code) for code in _ACTIVE}
_TABLE_LINE = {**_TABLE, ord("\n"): "\\n", ord("\t"): "\\t"}


def escape(text: object) -> str:
    """``str(text)`` with every character a terminal would act on (newline and tab included) made visible.

    For one value inside a line (a path, a class name): it cannot break the line or move the cursor.
    """
    return str(text).translate(_TABLE_LINE)


def escape_lines(text: str) -> str:
    """``text`` with the characters a terminal would act on made visible, its newlines and tabs kept."""
    return text.translate(_TABLE)


class SafeStream:
    """A text stream that writes :func:`escape_lines` of everything to ``raw`` (other attributes: raw's)."""

    def __init__(self, raw: TextIO) -> None:
        self.raw_stream = raw

    def write(self, text: str) -> int:
        self.raw_stream.write(escape_lines(text))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self.raw_stream, name)


def raw(stream: TextIO) -> TextIO:
    """The stream under a :class:`SafeStream` (the stream itself otherwise)."""
    return getattr(stream, "raw_stream", stream)


@contextlib.contextmanager
def guarded_output() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` as :class:`SafeStream` for the duration (restored after)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SafeStream(raw(sys.stdout)), SafeStream(raw(sys.stderr))
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = saved


def stderr_is_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def print_above(bar, text: str, file: TextIO | None = None) -> None:
    """``print(text)`` to ``file`` (stdout) with ``bar`` (from :func:`progress_bar`) cleared first and drawn again
    after, under tqdm's lock: on a terminal the bar and the lines share, a line never starts inside the bar."""
    file = file if file is not None else sys.stdout
    if isinstance(bar, _NoBar):
        print(text, file=file, flush=True)
        return
    with bar.external_write_mode(file=bar.fp):
        print(text, file=file, flush=True)


def progress_bar(total: int | None, show: bool | None, desc: str, unit: str):
    """A tqdm bar on stderr when ``show`` is True, or None and stderr is a terminal; else a no-op with its methods.

    The bar writes its own carriage returns to the real stream; ``desc`` is escaped.
    """
    if not (show if show is not None else stderr_is_terminal()):
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=escape(desc), unit=unit, file=raw(sys.stderr))
