"""ASKG prompts for any class list, from any OpenAI-compatible chat endpoint (STDD-SPEC §4.1).

The released method builds each class's Action Semantic Knowledge Graph with a two-stage LLM
pipeline: stage 1 asks for the graph's triples, stage 2 turns them into prompt clauses. Modules:

* ``schema``: the validation every generated record passes (stricter than the readers of
  :mod:`stdd_fast.prompts`, whose field names and class-name rule it uses);
* ``messages``: the stage 1 / stage 2 chat messages (one-shot) and parsing an answer's YAML/JSON;
* ``client``: :class:`~stdd_fast.askg.client.ChatClient`, ``/v1/chat/completions`` over httpx
  with retries, backoff and timeouts;
* ``cache``: validated answers on disk, keyed by (model, prompt version, stage, class);
* ``generate``: :func:`~stdd_fast.askg.generate.generate_askg` (also ``stdd_fast.askg.generate_askg``),
  bounded concurrency, per-class reports, the resumable output file.

This package stands on the classifier side (:mod:`stdd_fast.prompts`), never the other way round.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name in ("generate_askg", "AskgRun"):
        from stdd_fast.askg import generate

        return getattr(generate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
