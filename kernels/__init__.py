"""Fused Triton kernels for STCA and the STDD head, registered as ``torch.library`` custom ops.

Each kernel computes a named PyTorch reference in ``stdd_fast`` (the pairing is the test contract):

| op | kernel module | reference |
| --- | --- | --- |
| ``stdd_fast::stca_sparse_attention`` | ``stca_sparse_attention`` | ``stdd_fast.stca_fused.sparse_attention_ref`` |
| ``stdd_fast::stca_scatter`` | ``stca_scatter`` | ``stdd_fast.stca_fused.scatter_residual_ref`` |
| ``stdd_fast::stdd_score`` | ``stdd_head`` | ``stdd_fast.head.score_ref`` |
| ``stdd_fast::layer_norm_stats`` | ``layer_norm`` | ``stdd_fast.stca_fused.layer_norm_stats`` |
| ``stdd_fast::residual_layer_norm`` | ``layer_norm`` | ``stdd_fast.stca_fused.residual_layer_norm_ref`` |

As custom ops they are opaque to ``torch.compile`` (fake implementations give their shapes) and
capture into CUDA graphs; under ``torch.compile`` the two LayerNorms are traced as PyTorch instead,
so inductor fuses them with their neighbours. The sparse-attention and scatter launches pick their
launch shape per problem shape on the first eager call on CUDA (``launch_tuning``), so warm up
before capturing a CUDA graph (the engine and the benchmarks do). Their backward recomputes the
reference under autograd, so training through ``impl="triton"`` gives the reference's gradients.
Importing this package imports triton: ``stdd_fast`` imports it only when ``impl`` resolves to
``"triton"``.
"""

from __future__ import annotations

import warnings

import torch
from triton.runtime.errors import OutOfResources

from stdd_fast.head import score_ref
from stdd_fast.kernels.layer_norm import layer_norm_rows
from stdd_fast.kernels.stca_scatter import stca_scatter
from stdd_fast.kernels.stca_sparse_attention import single_tile, stca_sparse_attention
from stdd_fast.kernels.stdd_head import stdd_score
from stdd_fast.stca_fused import (
    FusedPieces,
    SparseProjection,
    layer_norm_stats,
    residual_layer_norm_ref,
    scatter_residual_ref,
    sparse_attention_ref,
)


def _projection(const: torch.Tensor, gain_sum: torch.Tensor, head: torch.Tensor) -> SparseProjection:
    update = torch.cat([const[None], gain_sum[None], head.t().float()]).to(head.dtype)  # [C+2, 3D]
    return SparseProjection(update, const, gain_sum, head)


def _recompute_backward(reference, num_tensor_inputs: int):
    """An autograd backward that differentiates ``reference`` on the saved inputs (recomputation)."""

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:num_tensor_inputs])
        ctx.extra = inputs[num_tensor_inputs:]

    def backward(ctx, *grads_out):
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[:num_tensor_inputs]
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(need) for t, need in zip(saved, needs, strict=True)]
            outs = reference(*leaves, *ctx.extra)
            outs = outs if isinstance(outs, tuple) else (outs,)
            pairs = [(o, g) for o, g in zip(outs, grads_out, strict=True) if g is not None and o.requires_grad]
            wanted = [t for t in leaves if t.requires_grad]
            grads = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True))
        return tuple(next(grads) if t.requires_grad else None for t in leaves) + (None,) * len(ctx.extra)

    return setup_context, backward


# (kernel, dtype, shape) -> why that launch cannot run on this GPU; those calls run the reference
UNLAUNCHABLE: dict[tuple, str] = {}


def _guarded(name: str, like: torch.Tensor, kernel, reference, instead: str = "its PyTorch reference"):
    """``kernel()``, or ``reference()`` (the same function, ``instead``) where the GPU lacks the kernel's resources.

    A GPU with less shared memory or fewer registers than the kernels were sized for (an H100) makes
    the launch raise ``OutOfResources``: that shape then runs the reference, with one warning.
    """
    key = (name, like.dtype, tuple(like.shape))
    if key in UNLAUNCHABLE:
        return reference()
    try:
        return kernel()
    except OutOfResources as e:
        UNLAUNCHABLE[key] = str(e)
        warnings.warn(
            f"Triton kernel {name} cannot launch on this GPU for {like.dtype} {tuple(like.shape)} ({e}); "
            f"running {instead} there instead (the same function)",
            RuntimeWarning,
            stacklevel=2,
        )
        return reference()


def kernel_runs_sparse_attention(x: torch.Tensor) -> bool:
    """Whether the sparse path of a block on ``x`` runs the Triton kernel (else its PyTorch reference).

    Not in fp32 on a GPU: there the kernel's ``tl.dot`` is exact fp32 (``input_precision="ieee"``),
    which runs on FMA units, not tensor cores, and its tiles spill 10-12 KB of stack per thread. On
    an H100 one fp32 launch over 16 ViT-B/16 frames took 4.05 ms where bf16 took 0.072 ms, and
    20.97 ms against 0.093 ms at ViT-L/14 (``benchmarks/results/gpu_check_h100_run3.json``,
    ``launch_tuning``). fp32 on a GPU therefore runs the PyTorch sparse path (cuBLAS and SDPA), the
    function the kernel computes. Triton's interpreter (CPU) keeps running the kernel in fp32, the
    one dtype it computes correctly, so the tests check the kernel's arithmetic there.
    """
    return x.dtype != torch.float32 or not x.is_cuda


def _sparse_kernel(qkv, x, mean, rstd, visible, source_maps, proj: SparseProjection, num_heads: int):
    """The sparse kernel for the frame's size; where one tile does not fit the GPU, the blocked kernel, then PyTorch.

    fp32 on a GPU runs PyTorch (:func:`kernel_runs_sparse_attention`).
    """
    args = (qkv, x, mean, rstd, visible, source_maps, proj, num_heads)
    if not kernel_runs_sparse_attention(x):
        return sparse_attention_ref(*args)

    def blocked():
        return _guarded(
            "stca_sparse_attention (blocked)",
            x,
            lambda: stca_sparse_attention(*args, blocked=True),
            lambda: sparse_attention_ref(*args),
        )

    if not single_tile(visible.shape[2]):
        return blocked()
    return _guarded(
        "stca_sparse_attention", x, lambda: stca_sparse_attention(*args), blocked, instead="the blocked sparse kernel"
    )


def _scatter_kernel(full, mlp, x, sparse_proj, visible, source_maps):
    args = (full, mlp, x, sparse_proj, visible, source_maps)
    return _guarded("stca_scatter", x, lambda: stca_scatter(*args), lambda: scatter_residual_ref(*args))


def _layer_norm_kernel(x, weight, bias, eps):
    return _guarded(
        "layer_norm",
        x,
        lambda: layer_norm_rows(x, weight, bias, eps)[1:],
        lambda: layer_norm_stats(x, weight, bias, eps),
    )


def _residual_layer_norm_kernel(update, x, weight, bias, eps):
    return _guarded(
        "residual_layer_norm",
        x,
        lambda: layer_norm_rows(update, weight, bias, eps, residual=x)[:2],
        lambda: residual_layer_norm_ref(update, x, weight, bias, eps),
    )


def _score_kernel(embeddings, weights, logit_scale):
    return _guarded(
        "stdd_score",
        embeddings,
        lambda: stdd_score(embeddings, weights, logit_scale),
        lambda: score_ref(embeddings, weights, logit_scale),
    )


def _sparse_reference(qkv, x, mean, rstd, visible, source_maps, const, gain_sum, head, num_heads):
    return sparse_attention_ref(qkv, x, mean, rstd, visible, source_maps, _projection(const, gain_sum, head), num_heads)


@torch.library.custom_op("stdd_fast::stca_sparse_attention", mutates_args=())
def _sparse_attention_op(
    qkv: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    visible: torch.Tensor,
    source_maps: torch.Tensor,
    const: torch.Tensor,
    gain_sum: torch.Tensor,
    head: torch.Tensor,
    num_heads: int,
) -> torch.Tensor:
    return _sparse_kernel(qkv, x, mean, rstd, visible, source_maps, _projection(const, gain_sum, head), num_heads)


@_sparse_attention_op.register_fake
def _(qkv, x, mean, rstd, visible, source_maps, const, gain_sum, head, num_heads):
    return x.new_empty(x.shape[0], visible.shape[2] + 1, x.shape[2])


_setup, _backward = _recompute_backward(_sparse_reference, 9)
_sparse_attention_op.register_autograd(_backward, setup_context=_setup)


@torch.library.custom_op("stdd_fast::stca_scatter", mutates_args=())
def _scatter_op(
    full: torch.Tensor,
    mlp: torch.Tensor,
    x: torch.Tensor,
    sparse_proj: torch.Tensor,
    visible: torch.Tensor,
    source_maps: torch.Tensor,
) -> torch.Tensor:
    return _scatter_kernel(full, mlp, x, sparse_proj, visible, source_maps)


@_scatter_op.register_fake
def _(full, mlp, x, sparse_proj, visible, source_maps):
    return torch.empty_like(full)


_setup, _backward = _recompute_backward(scatter_residual_ref, 6)
_scatter_op.register_autograd(_backward, setup_context=_setup)


@torch.library.custom_op("stdd_fast::layer_norm_stats", mutates_args=())
def _layer_norm_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _layer_norm_kernel(x, weight, bias, eps)


@_layer_norm_op.register_fake
def _(x, weight, bias, eps):
    stats = x.new_empty(*x.shape[:-1], 1, dtype=torch.float32)
    return torch.empty_like(x), stats, torch.empty_like(stats)


_setup, _backward = _recompute_backward(layer_norm_stats, 3)
_layer_norm_op.register_autograd(_backward, setup_context=_setup)


@torch.library.custom_op("stdd_fast::residual_layer_norm", mutates_args=())
def _residual_layer_norm_op(
    update: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return _residual_layer_norm_kernel(update, x, weight, bias, eps)


@_residual_layer_norm_op.register_fake
def _(update, x, weight, bias, eps):
    return torch.empty_like(update), torch.empty_like(update)


_setup, _backward = _recompute_backward(residual_layer_norm_ref, 4)
_residual_layer_norm_op.register_autograd(_backward, setup_context=_setup)


@torch.library.custom_op("stdd_fast::stdd_score", mutates_args=())
def _score_op(embeddings: torch.Tensor, weights: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    return _score_kernel(embeddings, weights, logit_scale)


@_score_op.register_fake
def _(embeddings, weights, logit_scale):
    return embeddings.new_empty(embeddings.shape[0], weights.shape[0], dtype=torch.float32)


_setup, _backward = _recompute_backward(score_ref, 3)
_score_op.register_autograd(_backward, setup_context=_setup)


def _eager_inference() -> bool:
    """No autograd and no tracing: call the launchers directly (the custom-op layer costs ~20 us a call)."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def layer_norm_triton(x, weight, bias, eps: float):
    """Drop-in for ``layer_norm_stats`` running the Triton kernel: (normed, mean, rstd).

    Under ``torch.compile`` the PyTorch function is traced instead: inductor fuses it with its neighbours.
    """
    if weight is None or bias is None or torch.compiler.is_compiling():
        return layer_norm_stats(x, weight, bias, eps)
    if _eager_inference():
        return _layer_norm_kernel(x, weight, bias, eps)
    return _layer_norm_op(x, weight, bias, eps)


def residual_layer_norm_triton(update, x, weight, bias, eps: float):
    """Drop-in for ``residual_layer_norm_ref`` running the Triton kernel: (update + x, its LayerNorm).

    Under ``torch.compile`` the PyTorch function is traced instead: inductor fuses it with its neighbours.
    """
    if weight is None or bias is None or torch.compiler.is_compiling():
        return residual_layer_norm_ref(update, x, weight, bias, eps)
    if _eager_inference():
        return _residual_layer_norm_kernel(update, x, weight, bias, eps)
    return _residual_layer_norm_op(update, x, weight, bias, eps)


def sparse_attention_triton(qkv, x, mean, rstd, visible, source_maps, proj: SparseProjection, num_heads: int):
    """Drop-in for ``sparse_attention_ref`` running the Triton kernel (see that function)."""
    if _eager_inference():
        return _sparse_kernel(qkv, x, mean, rstd, visible, source_maps, proj, num_heads)
    return _sparse_attention_op(
        qkv, x, mean, rstd, visible, source_maps, proj.const, proj.gain_sum, proj.head, num_heads
    )


def scatter_residual_triton(full, mlp, x, sparse_proj, visible, source_maps):
    """Drop-in for ``scatter_residual_ref`` running the Triton kernel (see that function)."""
    if _eager_inference():
        return _scatter_kernel(full, mlp, x, sparse_proj, visible, source_maps)
    return _scatter_op(full, mlp, x, sparse_proj, visible, source_maps)


def score_triton(embeddings: torch.Tensor, weights: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Drop-in for ``score_ref`` with a prompt-level classifier, running the Triton head."""
    scale = torch.as_tensor(logit_scale, dtype=torch.float32, device=embeddings.device)
    if _eager_inference():
        return _score_kernel(embeddings, weights, scale)
    return _score_op(embeddings, weights.to(embeddings.device), scale)


TRITON_PIECES = FusedPieces(
    layer_norm=layer_norm_triton,
    residual_layer_norm=residual_layer_norm_triton,
    sparse_attention=sparse_attention_triton,
    scatter_residual=scatter_residual_triton,
)

__all__ = [
    "TRITON_PIECES",
    "kernel_runs_sparse_attention",
    "layer_norm_triton",
    "residual_layer_norm_triton",
    "scatter_residual_triton",
    "score_triton",
    "sparse_attention_triton",
]
