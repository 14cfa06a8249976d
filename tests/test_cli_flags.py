"""Every flag of every command reaches the config object it belongs to (or is owned by the command itself).

The walk: for each command that builds a predictor, each flag the option groups registered
(:data:`stdd_fast.cli.options.FIELDS`) is given a value other than its default, the command line is
parsed by that command's own parser, and the config objects :func:`~stdd_fast.cli.options.settings_of`
builds must carry it. A flag that is neither registered nor listed here as the command's own fails
the walk: a new flag is wired to its config, or consciously owned.
"""

import argparse

import pytest

from stdd_fast.cli import build_parser, options
from stdd_fast.cli.runner import UsageError

# the flags each command owns (outputs, printing, its own job settings): not predictor / sampling / decode fields
COMMON = {"help", "weights", "debug", "json", *options.CLASS_FLAGS}
OWN = {
    "classify": {"videos", "top_k", "detected_only", "output", "resume", "overwrite", "no_progress"},
    "stream": {
        "sources",
        "top_k",
        "window",
        "stride",
        "fps",
        "on_backpressure",
        "max_retries",
        "stall_timeout",
        "realtime",
        "source_format",
        "watch_classifier",
        "watch_interval",
        "events",
        "sink",
        "event_format",
        "spool_dir",
        "min_duration",
        "merge_gap",
        "on_level",
        "off_level",
        "smooth",
        "cooldown",
        "motion_gate",
    },
    "timeline": {
        "videos",
        "window",
        "stride",
        "output_dir",
        "formats",
        "overwrite",
        "no_progress",
        "min_duration",
        "merge_gap",
        "on_level",
        "off_level",
        "smooth",
        "cooldown",
        "motion_gate",
    },
    "batch": {
        "inputs",
        "output",
        "resume",
        "prefix",
        "embeddings",
        "top_k",
        "ray_address",
        "workers",
        "gpus_per_worker",
        "cpus_per_worker",
        "decode_cpus",
        "max_retries",
        "no_progress",
    },
    "serve": {
        "max_video_mb",
        "min_frames",
        "frames_model",
        "host",
        "http_port",
        "grpc_port",
        "metrics_port",
        "instances",
        "max_batch",
        "max_queue_delay_us",
        "repository",
        "tritonserver",
        "ready_timeout",
        "exit_timeout",
        "allow_model_control",
    },
    "build-classifier": {"reduce", "match", "output", "example", "background", "background_prompt"},
    "calibrate": {"background", "false_alarms", "positives", "aim", "recall", "window", "stride", "output", "plot"},
    "stdd-eval": {"csv", "prefix", "seed", "shuffle", "top_k", "output", "save_logits", "no_plot", "no_progress"}
    | {"timeline", "subset", "tiou", "event_tiou", "window", "stride"}
    | {"min_duration", "merge_gap", "on_level", "off_level", "smooth", "cooldown", "motion_gate"},
    "stdd-bench": {
        "frames",
        "batch",
        "paths",
        "video",
        "num_classes",
        "prompts",
        "warmup",
        "iters",
        "threads",
        "seed",
        "outliers",
        "plot",
    },
}
BASE = {
    "classify": ["classify", "v.mp4", "--weights", "w"],
    "stream": ["stream", "v.mp4", "--weights", "w"],
    "batch": ["batch", "v.mp4", "--output", "out", "--weights", "w"],
    "serve": ["serve", "--weights", "w"],
    "build-classifier": ["build-classifier", "--weights", "w", "-o", "c.safetensors"],
    "calibrate": ["calibrate", "--weights", "w", "--background", "b.mp4", "-o", "c.safetensors"],
    "timeline": ["timeline", "v.mp4", "--weights", "w"],
    "stdd-eval": ["--csv", "split.csv"],
    "stdd-bench": [],
}
ONE_VIEW = {"sampling": {"num_views": 1}}  # a window is one view
FIXED = {"stream": ONE_VIEW, "calibrate": ONE_VIEW, "timeline": ONE_VIEW}


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from stdd_fast.bench.cli import parser as bench_parser
    from stdd_fast.training.eval import build_parser as eval_parser

    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices
    parsers = {
        name: sub[name]
        for name in ("classify", "stream", "timeline", "batch", "serve", "build-classifier", "calibrate")
    }
    return {**parsers, "stdd-eval": eval_parser(), "stdd-bench": bench_parser()}


def _parse(command: str, argv: list[str]) -> argparse.Namespace:
    if command.startswith("stdd-"):
        return _parsers()[command].parse_args(argv)
    return build_parser().parse_args(argv)


def _other_value(action: argparse.Action) -> list[str]:
    """A command-line value for ``action`` other than its default (as argv words)."""
    if isinstance(action, argparse._StoreTrueAction):
        return []
    if action.choices:
        return [str(next(c for c in action.choices if c != action.default))]
    if action.dest == "device":
        return ["cpu"]
    if action.dest == "arch":
        return ["test-tiny"]
    if action.type is int:
        return [str((action.default or 1) + 1)]
    if action.type is float:
        return [str((action.default or 1.0) * 2)]
    raise AssertionError(f"no test value for {action.option_strings}")


def _expected(action: argparse.Action, words: list[str]) -> object:
    if not words:
        return True
    value = action.type(words[0]) if action.type else words[0]
    return options._CONVERT.get(action.dest, lambda v: v)(value)


@pytest.mark.parametrize("command", list(BASE))
def test_every_flag_reaches_its_config(command):
    parser = _parsers()[command]
    walked = []
    for action in parser._actions:
        if action.dest in COMMON | OWN[command]:
            continue
        assert action.dest in options.FIELDS, f"{command}: {action.option_strings} is neither a config flag nor owned"
        section, field = options.FIELDS[action.dest]
        for flag in action.option_strings:
            words = _other_value(action)
            args = _parse(command, [*BASE[command], flag, *words])
            made = options.settings_of(args, **FIXED.get(command, {}))
            got = getattr(getattr(made, section), field)
            assert got == _expected(action, words), (command, flag, words, got)
            walked.append(flag)
    print(f"[measured] {command}: {len(walked)} config flags walked: {' '.join(walked)}")
    assert walked


def test_the_class_flags_build_one_class_source():
    args = _parse("classify", [*BASE["classify"], "--classes", "run, jump"])
    assert options.settings_of(args).classes.classes == ("run", "jump")
    args = _parse("classify", [*BASE["classify"], "--xprompt", "x.yml", "--classes", "a,b"])
    source = options.settings_of(args).classes
    assert source.xprompt == "x.yml" and source.classes == ("a", "b")
    args = _parse("batch", [*BASE["batch"], "--classifier", "c.safetensors"])
    assert options.settings_of(args).classes.classifier == "c.safetensors"


def test_batch_quantize_reaches_the_batch_config():
    from stdd_fast.batch import BatchConfig

    args = _parse("batch", [*BASE["batch"], "--quantize", "int8", "--device", "cpu", "--classes", "a,b"])
    made = options.settings_of(args)
    config = BatchConfig(args.weights, made.classes, predictor=made.predictor, sampling=made.sampling)
    assert config.predictor.quantize == "int8" and config.result_settings()["quantize"] == "int8"


def test_a_flag_for_a_missing_field_is_a_usage_error():
    with pytest.raises(UsageError):
        _parse("stream", [*BASE["stream"], "--views", "2"])  # a window is one view: streams have no --views
