"""What a class name, an ASKG record and an xprompt record may hold (STDD-SPEC §4.2).

The readers in :mod:`stdd_fast.prompts` accept what the released files hold. The checks here are
for what a chat model generated, and stricter: the label echoed, every triple ``<a, b, c>`` of
three non-empty parts, no duplicates, bounded counts and lengths, no control characters, and (stage
2) one clause per triple. A record that fails raises :class:`AnswerError`; the generator answers
that by asking again, then reports the class.
"""

from __future__ import annotations

from collections.abc import Mapping

from stdd_fast.errors import StddError
from stdd_fast.prompts import ASKG_FIELDS, CONTROL_CHARS, XPROMPT_FIELDS, check_class_names  # noqa: F401

CLAUSE_FIELD = dict(zip(ASKG_FIELDS, XPROMPT_FIELDS, strict=True))
# The entity lists the released ASKG files also hold (objects; ordered sub-actions); no prompt uses them.
ENTITY_FIELDS = ("obj_en_li", "sub_act_en_li")
RECORD_ORDER = ("obj_en_li", "obj_rel_triples", "act_obj_triples", "sub_act_en_li", "act_rel_triples")

MAX_ITEMS = 16  # per list (the released files hold at most 13)
MAX_PART_CHARS = 100  # per entity or triple part (released: at most 70 for a whole triple's part)
MAX_GENERATED_CLAUSE_CHARS = 200  # per generated clause (released: at most 112; CLIP reads 77 tokens of the prompt)


class AnswerError(StddError):
    """A chat answer that is not a usable record (the generator asks again, then reports the class)."""


def normal(text: str) -> str:
    """Case and spacing folded: how labels are compared and duplicates found."""
    return " ".join(text.casefold().split())


def _text(value: object, where: str, limit: int) -> str:
    if not isinstance(value, str):
        raise AnswerError(f"{where} is a {type(value).__name__} ({str(value)[:60]!r}), not a string")
    text = value.strip()
    if not text:
        raise AnswerError(f"{where} is empty")
    if CONTROL_CHARS.search(text):
        raise AnswerError(f"{where} ({text[:60]!r}) holds a control character")
    if len(text) > limit:
        raise AnswerError(f"{where} is {len(text)} characters, over the {limit} allowed ({text[:60]!r}...)")
    return text


def triple(value: object, where: str) -> str:
    """A triple as ``"<a, b, c>"``: from that string (brackets optional) or a list of three strings.

    Three non-empty parts without commas or angle brackets inside: :func:`stdd_fast.prompts.parse_triple`
    splits at commas, so a comma inside a part would shift the triple.
    """
    if isinstance(value, list):
        parts = [_text(p, f"{where}[{i}]", MAX_PART_CHARS) for i, p in enumerate(value)]
        if any("," in p for p in parts):
            raise AnswerError(f"{where} {value!r}: a part holds a comma; write each part without one")
    else:
        text = _text(value, where, 3 * MAX_PART_CHARS + 6)
        parts = [p.strip() for p in text.removeprefix("<").removesuffix(">").split(",")]
    if len(parts) != 3 or not all(parts):
        raise AnswerError(f"{where} {str(value)[:120]!r} is not a triple <a, b, c> of three non-empty parts")
    for p in parts:
        if len(p) > MAX_PART_CHARS or "<" in p or ">" in p:
            raise AnswerError(f"{where} {str(value)[:120]!r}: each part is at most {MAX_PART_CHARS} plain characters")
    return f"<{parts[0]}, {parts[1]}, {parts[2]}>"


def _items(data: Mapping, field: str, check) -> list[str]:
    """A list field of an answer (missing or null: empty), each item checked, no duplicates."""
    value = data.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise AnswerError(f"{field} is a {type(value).__name__}, not a list")
    if len(value) > MAX_ITEMS:
        raise AnswerError(f"{field} has {len(value)} items, over the {MAX_ITEMS} allowed")
    items = [check(item, f"{field}[{i}]") for i, item in enumerate(value)]
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        first = seen.setdefault(normal(item), i)
        if first != i:
            raise AnswerError(f"{field}[{i}] {item!r} repeats {field}[{first}]; each item must appear once")
    return items


def _check_label(data: object, label: str) -> Mapping:
    if not isinstance(data, Mapping):
        raise AnswerError(f"the answer is a {type(data).__name__}, not a record (a mapping with a label)")
    echoed = data.get("label")
    if not isinstance(echoed, str) or normal(echoed) != normal(label):
        raise AnswerError(f"the answer's label is {echoed!r}, not {label!r}: it describes another class")
    return data


def check_askg(data: object, label: str) -> dict:
    """A stage 1 answer as an ASKG record of class ``label`` (the released field order), or AnswerError."""
    data = _check_label(data, label)
    record: dict[str, object] = {"label": label}
    for field in RECORD_ORDER:
        if field in ASKG_FIELDS:
            record[field] = _items(data, field, triple)
        elif data.get(field) is not None:  # entity lists are optional
            record[field] = _items(data, field, lambda v, where: _text(v, where, MAX_PART_CHARS))
    if not any(record[f] for f in ASKG_FIELDS):
        raise AnswerError(f"the answer holds no triple in any of {', '.join(ASKG_FIELDS)}")
    return record


def _clause(value: object, where: str) -> str:
    # the clause follows "<template with the label>, " and ends the sentence the template closes
    text = _text(value, where, MAX_GENERATED_CLAUSE_CHARS).lstrip(", ").rstrip(" .")
    if not text:
        raise AnswerError(f"{where} {value!r} holds no words")
    return text


def check_xprompt(data: object, label: str, askg: Mapping) -> dict:
    """A stage 2 answer as an xprompt record: one clause per triple of ``askg``, in its order, or AnswerError."""
    data = _check_label(data, label)
    record: dict[str, object] = {"label": label}
    for triples, field in CLAUSE_FIELD.items():
        clauses = _items(data, field, _clause)
        want = len(askg.get(triples) or [])
        if len(clauses) != want:
            raise AnswerError(f"{field} has {len(clauses)} clauses for the {want} {triples}: write one per triple")
        record[field] = clauses
    return record
