import open_clip
import pytest
import torch
from helpers import randomize_, report, small_arch

import stdd_fast
from stdd_fast import ConfigError, STCAConfig, create_model
from stdd_fast.numerics import EXACT_MAX_REL, max_rel_err


def test_b16_shapes_parameter_count_and_keys():
    model = create_model("ViT-B-16")
    visual = dict(model.visual.named_parameters())
    assert sum(p.numel() for p in visual.values()) == 86_192_640
    assert len([k for k in model.state_dict() if k.startswith("visual.")]) == 152
    block = model.blocks[0]
    x = torch.randn(8, 197, 768)
    with torch.no_grad():
        assert block(x, num_frames=8).shape == (8, 197, 768)


@pytest.mark.slow
def test_b16_encoder_output_shape():
    model = create_model("ViT-B-16")
    with torch.no_grad():
        assert model.encode_video(torch.randn(1, 8, 3, 224, 224)).shape == (1, 8, 512)


def test_plain_clip_equals_open_clip_encode_image():
    arch = small_arch(8)
    ours = randomize_(create_model(arch, stca=None), seed=1)
    theirs = open_clip.model.CLIP(
        arch.embed_dim,
        open_clip.model.CLIPVisionCfg(layers=2, width=64, head_width=16, patch_size=4, image_size=32),
        open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
        quick_gelu=True,
    ).eval()
    theirs.load_state_dict(ours.state_dict())
    frames = torch.randn(2, 5, 3, 32, 32)
    with torch.no_grad():
        emb = ours.encode_video(frames, normalize=False)
        ref = theirs.encode_image(frames.flatten(0, 1)).view(2, 5, -1)
    err = report("stca=None vs open_clip encode_image", max_rel_err(emb, ref))
    assert err <= EXACT_MAX_REL


def test_frame_count_is_read_from_the_input():
    model = randomize_(create_model("test-tiny"))
    with torch.no_grad():
        for t in (1, 2, 3, 8, 9):
            emb = model.encode_video(torch.randn(2, t, 3, 32, 32))
            assert emb.shape == (2, t, 32)
            torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2, t))


def test_single_frame_is_not_plain_clip():
    """T = 1: the shifted channels see zeros, so STCA differs from CLIP even on one frame."""
    stca = randomize_(create_model("test-tiny"))
    plain = create_model("test-tiny", stca=None)
    plain.load_state_dict(stca.state_dict())
    image = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert stca.encode_image(image).shape == (3, 32)
        assert not torch.allclose(stca.encode_image(image), plain.encode_image(image))


def test_random_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = create_model("test-tiny", seed=5)
    after = torch.rand(1)
    b = create_model("test-tiny", seed=5)
    c = create_model("test-tiny", seed=6)
    assert torch.equal(before, after)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.visual.proj, c.visual.proj)


def test_impl_validation():
    model = create_model("test-tiny")
    with pytest.raises(ConfigError, match="valid values: 'reference', 'fused', 'triton', 'auto'"):
        model.set_impl("fast")


def test_wrong_input_rank_is_a_clear_error():
    model = create_model("test-tiny")
    with pytest.raises(ConfigError, match=r"\[B, T, 3, H, W\]"):
        model.encode_video(torch.randn(8, 3, 32, 32))


def test_custom_stca_config_runs():
    model = randomize_(create_model("test-tiny", stca=STCAConfig(temporal_scale=(1,), channel_fold=8)))
    with torch.no_grad():
        assert model.encode_video(torch.randn(1, 4, 3, 32, 32)).shape == (1, 4, 32)
    assert isinstance(model, stdd_fast.STDDModel)
