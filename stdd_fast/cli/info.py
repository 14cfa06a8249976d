"""``stdd info``: versions, devices, and for each optional backend whether it is installed and can run here."""

from __future__ import annotations

import argparse
import json
import platform

from stdd_fast.cli import options
from stdd_fast.cli.runner import EXIT_OK


def add_parser(sub) -> None:
    i = sub.add_parser("info", help="versions, devices and optional backends (and whether each runs here)")
    i.add_argument("--json", action="store_true", help="print JSON")
    options.add_debug(i)
    i.set_defaults(func=run)


def report() -> dict:
    import torch

    import stdd_fast
    from stdd_fast import deps

    cuda = torch.cuda.is_available()
    return {
        "stdd_fast": stdd_fast.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {
            name: deps.version(dist)
            for name, dist in (("torch", "torch"), ("open_clip", "open_clip_torch"), ("av", "av"), ("numpy", "numpy"))
        },
        "devices": {
            "cpu_threads": torch.get_num_threads(),
            "cuda_available": cuda,
            "cuda_runtime": torch.version.cuda,
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        },
        "backends": {name: deps.status(name, cuda) for name in deps.OPTIONAL},
    }


def run(args: argparse.Namespace) -> int:
    info = report()
    if args.json:
        print(json.dumps(info))
        return EXIT_OK
    print(f"stdd_fast {info['stdd_fast']}  (python {info['python']}, {info['platform']})")
    for name, version in info["packages"].items():
        print(f"  {name:<12} {version or 'not installed'}")
    dev = info["devices"]
    cuda = ", ".join(dev["cuda_devices"]) if dev["cuda_available"] else "not available"
    print(f"devices: cpu ({dev['cpu_threads']} threads); cuda: {cuda}")
    print("optional backends:")
    for name, st in info["backends"].items():
        if not st["installed"]:
            state = f"not installed ({st['note']})"
        elif st["runs_here"]:
            state = f"yes ({st['version']})"
        else:
            state = f"{st['version']}, {st['note']}"
        print(f"  {name:<13} {state}")
    return EXIT_OK
