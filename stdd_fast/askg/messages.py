"""The chat messages of the two stages (STDD-SPEC §4.1), and reading a record out of an answer.

Stage 1 asks for one class's ASKG (objects, object-object / action-object relations, ordered
sub-actions and their action-action relations) in the released ``classes_ASKG_*.yml`` record
format; stage 2 turns the triples into the clauses of ``classes_xprompt_*.yml``, one per triple, each
completing "This is an example of <action>, ...". Both are one-shot, with an example class that is
in none of the released class lists. Changing any text here changes what a model answers: bump
:data:`PROMPT_VERSION` with it, so cached answers of the old messages are not reused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import yaml

from stdd_fast import safe_yaml
from stdd_fast.askg.schema import ASKG_FIELDS, RECORD_ORDER, XPROMPT_FIELDS, AnswerError

PROMPT_VERSION = "stdd-askg-1"
MAX_ANSWER_CHARS = 32_000  # a record is a few hundred characters; anything far longer is not one
TEMPERATURE = {"askg": 0.0, "xprompt": 0.7}  # as released: stage 1 deterministic, stage 2 varied
MAX_TOKENS = 1024

_EXAMPLE = "repotting a plant"
_EXAMPLE_ASKG = """\
label: repotting a plant
obj_en_li:
- plant
- old pot
- new pot
- potting soil
- trowel
- roots
- watering can
obj_rel_triples:
- <plant, grows in, old pot>
- <roots, are packed in, potting soil>
- <trowel, scoops, potting soil>
- <new pot, is larger than, old pot>
- <watering can, pours water on, potting soil>
act_obj_triples:
- <repotting a plant, moves, plant>
- <repotting a plant, needs, new pot>
- <repotting a plant, uses, potting soil>
- <repotting a plant, is done with, trowel>
- <repotting a plant, loosens, roots>
- <repotting a plant, ends with, watering can>
sub_act_en_li:
- tipping the plant out of the old pot
- loosening the roots
- filling the new pot with soil
- setting the plant in the new pot
- watering the soil
act_rel_triples:
- <repotting a plant, starts with, tipping the plant out of the old pot>
- <tipping the plant out of the old pot, precedes, loosening the roots>
- <loosening the roots, precedes, filling the new pot with soil>
- <filling the new pot with soil, precedes, setting the plant in the new pot>
- <setting the plant in the new pot, precedes, watering the soil>
"""
_EXAMPLE_XPROMPT = """\
label: repotting a plant
xprompt_oo:
- where the plant grows in an old pot
- where the roots are packed in potting soil
- where a trowel scoops potting soil
- where the new pot is larger than the old pot
- where a watering can pours water on the potting soil
xprompt_ao:
- which moves the plant
- which needs a new pot
- which uses potting soil
- which is done with a trowel
- which loosens the roots
- which ends with a watering can
xprompt_aa:
- starting with tipping the plant out of the old pot
- where tipping the plant out of the old pot precedes loosening the roots
- where loosening the roots comes before filling the new pot with soil
- where filling the new pot with soil precedes setting the plant in the new pot
- where setting the plant in the new pot comes before watering the soil
"""

_STAGE1 = f"""\
You build the Action Semantic Knowledge Graph of a human action, for recognising it in videos. \
Given an action, write:
1. obj_en_li: the 5 to 10 objects most relevant to seeing the action (tools, body parts, places, other people);
2. obj_rel_triples: how those objects relate to each other, as <object, relation, object>;
3. act_obj_triples: how the action relates to each object, as <action, relation, object>;
4. sub_act_en_li: the sub-actions the action is made of, in the order they happen;
5. act_rel_triples: that order as triples: <action, starts with, first sub-action>, then \
<sub-action, precedes, next sub-action> for each next one.
Rules: write every triple as "<a, b, c>": three parts, no comma inside a part; write the action \
exactly as given; short plain English; no item twice; at most 12 items per list. Answer with one \
YAML mapping and nothing else, with the keys {", ".join(("label", *RECORD_ORDER))} (label: the \
action exactly as given), each list in block style, one "- " item per line."""

_STAGE2 = f"""\
You write text prompts for recognising a human action in videos. Each prompt continues the \
sentence "This is an example of <action>, ..." with one clause made from one relation triple of \
the action's knowledge graph. Write exactly one clause per triple, in the order given:
- xprompt_oo, one per object-object triple: a clause starting with "where";
- xprompt_ao, one per action-object triple: a clause starting with "which";
- xprompt_aa, one per action-action triple: "starting with <first sub-action>" for the "starts \
with" triple, and "where <sub-action> precedes <next sub-action>" (or "comes before") for the others.
Do not repeat the action's name in a clause; add articles and verb forms so each clause reads \
naturally; no clause ends with a period. Answer with one YAML mapping and nothing else, with the \
keys {", ".join(("label", *XPROMPT_FIELDS))} (label: the action exactly as given), each list in \
block style, one "- " item per line."""

_KEYS = {"askg": ("label", *RECORD_ORDER), "xprompt": ("label", *XPROMPT_FIELDS)}
_TRIPLE_TITLES = dict(
    zip(ASKG_FIELDS, ("object-object relation triples", "action-object relation triples",
                      "action-action relation triples"), strict=True)
)  # fmt: skip


def _stage1_user(label: str) -> str:
    return f"action entity: [{label.lower()}]"


def _stage2_user(label: str, askg: Mapping) -> str:
    lines = [f"action label: {label.lower()}"]
    for field, title in _TRIPLE_TITLES.items():
        triples = askg.get(field) or []
        lines.append(f"{title}:")
        lines.extend(f"{i}. {t}" for i, t in enumerate(triples, 1))
        if not triples:
            lines.append("(none)")
    return "\n".join(lines)


def stage1_messages(label: str) -> list[dict]:
    """The chat messages asking for the ASKG record of ``label``."""
    return [
        {"role": "system", "content": _STAGE1},
        {"role": "user", "content": _stage1_user(_EXAMPLE)},
        {"role": "assistant", "content": _EXAMPLE_ASKG},
        {"role": "user", "content": _stage1_user(label)},
    ]


def stage2_messages(label: str, askg: Mapping) -> list[dict]:
    """The chat messages asking for the clauses of ``label``'s triples (``askg``: its stage 1 record)."""
    example = yaml.safe_load(_EXAMPLE_ASKG)
    return [
        {"role": "system", "content": _STAGE2},
        {"role": "user", "content": _stage2_user(_EXAMPLE, example)},
        {"role": "assistant", "content": _EXAMPLE_XPROMPT},
        {"role": "user", "content": _stage2_user(label, askg)},
    ]


def correction(messages: list[dict], stage: str, label: str, answer: str | None, problem: str) -> list[dict]:
    """``messages`` followed by the unusable answer and what was wrong with it: the next attempt's messages.

    Saying what was wrong gives a model at temperature 0 a different input, so it can answer differently.
    """
    keys = ", ".join(_KEYS[stage])
    retry = (
        f"That answer could not be used: {problem}. Answer again for [{label.lower()}]: one YAML mapping "
        f"with the keys {keys}, nothing else."
    )
    said = (answer or "")[:4000] or "(an empty answer)"
    return [*messages, {"role": "assistant", "content": said}, {"role": "user", "content": retry}]


_THINKING = re.compile(r"<think>.*?</think>", re.S)  # reasoning models served locally often prepend one
_FENCE = re.compile(r"```[ \t]*[A-Za-z]*[ \t]*\n(.*?)```", re.S)


def parse_answer(text: str | None) -> object:
    """The data of an answer: YAML or JSON, alone or in the first fenced block; AnswerError when none.

    A record wrapped as ``<class>: {label: ...}`` (the released files' layout) is unwrapped.
    """
    if text is None or not text.strip():
        raise AnswerError("the answer is empty")
    if len(text) > MAX_ANSWER_CHARS:
        raise AnswerError(f"the answer is {len(text)} characters, more than the {MAX_ANSWER_CHARS} a record needs")
    body = _THINKING.sub("", text)
    fenced = _FENCE.search(body)
    body = (fenced.group(1) if fenced else body).strip()
    try:
        # JSON first (tabs in JSON indentation are not YAML); YAML through the strict loader of the
        # label files: no aliases, no duplicate keys (a repeated field is an error, not the last one)
        data = json.loads(body) if body.startswith("{") else safe_yaml.loads(body)
    except (ValueError, yaml.YAMLError, RecursionError) as e:
        first = " ".join(str(e).split())[:160]
        raise AnswerError(f"the answer is not YAML or JSON ({type(e).__name__}: {first})") from None
    if isinstance(data, dict) and "label" not in data and len(data) == 1:
        (inner,) = data.values()
        if isinstance(inner, dict):
            data = inner
    return data
