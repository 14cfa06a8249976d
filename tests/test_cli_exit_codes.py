"""Every entry point speaks the same exit codes and one-line errors (stdd_fast.cli.runner), tested as installed.

For each console script: a missing weights file (3), a bad flag (2) and a corrupt checkpoint (3),
each one line on stderr prefixed with the command's own name, and the usage line names the command.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import randomize_

from stdd_fast import build_classifier, create_model

BIN = Path(sys.executable).parent
COMMANDS = ("stdd", "stdd-export", "stdd-train", "stdd-eval", "stdd-bench")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("exit")
    model = randomize_(create_model("test-tiny"), seed=1)
    build_classifier(model, ["run", "jump"]).save(root / "classes.safetensors")
    (root / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    (root / "clip.mp4").write_bytes(b"never opened: the checkpoint fails first")
    (root / "test.csv").write_text("clip.mp4,0\n")
    (root / "classes.json").write_text('{"0": "run", "1": "jump"}')
    return root


def _argv(command: str, weights: Path, root: Path) -> list[str]:
    """The command with ``weights`` as its checkpoint and otherwise valid arguments."""
    return {
        "stdd": ["stdd", "classify", str(root / "clip.mp4"), "--weights", str(weights), "--classes", "run,jump"],
        "stdd-export": [
            "stdd-export", "--onnx", "--weights", str(weights), "--classifier", str(root / "classes.safetensors"),
            "-o", str(root / "out.onnx"),
        ],
        "stdd-train": ["stdd-train", f"pretrained={weights}", f"train_csv={root / 'test.csv'}", f"prefix={root}",
                       f"classes={root / 'classes.json'}", f"output_dir={root / 'run'}", "precision=fp32"],
        "stdd-eval": ["stdd-eval", "--weights", str(weights), "--csv", str(root / "test.csv"), "--prefix", str(root),
                      "--classes-file", str(root / "classes.json"), "--output", str(root / "eval")],
        "stdd-bench": ["stdd-bench", "--weights", str(weights), "--arch", "test-tiny", "--paths", "reference"],
    }[command]  # fmt: skip


@pytest.fixture(scope="module")
def outcomes(files):
    """Every (command, case) run at once: (exit code, stderr)."""
    cases = {}
    for command in COMMANDS:
        cases[command, "missing"] = _argv(command, files / "missing.safetensors", files)
        cases[command, "corrupt"] = _argv(command, files / "corrupt.safetensors", files)
        cases[command, "bad flag"] = [*_argv(command, files / "missing.safetensors", files), "--no-such-flag"]
    procs = {
        key: subprocess.Popen(
            [str(BIN / argv[0]), *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=files
        )
        for key, argv in cases.items()
    }
    out = {}
    for key, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        out[key] = (proc.returncode, stderr)
    return out


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    "case, code, words",
    [("missing", 3, "no such checkpoint file"), ("corrupt", 3, "not a readable safetensors file"), ("bad flag", 2, "")],
)
def test_exit_code_and_one_line(outcomes, command, case, code, words):
    rc, stderr = outcomes[command, case]
    lines = stderr.strip().splitlines()
    print(f"[measured] {command} {case}: exit {rc}: {lines}")
    assert rc == code and len(lines) == 1, stderr
    assert lines[0].startswith(f"{command}: error: ") and words in lines[0]
    if case == "bad flag":
        assert "unrecognized arguments: --no-such-flag" in lines[0] and f"`{command}" in lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_usage_names_the_command(command):
    proc = subprocess.run([str(BIN / command), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {command} ")
    assert "exit codes: 0 ok, 1 part of the work failed, 2 usage" in " ".join(proc.stdout.split())
