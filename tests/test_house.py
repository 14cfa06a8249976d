"""The house rules, checked: ``import stdd_fast`` stays light (ARCHITECTURE §2), the import graph has no
circles, kernels stand on torch and triton alone, and no runtime class outgrows one sitting."""

import ast
import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = (
    "stdd_fast.training",
    "stdd_fast.export",
    "stdd_fast.kernels",
    "tensorrt",
    "nvidia.dali",
    "onnx",
    "onnxruntime",
    "pynvml",
)


def test_import_pulls_no_optional_backend():
    # torchvision (needed by open_clip) imports triton by itself; measure only what stdd_fast adds.
    code = (
        "import sys, json, torchvision; before = set(sys.modules); import stdd_fast; "
        "stdd_fast.Engine, stdd_fast.video.load_clips, stdd_fast.build_predictor; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    added = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    bad = [m for m in added if m.startswith(FORBIDDEN) or m == "triton" or m.startswith("triton.")]
    assert not bad, bad


# -- the import graph: no circles, kernels standing on torch and triton alone ------------------------------

ROOT = Path(__file__).resolve().parents[1]
# where each installed package's files are (pyproject's [tool.setuptools.package-dir])
PACKAGE_DIRS = {"stdd_fast": "stdd_fast", "stdd_fast.kernels": "kernels", "stdd_fast.export": "export"}
PACKAGE_DIRS["stdd_fast.training"] = "training"


def _modules() -> dict[str, Path]:
    """Every module of the installed namespace -> its file (packages as ``__init__.py``)."""
    out = {}
    for package, folder in PACKAGE_DIRS.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if name.split(".")[1:2] in (["kernels"], ["export"], ["training"]) and package == "stdd_fast":
                continue  # those folders are mapped by their own entry (and do not live under stdd_fast/)
            out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules ``name`` imports, at top level or inside functions (a package import counts too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if not target or target == name:
                continue
            # importing a.b.c runs a and a.b too, unless the importer lives inside them already
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                module = ".".join(parts[:i])
                if module in modules and not (name == module or name.startswith(module + ".")):
                    found.add(module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph = _graph()
    assert len(graph) > 60  # the walk found the house
    cycles = _cycles(graph)
    detail = [" <-> ".join(c) + ": " + "; ".join(f"{a} -> {sorted(graph[a] & set(c))}" for a in c) for c in cycles]
    assert not cycles, "\n".join(detail)


# -- the folders: each a room, no circle between rooms, the predictor layer below what uses it ----------------

PACKAGES = (
    "askg",
    "batch",
    "bench",
    "cli",
    "delivery",
    "graphs",
    "predict",
    "serve",
    "stca",
    "stream",
    "timeline",
    "video",
)
ABOVE_PREDICT = ("stdd_fast.export", "stdd_fast.cli", "stdd_fast.serve", "stdd_fast.batch", "stdd_fast.stream")


def _room(module: str) -> str:
    """The folder a module lives in (kernels/, export/, training/ or a package under stdd_fast/); a top-level
    module of stdd_fast/ is a room of its own."""
    parts = module.split(".")
    if len(parts) > 1 and (parts[1] in ("kernels", "export", "training") or parts[1] in PACKAGES):
        return ".".join(parts[:2])
    return module


def _rooms(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        rooms.setdefault(_room(module), set()).update(_room(t) for t in targets if _room(t) != _room(module))
    return rooms


def _reachable(graph: dict[str, set[str]], start: set[str]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen


def test_no_circle_between_folders():
    rooms = _rooms(_graph())
    assert {"stdd_fast.predict", "stdd_fast.graphs", "stdd_fast.export", "stdd_fast.kernels"} <= set(rooms)
    cycles = _cycles(rooms)
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_predict_and_what_it_stands_on_import_nothing_above_it():
    graph = _graph()
    below = _reachable(graph, {m for m in graph if m.startswith("stdd_fast.predict")})
    upward = sorted(m for m in below if m.startswith(ABOVE_PREDICT) or m == "stdd_fast.engine")
    assert not upward, upward


def test_the_folder_rules_can_fail():
    """A planted folder circle and a planted upward import are both found."""
    graph = _graph()
    graph["stdd_fast.graphs.spec"] = graph["stdd_fast.graphs.spec"] | {"stdd_fast.export.onnx_export"}
    assert any("stdd_fast.export" in c and "stdd_fast.graphs" in c for c in _cycles(_rooms(graph)))
    graph = _graph()
    graph["stdd_fast.predict.scoring"] = graph["stdd_fast.predict.scoring"] | {"stdd_fast.serve.model"}
    below = _reachable(graph, {m for m in graph if m.startswith("stdd_fast.predict")})
    assert "stdd_fast.serve.model" in below


def test_kernels_import_only_torch_and_triton():
    graph = _graph()
    kernels = {m for m in graph if m.startswith("stdd_fast.kernels")}
    assert len(kernels) >= 5
    outside = {m: sorted(t for t in graph[m] if not t.startswith("stdd_fast.kernels")) for m in kernels}
    assert not any(outside.values()), outside
    allowed = {"torch", "triton", "__future__", "os", "collections", "math", "typing", "functools"}
    for module in kernels:
        path = _modules()[module]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            for top in {n.split(".")[0] for n in names}:
                assert top in allowed, f"{module} imports {top}"


def test_a_planted_cycle_is_found():
    """The walk sees function-level imports and package inits: the check itself can fail."""
    graph = _graph()
    graph["stdd_fast.video.info"] = graph["stdd_fast.video.info"] | {"stdd_fast.engine"}
    assert any("stdd_fast.engine" in c and "stdd_fast.video.info" in c for c in _cycles(graph))


def test_the_command_line_answers_help_without_torch():
    """``stdd --help`` parses and prints without importing torch (it answers in well under a second)."""
    code = (
        "import sys; from stdd_fast.cli import build_parser; build_parser().format_help(); "
        "from stdd_fast.export.cli import _parser; _parser().format_help(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


RUNTIME_CLASS_LINES = 250
ENGINE_LINES = 200


def _class_sizes(package: str) -> dict[str, int]:
    sizes = {}
    for name, path in _modules().items():
        if not name.startswith(package):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                sizes[f"{name}.{node.name}"] = node.end_lineno - node.lineno + 1
    return sizes


def test_runtime_classes_stay_readable_in_one_sitting():
    sizes = {k: v for k, v in _class_sizes("stdd_fast").items() if not k.startswith("stdd_fast.training")}
    print("[measured] largest runtime classes:", sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
    assert sizes["stdd_fast.engine.Engine"] <= ENGINE_LINES
    assert max(sizes.values()) <= RUNTIME_CLASS_LINES, max(sizes.items(), key=lambda kv: kv[1])
