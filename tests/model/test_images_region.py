import io

import numpy as np
import pytest
import torch
from PIL import Image

from visionllm2.model.errors import InvalidImageError, InvalidPromptError
from visionllm2.model.images import choose_grid, load_image, tile_image


@pytest.mark.parametrize(
    "size, expected",
    [((336, 336), (1, 1)), ((672, 336), (2, 1)), ((336, 1000), (1, 3)), ((1000, 1000), (2, 2)), ((100, 100), (1, 1))],
)
def test_grid_follows_the_aspect_ratio(size, expected):
    assert choose_grid(*size, tile=336, min_tiles=1, max_tiles=4) == expected


def test_tiles_and_thumbnail():
    tiles = tile_image(Image.new("RGB", (700, 340)), 336, 1, 4)
    assert len(tiles) == 3 and all(t.size == (336, 336) for t in tiles)  # 2 tiles + thumbnail
    assert len(tile_image(Image.new("RGB", (300, 300)), 336, 1, 4)) == 1


def test_load_image_accepts_every_input_kind(tmp_path, rgb_image):
    path = tmp_path / "x.png"
    Image.fromarray(rgb_image).save(path)
    as_tensor = torch.from_numpy(rgb_image).permute(2, 0, 1).float() / 255
    inputs = [Image.fromarray(rgb_image), rgb_image, as_tensor, as_tensor.bfloat16(), as_tensor.half(), str(path), path,
              path.read_bytes()]  # half-precision tensors too: numpy has no bfloat16
    for item in inputs:
        out = load_image(item)
        assert out.mode == "RGB" and out.size == (140, 90)
    gray16 = (np.arange(90 * 140, dtype=np.uint16).reshape(90, 140) * 3)
    assert np.asarray(load_image(gray16)).max() == 255


def test_load_image_refuses_bad_input(tmp_path):
    with pytest.raises(InvalidImageError, match="not a readable image"):
        load_image(b"not an image at all")
    png = io.BytesIO()
    Image.new("RGB", (64, 64)).save(png, format="PNG")
    with pytest.raises(InvalidImageError, match="not a readable image|could not decode"):
        load_image(png.getvalue()[:60])  # truncated
    with pytest.raises(InvalidImageError, match="existing image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InvalidImageError, match="non-empty"):
        load_image(np.zeros((0, 5, 3), dtype=np.uint8))
    with pytest.raises(InvalidImageError, match="expected an array of shape"):
        load_image(np.zeros((4, 4, 7), dtype=np.uint8))
    with pytest.raises(InvalidImageError, match="NaN"):
        load_image(np.full((4, 4), np.nan))
    with pytest.raises(InvalidImageError, match="expected a PIL.Image"):
        load_image(42)


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (5000, 5000)).save(path)  # tiny file, 25 M pixels
    with pytest.raises(InvalidImageError, match="exceeds the limit"):
        load_image(path, max_pixels=10_000_000)
    with pytest.raises(InvalidImageError, match="exceeds the limit"):
        load_image(np.zeros((200, 200), dtype=np.uint8), max_pixels=1000)


def test_region_mask_keeps_a_single_pixel(processor):
    mask = np.zeros((90, 140), dtype=bool)
    mask[45, 139] = True
    thumb = processor.region_mask(mask, (140, 90))
    assert thumb.shape == (56, 56) and 1 <= int(thumb.sum()) <= 4
    with pytest.raises(InvalidPromptError, match="empty mask"):
        processor.region_mask(np.zeros((90, 140), dtype=bool), (140, 90))
    with pytest.raises(InvalidPromptError, match=r"expected shape \(90, 140\)"):
        processor.region_mask(np.ones((10, 10), dtype=bool), (140, 90))


def test_region_encoder_shapes_and_zero_area(tiny_model):
    encoder = tiny_model.region_encoder
    thumbs = torch.randn(2, 3, 56, 56)
    masks = torch.zeros(2, 56, 56)
    masks[0, 10:30, 5:20] = 1
    masks[1, 3, 3] = 1  # one pixel
    hidden = tiny_model.vis_encoder(pixel_values=thumbs, output_hidden_states=True).hidden_states
    out = encoder(thumbs, masks, hidden)
    assert out.shape == (2, 64) and torch.isfinite(out).all()
    masks[1] = 0
    with pytest.raises(InvalidPromptError, match=r"region masks \[1\] are empty"):
        encoder(thumbs, masks, hidden)


def test_a_region_relative_to_its_image_ignores_what_the_whole_picture_shares(tiny_model):
    from visionllm2.model.config import RegionConfig
    from visionllm2.model.region import RegionEncoder

    torch.manual_seed(0)
    thumbs = torch.randn(2, 3, 56, 56)
    masks = torch.zeros(2, 56, 56)
    masks[0, 10:30, 5:20] = 1
    masks[1, 30:50, 30:50] = 1
    hidden = tiny_model.vis_encoder(pixel_values=thumbs, output_hidden_states=True).hidden_states
    # A from-scratch tower's states carry one large vector everywhere: it swamps what a mark covers.
    shared = torch.randn(hidden[-1].shape[-1]) * 100
    shifted = tuple(h + shared for h in hidden)
    absolute = RegionEncoder(RegionConfig(stem_channels=(8, 16), max_points=64), hidden[-1].shape[-1], 64).eval()
    relative = RegionEncoder(RegionConfig(stem_channels=(8, 16), max_points=64, relative_to_image=True),
                             hidden[-1].shape[-1], 64).eval()
    relative.load_state_dict(absolute.state_dict())  # parameter-free: the same weights in both
    with torch.no_grad():
        assert torch.allclose(relative(thumbs, masks, shifted), relative(thumbs, masks, hidden), atol=1e-3)
        assert not torch.allclose(absolute(thumbs, masks, shifted), absolute(thumbs, masks, hidden), atol=1e-3)
        two = absolute(thumbs, masks, shifted)
        assert torch.cosine_similarity(two[0], two[1], 0) > 0.99  # the shared vector is all it sees
