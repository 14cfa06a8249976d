"""The one place that chooses how STCA and the scoring head run.

``impl``:

* ``"reference"``: readable PyTorch, the specification (:mod:`stdd_fast.stca.reference`, :func:`head.score`);
* ``"fused"``: the algebraic rewrite in PyTorch (:mod:`stdd_fast.stca.fused`); CPU and GPU,
  autograd-capable, exportable;
* ``"triton"``: the fused path with its pieces (LayerNorms, sparse attention, scatter) and the
  scoring head as Triton kernels (:mod:`stdd_fast.triton_ops` routes them to :mod:`stdd_fast.kernels`);
  needs CUDA, or ``TRITON_INTERPRET=1`` on CPU (fp32, for tests). In fp32 on a GPU its sparse
  attention runs in PyTorch: the kernel's exact fp32 dot is far slower there
  (:func:`stdd_fast.triton_ops.kernel_runs_sparse_attention`);
* ``"auto"``: ``"triton"`` for CUDA tensors when Triton imports, else ``"fused"``.

The patch embedding follows the same choice on CUDA: the reference runs CLIP's convolution, the
optimised paths the equivalent GEMM.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import nn

from stdd_fast import fp8, head
from stdd_fast.choices import IMPLS
from stdd_fast.deps import OPTIONAL
from stdd_fast.errors import BackendUnavailableError, choice_error
from stdd_fast.patch_embed import embeds_gemm
from stdd_fast.stca.fused import TORCH_PIECES, stca_block_fused
from stdd_fast.stca.reference import stca_block_reference


def check_impl(impl: str) -> str:
    """Validate an impl name (``auto`` stays ``auto``)."""
    if impl not in IMPLS:
        raise choice_error("impl", impl, IMPLS)
    return impl


_BACKENDS: dict[str, bool] = {}


def _probe_backends() -> dict[str, bool]:
    """Whether triton is installed and whether its interpreter is on; read once (plain globals for torch.compile)."""
    if not _BACKENDS:
        _BACKENDS["triton"] = importlib.util.find_spec("triton") is not None
        _BACKENDS["interpreter"] = os.environ.get("TRITON_INTERPRET") == "1"
    return _BACKENDS


def triton_available() -> bool:
    return _probe_backends()["triton"]


def triton_interpreted() -> bool:
    return _probe_backends()["interpreter"]


def resolve_impl(impl: str, device: torch.device) -> str:
    """The concrete implementation ``impl`` means for tensors on ``device``."""
    check_impl(impl)
    if impl == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "fused"
    if impl == "triton":
        if not triton_available():
            raise BackendUnavailableError(f"impl='triton' needs the triton package: {OPTIONAL['triton'].install}")
        if device.type != "cuda" and not triton_interpreted():
            raise BackendUnavailableError(
                f"impl='triton' needs CUDA tensors (got {device.type}); on CPU use impl='fused', or set "
                "TRITON_INTERPRET=1 before importing triton to run the kernels in Triton's interpreter"
            )
    return impl


def stca_block(block: nn.Module, x: torch.Tensor, visible: torch.Tensor, source_maps: torch.Tensor) -> torch.Tensor:
    """Run one STCA block with the implementation ``block.impl`` names, its linear layers in ``block.linear_format``
    (``"fp8"``: the fused block's ``linear`` piece swapped for :func:`stdd_fast.fp8.linear`)."""
    impl = resolve_impl(block.impl, x.device)
    if block.linear_format == "fp8":
        fp8.check_impl(impl)
    if impl == "reference":
        return stca_block_reference(block, x, visible, source_maps)
    if impl == "fused":
        pieces = TORCH_PIECES
    else:
        from stdd_fast.triton_ops import pieces_for

        pieces = pieces_for(block.gemm)
    if block.linear_format == "fp8":
        pieces = fp8.fp8_pieces(pieces)
    return stca_block_fused(block, x, visible, source_maps, pieces)


def embed_frames(visual: nn.Module, frames: torch.Tensor, impl: str) -> torch.Tensor:
    """The encoder's input tokens [N, 1 + grid^2, D] of frames [N, 3, H, W]: the patch embedding.

    The optimised paths on CUDA run it as one GEMM (:mod:`stdd_fast.patch_embed`); the reference,
    and every path on CPU (where oneDNN's convolution and the GEMM take the same time, ~11 ms for 8
    frames at 224^2 on 2 cores), run open_clip's strided convolution.
    """
    if frames.is_cuda and resolve_impl(impl, frames.device) != "reference":
        return embeds_gemm(visual, frames)
    return visual._embeds(frames)


def score(
    embeddings: torch.Tensor, weights: torch.Tensor, logit_scale: torch.Tensor | float, impl: str = "auto"
) -> torch.Tensor:
    """STDD class logits [B, K] (see :func:`stdd_fast.head.score`).

    The Triton head runs for prompt-level classifiers only when asked for by name (``impl="triton"``):
    it never materialises [B, T, K, N], but on an H100 the einsum reference was faster (0.87 vs
    1.57 ms at B=32, T=8, K=400, N=224, benchmarks/results/gpu_check_h100_run1.json), so ``"auto"``
    keeps the reference head.
    """
    check_impl(impl)
    if weights.ndim == 3 and impl == "triton" and resolve_impl(impl, embeddings.device) == "triton":
        from stdd_fast import triton_ops

        return triton_ops.score(embeddings, weights, logit_scale)
    return head.score(embeddings, weights, logit_scale)
