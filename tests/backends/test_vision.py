"""The frozen vision tower under a safety head: which part of a checkpoint it runs, the patch grid it
returns (CLS dropped, pooled to at most 16 x 16), and the errors for checkpoints it cannot use."""

import numpy as np
import pytest
import torch

from vlmaudit.backends.modelref import ModelOptions, fingerprint
from vlmaudit.backends.vision import MAX_GRID, VisionTower, pool_grid
from vlmaudit.errors import ModelError


def tokens(count, width=3, batch=2, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(batch, count, width)).astype(np.float32))


@pytest.mark.parametrize("count", [1, 4, 16, 9 * 9, MAX_GRID * MAX_GRID])
def test_a_square_grid_within_the_limit_is_returned_as_is(count):
    hidden = tokens(count)
    assert torch.equal(pool_grid(hidden), hidden)


@pytest.mark.parametrize("side", [1, 2, 4, MAX_GRID])
def test_a_cls_token_before_a_square_grid_is_dropped(side):
    hidden = tokens(side * side + 1)
    assert torch.equal(pool_grid(hidden), hidden[:, 1:])


def test_a_large_grid_is_average_pooled_in_row_major_blocks():
    side = 2 * MAX_GRID
    hidden = tokens(side * side + 1, width=5)
    pooled = pool_grid(hidden)
    assert pooled.shape == (2, MAX_GRID * MAX_GRID, 5)
    grid = hidden[:, 1:].numpy().reshape(2, MAX_GRID, 2, MAX_GRID, 2, 5)  # [n, row, dy, col, dx, width]
    expected = grid.mean(axis=(2, 4)).reshape(2, MAX_GRID * MAX_GRID, 5)
    assert np.allclose(pooled.numpy(), expected, atol=1e-6)


def test_a_grid_just_over_the_limit_is_pooled_to_the_limit():
    side = MAX_GRID + 1
    hidden = tokens(side * side, width=4)
    pooled = pool_grid(hidden)
    assert pooled.shape == (2, MAX_GRID * MAX_GRID, 4)
    # adaptive pooling: the corner output is the mean of the 2 x 2 corner patches
    grid = hidden.numpy().reshape(2, side, side, 4)
    assert np.allclose(pooled[:, 0].numpy(), grid[:, :2, :2].mean(axis=(1, 2)), atol=1e-6)
    assert np.allclose(pooled[:, -1].numpy(), grid[:, -2:, -2:].mean(axis=(1, 2)), atol=1e-6)


@pytest.mark.parametrize("count", [3, 15, 24])
def test_a_token_count_that_is_no_grid_is_refused(count):
    with pytest.raises(ModelError) as err:
        pool_grid(tokens(count))
    assert str(err.value) == f"vision tower gives {count} patch tokens, not a square grid"


@pytest.fixture(scope="module")
def clip_tower(tiny_clip):
    return VisionTower(ModelOptions(str(tiny_clip), "cpu"))


def pixels(tower, n=2):
    from PIL import Image

    images = [Image.new("RGB", (40 + 10 * i, 30), (200 - 60 * i, 40 * i, 90)) for i in range(n)]
    return tower.image_processor(images=images, return_tensors="pt")["pixel_values"]


def test_a_dual_encoder_gives_its_vision_encoder_patches_without_cls(tiny_clip, clip_tower):
    from transformers import CLIPModel

    reference = CLIPModel.from_pretrained(tiny_clip).eval()
    batch = pixels(clip_tower)
    assert batch.shape == (2, 3, 32, 32)
    features = clip_tower.features(batch)
    with torch.inference_mode():
        expected = reference.vision_model(pixel_values=batch).last_hidden_state[:, 1:]
    assert features.shape == (2, 16, 32) and features.dtype == torch.float32  # 32 px / 8 px patches = 4 x 4
    assert torch.allclose(features, expected, atol=1e-5)
    assert clip_tower.width == 32 and clip_tower.device == "cpu"
    assert clip_tower.revision == fingerprint(str(tiny_clip), clip_tower.config)


def test_the_tower_is_frozen_in_eval_mode_with_sdpa_attention(tiny_clip):
    from vlmaudit.backends.modelref import attention_of

    tower = VisionTower(ModelOptions(str(tiny_clip), "cpu"))
    assert not tower.model.training and attention_of(tower.model) == "sdpa"
    assert not any(p.requires_grad for p in tower.model.parameters())


def test_a_hub_models_revision_is_its_commit(hub_cache, tiny_clip):
    commit = hub_cache(tiny_clip, "vlmaudit-test/tiny-clip")
    assert VisionTower(ModelOptions("vlmaudit-test/tiny-clip", "cpu")).revision == commit


def test_a_vision_only_checkpoint_is_used_whole(tmp_path, tiny_clip, clip_tower):
    from transformers import CLIPVisionModel

    CLIPVisionModel.from_pretrained(tiny_clip).save_pretrained(tmp_path / "vision")
    from transformers import AutoImageProcessor

    AutoImageProcessor.from_pretrained(tiny_clip).save_pretrained(tmp_path / "vision")
    tower = VisionTower(ModelOptions(str(tmp_path / "vision"), "cpu"))
    from vlmaudit.backends.modelref import attention_of

    assert tower.config.model_type == "clip_vision_model" and attention_of(tower.model) == "sdpa"
    batch = pixels(clip_tower)
    assert torch.allclose(tower.features(batch), clip_tower.features(batch), atol=1e-5)


def test_a_llava_style_vlm_lends_its_vision_tower(tiny_vlms):
    path = tiny_vlms("llava")
    tower = VisionTower(ModelOptions(str(path), "cpu"))
    from transformers import AutoModelForImageTextToText

    vlm = AutoModelForImageTextToText.from_pretrained(path).eval()
    batch = pixels(tower, 3)
    with torch.inference_mode():
        expected = vlm.model.vision_tower(pixel_values=batch).last_hidden_state[:, 1:]
    assert torch.allclose(tower.features(batch), expected, atol=1e-5)
    from vlmaudit.backends.modelref import attention_of

    assert tower.width == 32 and attention_of(tower.model) == "sdpa"


def write_text_model(path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_a_model_without_a_vision_tower_is_refused(tmp_path):
    path = write_text_model(tmp_path / "llama")
    with pytest.raises(ModelError) as err:
        VisionTower(ModelOptions(str(path), "cpu"))
    assert str(err.value) == (f"model {str(path)!r} (llama) has no CLIP/SigLIP-style vision tower to put a safety head "
                              "on; use a CLIP or SigLIP checkpoint, or a LLaVA-style VLM")


def test_a_vlm_whose_vision_encoder_is_no_vision_tower_is_refused(tmp_path):
    """Qwen2-VL is an image-text-to-text model, but its encoder (`visual`) gives no square grid."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    config = Qwen2VLConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                 "mrope_section": [1, 1, 2]}),
        vision_config=dict(depth=1, embed_dim=16, hidden_size=16, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2))
    Qwen2VLForConditionalGeneration(config).save_pretrained(tmp_path / "qwen")
    with pytest.raises(ModelError) as err:
        VisionTower(ModelOptions(str(tmp_path / "qwen"), "cpu"))
    assert "(qwen2_vl) has no CLIP/SigLIP-style vision tower" in str(err.value)


def test_a_missing_vision_model_names_the_flag_it_came_from():
    with pytest.raises(ModelError) as err:
        VisionTower(ModelOptions("org/not-downloaded", "cpu", flag="--vision-model"))
    assert "pass --vision-model DIR" in str(err.value) and "--model opennsfw" not in str(err.value)
