"""TorchScript archives read as data: their parameters and buffers, never their code.

OpenAI ships CLIP as a TorchScript archive (``ViT-B-16.pt``). ``torch.jit.load`` compiles the
archive's ``code/`` and runs it, including any ``__setstate__`` a class defines, so a crafted
archive can act on the machine while it loads (write files, map memory). This module reads the
same weights without executing anything:

* ``data.pkl`` (the module tree) is unpickled by a restricted unpickler that knows only tensor
  reconstruction, typed storages, ``OrderedDict`` and TorchScript's list helpers; every
  ``__torch__.*`` class becomes an inert record of its attributes, and any other global is refused;
* which attributes are parameters and buffers comes from the ``__parameters__`` / ``__buffers__``
  declarations in ``code/``, read as text (``ast.literal_eval`` of the list literal), not executed;
* tensor bytes come from ``data/<key>`` records, checked against their declared sizes.

A module whose state is restored by its own ``__setstate__`` (a tuple instead of an attribute
dict) cannot be read without running that code: :class:`UnsafeCheckpointError`, as for a pickle
that needs code (``trust_pickle=True`` opts in to ``torch.jit.load``).
"""

from __future__ import annotations

import ast
import io
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

from stdd_fast.errors import CheckpointError, UnsafeCheckpointError

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
# class Name(Module):\n  __parameters__ = [...]\n  __buffers__ = [...]  (TorchScript's serialized code)
_DECLARATION = re.compile(
    r"^class (\w+)\(Module\):\n  __parameters__ = (\[[^\]\n]*\])\n  __buffers__ = (\[[^\]\n]*\])", re.MULTILINE
)


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with serialized code or constants)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in n or n.endswith("constants.pkl") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


class _Record:
    """An inert stand-in for a TorchScript object: its class name and the state pickled for it."""

    qualname = ""
    state: object = None

    def __setstate__(self, state: object) -> None:  # BUILD: keep the state, run nothing
        self.state = state


class _Storage:
    """A typed storage's bytes: dtype and a flat tensor of ``numel`` elements."""

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None) -> torch.Tensor:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage record")
    needed = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1 if all(size) else 0
    if needed > storage.flat.numel():
        raise pickle.UnpicklingError(f"a tensor of size {tuple(size)} overruns its storage")
    return torch.as_strided(storage.flat, tuple(size), tuple(stride), offset).clone()


_SAFE_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch.jit._pickle", "build_intlist"): list,
    ("torch.jit._pickle", "build_doublelist"): list,
    ("torch.jit._pickle", "build_boollist"): list,
    ("torch.jit._pickle", "build_tensorlist"): list,
    ("torch.jit._pickle", "restore_type_tag"): lambda value, _type: value,
}


class _DataUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of a TorchScript archive without importing or calling anything else."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, source: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix, self._source = archive, prefix, source

    def find_class(self, module: str, name: str) -> object:
        if module == "__torch__" or module.startswith("__torch__."):
            # NEWOBJ instantiates the class it gets: an empty subclass that only carries the name
            return type(name, (_Record,), {"qualname": f"{module}.{name}"})
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        raise UnsafeCheckpointError(
            f"{self._source}: this TorchScript archive needs {module}.{name} to load, which is code, not data; "
            "re-save the weights as a state dict or safetensors, or pass trust_pickle=True if you trust its source"
        )

    def persistent_load(self, pid: object) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent record {str(pid)[:80]}")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage record {str(pid)[:80]}")
        try:
            raw = self._archive.read(f"{self._prefix}data/{key}")
        except KeyError:
            raise pickle.UnpicklingError(f"storage {key!r} is missing from the archive") from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) != numel * itemsize:
            raise pickle.UnpicklingError(f"storage {key!r} holds {len(raw)} bytes, not {numel} x {itemsize}")
        flat = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return _Storage(flat)


def _declarations(archive: zipfile.ZipFile, prefix: str) -> dict[str, tuple[list[str], list[str]]]:
    """``{qualified class name: (parameters, buffers)}`` from the archive's code files, read as text."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    code = f"{prefix}code/"
    for name in archive.namelist():
        if not (name.startswith(code) and name.endswith(".py")):
            continue
        module = name[len(code) : -len(".py")].replace("/", ".")  # code/__torch__/a/b.py -> __torch__.a.b
        text = archive.read(name).decode("utf-8", errors="replace")
        for match in _DECLARATION.finditer(text):
            cls, params, buffers = match.groups()
            out[f"{module}.{cls}"] = (list(ast.literal_eval(params)), list(ast.literal_eval(buffers)))
    return out


def _flatten(
    record: _Record, declared: dict, prefix: str, out: dict[str, torch.Tensor], source: str, seen: set[int]
) -> None:
    if id(record) in seen:  # a submodule shared by two parents: its tensors are named once
        return
    seen.add(id(record))
    if not isinstance(record.state, dict):
        raise UnsafeCheckpointError(
            f"{source}: module {record.qualname} restores its state with its own __setstate__ code, which reading "
            "the weights as data cannot run; re-save them as a state dict or safetensors, or pass trust_pickle=True "
            "if you trust the archive's source"
        )
    params, buffers = declared.get(record.qualname, ([], []))
    for attr in (*params, *buffers):
        value = record.state.get(attr)
        if isinstance(value, torch.Tensor):
            out[prefix + attr] = value
    for attr, value in record.state.items():
        if isinstance(value, _Record):
            _flatten(value, declared, f"{prefix}{attr}.", out, source, seen)


def read_torchscript_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict (parameters and buffers, module-path names) of a TorchScript archive, as data."""
    source = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise CheckpointError(f"{source}: a TorchScript archive with {len(pickles)} data.pkl records, not 1")
            prefix = pickles[0][: -len("data.pkl")]
            byteorder = f"{prefix}byteorder"
            if byteorder in archive.namelist() and archive.read(byteorder).strip() not in (b"little", b""):
                raise CheckpointError(f"{source}: a big-endian TorchScript archive; re-save it on a little-endian host")
            declared = _declarations(archive, prefix)
            root = _DataUnpickler(archive.read(pickles[0]), archive, prefix, source).load()
    except (zipfile.BadZipFile, OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, SyntaxError) as e:
        raise CheckpointError(f"{source}: unreadable TorchScript archive ({type(e).__name__}: {e})") from None
    if not isinstance(root, _Record):
        raise CheckpointError(f"{source}: the TorchScript archive holds no module")
    state: dict[str, torch.Tensor] = {}
    _flatten(root, declared, "", state, source, set())
    return state
