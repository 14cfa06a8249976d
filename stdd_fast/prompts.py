"""Prompt construction for the ASKG text classifier (STDD-SPEC §4), pure Python.

Prompt order is deterministic (the released code used Python ``set`` order, which changes per
process): for each class and template, the base prompt ``template.format(name)`` comes first, then
``template.format(f"{name}, {clause}")`` for the oo, ao and aa clauses in file order, duplicates
removed keeping the first. Each class is padded to the longest class by cycling its own prompts, as
released; the prompt index is ``n = template * Nmax + slot``.

The files read here come from the released method or from :func:`stdd_fast.askg.generate_askg`
(stage 1, and with ``xprompt=True`` stage 2, against an OpenAI-compatible chat endpoint). What a
class name may hold and which lists a record has are defined here; :mod:`stdd_fast.askg.schema`
adds the stricter checks of generated answers. The dependency runs from ``askg`` to this module,
never back: the text side needs no chat client.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from stdd_fast import safe_yaml
from stdd_fast.choices import MATCHES
from stdd_fast.errors import ClassifierError, choice_error

CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# The three triple lists of an ASKG record, and the xprompt clause list stage 2 writes for each.
ASKG_FIELDS = ("obj_rel_triples", "act_obj_triples", "act_rel_triples")
XPROMPT_FIELDS = ("xprompt_oo", "xprompt_ao", "xprompt_aa")


def check_class_names(names: Sequence[object], source: str) -> list[str]:
    """Class names as given, checked: non-empty strings without control characters, each once.

    Control characters (newlines, terminal escapes) would break labels files and reach terminals raw.
    """
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ClassifierError(f"{source}: class {i} is {name!r}; class names must be non-empty strings")
        if CONTROL_CHARS.search(name):
            raise ClassifierError(
                f"{source}: class {i} ({name!r}) contains a control character (newline, tab, escape...); "
                "use plain one-line names"
            )
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ClassifierError(f"{source}: duplicate class names {dupes[:5]}: each class must appear once")
    return list(names)


# The 8 templates STDD encodes (first 8 of classes_label_{k400,ucf101}.yml; STDD-SPEC §4.2).
STDD_TEMPLATES: tuple[str, ...] = (
    "a human action of {}.",
    "a video of action {}.",
    "Playing action of {}.",
    "Doing a kind of action {}.",
    "Look, the person is {}.",
    "The man is {}.",
    "The woman is {}.",
    "a video of a person {}.",
)

# "None of these": ordinary scenes a class must beat to be detected (build_classifier(background=True)). Phrased
# like class names, as the templates render them ("a video of action {}."), and kept generic: what a fixed camera
# sees when none of a site's actions happens.
DEFAULT_BACKGROUND: tuple[str, ...] = (
    "nothing happening",
    "an empty scene",
    "a static view with no one in it",
    "standing still",
    "waiting",
    "walking by",
    "sitting",
    "talking",
)

# The 28 Open-VCLIP templates of the released template-average classifier (``a example`` sic).
OPENVCLIP_TEMPLATES: tuple[str, ...] = tuple(
    f"{prefix} of {pattern}."
    for prefix in ("a photo", "a video", "a example", "a demonstration")
    for pattern in (
        "{}",
        "a person {}",
        "a person using {}",
        "a person doing {}",
        "a person during {}",
        "a person performing {}",
        "a person practicing {}",
    )
)

MAX_CLAUSE_CHARS = 1000  # a clause longer than this is not a prompt extension (it would be cut at 77 tokens anyway)


def _load_yaml_mapping(path: str | Path, what: str) -> dict:
    data = safe_yaml.load(path, what, ClassifierError)
    if not isinstance(data, dict) or not data:
        raise ClassifierError(f"{path}: expected a mapping from class name to a {what} record")
    return data


def _triple_text(parts: list) -> object:
    """``[a, p, b]`` (strings) -> ``"<a, p, b>"``, the form the other triples take; anything else unchanged."""
    return "<" + ", ".join(p.strip() for p in parts) + ">" if all(isinstance(p, str) for p in parts) else parts


def _strings(path: str | Path, key: object, field: str, value: object) -> list[str]:
    """A list-of-strings field of a record (None: empty); anything else is an error naming the entry."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ClassifierError(
            f"{path}: entry {key!r} field {field} is a {type(value).__name__}, not a list of strings; "
            f"write it as a YAML list (- item per line)"
        )
    if field in ASKG_FIELDS:  # the released K400 file writes a few triples as YAML flow lists ([a, p, b])
        value = [_triple_text(item) if isinstance(item, list) else item for item in value]
    for n, item in enumerate(value):
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            raise ClassifierError(
                f"{path}: entry {key!r} field {field}[{n}] is a {type(item).__name__} ({str(item)[:60]!r}); "
                "each item must be one string"
            )
        if len(str(item)) > MAX_CLAUSE_CHARS or CONTROL_CHARS.search(str(item).strip()):
            raise ClassifierError(
                f"{path}: entry {key!r} field {field}[{n}] is over {MAX_CLAUSE_CHARS} characters or holds control "
                "characters; one short clause per item"
            )
    return [str(item).strip() for item in value]


def _record(path: str | Path, key: object, entry: object, what: str) -> dict:
    if not isinstance(key, str) or not key.strip():
        raise ClassifierError(f"{path}: {what} key {key!r} must be a class name (a string)")
    if not isinstance(entry, dict):
        raise ClassifierError(f"{path}: entry {key!r} is a {type(entry).__name__}, not an {what} record (a mapping)")
    label = entry.get("label")
    if label is not None and not isinstance(label, str):
        raise ClassifierError(f"{path}: entry {key!r} field label is {label!r}; it must be a string")
    return entry


def read_xprompt(path: str | Path) -> dict[str, list[str]]:
    """Clauses per class from an official ``classes_xprompt_<ds>.yml``: {key: oo + ao + aa}."""
    data = _load_yaml_mapping(path, "xprompt")
    out = {}
    for key, entry in data.items():
        entry = _record(path, key, entry, "xprompt")
        if not any(f in entry for f in XPROMPT_FIELDS):
            raise ClassifierError(f"{path}: entry {key!r} has none of the fields {XPROMPT_FIELDS}")
        out[key] = [c for f in XPROMPT_FIELDS for c in _strings(path, key, f, entry.get(f))]
    check_class_names(list(out), str(path))
    return out


def parse_triple(text: str) -> list[str]:
    """``"<a, b, c>"`` -> ``["a", "b", "c"]``."""
    return [part.strip() for part in str(text).strip().strip("<>").split(",")]


def _is_participle(predicate: str) -> bool:
    first = predicate.split()[0].lower() if predicate.split() else ""
    return first.endswith(("ed", "en")) and first not in {"is", "are", "was", "were"}


def askg_clauses(entry: Mapping, label: str) -> tuple[list[str], list[str]]:
    """Render one ASKG record to prompt clauses by fixed rules (no LLM). Returns (clauses, skipped).

    * object-object ``<o1, p, o2>`` -> ``where o1 [is] p o2`` (``is`` before a participle);
    * action-object ``<a, p, o>`` -> ``which p o``;
    * action-action ``<a1, p, a2>`` -> ``starting with a2`` when a1 is the action and p is
      ``starts with``, ``which p a2`` for other predicates of the action, else ``where a1 p a2``.

    Triples without exactly three fields are skipped and returned in ``skipped``.
    """
    clauses, skipped = [], []
    action = str(entry.get("label") or label).strip().lower()
    for field in ("obj_rel_triples", "act_obj_triples", "act_rel_triples"):
        for raw in entry.get(field) or []:
            parts = parse_triple(raw)
            if len(parts) != 3 or not all(parts):
                skipped.append(str(raw))
                continue
            a, p, b = parts
            if field == "obj_rel_triples":
                clauses.append(f"where {a} is {p} {b}" if _is_participle(p) else f"where {a} {p} {b}")
            elif field == "act_obj_triples":
                clauses.append(f"which {p} {b}")
            elif a.lower() == action:
                clauses.append(f"starting with {b}" if p.lower() == "starts with" else f"which {p} {b}")
            else:
                clauses.append(f"where {a} {p} {b}")
    return clauses, skipped


def read_askg(path: str | Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Clauses per class from an official ``classes_ASKG_<ds>.yml``. Returns (clauses, skipped)."""
    data = _load_yaml_mapping(path, "ASKG")
    clauses, skipped = {}, {}
    for key, entry in data.items():
        entry = _record(path, key, entry, "ASKG")
        triples = {f: _strings(path, key, f, entry.get(f)) for f in ASKG_FIELDS}
        clauses[key], bad = askg_clauses({**entry, **triples}, key)
        if bad:
            skipped[key] = bad
    check_class_names(list(clauses), str(path))
    return clauses, skipped


def _index_to_class(path: Path, data: dict) -> list[str]:
    """An index->class mapping as names in label order: the indices must be exactly 0..K-1."""
    try:
        index = {int(k): v for k, v in data.items()}
    except (TypeError, ValueError):
        bad = next(k for k in data if not str(k).strip().lstrip("-").isdigit())
        raise ClassifierError(f"{path}: key {bad!r} is not a class index (0, 1, ...)") from None
    if len(index) != len(data):
        raise ClassifierError(f"{path}: the same index appears twice (e.g. '1' and '01')")
    missing = sorted(set(range(len(index))) - set(index))
    if missing:
        raise ClassifierError(
            f"{path}: class indices must be 0..{len(index) - 1} with no gap; index {missing[0]} is missing "
            f"(keys go up to {max(index)}): numbering the classes after a gap would shift every label"
        )
    return [index[i] for i in range(len(index))]


def read_class_names(path: str | Path) -> list[str]:
    """Class names in label order from an index->class JSON, a ``classes_label_*.yml``, or a text file.

    Text files: one name per line; blank lines and ``#`` comment lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"{path}: no such class-list file")
    if path.suffix in (".yml", ".yaml"):
        data = safe_yaml.load(path, "class-list", ClassifierError)
        names = data.get("classes") if isinstance(data, dict) else data
        if not isinstance(names, list):
            raise ClassifierError(f"{path}: expected a list of class names (or a mapping with 'classes: [...]')")
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ClassifierError(f"{path}: not UTF-8 text (byte {e.start}); save the class list as UTF-8") from None
        if path.suffix == ".json":
            try:
                data = json.loads(text)
            except (ValueError, RecursionError) as e:
                raise ClassifierError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None
            if isinstance(data, dict):
                names = _index_to_class(path, data)
            elif isinstance(data, list):
                names = data
            else:
                raise ClassifierError(f"{path}: expected an index->class object or a list of names")
        else:
            names = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
            joined = next((n for n in names if "," in n), None)
            if joined is not None:  # "a,b,c" on a line would be one class named "a,b,c"
                raise ClassifierError(
                    f"{path}: the line {joined!r} holds commas; a class list file has one name per line (or pass "
                    "comma-separated names as --classes 'a,b,c' / classes=[...])"
                )
    if not names:
        raise ClassifierError(f"{path}: the class list is empty")
    return check_class_names(names, str(path))


def match_classes(classes: Sequence[str], entries: Mapping[str, list[str]], match: str, source: str) -> list[list[str]]:
    """Pair each class with its clause list, by position (as released) or by key."""
    if match not in MATCHES:
        raise choice_error("match", match, MATCHES)
    if match == "position":
        if len(classes) != len(entries):
            raise ClassifierError(
                f"{source} has {len(entries)} classes but {len(classes)} class names were given; "
                "position matching needs the same count and order (or use match='key')"
            )
        return list(entries.values())
    lowered = {k.lower(): k for k in entries}
    out, missing = [], []
    for name in classes:
        key = name if name in entries else lowered.get(name.lower())
        if key is None:
            near = difflib.get_close_matches(name, list(entries), n=1)
            missing.append(f"{name!r}" + (f" (closest: {near[0]!r})" if near else ""))
        else:
            out.append(entries[key])
    if missing:
        raise ClassifierError(
            f"{source} has no entry for {len(missing)} class(es): {', '.join(missing[:10])}; "
            "rename them or use match='position' if the file lists the classes in label order"
        )
    return out


def class_prompts(name: str, clauses: Sequence[str], template: str) -> list[str]:
    """Unique prompts of one class under one template: base first, then clauses in order."""
    prompts = [template.format(name)] + [template.format(f"{name}, {c}") for c in clauses]
    return list(dict.fromkeys(prompts))


def prompt_grid(classes: Sequence[str], clauses: Sequence[Sequence[str]], templates: Sequence[str]) -> list[list[str]]:
    """The K x N prompt table: n = template * Nmax + slot, each class padded by cycling (SPEC §4.3)."""
    per_template = [
        [class_prompts(name, cl, tpl) for name, cl in zip(classes, clauses, strict=True)] for tpl in templates
    ]
    n_max = max(len(p) for rows in per_template for p in rows)
    grid: list[list[str]] = [[] for _ in classes]
    for rows in per_template:
        for k, prompts in enumerate(rows):
            grid[k].extend(prompts[i % len(prompts)] for i in range(n_max))
    return grid
