"""Triton kernels, one module per stem, each computing the PyTorch piece of the same name.

| stem | launcher | PyTorch piece |
| --- | --- | --- |
| ``linear`` | :func:`linear` | ``stdd_fast.stca.pieces.linear`` |
| ``layer_norm`` | :func:`layer_norm` | ``stdd_fast.stca.pieces.layer_norm`` |
| ``residual_layer_norm`` | :func:`residual_layer_norm` | ``stdd_fast.stca.pieces.residual_layer_norm`` |
| ``sparse_attention`` | :func:`sparse_attention` | ``stdd_fast.stca.pieces.sparse_attention`` |
| ``scatter_residual`` | :func:`scatter_residual` | ``stdd_fast.stca.pieces.scatter_residual`` |
| ``score`` | :func:`score` | ``stdd_fast.head.score`` |

Launchers take plain tensors and import only torch and triton. When a kernel runs, as which
custom op, and what runs instead where it cannot (a GPU without the resources, fp32 on a GPU) is
decided on the ``stdd_fast`` side, in :mod:`stdd_fast.triton_ops`. Importing this package imports
triton.
"""

from .layer_norm import layer_norm, residual_layer_norm
from .linear import linear
from .scatter_residual import scatter_residual
from .score import score
from .sparse_attention import FP32_DOTS, fits_one_tile, sparse_attention

__all__ = [
    "FP32_DOTS",
    "fits_one_tile",
    "layer_norm",
    "linear",
    "residual_layer_norm",
    "scatter_residual",
    "score",
    "sparse_attention",
]
