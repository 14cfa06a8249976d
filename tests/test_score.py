"""The scoring head: the PyTorch piece against the spec, and the Triton kernel against the piece.

The piece's tests run everywhere; the kernel's need Triton (its interpreter on CPU, fp32) and are
skipped where it cannot run. GPU (``-m gpu``): the kernel at Kinetics-400 scale.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import report
from literal_stca import literal_score
from triton_fixtures import DEVICE, triton_problem

from stdd_fast import ClassifierError, aggregate_views, score
from stdd_fast.head import score as score_piece
from stdd_fast.numerics import EXACT_MAX_REL, FP32_MAX_REL, max_rel_err

TRITON_PROBLEM = triton_problem()
needs_triton = pytest.mark.skipif(TRITON_PROBLEM is not None, reason=TRITON_PROBLEM or "")


def test_spec_worked_example_is_eleven_thirds():
    # S[t=0] = [1, 3, 0], S[t=1] = [2, 0, 5] with tau = 1: build f, w so that <f_t, w_n> = S[t, n]
    f = torch.eye(2, 3).unsqueeze(0)  # [B=1, T=2, D=3]
    w = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 5.0, 0.0]]).unsqueeze(0)  # [K=1, N=3, D=3]
    out = score(f, w, 0.0)
    assert out.shape == (1, 1)
    assert math.isclose(out.item(), 11 / 3, rel_tol=1e-6)


@pytest.mark.parametrize("shape", [(3, 7, 5, 16), (2, 1, 4, 16), (1, 8, 3, 16)])
def test_prompt_level_score_matches_loops(shape):
    b, t, k, d = shape
    f = F.normalize(torch.randn(b, t, d), dim=-1)
    w = F.normalize(torch.randn(k, 9, d), dim=-1)
    err = report(f"score 3-D {shape}", max_rel_err(score(f, w, 4.6), literal_score(f, w, 4.6)))
    assert err <= EXACT_MAX_REL


def test_template_score_is_frame_mean():
    f = F.normalize(torch.randn(2, 5, 16), dim=-1)
    w = F.normalize(torch.randn(4, 16), dim=-1)
    err = report("score 2-D", max_rel_err(score(f, w, torch.tensor(4.6)), literal_score(f, w, 4.6)))
    assert err <= EXACT_MAX_REL


def test_views_are_summed():
    s = torch.randn(2, 3, 5)
    torch.testing.assert_close(aggregate_views(s), s[:, 0] + s[:, 1] + s[:, 2])


def test_dimension_mismatch_is_a_clear_error():
    with pytest.raises(ClassifierError, match="512-d but the classifier's are 768-d"):
        score(torch.randn(1, 8, 512), torch.randn(3, 768), 4.6)


# -- the Triton kernel ----------------------------------------------------------------------------------------


def _unit(*shape):
    return F.normalize(torch.randn(*shape, device=DEVICE), dim=-1)


@needs_triton
@pytest.mark.parametrize("B, T, K, N, D", [(3, 8, 7, 9, 32), (1, 1, 4, 70, 48), (17, 3, 5, 5, 64), (2, 5, 3, 130, 16)])
def test_score_kernel(B, T, K, N, D):
    from stdd_fast import kernels

    f, w = _unit(B, T, D), _unit(K, N, D)
    scale = torch.tensor(4.6, device=DEVICE)
    out = torch.full((B, K), float("nan"), device=DEVICE)
    kernels.score(f, w, scale, out=out)
    err = report(f"score kernel B={B} T={T} K={K} N={N} D={D}", max_rel_err(out, score_piece(f, w, scale)))
    assert err <= FP32_MAX_REL


@needs_triton
def test_custom_op_passes_opcheck():
    import stdd_fast.triton_ops  # noqa: F401  (registers the custom ops)

    torch.library.opcheck(
        torch.ops.stdd_fast.score.default,
        (_unit(2, 3, 16), _unit(3, 5, 16), torch.tensor(4.6, device=DEVICE)),
        test_utils=("test_schema", "test_faketensor"),
    )


@pytest.mark.gpu
@needs_triton
def test_score_kernel_at_kinetics_scale_on_gpu():
    """K=400 classes of N=224 prompts, 32 clips of 8 frames: the kernel's exact fp32 dots decide the top-1."""
    from stdd_fast import kernels

    f, w = _unit(32, 8, 512), _unit(400, 224, 512)
    out = torch.full((32, 400), float("nan"), device=DEVICE)
    kernels.score(f, w, torch.tensor(4.6, device=DEVICE), out=out)
    ref = score_piece(f, w, 4.6)
    report("score kernel K=400 N=224 B=32 T=8: top-1 agreement", (out.argmax(-1) == ref.argmax(-1)).float().mean())
    assert report("score kernel K=400 N=224 B=32 T=8", max_rel_err(out, ref)) <= FP32_MAX_REL
