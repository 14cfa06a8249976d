"""The STDD model: open_clip's CLIP with every visual block run as STCA (:class:`STCABlock`).

STCA adds no parameters, so the state dict is exactly CLIP's (OpenAI/open_clip names): plain CLIP
weights give a zero-shot STDD model and STDD checkpoints load by stripping ``model.``.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from torch import nn

from stdd_fast import fp8, ops
from stdd_fast.choices import GEMMS, LINEAR_FORMATS
from stdd_fast.config import ArchConfig, STCAConfig
from stdd_fast.errors import ConfigError, choice_error
from stdd_fast.stca.index import STCAIndex


class STCABlock(nn.Module):
    """A CLIP residual block run as STCA. Adds no parameters: its state-dict names are CLIP's.

    ``impl`` picks the implementation through :mod:`stdd_fast.ops`; every implementation computes
    :func:`~stdd_fast.stca.reference.stca_block_reference`. ``linear_format`` ("fp8" or None, set by
    :meth:`STDDModel.set_linear_format`) says which GEMMs the fused block's linear layers run, and ``gemm``
    ("auto", "cublas" or "triton", set by :meth:`STDDModel.set_gemm`) which kernel the triton path runs them with.
    """

    def __init__(self, clip_block: nn.Module, index: STCAIndex, layer: int, impl: str = "reference") -> None:
        super().__init__()
        self.ln_1 = clip_block.ln_1
        self.attn = clip_block.attn
        self.ls_1 = clip_block.ls_1
        self.ln_2 = clip_block.ln_2
        self.mlp = clip_block.mlp
        self.ls_2 = clip_block.ls_2
        # A plain attribute, not a submodule: the index holds no parameters and is shared by all blocks.
        self.__dict__["index"] = index
        self.layer = layer
        self.impl = impl
        self.linear_format: str | None = None
        self.gemm = "auto"

    def visible_tokens(self, batch: int, num_frames: int, device: torch.device) -> torch.Tensor:
        """This call's visible-token indices (draws from the global RNG in train/official modes)."""
        return self.index.visible_for_call(batch, num_frames, self.layer, self.training, device)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        visible = self.visible_tokens(x.shape[0] // num_frames, num_frames, x.device)
        source_maps = self.index.source_maps(num_frames, x.device)
        return ops.stca_block(self, x, visible, source_maps)


class LayerNormFp32(nn.LayerNorm):
    """LayerNorm computed in fp32 (input and affine parameters upcast), cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


def _layer_norms_in_fp32(module: nn.Module) -> None:
    """Make every LayerNorm compute in fp32 and cast back (OpenAI CLIP semantics).

    In fp32 this is the same function as open_clip's LayerNorm, so swapping the class keeps fp32
    results bit-identical; in fp16/bf16 it matches the released model (STDD-SPEC §1.1,
    ARCHITECTURE §4.6) on every device (CPU LayerNorm rejects mixed-dtype parameters).
    """
    for m in module.modules():
        if isinstance(m, nn.LayerNorm) and type(m) is not LayerNormFp32:
            m.__class__ = LayerNormFp32


class STDDModel(CLIP):
    """CLIP ViT whose visual blocks are STCA blocks (or plain CLIP blocks when ``stca is None``).

    Attributes: ``arch`` (ArchConfig), ``stca`` (STCAConfig or None), ``logit_scale`` (log of tau),
    ``linear_format`` (None, or "fp8": :meth:`set_linear_format`).
    """

    def __init__(self, arch: ArchConfig, stca: STCAConfig | None = STCAConfig(), impl: str = "reference") -> None:
        vision_cfg = CLIPVisionCfg(
            layers=arch.vision_layers,
            width=arch.vision_width,
            head_width=arch.vision_width // arch.vision_heads,
            patch_size=arch.patch_size,
            image_size=arch.image_size,
        )
        text_cfg = CLIPTextCfg(
            context_length=arch.context_length,
            vocab_size=arch.vocab_size,
            width=arch.text_width,
            heads=arch.text_heads,
            layers=arch.text_layers,
        )
        super().__init__(arch.embed_dim, vision_cfg, text_cfg, quick_gelu=arch.quick_gelu)
        _layer_norms_in_fp32(self)
        if not self.visual.transformer.batch_first:
            raise ConfigError("stdd_fast needs open_clip's batch-first transformer (open_clip >= 2.24)")
        self.arch = arch
        self.stca = stca
        self.impl = ops.check_impl(impl)
        self.linear_format: str | None = None
        if stca is not None:
            stca.check_fits(arch.vision_width, arch.grid, arch.name)
            self.stca_index = STCAIndex(stca, arch.grid, arch.vision_width, arch.vision_layers)
            self.visual.transformer.resblocks = nn.ModuleList(
                STCABlock(block, self.stca_index, layer, impl)
                for layer, block in enumerate(self.visual.transformer.resblocks)
            )

    def set_stca(self, stca: STCAConfig) -> STDDModel:
        """Run every STCA block with ``stca`` (e.g. another eval shuffle); the weights are unchanged.

        Only between STCA configs: a model built with ``stca=None`` has plain CLIP blocks.
        """
        if self.stca is None:
            raise ConfigError("this model was built with stca=None (plain CLIP blocks); build it with an STCAConfig")
        stca.check_fits(self.arch.vision_width, self.arch.grid, self.arch.name)
        self.stca = stca
        self.stca_index = STCAIndex(stca, self.arch.grid, self.arch.vision_width, self.arch.vision_layers)
        for block in self.blocks:
            block.__dict__["index"] = self.stca_index
        return self

    @property
    def blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    def set_impl(self, impl: str) -> STDDModel:
        """Switch every STCA block to ``impl`` ("reference" | "fused" | "triton" | "auto")."""
        ops.check_impl(impl)
        if self.linear_format == "fp8":
            fp8.check_impl(impl)
        self.impl = impl
        for block in self.blocks:
            if isinstance(block, STCABlock):
                block.impl = impl
        return self

    def set_linear_format(self, linear_format: str | None) -> STDDModel:
        """Run the STCA blocks' linear layers (QKV, out-projections, MLP) as ``"fp8"`` GEMMs, or (None) in the
        model's dtype; the weights are unchanged. What ``dtype="fp8"`` sets on a bf16 model (:mod:`stdd_fast.fp8`):
        inference only, the fused or triton impl, a CPU or a CUDA device of compute capability >= 8.9.
        """
        if linear_format not in LINEAR_FORMATS:
            raise choice_error("linear_format", linear_format, LINEAR_FORMATS)
        if linear_format == "fp8":
            if self.stca is None:
                raise ConfigError("dtype='fp8' runs the STCA blocks' linear layers; this model has plain CLIP blocks")
            fp8.check_impl(self.impl)
            fp8.check_device(self.visual.conv1.weight.device)
        self.linear_format = linear_format
        for block in self.blocks:
            if isinstance(block, STCABlock):
                block.linear_format = linear_format
        return self

    def set_gemm(self, gemm: str) -> STDDModel:
        """Run the triton path's linear layers with ``gemm``: ``"cublas"`` (the PyTorch piece), ``"triton"`` (the
        Triton GEMM with its epilogue) or ``"auto"`` (the process default, :func:`stdd_fast.triton_ops.use_gemm`)."""
        if gemm not in ("auto", *GEMMS):
            raise choice_error("gemm", gemm, ("auto", *GEMMS))
        for block in self.blocks:
            if isinstance(block, STCABlock):
                block.gemm = gemm
        return self

    def visual_fingerprint(self) -> str:
        """16 hex digits identifying the visual tower's weights, the same in fp32 and bf16: what calibrated
        thresholds were measured with (a strided sample of each tensor, rounded to bf16, hashed with the names)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.visual.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 4096)].to("cpu", torch.bfloat16).float()
            digest.update(f"{name}:{tuple(tensor.shape)}".encode())
            digest.update(sample.numpy().tobytes())
        return digest.hexdigest()[:16]

    def encode_video(self, frames: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Frame embeddings of clips.

        frames: [B, T, 3, H, W] CLIP-normalised float (any T >= 1; H, W = the arch's image size).
        Returns float32 [B, T, embed_dim], L2-normalised along the last dim when ``normalize``.
        """
        if frames.ndim != 5:
            raise ConfigError(f"encode_video expects frames [B, T, 3, H, W]; got shape {tuple(frames.shape)}")
        b, t = frames.shape[:2]
        frames = frames.flatten(0, 1).to(self.visual.conv1.weight.dtype)
        x = ops.embed_frames(self.visual, frames, self.impl)  # [B*T, L, D]
        for block in self.blocks:
            x = block(x, num_frames=t) if isinstance(block, STCABlock) else block(x)
        pooled, _ = self.visual._pool(x)  # ln_post of the class token: [B*T, D]
        emb = (pooled @ self.visual.proj).float().view(b, t, -1)  # [B, T, embed_dim]
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """open_clip's image API: each image is a one-frame clip ([N, 3, H, W] -> [N, embed_dim])."""
        return self.encode_video(image[:, None], normalize=normalize)[:, 0]
