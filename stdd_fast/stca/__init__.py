"""Space-time Cross Attention: the block module, its index tables, the specification and the fused path.

* :mod:`~stdd_fast.stca.index`: the static index tables (window schedule, channel source maps);
* :mod:`~stdd_fast.stca.reference`: the block as the specification states it (``impl="reference"``);
* :mod:`~stdd_fast.stca.pieces`: the fused path's PyTorch pieces, one per kernel stem;
* :mod:`~stdd_fast.stca.fused`: the pieces composed into the block (``impl="fused"``, and ``"triton"``
  with the pieces swapped for kernels, :mod:`stdd_fast.triton_ops`).

The ``nn.Module`` an encoder holds is :class:`stdd_fast.model.STCABlock`; it dispatches through
:mod:`stdd_fast.ops`, which chooses among these functions.
"""
