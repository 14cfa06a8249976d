"""Prompt construction for the ASKG text classifier (STDD-SPEC §4), pure Python.

Prompt order is deterministic (the released code used Python ``set`` order, which changes per
process): for each class and template, the base prompt ``template.format(name)`` comes first, then
``template.format(f"{name}, {clause}")`` for the oo, ao and aa clauses in file order, duplicates
removed keeping the first. Each class is padded to the longest class by cycling its own prompts, as
released; the prompt index is ``n = template * Nmax + slot``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, get_args

import yaml

from stdd_fast.errors import ClassifierError, choice_error

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

Match = Literal["position", "key"]
MATCHES: tuple[str, ...] = get_args(Match)
XPROMPT_FIELDS = ("xprompt_oo", "xprompt_ao", "xprompt_aa")


def _load_yaml_mapping(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"{path}: no such {what} file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError, RecursionError) as e:  # Recursion: nested too deeply
        raise ClassifierError(f"{path}: not valid YAML ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or not data:
        raise ClassifierError(f"{path}: expected a mapping from class name to a {what} record")
    return data


def read_xprompt(path: str | Path) -> dict[str, list[str]]:
    """Clauses per class from an official ``classes_xprompt_<ds>.yml``: {key: oo + ao + aa}."""
    data = _load_yaml_mapping(path, "xprompt")
    out = {}
    for key, entry in data.items():
        if not isinstance(entry, dict) or not any(f in entry for f in XPROMPT_FIELDS):
            raise ClassifierError(f"{path}: entry {key!r} has none of the fields {XPROMPT_FIELDS}")
        out[str(key)] = [str(c).strip() for f in XPROMPT_FIELDS for c in (entry.get(f) or [])]
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
        if not isinstance(entry, dict):
            raise ClassifierError(f"{path}: entry {key!r} is not an ASKG record")
        clauses[str(key)], bad = askg_clauses(entry, str(key))
        if bad:
            skipped[str(key)] = bad
    return clauses, skipped


def read_class_names(path: str | Path) -> list[str]:
    """Class names in label order from an index->class JSON, a ``classes_label_*.yml``, or a text file."""
    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"{path}: no such class-list file")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            data = json.loads(text)
            if isinstance(data, dict):
                return [str(data[k]) for k in sorted(data, key=lambda k: int(k))]
            return [str(c) for c in data]
        if path.suffix in (".yml", ".yaml"):
            data = yaml.safe_load(text)
            return [str(c) for c in (data["classes"] if isinstance(data, dict) else data)]
    except (yaml.YAMLError, KeyError, ValueError, TypeError, OSError, RecursionError) as e:
        raise ClassifierError(f"{path}: not a class list ({type(e).__name__}: {e})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ClassifierError(f"{path}: the class list is empty")
    return names


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
