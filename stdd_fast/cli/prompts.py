"""``stdd prompts``: ASKG prompts for any class list from an OpenAI-compatible chat endpoint (STDD-SPEC §4.1)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from stdd_fast.cli import options
from stdd_fast.cli.runner import EXIT_FAILED, EXIT_OK
from stdd_fast.errors import ConfigError

DEFAULT_KEY_ENV = "OPENAI_API_KEY"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "prompts",
        help="ASKG prompts for your own classes from a chat LLM endpoint (local or hosted)",
        description=(
            "Ask an OpenAI-compatible chat endpoint (vLLM, llama.cpp, Ollama, a hosted API) for each class's "
            "Action Semantic Knowledge Graph (stage 1; --xprompt also runs stage 2, the prompt clauses) and write "
            "them in the released classes_ASKG format. Then: stdd build-classifier --askg OUT.yml (or --xprompt "
            "OUT.yml). Rerunning the command resumes: classes already in OUT.yml or in the cache are not asked again."
        ),
    )
    p.add_argument(
        "classes", nargs="*", metavar="CLASS", help='class names, one per argument ("person climbing fence")'
    )
    p.add_argument(
        "--classes-file",
        metavar="FILE",
        help="class names from an index->class JSON, a classes_label_*.yml, or a text file (one per line, # comments)",
    )
    p.add_argument("--endpoint", required=True, metavar="URL", help="the API's base URL, e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--model", required=True, metavar="NAME", help="the model the endpoint serves")
    p.add_argument(
        "--api-key-env",
        metavar="NAME",
        default=None,
        help=f"environment variable holding the API key (default: {DEFAULT_KEY_ENV} when set; local servers need none)",
    )
    p.add_argument(
        "-o", "--output", metavar="OUT.yml", help="the YAML to write (and resume); needed but with --dry-run"
    )
    p.add_argument(
        "--xprompt",
        action="store_true",
        help="also run stage 2: the LLM writes one clause per triple (default: clauses by fixed rules at build time)",
    )
    p.add_argument("--concurrency", type=int, default=4, metavar="N", help="classes asked at once (default 4)")
    p.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="retries per request on 429/5xx/timeouts/connection errors, and re-asks per class after an answer "
        "that does not validate (default 3)",
    )
    p.add_argument(
        "--timeout", type=float, default=120.0, metavar="S", help="seconds one request may take (default 120)"
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=None,
        help="answer cache (default: askg/ in $STDD_CACHE_DIR, else ~/.cache/stdd_fast/askg)",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the answer cache")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="send nothing: print each request the run would send (the URL and its JSON body, one per class not in "
        "-o or the cache); no server needed",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    options.add_debug(p)
    p.set_defaults(func=run)


def _names(args: argparse.Namespace) -> list[str]:
    from stdd_fast.prompts import read_class_names

    if args.classes and args.classes_file:
        raise ConfigError("pass class names or --classes-file, not both")
    if args.classes_file:
        return read_class_names(args.classes_file)
    if not args.classes:
        raise ConfigError('no classes: name them (stdd prompts "forklift reversing" ...) or pass --classes-file F')
    return list(args.classes)


def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key_env is None:
        return os.environ.get(DEFAULT_KEY_ENV) or None
    key = os.environ.get(args.api_key_env)
    if not key:
        raise ConfigError(f"--api-key-env {args.api_key_env}: that environment variable is not set (or empty)")
    return key


def _dry_run(args: argparse.Namespace, names: list[str], cache_dir) -> int:
    """Print what the run would send, request by request, and send nothing."""
    from stdd_fast.askg.client import ChatClient
    from stdd_fast.askg.generate import plan_requests

    key = _api_key(args)
    with ChatClient(args.endpoint, args.model, api_key=key) as client:  # checks the URL; connects to nothing
        plan = plan_requests(names, client, args.output, xprompt=args.xprompt, cache_dir=cache_dir)
        url = f"{client.endpoint}/chat/completions"
    auth = f"Authorization: Bearer <${args.api_key_env or DEFAULT_KEY_ENV}>" if key else "no Authorization header"
    for i, p in enumerate(plan, 1):
        where = f"class {i} of {len(plan)}: {p.label!r}"
        if args.json:
            print(json.dumps({"class": p.label, "how": p.how, "stage": p.stage, "url": url, "body": p.body}))
        elif p.body is None:
            print(f"# {where}: not asked ({'kept from ' + args.output if p.how == 'kept' else 'in the answer cache'})")
        else:
            stage = "stage 1, the ASKG" if p.stage == "askg" else "stage 2, the prompt clauses"
            print(f"# {where}: {stage}\nPOST {url}  ({auth})\n{json.dumps(p.body, indent=2, ensure_ascii=False)}")
    asked = sum(p.body is not None for p in plan)
    then = (
        "; each class asked for stage 1 then gets a stage 2 request built from its answer"
        if args.xprompt and any(p.stage == "askg" for p in plan)
        else ""
    )
    print(
        f"stdd prompts --dry-run: nothing was sent; {asked} of {len(plan)} classes would be asked{then}",
        file=sys.stderr,
    )
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    from stdd_fast.askg.cache import default_cache_dir
    from stdd_fast.askg.client import ChatClient
    from stdd_fast.askg.generate import generate_askg

    names = _names(args)
    if args.no_cache and args.cache_dir is not None:
        raise ConfigError("pass --cache-dir or --no-cache, not both")
    if args.output is None and not args.dry_run:
        raise ConfigError("name the YAML to write: -o OUT.yml (or --dry-run to see the requests without sending)")
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    if args.dry_run:
        return _dry_run(args, names, cache_dir)
    with ChatClient(
        args.endpoint, args.model, api_key=_api_key(args), timeout=args.timeout, retries=args.retries
    ) as client:
        result = generate_askg(
            names,
            client,
            args.output,
            xprompt=args.xprompt,
            concurrency=args.concurrency,
            answer_retries=args.retries,
            cache_dir=cache_dir,
        )
    for note in result.notes:
        print(f"stdd: note: {note}", file=sys.stderr)
    for name, why in result.failed.items():
        print(f"stdd: error: class {name!r}: {why}", file=sys.stderr)
    flag = "--xprompt" if args.xprompt else "--askg"
    summary = {
        "output": None if result.output is None else str(result.output),
        "classes": len(names),
        "records": len(result.records),
        "asked": result.asked,
        "cached": result.cached,
        "kept": result.kept,
        "requests": result.requests,
        "failed": result.failed,
        "stage2": "llm" if args.xprompt else "rules",
    }
    if args.json:
        print(json.dumps(summary))
    elif result.output is not None:
        print(
            f"wrote {result.output}: {len(result.records)} of {len(names)} classes ({result.asked} asked, "
            f"{result.cached} from the cache, {result.kept} kept from the file; {result.requests} requests); "
            f"next: stdd build-classifier --weights CKPT {flag} {result.output} -o classes.safetensors"
        )
    if result.failed:
        print(
            f"stdd: {len(result.failed)} of {len(names)} classes failed; rerun the command to ask again",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK
