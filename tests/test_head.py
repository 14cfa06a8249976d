import math

import pytest
import torch
from literal_stca import literal_score
from tolerances import EXACT_MAX_REL, max_rel_err, report

from stdd_fast import ClassifierError, aggregate_views, score


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
    f = torch.nn.functional.normalize(torch.randn(b, t, d), dim=-1)
    w = torch.nn.functional.normalize(torch.randn(k, 9, d), dim=-1)
    err = report(f"score 3-D {shape}", max_rel_err(score(f, w, 4.6), literal_score(f, w, 4.6)))
    assert err <= EXACT_MAX_REL


def test_template_score_is_frame_mean():
    f = torch.nn.functional.normalize(torch.randn(2, 5, 16), dim=-1)
    w = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    err = report("score 2-D", max_rel_err(score(f, w, torch.tensor(4.6)), literal_score(f, w, 4.6)))
    assert err <= EXACT_MAX_REL


def test_views_are_summed():
    s = torch.randn(2, 3, 5)
    torch.testing.assert_close(aggregate_views(s), s[:, 0] + s[:, 1] + s[:, 2])


def test_dimension_mismatch_is_a_clear_error():
    with pytest.raises(ClassifierError, match="512-d but the classifier's are 768-d"):
        score(torch.randn(1, 8, 512), torch.randn(3, 768), 4.6)
