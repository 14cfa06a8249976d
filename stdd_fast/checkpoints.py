"""Checkpoint loaders: every format STDD weights come in, by path, architecture detected.

Formats read (STDD-SPEC §5, ARCHITECTURE §1):

* OpenAI CLIP: the TorchScript archive (``ViT-B-16.pt``) and a plain state dict;
* open_clip: ``.pt`` / ``.bin`` state dicts (bare, or ``{"state_dict": ...}`` with ``module.``) and
  ``.safetensors``;
* official STDD (PySlowFast): per-epoch ``checkpoint_epoch_*.pyth`` (``model_state`` with
  ``model.*``, ``raw_model.*``, ``projector_v.*``, plus ``cfg``, ``optimizer_state``...) and the
  averaged ``swa_*.pth`` (``model.*`` only);
* stdd_fast's own ``.safetensors`` (:func:`save_checkpoint`), which also records arch and STCA config.

Nothing a file carries is executed unless the caller passes ``trust_pickle=True``: pickles load
with ``torch.load(weights_only=True)`` and TorchScript archives are read as data
(:mod:`stdd_fast.torchscript`); one that needs code raises :class:`UnsafeCheckpointError`. The format
is recognised from the file's content, not its suffix.
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import torch

from stdd_fast.config import ArchConfig, get_arch, list_models
from stdd_fast.errors import CheckpointError, OutputError, UnsafeCheckpointError
from stdd_fast.torchscript import is_torchscript, read_torchscript_state

FORMAT_TAG = "stdd_fast"
# Not weights: OpenAI's archives store these ints as tensors; a scripted open_clip model keeps the text
# tower's causal mask (a non-persistent buffer the model rebuilds).
_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")
V = TypeVar("V")  # a state's values: tensors, or the file's key names while only the header is read


@dataclass
class CheckpointInfo:
    """What a loader found in a file besides the weights."""

    path: str
    format: str
    ignored_prefixes: dict[str, int] = field(default_factory=dict)
    epoch: int | None = None
    has_cfg: bool = False
    arch: dict | None = None
    stca: dict | None = None  # the STCA config a stdd_fast checkpoint records
    # STCA fields the model was built with other values than the checkpoint records: {field: [recorded, used]}
    stca_overridden: dict[str, list] = field(default_factory=dict)
    name: str | None = None  # the pretrained name it was loaded by (stdd_fast.pretrained), None for a path
    sha256: str | None = None  # of the file, for weights loaded by name


KeyCheck = Callable[[dict[str, torch.Tensor], CheckpointInfo], None]  # read_state_dict(check=): keys and shapes


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then that many bytes of JSON."""
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    return head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size


def _read_torchscript(path: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    """A TorchScript archive's weights, as data; ``torch.jit.load`` (which runs the archive's code) when trusted."""
    if not trust_pickle:
        return read_torchscript_state(path)
    try:
        with warnings.catch_warnings():  # torch.jit.load is deprecated, but OpenAI ships this format
            warnings.simplefilter("ignore", FutureWarning)
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except RuntimeError as e:
        raise CheckpointError(f"{path}: unreadable TorchScript archive ({str(e).splitlines()[0][:200]})") from None


def _torch_load(path: Path, trust_pickle: bool) -> object:
    try:
        with path.open("rb") as f:  # a file object: torch.load must not pick a format from the suffix
            return torch.load(f, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        text = str(e)
        culprit = next((line.strip() for line in text.splitlines() if "GLOBAL" in line), None)
        if culprit:
            raise UnsafeCheckpointError(
                f"{path}: this pickle needs arbitrary code to load ({culprit}). Re-save it as a plain state "
                "dict or safetensors, or pass trust_pickle=True if you trust its source"
            ) from None
        raise CheckpointError(
            f"{path}: could not read the checkpoint (not a valid pickle); is it truncated or corrupt?"
        ) from None
    except Exception as e:  # garbage drives the unpickler into any error (IndexError, KeyError, struct.error, ...)
        raise CheckpointError(
            f"{path}: could not read the checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "is the file truncated or corrupt?"
        ) from None


def _read_safetensors(path: Path, check: KeyCheck | None) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """The state of a safetensors file; ``check`` sees its keys and shapes first, from the header alone."""
    from safetensors import SafetensorError, safe_open

    def unreadable(e: Exception) -> CheckpointError:
        return CheckpointError(f"{path}: not a readable safetensors file ({e}); is it truncated or corrupt?")

    info = CheckpointInfo(str(path), "safetensors")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") == FORMAT_TAG:
                info.format = FORMAT_TAG
                info.arch = json.loads(meta["arch"])
                info.stca = json.loads(meta.get("stca", "null"))
            names = _clip_keys({k: k for k in f.keys()}, info)  # noqa: SIM118 (safe_open is no dict): CLIP name -> key
            shapes = {name: torch.empty(f.get_slice(key).get_shape(), device="meta") for name, key in names.items()}
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise unreadable(e) from None
    if check is not None:
        check(shapes, info)  # before any tensor is read: a key no model has (a sparse 6 GB one) costs nothing
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: f.get_tensor(key) for name, key in names.items()}, info
    except (SafetensorError, OSError, ValueError) as e:
        raise unreadable(e) from None


def _only_tensors(path: Path, d: dict, what: str) -> dict[str, torch.Tensor]:
    bad = [k for k, v in d.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {what} holds non-tensor entries {bad[:5]}; not a model state dict")
    return d


def _strip(d: dict[str, V], prefix: str) -> dict[str, V]:
    return {k[len(prefix) :]: v for k, v in d.items() if k.startswith(prefix)}


def _split_official(state: dict[str, V], info: CheckpointInfo) -> dict[str, V]:
    """Keep ``model.*`` of an official STDD state; count what is dropped (raw_model, projector_v)."""
    for k in state:
        if not k.startswith("model."):
            prefix = k.split(".", 1)[0] + "."
            info.ignored_prefixes[prefix] = info.ignored_prefixes.get(prefix, 0) + 1
    return _strip(state, "model.")


def _clip_keys(state: dict[str, V], info: CheckpointInfo) -> dict[str, V]:
    """A checkpoint's entries under the CLIP names a model loads: ``module.`` / official ``model.`` prefixes
    stripped, training-time heads and non-weights dropped (counted in ``info``); the values pass through."""
    if state and all(k.startswith("module.") for k in state):
        state = _strip(state, "module.")
    if "model.visual.conv1.weight" in state:
        state = _split_official(state, info)
    projector = [k for k in state if k.startswith("projector_v.")]  # a training-time head, not part of CLIP
    for k in projector:
        del state[k]
    if projector:
        info.ignored_prefixes["projector_v."] = len(projector)
    for k in _NON_WEIGHT_KEYS:
        state.pop(k, None)
    return state


def read_state_dict(
    path: str | Path, trust_pickle: bool = False, check: KeyCheck | None = None
) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """Read any supported checkpoint into a CLIP state dict with OpenAI/open_clip key names.

    ``check(shapes, info)``: sees the state's keys and shapes (tensors on the meta device) and may raise; for a
    safetensors file before any tensor is read (a file whose keys cannot fit costs only its header), for the
    other formats once read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty")

    # The format is read from the content, not the suffix (a safetensors file named .bin is common).
    if _looks_like_safetensors(path):
        return _read_safetensors(path, check)
    if is_torchscript(path):
        state = _read_torchscript(path, trust_pickle)
        info = CheckpointInfo(str(path), "openai-torchscript")
    else:
        obj = _torch_load(path, trust_pickle)
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict or checkpoint dict")
        if "model_state" in obj:
            info = CheckpointInfo(str(path), "stdd-official", epoch=obj.get("epoch"), has_cfg="cfg" in obj)
            state = _split_official(_only_tensors(path, obj["model_state"], "model_state"), info)
        elif obj.get("format") == FORMAT_TAG:
            info = CheckpointInfo(str(path), FORMAT_TAG, epoch=obj.get("epoch"), arch=obj.get("arch"))
            info.stca = obj.get("stca")
            state = _only_tensors(path, obj["model"], "model")
        elif "state_dict" in obj:
            info = CheckpointInfo(str(path), "open_clip-train", epoch=obj.get("epoch"))
            state = _only_tensors(path, obj["state_dict"], "state_dict")
        else:
            info = CheckpointInfo(str(path), "state-dict")
            state = _only_tensors(path, obj, "the file")
    state = _clip_keys(state, info)
    if check is not None:
        check(state, info)
    return state, info


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """CheckpointError naming the tensors that hold NaN or Inf (they would make every score NaN)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"{source}: {len(bad)} tensor(s) hold NaN or Inf ({', '.join(bad[:5])}); the checkpoint is corrupt or "
            "was saved after training diverged: use another checkpoint"
        )


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    ids = {k[len(prefix) :].split(".", 1)[0] for k in state if k.startswith(prefix)}
    return len(ids)


def detect_arch(state: dict[str, torch.Tensor], source: str = "state dict") -> ArchConfig:
    """The architecture of a CLIP ViT state dict: a registered one when the shapes match.

    Head counts are not visible in the weights: a registered architecture with the same shapes
    supplies them, otherwise the OpenAI convention (64 channels per head) is assumed.
    """
    needed = (
        "visual.conv1.weight",
        "visual.positional_embedding",
        "visual.proj",
        "token_embedding.weight",
        "positional_embedding",
        "ln_final.weight",
    )
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(
            f"{source}: not a CLIP ViT checkpoint (missing {missing}); stdd_fast loads OpenAI/open_clip CLIP ViT "
            "weights and STDD checkpoints"
        )
    width, _, patch, _ = state["visual.conv1.weight"].shape
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state["ln_final.weight"].shape[0]
    detected = ArchConfig(
        name="custom",
        embed_dim=state["visual.proj"].shape[1],
        image_size=patch * grid,
        patch_size=patch,
        vision_width=width,
        vision_layers=_count_blocks(state, "visual.transformer.resblocks."),
        vision_heads=max(1, width // 64),
        text_width=text_width,
        text_heads=max(1, text_width // 64),
        text_layers=_count_blocks(state, "transformer.resblocks."),
        context_length=state["positional_embedding"].shape[0],
        vocab_size=state["token_embedding.weight"].shape[0],
    )
    no_heads = {"vision_heads", "text_heads", "name"}
    layers = {"vision_layers", "text_layers"}
    for name in list_models():
        known = get_arch(name)
        if all(getattr(known, f) == getattr(detected, f) for f in asdict(detected) if f not in no_heads):
            return known
        if all(getattr(known, f) == getattr(detected, f) for f in asdict(detected) if f not in no_heads | layers):
            _raise_missing_blocks(state, known, source)
    _check_blocks_contiguous(state, source)
    return detected


def _block_ids(state: dict[str, torch.Tensor], prefix: str) -> set[int]:
    ids = set()
    for k in state:
        if k.startswith(prefix):
            head = k[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                ids.add(int(head))
    return ids


def _raise_missing_blocks(state: dict[str, torch.Tensor], known: ArchConfig, source: str) -> None:
    """A file with every dimension of ``known`` but fewer blocks: blocks are missing, not a new architecture."""
    gaps = []
    for prefix, count in (
        ("visual.transformer.resblocks.", known.vision_layers),
        ("transformer.resblocks.", known.text_layers),
    ):
        missing = sorted(set(range(count)) - _block_ids(state, prefix))
        if missing:
            gaps.append(f"{prefix}{{{', '.join(map(str, missing[:8]))}}}.* (of {count})")
    raise CheckpointError(
        f"{source}: looks like architecture {known.name!r} with blocks missing: {'; '.join(gaps)}; the file is "
        f"truncated or incomplete (if it is a smaller model on purpose, pass arch=ArchConfig(...) with its shape)"
    )


def _check_blocks_contiguous(state: dict[str, torch.Tensor], source: str) -> None:
    for prefix in ("visual.transformer.resblocks.", "transformer.resblocks."):
        ids = _block_ids(state, prefix)
        missing = sorted(set(range(max(ids) + 1)) - ids) if ids else []
        if missing:
            raise CheckpointError(
                f"{source}: blocks {prefix}{missing[:8]} are missing between the others; not a whole model"
            )


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError listing missing, unexpected and mis-shaped keys, if any (and what the file holds)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or misshaped:

        def listing(title: str, keys: list[str]) -> str:
            if not keys:
                return ""
            more = f" (+{len(keys) - 8} more)" if len(keys) > 8 else ""
            return f"\n  {title} ({len(keys)}): {keys[:8]}{more}"

        arch = getattr(model, "arch", None)
        try:
            looks_like = f"\n  the checkpoint looks like architecture {detect_arch(state).name!r}"
        except CheckpointError:
            looks_like = ""
        raise CheckpointError(
            f"{source} does not fit architecture {arch.name if arch else '?'}:"
            + listing("missing", missing)
            + listing("unexpected", unexpected)
            + listing("mis-shaped", misshaped)
            + looks_like
            + "\n  pass the matching arch= (see stdd_fast.list_models()) or a checkpoint of this architecture"
        )


def save_checkpoint(model: torch.nn.Module, path: str | Path) -> Path:
    """Save an STDD model's weights as stdd_fast safetensors (arch and STCA config in the metadata)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT_TAG,
        "arch": json.dumps(model.arch.to_dict()),
        "stca": json.dumps(asdict(model.stca) if model.stca else None),
    }
    try:
        save_file(state, str(path), metadata=meta)
    except (SafetensorError, OSError) as e:
        raise OutputError(f"{path}: cannot write the checkpoint here ({e})") from None
    return path
