"""README's quickstart runs as written (in a scratch folder), and leaves nothing outside ``demo/``."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """The README's set-up snippet (its Python heredoc) run in a fresh folder."""
    root = tmp_path_factory.mktemp("readme")
    setup = next(b for b in _blocks("bash") if "<<'PY'" in b)
    code = setup.split("<<'PY'\n", 1)[1].split("\nPY", 1)[0]
    (root / "demo").mkdir()
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120, capture_output=True)
    return root


def _run(code: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_the_python_quickstart_runs(scratch):
    quickstart = next(b for b in _blocks("python") if "engine.classify" in b and "sample_indices" in b)
    out = _run(quickstart, scratch)
    assert "demo/missing.mp4 [] [] [] demo/missing.mp4: no such file" in out


def test_the_streaming_example_runs_and_prints_errors_without_crashing(scratch):
    example = next(b for b in _blocks("python") if "engine.stream(" in b)
    prelude = "import stdd_fast\n"
    out = _run(prelude + example, scratch)
    assert "'windows'" in out and "end of source" in out


def test_the_timeline_example_runs(scratch):
    """Timelines and events: the one-command example (after its classifier) from a fresh clone's demo files."""
    block = next(b for b in _blocks("bash") if "stdd timeline" in b)
    commands = [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]
    bin_dir = Path(sys.executable).parent
    for command in commands:
        argv = [a.strip('"') for a in command.split()]
        argv[0] = str(bin_dir / Path(argv[0]).name)
        proc = subprocess.run(argv, cwd=scratch, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{command}: {proc.stderr[-2000:]}"
    written = sorted(p.name for p in (scratch / "demo" / "timeline").iterdir())
    print(written)
    assert written == [f"demo.{s}" for s in ("png", "segments.csv", "segments.jsonl", "srt", "vtt", "windows.jsonl")]


def test_following_the_readme_writes_only_under_demo(scratch):
    assert sorted(p.name for p in scratch.iterdir()) == ["demo"]


def test_the_command_line_examples_run(scratch):
    block = next(b for b in _blocks("bash") if "stdd build-classifier" in b and "stdd info" in b)
    commands = [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]
    bin_dir = Path(sys.executable).parent
    for command in commands:
        argv = command.split("#", 1)[0].split()
        argv = [a.strip('"') for a in argv]
        argv[0] = str(bin_dir / Path(argv[0]).name)
        proc = subprocess.run(argv, cwd=scratch, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{command}: {proc.stderr[-2000:]}"
    assert (scratch / "demo" / "results.csv").read_text().startswith("video,labels,scores,probabilities")


def test_the_onnx_example_runs_alone(scratch):
    """The ONNX export and the Python example after it, run with nothing before it (it imports what it uses)."""
    bin_dir = Path(sys.executable).parent
    if not (scratch / "demo" / "classes.safetensors").exists():  # what the command-line examples write
        build = next(b for b in _blocks("bash") if "stdd build-classifier" in b and "stdd info" in b)
        command = next(c for c in build.replace("\\\n", " ").splitlines() if "stdd build-classifier" in c)
        argv = [a.strip('"') for a in command.split()]
        subprocess.run([str(bin_dir / Path(argv[0]).name), *argv[1:]], cwd=scratch, check=True, timeout=300)
    block = next(b for b in _blocks("bash") if "stdd-export --onnx" in b)
    for command in block.replace("\\\n", " ").splitlines():
        if "-o demo/tiny.onnx" in command or "stdd classify" in command:  # the export and its use
            argv = command.split("#", 1)[0].split()
            proc = subprocess.run([str(bin_dir / Path(argv[0]).name), *argv[1:]], cwd=scratch, capture_output=True,
                                  text=True, timeout=300)  # fmt: skip
            assert proc.returncode == 0, f"{command}: {proc.stderr[-2000:]}"
    example = next(b for b in _blocks("python") if "OnnxRuntimeRunner(" in b)
    out = _run(example, scratch)
    assert "['juggling', 'surfing', 'knitting']" in out
