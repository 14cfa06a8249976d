"""``stdd build-classifier``: encode class prompts with a model's text tower into a classifier artifact."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from stdd_fast.choices import MATCHES, REDUCES
from stdd_fast.cli import options
from stdd_fast.cli.inputs import labelled_inputs
from stdd_fast.cli.runner import EXIT_OK
from stdd_fast.errors import ConfigError
from stdd_fast.user_cache import check_not_special


def add_parser(sub) -> None:
    b = sub.add_parser(
        "build-classifier",
        help="encode class prompts (and classes by example) into a classifier artifact",
        description="Encode class prompts (templates, or ASKG / xprompt YAML) into a .safetensors classifier; "
        "--example adds classes described by clips, --background the 'none of these' descriptions a class must beat.",
    )
    options.add_weights(b)
    options.add_classes(b, artifact=False)
    options.add_device(b, dtype=False)
    options.add_sampling(b)
    e = b.add_argument_group("decisions")
    e.add_argument(
        "--example",
        action="append",
        default=[],
        metavar="CLASS=INPUT",
        help="a class described by example clips (repeatable): 'forklift reversing=clips/forklift/*.mp4'",
    )
    e.add_argument(
        "--background",
        action="store_true",
        help="add the default 'none of these' descriptions (stdd_fast.prompts.DEFAULT_BACKGROUND)",
    )
    e.add_argument(
        "--background-prompt",
        action="append",
        default=[],
        metavar="TEXT",
        help="a description of an ordinary scene of yours, added to the default ones (repeatable)",
    )
    b.add_argument("--reduce", choices=REDUCES, default="auto", help="template averaging (auto: mean for templates)")
    b.add_argument("--match", choices=MATCHES, default="position", help="pair names with YAML entries")
    b.add_argument("-o", "--output", required=True, metavar="ART", help="where to write the .safetensors artifact")
    b.add_argument("--json", action="store_true", help="print a JSON summary")
    options.add_debug(b)
    b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stdd_fast.classifier import build_classifier
    from stdd_fast.devices import resolve_device
    from stdd_fast.factory import load_model

    chosen = options.settings_of(args)
    examples = labelled_inputs(args.example, "--example")
    source = chosen.classes if examples else chosen.classes.require()
    output = Path(args.output)
    if output.is_dir():
        raise ConfigError(f"-o {output} is a folder; name the artifact file, e.g. {output / 'classes.safetensors'}")
    check_not_special(output, "-o")  # before the model loads: a FIFO would block the write at the end
    p = chosen.predictor
    model = load_model(args.weights, arch=p.arch, device=resolve_device(p.device), trust_pickle=p.trust_pickle)
    background = args.background_prompt or args.background
    clf = None
    if not source.empty:
        clf = build_classifier(
            model,
            None if source.classes is None else list(source.classes),
            xprompt=source.xprompt,
            askg=source.askg,
            match=args.match,
            reduce=args.reduce,
            progress=False,
            background=background,
        )
    elif background:
        raise ConfigError("--background describes what text or example classes must beat: name classes too")
    if examples:
        from stdd_fast.engine import Engine
        from stdd_fast.examples import add_examples

        loaded = dataclasses.replace(p, arch=None, trust_pickle=False)  # the model is loaded already
        engine = Engine(model, predictor=loaded, sampling=chosen.sampling)
        clf = add_examples(engine, examples, clf)
    out = clf.save(output)
    summary = {
        "output": str(out),
        "classes": clf.num_classes,
        "shape": list(clf.weights.shape),
        "source": clf.source,
        "arch": clf.arch,
        "text_tower": clf.text_tower,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        shape = "x".join(str(n) for n in clf.weights.shape)
        print(f"wrote {out}: {clf.num_classes} classes, weights [{shape}], {clf.source}, text tower {clf.text_tower}")
    return EXIT_OK
