import pytest

import stdd_fast
from stdd_fast import ConfigError, STCAConfig


def test_defaults_are_the_headline_config():
    cfg = STCAConfig()
    assert (cfg.channel_fold, cfg.temporal_scale, cfg.mask_rate, cfg.mask_stride) == (32, (1, 2), 0.5, (1, 2, 2))
    assert cfg.window_size == 4 and cfg.masked_per_window == 2 and cfg.shuffle == "none"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"shuffle": "random"}, "'none', 'seeded', 'official'"),
        ({"mask_stride": (2, 2, 2)}, "temporal stride must be 1"),
        ({"mask_stride": (1, 2)}, "three ints"),
        ({"mask_rate": 0.3}, "valid rates here: 0, 0.25, 0.5, 0.75"),
        ({"mask_rate": 1.0}, "[0, 1)"),
        ({"temporal_scale": ()}, "non-empty"),
        ({"temporal_scale": (0,)}, "ints >= 1"),
        ({"channel_fold": 1}, "int >= 2"),
    ],
)
def test_invalid_stca_config_names_value_and_fix(kwargs, fragment):
    with pytest.raises(ConfigError) as e:
        STCAConfig(**kwargs)
    print(e.value)
    assert fragment in str(e.value)


def test_lists_are_normalised_to_tuples():
    cfg = STCAConfig(temporal_scale=[1, 2], mask_stride=[1, 2, 2])
    assert cfg.temporal_scale == (1, 2) and cfg.mask_stride == (1, 2, 2)
    hash(cfg)


def test_named_architectures():
    assert stdd_fast.list_models() == ["ViT-B-16", "ViT-B-32", "ViT-L-14", "test-tiny"]
    l14 = stdd_fast.get_arch("ViT-L-14")
    assert l14.grid == (16, 16) and l14.vision_width == 1024 and l14.quick_gelu
    with pytest.raises(ConfigError, match="valid values: 'ViT-B-16'"):
        stdd_fast.get_arch("ViT-B-61")


def test_b32_grid_is_rejected_with_the_fix():
    with pytest.raises(ConfigError) as e:
        stdd_fast.create_model("ViT-B-32")
    print(e.value)
    assert "7x7 patch grid" in str(e.value) and "stca=None" in str(e.value)


def test_b32_runs_with_a_stride_that_tiles_its_grid():
    cfg = STCAConfig(mask_stride=(1, 1, 7), mask_rate=3 / 7)
    cfg.check_fits(768, (7, 7), "ViT-B-32")
