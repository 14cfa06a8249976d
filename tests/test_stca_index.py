"""SPEC §10 invariants 2, 3, 4, 6 on the static index tables."""

import pytest
import torch

from stdd_fast import STCAConfig
from stdd_fast.stca.index import STCAIndex, channel_source_map, mask_row, window_table

Z = 8  # the zero-fill marker for T = 8


def test_eval_base_mask_table():
    rows = ["".join(map(str, mask_row(t % 4, 4, 2))) for t in range(8)]
    assert rows == ["1100", "0110", "0011", "1001", "1100", "0110", "0011", "1001"]


def test_visible_tokens_ascending_window_major_order():
    index = STCAIndex(STCAConfig(), (14, 14), 768, 12)
    vis = index.static_visible_tokens(8, 0, torch.device("cpu"))[0]  # [T, V]
    assert vis.shape == (8, 98)
    for t in range(8):
        row = mask_row(t % 4, 4, 2)
        expected = []
        for u in range(196):
            c, q = divmod(u, 4)
            if row[q]:
                continue
            i = (c // 7) * 2 + q // 2
            j = (c % 7) * 2 + q % 2
            expected.append(1 + i * 14 + j)
        assert vis[t].tolist() == expected


def test_window_geometry_positions():
    g = window_table((14, 14), (1, 2, 2))
    assert g.shape == (49, 4)
    assert g[0].tolist() == [0, 1, 14, 15]  # TL, TR, BL, BR
    assert g[8].tolist() == [30, 31, 44, 45]  # window row 1, column 1


def test_every_position_visible_twice_over_four_frames():
    index = STCAIndex(STCAConfig(), (14, 14), 768, 12)
    vis = index.static_visible_tokens(8, 0, torch.device("cpu"))[0]
    counts = torch.bincount(vis[:4].flatten(), minlength=197)[1:]
    assert (counts == 2).all()


SCALE1 = {(0, 12): "-0123456", (12, 24): "-0123456", (24, 36): "1234567-", (36, 48): "1234567-"}
SCALE2 = {(0, 12): "-0012345", (12, 24): "-0123456", (24, 36): "1234567-", (36, 48): "2345677-"}


@pytest.mark.parametrize("scale, table", [(1, SCALE1), (2, SCALE2)])
def test_channel_source_maps_b16(scale, table):
    src = channel_source_map(8, 768, STCAConfig(), scale)
    assert src.shape == (8, 48)
    for (lo, hi), sources in table.items():
        expected = [Z if ch == "-" else int(ch) for ch in sources]
        for c in range(lo, hi):
            assert src[:, c].tolist() == expected, (scale, c)


def test_single_frame_shifts_only_zeros():
    src = channel_source_map(1, 768, STCAConfig(), 2)
    assert (src == 1).all()


def test_seeded_permutations_are_fixed_and_per_layer():
    a = STCAIndex(STCAConfig(shuffle="seeded", seed=3), (14, 14), 768, 12)
    b = STCAIndex(STCAConfig(shuffle="seeded", seed=3), (14, 14), 768, 12)
    pa = a.seeded_permutations(8)
    assert torch.equal(pa, b.seeded_permutations(8))
    assert all(sorted(p.tolist()) == list(range(8)) for p in pa)
    assert len({tuple(p.tolist()) for p in pa}) > 1
    other = STCAIndex(STCAConfig(shuffle="seeded", seed=4), (14, 14), 768, 12).seeded_permutations(8)
    assert not torch.equal(pa, other)


@pytest.mark.parametrize("training, repeat", [(True, True), (True, False), (False, True)])
def test_each_row_used_by_two_frames_per_video(training, repeat):
    cfg = STCAConfig(shuffle="official", spatial_repeat=repeat)
    index = STCAIndex(cfg, (14, 14), 768, 12)
    torch.manual_seed(0)
    rows = index.random_rows(5, 8, training, torch.device("cpu"))  # [B, T, 1|n_win]
    assert rows.shape == (5, 8, 1 if repeat else 49)
    for b in range(5):
        for c in range(rows.shape[2]):
            assert torch.bincount(rows[b, :, c], minlength=4).tolist() == [2, 2, 2, 2]
