import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from recon_core.image import DECODE_MIN_SIDE, ImageError, load_image, object_box, prepare_image


def _png_with_size(path, width, height):
    """A valid small PNG whose header claims width x height (to test refusal before decoding)."""
    Image.new("RGB", (16, 16), "white").save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature + length/type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def _object_image(size=(120, 90), box=(30, 20, 70, 80)):
    img = np.full((size[1], size[0], 3), 255, np.uint8)
    img[box[1]:box[3], box[0]:box[2]] = (200, 30, 30)
    return img


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("hello, I am text")
    with pytest.raises(ImageError, match="not an image"):
        load_image(p)


def test_truncated_png(tmp_path):
    p = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:3000])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(p)


def test_sixteen_bit_png_is_converted(tmp_path):
    p = tmp_path / "g16.png"
    arr = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(arr).save(p)
    rgb, alpha, notes = load_image(p)
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3) and alpha is None
    assert rgb[-1, -1, 0] == 255 and rgb[0, 0, 0] == 0
    assert any("16-bit" in n for n in notes)


def test_cmyk_jpeg_is_converted(tmp_path):
    p = tmp_path / "c.jpg"
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(p)  # red in CMYK
    rgb, alpha, notes = load_image(p)
    assert rgb.shape == (40, 40, 3) and rgb[20, 20, 0] > 200 and rgb[20, 20, 1] < 60
    assert any("CMYK" in n for n in notes)


def test_one_pixel_image(tmp_path):
    p = tmp_path / "one.png"
    Image.new("RGB", (1, 1)).save(p)
    with pytest.raises(ImageError, match=r"too small \(1x1"):
        load_image(p)


def test_huge_image_refused_before_decoding(tmp_path):
    p = tmp_path / "huge.png"
    _png_with_size(p, 20000, 20000)
    with pytest.raises(ImageError, match=r"too large \(20000x20000"):
        load_image(p)


def test_fully_transparent(tmp_path):
    p = tmp_path / "clear.png"
    Image.new("RGBA", (32, 32), (10, 20, 30, 0)).save(p)
    with pytest.raises(ImageError, match="fully transparent"):
        load_image(p)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_rgba_alpha_is_the_mask(tmp_path):
    rgba = np.zeros((60, 80, 4), np.uint8)
    rgba[10:30, 20:60] = (0, 0, 255, 255)
    p = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(p)
    rgb, alpha, _ = load_image(p)
    assert object_box(rgb, alpha) == (20, 10, 60, 30)
    prepared = prepare_image(rgb, alpha, 64)
    assert prepared.mask is not None and prepared.mask.shape == (64, 64)
    # object centred; its larger side spans (1 - 2 * margin) of the crop
    cols = np.flatnonzero(prepared.mask.numpy().max(0) > 0.5)
    assert abs(cols[0] - 6.4) <= 1.5 and abs(cols[-1] + 1 - 57.6) <= 1.5
    # background is white where transparent
    assert np.allclose(prepared.image[:, 0, 0].numpy(), 1.0)


def test_rgb_object_found_from_border_colour():
    img = _object_image()
    assert object_box(img, None) == (30, 20, 70, 80)
    prepared = prepare_image(img, None, 64)
    assert prepared.mask is None and prepared.image.shape == (3, 64, 64)
    red = (prepared.image[0] > 0.6) & (prepared.image[1] < 0.3)
    rows = np.flatnonzero(red.numpy().any(1))
    assert abs(rows[0] - 6.4) <= 1.5 and abs(rows[-1] + 1 - 57.6) <= 1.5


def test_busy_background_uses_whole_image():
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    assert object_box(img, None) == (0, 0, 70, 50)


def test_transparent_background_becomes_the_background_colour():
    rgba = np.zeros((40, 40, 4), np.uint8)  # transparent black around the object
    rgba[10:30, 12:28] = (0, 200, 0, 255)
    prepared = prepare_image(rgba[..., :3].copy(), rgba[..., 3].copy(), 32, background=(255, 255, 255))
    corner = prepared.image[:, 1, 1].numpy()
    assert np.allclose(corner, 1.0, atol=0.02), corner


def test_large_jpeg_is_decoded_at_reduced_size_with_the_same_object_box(tmp_path):
    """A JPEG with a shorter side >= 2 * DECODE_MIN_SIDE comes back at 1/2 (here), and its crop matches a full decode's."""
    width, height = 2600, 2 * DECODE_MIN_SIDE + 52
    box_full = (700, 300, 1900, 1950)
    p = tmp_path / "big.jpg"
    Image.fromarray(_object_image((width, height), box_full)).save(p, quality=95)
    with Image.open(p) as img:
        full = np.asarray(img.convert("RGB"))
    rgb, alpha, notes = load_image(p)
    assert alpha is None and notes == []
    assert DECODE_MIN_SIDE <= min(rgb.shape[:2]) < min(full.shape[:2])
    assert rgb.shape[:2] == ((height + 1) // 2, (width + 1) // 2)
    scale = full.shape[1] / rgb.shape[1]  # 2
    reduced_box = np.array(object_box(rgb, None)) * scale
    assert np.abs(reduced_box - object_box(full, None)).max() <= 2 * scale  # within two decoded pixels
    assert np.abs(reduced_box - box_full).max() <= 2 * scale
    reduced, full_prepared = prepare_image(rgb, None, 64), prepare_image(full, None, 64)
    assert np.abs(np.array(reduced.box) * scale - full_prepared.box).max() <= 2 * scale
    assert reduced.original_size == (rgb.shape[1], rgb.shape[0])  # the decoded size: box and size agree
    assert np.abs(reduced.image.numpy() - full_prepared.image.numpy()).mean() < 0.02
