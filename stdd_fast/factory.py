"""Building STDD models: seeded random weights (:func:`create_model`) or a checkpoint's (:func:`load_model`).

The model class (:mod:`stdd_fast.model`) and the file formats (:mod:`stdd_fast.checkpoints`) do not
know each other; this module joins them (open_clip's model/factory split).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import torch

from stdd_fast import pretrained as by_name
from stdd_fast.checkpoints import check_finite, check_state_dict, detect_arch, read_state_dict
from stdd_fast.config import ArchConfig, STCAConfig, get_arch
from stdd_fast.model import STDDModel

# load_model(stca=...): the STCA config a stdd_fast checkpoint records (STCAConfig() for other formats)
FROM_CHECKPOINT = "checkpoint"
StcaChoice = STCAConfig | None | Literal["checkpoint"]


def create_model(
    arch: str | ArchConfig = "ViT-B-16",
    stca: STCAConfig | None = STCAConfig(),
    pretrained: str | Path | None = None,
    impl: str = "reference",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> STDDModel:
    """Build an STDD model: seeded random weights, or the weights of the checkpoint ``pretrained``.

    Random init is open_clip's, drawn under ``torch.manual_seed(seed)`` without touching the
    caller's global RNG state.
    """
    if pretrained is not None:
        return load_model(pretrained, arch=arch, stca=stca, impl=impl, device=device, dtype=dtype)
    arch = get_arch(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = STDDModel(arch, stca, impl)
    return model.to(device=device, dtype=dtype).eval()


def _stca_for(recorded: dict | None, stca: StcaChoice, info) -> STCAConfig | None:
    """The STCA config to build with; where an explicit one differs from the recorded one, say so in ``info``."""
    saved = STCAConfig(**recorded) if recorded else None
    if isinstance(stca, str):
        if stca != FROM_CHECKPOINT:
            raise TypeError(f"stca={stca!r}: pass an STCAConfig, None (plain CLIP) or {FROM_CHECKPOINT!r}")
        return saved or STCAConfig()
    if saved is not None:
        used = {} if stca is None else dataclasses.asdict(stca)
        info.stca_overridden = {k: [v, used.get(k)] for k, v in dataclasses.asdict(saved).items() if used.get(k) != v}
    return stca


def _check_keys(shapes: dict[str, torch.Tensor], info, arch: str | ArchConfig | None, source: str) -> None:
    """The checkpoint's keys and shapes against the model they would load into (built on the meta device): a
    safetensors file that cannot fit is refused before its tensors are read (STCA adds no parameter)."""
    arch = get_arch(arch) if arch is not None else ArchConfig.from_dict(info.arch) if info.arch else None
    with torch.device("meta"):
        model = STDDModel(arch or detect_arch(shapes, source), None, "reference")
    check_state_dict(model, shapes, source)


def load_model(
    path: str | Path,
    arch: str | ArchConfig | None = None,
    stca: StcaChoice = FROM_CHECKPOINT,
    impl: str = "reference",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    trust_pickle: bool = False,
) -> STDDModel:
    """Load an STDD model from a checkpoint file of any supported format (in eval mode), or from pretrained
    weights by name (``"ViT-B-16/openai"``, ``"hf-hub:org/repo"``: :mod:`stdd_fast.pretrained`, the Hugging Face
    cache; ``checkpoint_info`` records the name and the file's sha256).

    ``arch``: None detects it from the weights (:func:`~stdd_fast.checkpoints.detect_arch`); a name
    or ArchConfig is checked against them. ``stca``: ``"checkpoint"`` (default) uses the config a
    stdd_fast checkpoint records (the released defaults for other formats); an STCAConfig
    overrides it (the fields that differ are listed in ``checkpoint_info.stca_overridden``); None
    builds plain CLIP blocks. ``logit_scale`` comes from the checkpoint. The returned model carries
    ``checkpoint_info`` (format, dropped prefixes, epoch). The caller's global RNG is untouched.
    """
    named = by_name.resolve(path) if by_name.is_name(path) else None
    fits = lambda shapes, found: _check_keys(shapes, found, arch, str(path))  # before the tensors are read
    state, info = read_state_dict(named.path if named else path, trust_pickle=trust_pickle, check=fits)
    check_finite(state, str(path))
    if arch is None:
        arch = ArchConfig.from_dict(info.arch) if info.arch else detect_arch(state, str(path))
        if named and named.quick_gelu is not None:  # the weights' shapes cannot tell the activation; the name can
            arch = dataclasses.replace(arch, quick_gelu=named.quick_gelu)
    else:
        arch = get_arch(arch)
    if named:
        info.name, info.sha256 = named.name, named.sha256
    with torch.random.fork_rng(devices=[]):  # the init is overwritten at once: it must not advance the caller's RNG
        model = STDDModel(arch, _stca_for(info.stca, stca, info), impl)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    model.checkpoint_info = info
    return model.to(device=device, dtype=dtype).eval()
