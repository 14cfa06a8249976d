"""The Triton pieces: each kernel of :mod:`stdd_fast.kernels` as a drop-in for its PyTorch piece.

For each stem X (``linear``, ``layer_norm``, ``residual_layer_norm``, ``sparse_attention``,
``scatter_residual``, ``score``): ``X`` here runs the kernel ``stdd_fast.kernels.X`` in place of the
PyTorch piece (``stdd_fast.stca.pieces.X``, or ``stdd_fast.head.score``), directly in eager
inference or as the custom op ``stdd_fast::X``.

The policy lives here, not in the kernels:

* **where a launch cannot run**: a GPU with less shared memory or fewer registers than the kernels
  were sized for (an H100) raises ``OutOfResources``; that shape then runs the PyTorch piece (the
  same function) with one warning; a sparse-attention tile that does not fit tries the blocked
  kernel first;
* **fp32 on a GPU** runs the sparse attention in PyTorch (:func:`kernel_runs_sparse_attention`);
* **which GEMM** ``linear`` runs: ``STDD_GEMM`` (read once, at import) or :func:`use_gemm` chooses
  ``"cublas"``, the default (the PyTorch piece: what the encoder timings measured), or ``"triton"``
  (the Triton GEMM with the bias and activation in its epilogue, in every dtype; not yet measured
  against cuBLAS on a GPU: ``benchmarks/gpu_check.py --only gemm-bf16`` times both);
* **how a call reaches the kernel**: eager inference calls the launcher directly (the custom-op
  layer costs ~20 us a call); under autograd or ``torch.compile`` the call goes through the custom
  op, which is opaque to the compiler (its fake gives the shapes), captures into CUDA graphs and
  differentiates by recomputing the PyTorch piece. Under ``torch.compile`` the two LayerNorms and
  ``linear`` (whichever GEMM is chosen) are traced as PyTorch, so inductor fuses them with their
  neighbours.

Importing this module imports triton: :mod:`stdd_fast.ops` imports it only when ``impl`` resolves
to ``"triton"``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
from triton.runtime.errors import OutOfResources

from stdd_fast import head, kernels
from stdd_fast.choices import GEMMS
from stdd_fast.errors import choice_error
from stdd_fast.stca import pieces
from stdd_fast.stca.fused import FusedPieces
from stdd_fast.stca.pieces import SparseProjection

# (stem, dtype, shape) -> why that launch cannot run on this GPU; those calls run the PyTorch piece
UNLAUNCHABLE: dict[tuple, str] = {}


def gemm_from_environment() -> str:
    """The GEMM ``STDD_GEMM`` names (default ``"cublas"``); ConfigError naming the valid ones otherwise."""
    kind = os.environ.get("STDD_GEMM", "cublas")
    if kind not in GEMMS:
        raise choice_error("STDD_GEMM", kind, GEMMS)
    return kind


_gemm = gemm_from_environment()


def use_gemm(kind: str) -> str:
    """Make ``linear`` run ``kind`` (one of ``GEMMS``) from now on; returns the previous choice (to restore it).

    A CUDA graph keeps the GEMM it captured; under ``torch.compile`` ``linear`` is the PyTorch piece either way.
    """
    global _gemm
    if kind not in GEMMS:
        raise choice_error("GEMM", kind, GEMMS)
    previous, _gemm = _gemm, kind
    return previous


def _guarded(stem: str, like: torch.Tensor, kernel: Callable, fallback: Callable, instead: str = "its PyTorch piece"):
    """``kernel()``, or ``fallback()`` (the same function, ``instead``) where the GPU lacks the kernel's resources."""
    key = (stem, like.dtype, tuple(like.shape))
    if key in UNLAUNCHABLE:
        return fallback()
    try:
        return kernel()
    except OutOfResources as e:
        UNLAUNCHABLE[key] = str(e)
        warnings.warn(
            f"Triton kernel {stem} cannot launch on this GPU for {like.dtype} {tuple(like.shape)} ({e}); "
            f"running {instead} there instead (the same function)",
            RuntimeWarning,
            stacklevel=3,
        )
        return fallback()


FP32_SPARSE_ATTENTION = ("pytorch", "tf32x3")  # fp32 sparse attention on a GPU: the PyTorch path, the tf32x3 kernel
_fp32_sparse_attention = "pytorch"


def use_fp32_sparse_attention(kind: str) -> str:
    """How fp32 sparse attention runs on a GPU from now on (one of ``FP32_SPARSE_ATTENTION``); returns the previous.

    ``"pytorch"`` (the default, measured) or ``"tf32x3"``: the kernel with three-TF32 dots, fp32-accurate
    on tensor cores, not yet timed on a GPU (``benchmarks/gpu_check.py --only fp32`` times both).
    """
    global _fp32_sparse_attention
    if kind not in FP32_SPARSE_ATTENTION:
        raise choice_error("fp32 sparse attention", kind, FP32_SPARSE_ATTENTION)
    previous, _fp32_sparse_attention = _fp32_sparse_attention, kind
    return previous


def kernel_runs_sparse_attention(x: torch.Tensor) -> bool:
    """Whether the sparse path of a block on ``x`` runs the Triton kernel (else its PyTorch piece).

    Not in fp32 on a GPU, by default: there the kernel's exact fp32 ``tl.dot`` (``input_precision="ieee"``)
    runs on FMA units, not tensor cores, and its tiles spill 10-12 KB of stack per thread. On
    an H100 one fp32 launch over 16 ViT-B/16 frames took 4.05 ms where bf16 took 0.072 ms, and
    20.97 ms against 0.093 ms at ViT-L/14 (``benchmarks/results/gpu_check_h100_run3.json``,
    ``launch_tuning``). fp32 on a GPU therefore runs the PyTorch sparse path (cuBLAS and SDPA), the
    function the kernel computes, unless :func:`use_fp32_sparse_attention` chose ``"tf32x3"``.
    Triton's interpreter (CPU) keeps running the kernel in fp32, the one dtype it computes
    correctly, so the tests check the kernel's arithmetic there.
    """
    return x.dtype != torch.float32 or not x.is_cuda or _fp32_sparse_attention == "tf32x3"


def _fp32_dot(x: torch.Tensor) -> str:
    """The kernel's fp32 dot precision on ``x``: tf32x3 on a GPU (the only way it runs fp32 there), else exact."""
    return "tf32x3" if x.is_cuda else "ieee"


# -- each stem's kernel with its fallback ----------------------------------------------------------------


def _sparse_attention_kernel(qkv, x, mean, rstd, visible, source_maps, proj: SparseProjection, num_heads: int):
    """The one-tile kernel where the frame fits it, else (or where its tile does not fit the GPU) the blocked one."""
    args = (qkv, x, mean, rstd, visible, source_maps, proj, num_heads)
    if not kernel_runs_sparse_attention(x):
        return pieces.sparse_attention(*args)
    plain = (qkv, x, mean, rstd, visible, source_maps, proj.const, proj.gain_sum, proj.head, num_heads)

    def blocked():
        return _guarded(
            "sparse_attention (blocked)",
            x,
            lambda: kernels.sparse_attention(*plain, blocked=True, fp32_dot=_fp32_dot(x)),
            lambda: pieces.sparse_attention(*args),
        )

    if not kernels.fits_one_tile(visible.shape[2]):
        return blocked()
    return _guarded(
        "sparse_attention",
        x,
        lambda: kernels.sparse_attention(*plain, fp32_dot=_fp32_dot(x)),
        blocked,
        instead="the blocked sparse kernel",
    )


def _scatter_residual_kernel(full, mlp, x, sparse_proj, visible, source_maps):
    args = (full, mlp, x, sparse_proj, visible, source_maps)
    return _guarded(
        "scatter_residual", x, lambda: kernels.scatter_residual(*args), lambda: pieces.scatter_residual(*args)
    )


def _linear_kernel(x, weight, bias, activation):
    args = (x, weight, bias, activation)
    return _guarded("linear", x, lambda: kernels.linear(*args), lambda: pieces.linear(*args))


def _layer_norm_kernel(x, weight, bias, eps):
    args = (x, weight, bias, eps)
    return _guarded("layer_norm", x, lambda: kernels.layer_norm(*args), lambda: pieces.layer_norm(*args))


def _residual_layer_norm_kernel(update, x, weight, bias, eps):
    args = (update, x, weight, bias, eps)
    return _guarded(
        "residual_layer_norm", x, lambda: kernels.residual_layer_norm(*args), lambda: pieces.residual_layer_norm(*args)
    )


def _score_kernel(embeddings, weights, logit_scale):
    args = (embeddings, weights, logit_scale)
    return _guarded("score", embeddings, lambda: kernels.score(*args), lambda: head.score(*args))


# -- custom ops ---------------------------------------------------------------------------------------------


def _register(stem: str, launch: Callable, fake: Callable, piece: Callable, tensor_inputs: int):
    """``launch`` as the custom op ``stdd_fast::<stem>``: ``fake`` gives its shapes, autograd recomputes ``piece``.

    ``launch``'s type annotations are the op's schema; its first ``tensor_inputs`` arguments are the
    tensors the backward differentiates (the rest are constants); an optional one may be None.
    """
    op = torch.library.custom_op(f"stdd_fast::{stem}", mutates_args=())(launch)
    op.register_fake(fake)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:tensor_inputs])
        ctx.constants = inputs[tensor_inputs:]

    def backward(ctx, *grads_out):
        needs = ctx.needs_input_grad[:tensor_inputs]
        with torch.enable_grad():
            leaves = [
                None if t is None else t.detach().requires_grad_(n)
                for t, n in zip(ctx.saved_tensors, needs, strict=True)
            ]
            outs = piece(*leaves, *ctx.constants)
            outs = outs if isinstance(outs, tuple) else (outs,)
            pairs = [(o, g) for o, g in zip(outs, grads_out, strict=True) if g is not None and o.requires_grad]
            wanted = [t for t in leaves if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True))
        differentiated = tuple(next(grads) if t is not None and t.requires_grad else None for t in leaves)
        return differentiated + (None,) * len(ctx.constants)

    op.register_autograd(backward, setup_context=setup_context)
    return op


def _projection(const: torch.Tensor, gain_sum: torch.Tensor, head_w: torch.Tensor) -> SparseProjection:
    update = torch.cat([const[None], gain_sum[None], head_w.t().float()]).to(head_w.dtype)  # [C+2, 3D]
    return SparseProjection(update, const, gain_sum, head_w)


def _sparse_attention_launch(
    qkv: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    visible: torch.Tensor,
    source_maps: torch.Tensor,
    const: torch.Tensor,
    gain_sum: torch.Tensor,
    head_w: torch.Tensor,
    num_heads: int,
) -> torch.Tensor:
    proj = _projection(const, gain_sum, head_w)
    return _sparse_attention_kernel(qkv, x, mean, rstd, visible, source_maps, proj, num_heads)


def _sparse_attention_piece(qkv, x, mean, rstd, visible, source_maps, const, gain_sum, head_w, num_heads):
    proj = _projection(const, gain_sum, head_w)
    return pieces.sparse_attention(qkv, x, mean, rstd, visible, source_maps, proj, num_heads)


def _scatter_residual_launch(
    full: torch.Tensor,
    mlp: torch.Tensor,
    x: torch.Tensor,
    sparse_proj: torch.Tensor,
    visible: torch.Tensor,
    source_maps: torch.Tensor,
) -> torch.Tensor:
    return _scatter_residual_kernel(full, mlp, x, sparse_proj, visible, source_maps)


def _linear_launch(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None
) -> torch.Tensor:
    return _linear_kernel(x, weight, bias, activation)


def _layer_norm_launch(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _layer_norm_kernel(x, weight, bias, eps)


def _residual_layer_norm_launch(
    update: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return _residual_layer_norm_kernel(update, x, weight, bias, eps)


def _score_launch(embeddings: torch.Tensor, weights: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    return _score_kernel(embeddings, weights, logit_scale)


def _stats_like(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], 1, dtype=torch.float32)


OPS = {
    "linear": _register(
        "linear",
        _linear_launch,
        lambda x, weight, *_: x.new_empty(*x.shape[:-1], weight.shape[0]),
        pieces.linear,
        3,
    ),
    "sparse_attention": _register(
        "sparse_attention",
        _sparse_attention_launch,
        lambda qkv, x, mean, rstd, visible, *_: x.new_empty(x.shape[0], visible.shape[2] + 1, x.shape[2]),
        _sparse_attention_piece,
        tensor_inputs=9,
    ),
    "scatter_residual": _register(
        "scatter_residual",
        _scatter_residual_launch,
        lambda full, *_: torch.empty_like(full),
        pieces.scatter_residual,
        6,
    ),
    "layer_norm": _register(
        "layer_norm",
        _layer_norm_launch,
        lambda x, *_: (torch.empty_like(x), _stats_like(x), _stats_like(x)),
        pieces.layer_norm,
        3,
    ),
    "residual_layer_norm": _register(
        "residual_layer_norm",
        _residual_layer_norm_launch,
        lambda update, *_: (torch.empty_like(update), torch.empty_like(update)),
        pieces.residual_layer_norm,
        4,
    ),
    "score": _register(
        "score",
        _score_launch,
        lambda emb, weights, _: emb.new_empty(emb.shape[0], weights.shape[0], dtype=torch.float32),
        head.score,
        3,
    ),
}


# -- the drop-ins the fused block and the head call ----------------------------------------------------------


def _eager_inference() -> bool:
    """No autograd and no tracing: call the launchers directly."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def linear(x, weight, bias, activation: str | None = None):
    """Drop-in for :func:`stdd_fast.stca.pieces.linear`: the Triton GEMM with its epilogue where
    :func:`use_gemm` chose ``"triton"``, else the piece (cuBLAS)."""
    if _gemm != "triton":
        return pieces.linear(x, weight, bias, activation)
    return triton_linear(x, weight, bias, activation)


def triton_linear(x, weight, bias, activation: str | None = None):
    """The Triton GEMM with its epilogue, whatever :func:`use_gemm` says (the PyTorch piece under compile)."""
    if torch.compiler.is_compiling():
        return pieces.linear(x, weight, bias, activation)
    if _eager_inference():
        return _linear_kernel(x, weight, bias, activation)
    return OPS["linear"](x, weight, bias, activation)


def layer_norm(x, weight, bias, eps: float):
    """Drop-in for :func:`stdd_fast.stca.pieces.layer_norm` running the Triton kernel: (normed, mean, rstd)."""
    if weight is None or bias is None or torch.compiler.is_compiling():
        return pieces.layer_norm(x, weight, bias, eps)
    if _eager_inference():
        return _layer_norm_kernel(x, weight, bias, eps)
    return OPS["layer_norm"](x, weight, bias, eps)


def residual_layer_norm(update, x, weight, bias, eps: float):
    """Drop-in for :func:`stdd_fast.stca.pieces.residual_layer_norm` running the Triton kernel: (F, LN(F))."""
    if weight is None or bias is None or torch.compiler.is_compiling():
        return pieces.residual_layer_norm(update, x, weight, bias, eps)
    if _eager_inference():
        return _residual_layer_norm_kernel(update, x, weight, bias, eps)
    return OPS["residual_layer_norm"](update, x, weight, bias, eps)


def sparse_attention(qkv, x, mean, rstd, visible, source_maps, proj: SparseProjection, num_heads: int):
    """Drop-in for :func:`stdd_fast.stca.pieces.sparse_attention` running the Triton kernel."""
    if _eager_inference():
        return _sparse_attention_kernel(qkv, x, mean, rstd, visible, source_maps, proj, num_heads)
    args = (qkv, x, mean, rstd, visible, source_maps, proj.const, proj.gain_sum, proj.head, num_heads)
    return OPS["sparse_attention"](*args)


def scatter_residual(full, mlp, x, sparse_proj, visible, source_maps):
    """Drop-in for :func:`stdd_fast.stca.pieces.scatter_residual` running the Triton kernel."""
    if _eager_inference():
        return _scatter_residual_kernel(full, mlp, x, sparse_proj, visible, source_maps)
    return OPS["scatter_residual"](full, mlp, x, sparse_proj, visible, source_maps)


def score(embeddings: torch.Tensor, weights: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Drop-in for :func:`stdd_fast.head.score` with a prompt-level classifier, running the Triton kernel."""
    scale = torch.as_tensor(logit_scale, dtype=torch.float32, device=embeddings.device)
    if _eager_inference():
        return _score_kernel(embeddings, weights, scale)
    return OPS["score"](embeddings, weights.to(embeddings.device), scale)


TRITON_PIECES = FusedPieces(
    linear=linear,
    layer_norm=layer_norm,
    residual_layer_norm=residual_layer_norm,
    sparse_attention=sparse_attention,
    scatter_residual=scatter_residual,
)
_PIECES_BY_GEMM = {
    "auto": TRITON_PIECES,
    "cublas": TRITON_PIECES._replace(linear=pieces.linear),
    "triton": TRITON_PIECES._replace(linear=triton_linear),
}


def pieces_for(gemm: str) -> FusedPieces:
    """The triton path's pieces with its linear layers on ``gemm`` ("auto": the :func:`use_gemm` choice)."""
    return _PIECES_BY_GEMM[gemm]
