"""YAML files read with bounds: size, no aliases, no duplicate keys, no tags beyond plain data.

Label, ASKG, xprompt and recipe files are plain data. PyYAML's safe loader already refuses
``!!python`` tags, but it expands aliases (a "billion laughs" file of a few KB grows to gigabytes
as soon as the structure is walked), keeps the last of duplicate keys without a word, and reads a
file of any size. Here a file must be at most :data:`MAX_BYTES` (``STDD_MAX_YAML_MB`` raises it),
and anchors/aliases and duplicate keys are errors naming the line.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

MAX_BYTES = int(float(os.environ.get("STDD_MAX_YAML_MB", "64")) * 2**20)


class _Refused(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and duplicate mapping keys."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(
                f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not allowed in these files "
                "(an alias can expand a small file into gigabytes); write the values out"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key (a list): SafeLoader reports it
                break
            if first != key_node.start_mark.line + 1:
                raise _Refused(
                    f"line {key_node.start_mark.line + 1}: duplicate key {key!r} (first at line {first}); "
                    "each key must appear once"
                )
        return super().construct_mapping(node, deep=deep)


def loads(text: str) -> object:
    """The data of YAML text read as files are (plain data, no aliases, no duplicate keys); raises
    ``yaml.YAMLError`` (its refusals included) for the caller to report. Bounding its size is the caller's."""
    return yaml.load(text, Loader=_StrictLoader)


def load(path: str | Path, what: str, error: type[Exception]) -> object:
    """The data of a YAML (or JSON) file; ``error(message)`` naming the file for anything unreadable or refused."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such {what} file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise error(
            f"{path}: {size / 2**20:.1f} MiB is more than the {MAX_BYTES / 2**20:g} MiB a {what} file may have; "
            "set STDD_MAX_YAML_MB to raise the limit if the file is what you meant"
        )
    try:
        text = path.read_text(encoding="utf-8")
        return loads(text)  # a SafeLoader: plain data only
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start}); save the {what} file as UTF-8") from None
    except _Refused as e:
        raise error(f"{path}: {e}") from None
    except (yaml.YAMLError, RecursionError) as e:  # Recursion: nested too deeply
        raise error(f"{path}: not valid YAML ({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None
    except OSError as e:
        raise error(f"{path}: cannot read it ({e.strerror or e})") from None
