"""Encoder graphs kept on disk, one per (weights, STCA schedule, frames, versions), rebuilt when stale.

The key is a sha256 of everything the graph's output depends on: the visual tower's weights (their
bytes), the architecture, the STCA config (shuffle and seed included), T, the traced impl, the
opset and the stdd_fast / torch versions. Each entry is ``<key>.onnx`` and ``<key>.json`` holding the
sha256 of the graph file: a file that does not match it (truncated, edited, half written, a special
file) is rebuilt, never trusted. Entries are written to a temporary name and renamed, so a crashed
build leaves no entry behind. A folder that cannot be written means the graph is built in a
temporary folder for this process (said once), not an error.

Beside each graph, the graph as ONNX Runtime optimises it for this CPU (:func:`runtime_graph`:
``<key>.<runtime>.onnx``, the runtime being the ONNX Runtime version and the CPU's instruction set,
since the optimised layouts are made for them): building a session from it skips the optimisation
(~1 s for ViT-B/16), so only the first predictor of a machine pays it; another ONNX Runtime version
or CPU gets its own.

Folder: ``cache_dir=``, else ``$STDD_CACHE_DIR/onnx``, else ``~/.cache/stdd_fast/onnx``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from stdd_fast.devices import cpu_isa
from stdd_fast.errors import ExportError
from stdd_fast.graphs.encoder import encoder_spec, export_encoder
from stdd_fast.graphs.trace import DEFAULT_OPSET
from stdd_fast.model import STDDModel
from stdd_fast.notices import about, notice
from stdd_fast.predict.estimates import graph_build_seconds
from stdd_fast.predict.onnx_session import open_session, session_options
from stdd_fast.user_cache import (
    cache_root,
    open_regular,
    process_folder,
    read_small_file,
    say_once,
    writable_folder,
    write_atomically,
)

BUILDS = {"count": 0, "optimised": 0}  # graphs built / optimised in this process (what the cache saves shows)


def default_cache_dir() -> Path:
    return cache_root() / "onnx"


def weights_fingerprint(model: STDDModel) -> str:
    """sha256 of the visual tower's parameters and buffers (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.visual.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _file_sha256(path: Path) -> str | None:
    """sha256 of a regular file's bytes (None: absent or special)."""
    handle = open_regular(path)
    if handle is None:
        return None
    digest = hashlib.sha256()
    with handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class CachedEncoder:
    """An encoder graph on disk: ``built`` by this call (else found), in ``seconds``; ``note``: why it was built."""

    path: Path
    key: str
    built: bool
    seconds: float
    note: str = ""

    def describe(self) -> str:
        """One line for users: where the graph is and what getting it cost."""
        how = f"built in {self.seconds:.1f} s ({self.note})" if self.built else "from the cache"
        return f"encoder graph {how}: {self.path}"


def cached_encoder(
    model: STDDModel,
    num_frames: int,
    cache_dir: str | Path | None = None,
    impl: str = "fused",
    opset: int = DEFAULT_OPSET,
    quantize: str | None = None,
) -> CachedEncoder:
    """The encoder graph for ``model`` at ``num_frames`` frames: from the cache, or exported into it now.

    ``quantize="int8"``: that graph with its MatMul weights quantised to int8 (ONNX Runtime's dynamic
    quantisation: int8 weights per tensor, activations quantised per call), cached beside it.
    """
    start = time.perf_counter()
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    spec = encoder_spec(model, num_frames, impl, opset)
    key = hashlib.sha256(json.dumps({**spec, "weights": weights_fingerprint(model)}, sort_keys=True).encode())
    key = key.hexdigest()[:32] + ("" if quantize is None else f".{quantize}")
    graph, record = folder / f"{key}.onnx", folder / f"{key}.json"
    if graph.is_dir() or record.is_dir():
        say_once(str(graph), f"{graph} (or its .json record) is a folder, not a cache entry: remove it")
    if graph.is_dir() or record.is_dir() or not writable_folder(folder, "encoder graphs"):
        folder = process_folder("onnx")  # this process only: built again by the next
        graph, record = folder / f"{key}.onnx", folder / f"{key}.json"
    note = _stale(graph, record)
    if not note:
        return CachedEncoder(graph, key, False, time.perf_counter() - start)
    if quantize is None:
        notice(
            f"building the {model.arch.name} encoder graph for ONNX Runtime at {num_frames} frames ({note}; once per "
            f"weights, {about(graph_build_seconds(model, num_frames))}): {graph}"
        )
    else:
        notice(f"quantising the {model.arch.name} encoder graph's MatMul weights to {quantize} (once per weights)")
    partial = folder / f"{key}.{os.getpid()}.partial.onnx"
    try:
        if quantize is None:
            export_encoder(model, partial, num_frames, impl, opset)
        else:
            _quantize(cached_encoder(model, num_frames, folder, impl, opset).path, partial, quantize)
        BUILDS["count"] += 1
        data = partial.with_name(partial.name + ".data")
        if data.exists():  # the graph records its weights file by name: a renamed entry would lose it
            data.unlink()
            raise ExportError(f"the {model.arch.name} encoder is over 2 GB: too big to cache; use stdd-export")
        os.replace(partial, graph)
        write_atomically(record, json.dumps({"sha256": _file_sha256(graph), "spec": spec}, indent=1) + "\n", "a record")
    except OSError as e:  # a full disk, a folder gone read-only meanwhile: this process's folder, or say so
        why = e.strerror or e
        if folder == process_folder("onnx"):
            raise ExportError(f"cannot write the encoder graph in {folder} ({why}): free disk space") from None
        say_once(str(folder), f"cannot write encoder graphs in {folder} ({why}): running without it")
        return cached_encoder(model, num_frames, process_folder("onnx"), impl, opset, quantize)
    finally:
        partial.unlink(missing_ok=True)
    return CachedEncoder(graph, key, True, time.perf_counter() - start, note)


def runtime_tag() -> str:
    """What an optimised graph was made for: the ONNX Runtime version and this CPU's instruction set."""
    import onnxruntime

    return f"ort{onnxruntime.__version__}-{cpu_isa()}"


def runtime_graph(cached: CachedEncoder) -> CachedEncoder:
    """``cached``'s graph as ONNX Runtime optimises it here (every graph optimisation, the layouts for this CPU),
    from the cache or made and kept now; load it with ``session_options(optimize=False)``.

    The same checks as the graph's own entry (a record with its sha256, written atomically); where the
    folder cannot be written, the graph is optimised again by every session (no error).
    """
    start = time.perf_counter()
    folder = cached.path.parent
    path = folder / f"{cached.key}.{runtime_tag()}.onnx"
    record = path.with_suffix(".json")
    made_from = _record(cached.path.with_suffix(".json"))
    source = None if made_from is None else made_from["sha256"]
    if _stale(path, record, source) == "":
        return CachedEncoder(path, cached.key, False, time.perf_counter() - start)
    partial = folder / f"{path.stem}.{os.getpid()}.partial.onnx"
    options = session_options()
    options.optimized_model_filepath = str(partial)
    options.log_severity_level = 3  # ONNX Runtime warns that the file is for this machine: that is the point
    try:
        open_session(cached.path, "cpu", options)
        BUILDS["optimised"] += 1
        os.replace(partial, path)
        entry = {"sha256": _file_sha256(path), "source": source, "runtime": runtime_tag()}
        write_atomically(record, json.dumps(entry) + "\n", "a record")
    except OSError:  # a folder that cannot be written: the session optimises the graph itself
        return cached
    finally:
        partial.unlink(missing_ok=True)
    return CachedEncoder(path, cached.key, True, time.perf_counter() - start, f"optimised for {runtime_tag()}")


def _quantize(source: Path, target: Path, kind: str) -> None:
    if kind != "int8":
        raise ExportError(f"quantize={kind!r}: the one quantisation offered is 'int8'")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)


def _record(record: Path) -> dict | None:
    """An entry's record (None: absent, special or not one of ours)."""
    return _parse_record(read_small_file(record, "an encoder-graph record"))


def _parse_record(text: str | None) -> dict | None:
    try:
        entry = None if text is None else json.loads(text)
    except (ValueError, RecursionError):
        return None
    return entry if isinstance(entry, dict) and isinstance(entry.get("sha256"), str) else None


def _stale(graph: Path, record: Path, source: str | None = None) -> str:
    """Why the entry cannot be used ("" when it can); ``source``: the sha256 of the graph it must be made from.
    A record that is absent or a special file reads as no entry; one that is there but not ours, as unreadable."""
    text = read_small_file(record, "an encoder-graph record")
    if text is None or not graph.exists():
        return "not cached yet"
    entry = _parse_record(text)
    if entry is None:
        return "its record is unreadable"
    if source is not None and entry.get("source") != source:
        return "made from another build of its graph"
    if _file_sha256(graph) != entry["sha256"]:
        return "the cached file does not match its record (corrupt, changed or not a file): rebuilt"
    return ""
