"""ASKG prompts for any class list, from any OpenAI-compatible chat endpoint (STDD-SPEC §4.1).

The released method builds each class's Action Semantic Knowledge Graph with a two-stage LLM
pipeline: stage 1 asks for the graph's triples, stage 2 turns them into prompt clauses. Modules:

* ``schema``: what a class name, an ASKG record and an xprompt record may hold (shared with the
  readers in :mod:`stdd_fast.prompts`), and the validation every generated record passes;
* ``messages``: the stage 1 / stage 2 chat messages (one-shot) and parsing an answer's YAML/JSON;
* ``client``: :class:`~stdd_fast.askg.client.ChatClient`, ``/v1/chat/completions`` over httpx
  with retries, backoff and timeouts;
* ``cache``: validated answers on disk, keyed by (model, prompt version, stage, class);
* ``generate``: :func:`~stdd_fast.askg.generate.generate_askg` (``stdd_fast.prompts.generate_askg``),
  bounded concurrency, per-class reports, the resumable output file.

Nothing is imported here, so :mod:`stdd_fast.prompts` can read the schema without the rest.
"""
