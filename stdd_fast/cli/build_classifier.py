"""``stdd build-classifier``: encode class prompts with a model's text tower into a classifier artifact."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stdd_fast.choices import MATCHES, REDUCES
from stdd_fast.cli import options
from stdd_fast.cli.runner import EXIT_OK
from stdd_fast.errors import ConfigError


def add_parser(sub) -> None:
    b = sub.add_parser(
        "build-classifier",
        help="encode class prompts into a classifier artifact",
        description="Encode class prompts (templates, or ASKG / xprompt YAML) into a .safetensors classifier.",
    )
    options.add_weights(b)
    options.add_classes(b, artifact=False)
    options.add_device(b, dtype=False)
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
    source = chosen.classes.require()
    output = Path(args.output)
    if output.is_dir():
        raise ConfigError(f"-o {output} is a folder; name the artifact file, e.g. {output / 'classes.safetensors'}")
    p = chosen.predictor
    model = load_model(args.weights, arch=p.arch, device=resolve_device(p.device), trust_pickle=p.trust_pickle)
    clf = build_classifier(
        model,
        None if source.classes is None else list(source.classes),
        xprompt=source.xprompt,
        askg=source.askg,
        match=args.match,
        reduce=args.reduce,
        progress=False,
    )
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
