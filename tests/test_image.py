import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recon_core.io.image import (
    DECODE_MIN_SIDE,
    NOISE_CORRELATION,
    UNIFORM_SPREAD,
    ImageError,
    _reduction_factor,
    _request_reduced_decode,
    load_image,
    load_mask,
    load_picture,
    mask_png,
    save_mask,
)
from recon_core.network.crop import object_box, object_mask, prepare_image, uncrop_mask

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


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


def test_an_empty_file_is_said_to_be_empty(tmp_path):
    (tmp_path / "photo.heic").write_bytes(b"")
    with pytest.raises(ImageError, match=r"photo\.heic is empty \(0 bytes\): it holds no picture"):
        load_image(tmp_path / "photo.heic")


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
    img = Image.new("CMYK", (40, 40), (0, 0, 0, 0))  # white, with a red (in CMYK) block
    img.paste((0, 255, 255, 0), (10, 10, 30, 30))
    img.save(p)
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
    with pytest.raises(ImageError, match=r"too large \(20000x20000 pixels, 400 million\): at most 64 million pixels "
                                         r"are read \(e\.g\. 8000x8000\); a JPEG is read reduced, and may be larger;"):
        load_image(p)


def test_a_jpeg_larger_than_the_limit_is_read_reduced(tmp_path, monkeypatch):
    """A JPEG is decoded reduced, so its decoded size is what must fit: a 108-megapixel phone photo (12000 x 9000) was
    refused though it decodes at 1500 x 1125. Here the limit is lowered to 3 million pixels: a 2400 x 2048 JPEG (4.9
    million, decoded at 1200 x 1024) is read, the same picture as a PNG is refused."""
    from recon_core.io import image

    monkeypatch.setattr(image, "MAX_PIXELS", 3_000_000)
    rgb = np.full((2048, 2400, 3), 255, np.uint8)
    rgb[600:1400, 900:1500] = (150, 60, 30)
    Image.fromarray(rgb).save(tmp_path / "big.jpg", quality=90)
    read, alpha, _ = image.load_image(tmp_path / "big.jpg")
    assert read.shape == (1024, 1200, 3) and alpha is None
    Image.fromarray(rgb).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match=r"too large \(2400x2048 pixels, 5 million\): at most 3 million"):
        image.load_image(tmp_path / "big.png")
    # its own mask, as --save-mask writes it (the file's size), is taken back with --mask
    mask = np.zeros((2048, 2400), np.uint8)
    mask[600:1400, 900:1500] = 255
    Image.fromarray(mask).save(tmp_path / "big_mask.png")
    _, alpha, notes = image.load_picture(tmp_path / "big.jpg", tmp_path / "big_mask.png")
    assert alpha.shape == (1024, 1200) and (alpha > 127).mean() == pytest.approx(800 * 600 / (2048 * 2400), rel=0.02)
    # a JPEG that holds more pictures (MPO: cameras', phones') is a JPEG too
    Image.fromarray(rgb).save(tmp_path / "big_mpo.jpg", format="MPO", save_all=True,
                              append_images=[Image.fromarray(rgb[::4, ::4])])
    with Image.open(tmp_path / "big_mpo.jpg") as mpo:
        assert mpo.format == "MPO"
    assert image.load_image(tmp_path / "big_mpo.jpg")[0].shape == (1024, 1200, 3)


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


def test_a_small_object_in_a_large_picture_is_found_against_the_border_and_a_speck_is_not():
    """The border-colour rule sees no object below BORDER_MIN_SHARE of the pixels only when they are also fewer than
    BORDER_MIN_PIXELS: a 12 x 12 object in 2,000 x 2,000 pixels (0.004 %) is one (it was refused as no object), a
    5 x 5 speck is not; and never in fewer than BORDER_FLOOR_PIXELS."""
    from recon_core.network.crop import BORDER_MIN_PIXELS, BORDER_MIN_SHARE, object_pixels

    img = np.full((2000, 2000, 3), 255, np.uint8)
    img[1000:1012, 700:712] = (40, 30, 20)
    assert 144 / img[..., 0].size < BORDER_MIN_SHARE and 144 >= BORDER_MIN_PIXELS
    assert object_box(img, None) == (700, 1000, 712, 1012)
    speck = np.full((2000, 2000, 3), 255, np.uint8)
    speck[1000:1005, 700:705] = (40, 30, 20)
    assert object_pixels(speck, None) is None and object_box(speck, None) == (0, 0, 2000, 2000)
    small = np.full((137, 137, 3), 255, np.uint8)  # in a small picture a few pixels are above the share
    small[60:64, 60:64] = (40, 30, 20)
    assert object_box(small, None) == (60, 60, 64, 64)
    small[60:64, 60:64] = 255  # but fewer than BORDER_FLOOR_PIXELS are a speck in any picture (two of a dark chair
    small[60, 60:62] = (40, 30, 20)  # on a dark background were taken for the object: a 1.27 m airplane)
    assert object_pixels(small, None) is None and object_box(small, None) == (0, 0, 137, 137)


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


@pytest.mark.parametrize("stored", [(2047, 2100), (2048, 2048), (4106, 4096), (4095, 4200), (5000, 4100),
                                    (8200, 7000)])
def test_a_jpegs_reduced_decode_takes_the_factor_of_the_reduction_rule(stored):
    """The decode's request (Pillow's draft: the largest of 1/8, 1/4, 1/2 within both sides' floor ratios) gives
    the factor the reduction rule names for the shorter side, also where the longer side's ratio alone would give
    less (4,106 x 4,096: 1/4, not 1/2) and just below a step (2,047 and 4,095: 1 and 2): a plain reference of the
    rule, and the decoder's own size after the request."""
    width, height = stored
    shorter = min(stored)
    expected = max(f for f in (1, 2, 4, 8) if f == 1 or shorter // f >= DECODE_MIN_SIDE)
    assert _reduction_factor(stored) == expected
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 100, 50)).save(buffer, "JPEG", quality=50)
    with Image.open(buffer) as img:
        _request_reduced_decode(img)
        assert img.size == (-(-width // expected), -(-height // expected))


@pytest.mark.parametrize("alpha", [False, True])
def test_a_large_png_is_reduced_as_a_jpeg_is_decoded(tmp_path, alpha):
    """A format without reduced decoding (PNG) is reduced after decoding by the same rule: a shorter side of 2,100 by
    2, each pixel the mean of a 2 x 2 block (a plain numpy reference), the alpha too; its mask is written back at
    the file's size."""
    width, height = 2600, 2 * DECODE_MIN_SIDE + 52
    full = _object_image((width, height), (700, 300, 1900, 1950))
    if alpha:
        full = np.concatenate([full, np.zeros((height, width, 1), np.uint8)], axis=2)
        full[300:1950, 700:1900, 3] = 255
    p = _save(tmp_path / "big.png", full)
    rgb, got_alpha, notes = load_image(p)
    assert notes == [] and rgb.shape[:2] == (height // 2, width // 2)
    blocks = full.reshape(height // 2, 2, width // 2, 2, -1).astype(np.float64).mean(axis=(1, 3))
    seen = np.ones(rgb.shape[:2], bool)  # the colour where the picture is seen (Pillow weighs colours by their alpha)
    if alpha:
        assert np.abs(got_alpha.astype(np.float64) - blocks[..., 3]).max() <= 1.0
        seen = blocks[..., 3] == 255
    else:
        assert got_alpha is None
    assert seen.mean() > 0.3 and np.abs(rgb.astype(np.float64) - blocks[..., :3])[seen].max() <= 1.0
    save_mask(np.ones(rgb.shape[:2], np.float32), p, tmp_path / "mask.png")
    with Image.open(tmp_path / "mask.png") as img:
        assert img.size == (width, height)


def _save(path, arr, **kwargs):
    Image.fromarray(arr).save(path, **kwargs)
    return path


@pytest.mark.parametrize("colour", [(255, 255, 255), (0, 0, 0), (40, 120, 200)])
def test_uniform_picture_is_refused(tmp_path, colour):
    for name, kwargs in (("u.png", {}), ("u.jpg", {"quality": 60})):
        p = _save(tmp_path / name, np.full((300, 300, 3), colour, np.uint8), **kwargs)
        with pytest.raises(ImageError, match="one uniform colour") as err:
            load_image(p)
        assert str(err.value).startswith(str(p)) and str(err.value).count(".") == 1 + str(p).count(".")


def test_nearly_uniform_and_faint_pictures():
    """Within UNIFORM_SPREAD levels: refused; one level more anywhere: accepted (if not noise)."""
    from recon_core.io.image import _refuse_without_object

    flat = np.full((100, 100, 3), 200, np.uint8)
    flat[::7, ::5] += np.uint8(UNIFORM_SPREAD)  # JPEG-like speckle within the tolerance
    with pytest.raises(ImageError, match="uniform"):
        _refuse_without_object(flat, "p.png")
    faint = np.full((100, 100, 3), 240, np.uint8)
    faint[30:70, 45:55] -= np.uint8(UNIFORM_SPREAD + 1)  # a faint stroke
    _refuse_without_object(faint, "p.png")


def test_uniform_colour_with_transparency_is_a_silhouette(tmp_path):
    rgba = np.zeros((50, 50, 4), np.uint8)
    rgba[10:40, 20:30, 3] = 255  # black everywhere, the alpha draws the object
    rgb, alpha, _ = load_image(_save(tmp_path / "s.png", rgba))
    assert alpha is not None and object_box(rgb, alpha) == (20, 10, 30, 40)


@pytest.mark.parametrize("kind", ["uniform", "gaussian", "salt and pepper", "sparse salt", "thirty dots", "jpeg", "small", "grey 16-bit"])
def test_random_noise_is_refused(tmp_path, kind):
    from recon_core.io.image import SPECK_PIXELS
    from recon_core.network.crop import BORDER_FLOOR_PIXELS

    assert SPECK_PIXELS == BORDER_FLOOR_PIXELS  # fewer are specks the object's search refuses; more, noise
    rng = np.random.default_rng(3)
    if kind == "grey 16-bit":
        p = _save(tmp_path / "n.png", rng.integers(0, 65536, (200, 200), dtype=np.uint16))
    elif kind == "small":
        p = _save(tmp_path / "n.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    elif kind == "gaussian":
        p = _save(tmp_path / "n.png", np.clip(128 + rng.normal(0, 40, (300, 300, 3)), 0, 255).astype(np.uint8))
    elif kind == "salt and pepper":
        p = _save(tmp_path / "n.png", ((rng.random((300, 300)) > 0.5) * 255).astype(np.uint8))
    elif kind == "sparse salt":  # white with 0.1 % black dots: 90 of them, SPECK_PIXELS or more
        p = _save(tmp_path / "n.png", ((rng.random((300, 300)) > 0.001) * 255).astype(np.uint8))
    elif kind == "thirty dots":  # grey with 30 scattered dots: a table came out of it when specks were let through
        grey = np.full((137, 137), 128, np.uint8)
        grey.ravel()[rng.choice(grey.size, 30, replace=False)] = 0
        p = _save(tmp_path / "n.png", grey)
    else:
        p = _save(tmp_path / ("n.jpg" if kind == "jpeg" else "n.png"), rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    with pytest.raises(ImageError, match="random noise"):
        load_image(p)


def test_a_few_specks_are_fewer_than_speck_pixels(tmp_path):
    """A plain picture with fewer than SPECK_PIXELS dots is not noise (the object's search then says it has too few
    pixels); with that many it is."""
    from recon_core.io.image import SPECK_PIXELS

    rng = np.random.default_rng(3)
    for dots, noise in ((SPECK_PIXELS - 1, False), (SPECK_PIXELS, True)):
        grey = np.full((137, 137), 128, np.uint8)
        grey.ravel()[rng.choice(grey.size, dots, replace=False)] = 0
        path = _save(tmp_path / f"dots{dots}.png", grey)
        if noise:
            with pytest.raises(ImageError, match="random noise"):
                load_image(path)
        else:
            load_image(path)


def test_structured_pictures_are_not_noise(tmp_path):
    """The examples (composited on white, as RGB), a Floyd-Steinberg dithered one, a noisy photo-like picture,
    a striped texture and a small object on a noisy background are accepted."""
    from recon_core.io.image import _neighbour_correlation

    rng = np.random.default_rng(4)
    pictures = {}
    for name in ("chair", "chair_sketch"):
        with Image.open(EXAMPLES / f"{name}.png") as img:
            flat = Image.new("RGBA", img.size, "white")
            flat.alpha_composite(img.convert("RGBA"))
            pictures[name] = np.asarray(flat.convert("RGB").resize((400, 400)))
    pictures["dithered"] = np.asarray(Image.fromarray(pictures["chair"]).convert("1").convert("RGB"))
    small = np.clip(200 + rng.normal(0, 25, (400, 400, 3)), 0, 255)
    small[180:220, 190:210] = 40  # 0.5 % of the picture, on noise of sigma 25
    pictures["small object on noise"] = small.astype(np.uint8)
    stripes = np.repeat((np.arange(300) // 3 % 2 * 120 + 60).astype(np.uint8)[None, :, None], 300, 0)
    pictures["vertical stripes"] = (stripes.repeat(3, 2) + rng.integers(0, 30, (300, 300, 3))).astype(np.uint8)
    for name, rgb in pictures.items():
        assert max(_neighbour_correlation(rgb)) > 2 * NOISE_CORRELATION, name
        assert load_image(_save(tmp_path / f"{name}.png", rgb))[0].shape == rgb.shape, name
    for name in ("chair.png", "chair_sketch.png"):
        assert load_image(EXAMPLES / name)[1] is not None


def test_object_mask_is_the_alpha_or_the_pixels_found_against_the_border():
    alpha = np.zeros((90, 120), np.uint8)
    alpha[20:80, 30:70] = 200
    img = _object_image()
    assert np.array_equal(object_mask(img, alpha), alpha / np.float32(255))
    mask = object_mask(img, None)
    assert mask.dtype == np.float32 and mask.shape == (90, 120)
    assert np.array_equal(mask, (img[..., 1] < 128).astype(np.float32))
    busy = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    assert np.array_equal(object_mask(busy, None), np.ones((50, 70), np.float32))  # object_box takes it all


def _uncrop_mask_naive(mask, box, size, fill=0.0):
    """Pixel by pixel: centres inside the box interpolate the mask bilinearly (clamped at its edge), others get fill."""
    h, w = mask.shape
    u0, v0, u1, v1 = box
    width, height = size
    out = np.full((height, width), fill, np.float64)
    for y in range(height):
        for x in range(width):
            if not (u0 <= x + 0.5 < u1 and v0 <= y + 0.5 < v1):
                continue
            px = min(max((x + 0.5 - u0) * w / (u1 - u0) - 0.5, 0.0), w - 1.0)
            py = min(max((y + 0.5 - v0) * h / (v1 - v0) - 0.5, 0.0), h - 1.0)
            x0, y0 = min(int(px), w - 2), min(int(py), h - 2)
            fx, fy = px - x0, py - y0
            out[y, x] = ((1 - fx) * (1 - fy) * mask[y0, x0] + fx * (1 - fy) * mask[y0, x0 + 1]
                         + (1 - fx) * fy * mask[y0 + 1, x0] + fx * fy * mask[y0 + 1, x0 + 1])
    return out


@pytest.mark.parametrize("box, size, shape", [
    ((-5.5, 10.25, 30.5, 46.25), (40, 50), (8, 8)),  # past the left border
    ((3.3, -7.1, 60.2, 49.8), (50, 40), (16, 16)),  # past the top and right
    ((0.0, 0.0, 20.0, 20.0), (20, 20), (5, 5)),  # the whole picture
])
def test_uncrop_mask_matches_the_naive_reference(box, size, shape):
    mask = np.random.default_rng(5).random(shape).astype(np.float32)
    fast = uncrop_mask(mask, box, size, fill=-1.0)
    assert fast.shape == (size[1], size[0]) and fast.dtype == np.float32 and fast.flags.writeable
    assert np.abs(fast - _uncrop_mask_naive(mask, box, size, fill=-1.0)).max() < 1e-5


def test_uncrop_mask_undoes_the_crop_of_prepare_image():
    alpha = np.zeros((90, 120), np.uint8)
    alpha[20:70, 40:75] = 255
    alpha[30:40, 50:60] = 0
    prepared = prepare_image(np.full((90, 120, 3), 200, np.uint8), alpha, 64)
    back = uncrop_mask(prepared.mask.numpy(), prepared.box, prepared.original_size)
    assert back.shape == alpha.shape
    assert np.array_equal(back > 0.5, alpha > 127)
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        uncrop_mask(np.zeros((2, 3, 4)), prepared.box, prepared.original_size)


def test_mask_png_is_eight_bit_grey_of_the_asked_size():
    mask = np.zeros((30, 40), np.float32)
    mask[5:25, 10:30] = 1.0
    mask[0, 0] = 0.5
    with Image.open(io.BytesIO(mask_png(mask))) as img:
        assert img.format == "PNG" and img.mode == "L" and img.size == (40, 30)
        arr = np.asarray(img)
    assert arr[10, 20] == 255 and arr[0, 0] == 128 and arr[29, 39] == 0
    with Image.open(io.BytesIO(mask_png(mask, (80, 60)))) as img:
        assert img.size == (80, 60) and np.asarray(img)[30, 40] == 255
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        mask_png(np.zeros(5))


def test_save_mask_writes_at_the_picture_files_size(tmp_path):
    """A mask made at a reduced decode size is written at the file's size, atomically."""
    picture = tmp_path / "picture.png"
    Image.new("RGB", (80, 60), "white").save(picture)
    mask = np.zeros((30, 40), np.float32)
    mask[:, 20:] = 1.0  # the right half
    save_mask(mask, picture, tmp_path / "mask.png")
    with Image.open(tmp_path / "mask.png") as img:
        assert img.format == "PNG" and img.mode == "L" and img.size == (80, 60)
        arr = np.asarray(img)
    assert (arr[:, :38] == 0).all() and (arr[:, 42:] == 255).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png", "picture.png"]
    with pytest.raises(OSError):
        save_mask(mask, tmp_path / "missing.png", tmp_path / "other.png")


@pytest.mark.parametrize("pages", [1, 2])
@pytest.mark.parametrize("compression", ["raw", "tiff_lzw"])
@pytest.mark.parametrize("orientation", [3, 5, 6, 8])
def test_a_cut_out_tiff_turned_by_its_orientation_is_read_upright(tmp_path, compression, orientation, pages):
    """An uncompressed RGBA TIFF whose orientation turns it by a quarter was decoded by Pillow's own decoder into
    stripes (four chairs side by side) at the size before the turn, read with exit 0; through libtiff it is upright,
    as a compressed one was, and its mask is written at the upright size; one of two pages too (counting its pages
    chose Pillow's decoder again)."""
    from PIL import ImageDraw, ImageOps

    stored = Image.new("RGBA", (80, 60), (255, 255, 255, 0))
    draw = ImageDraw.Draw(stored)
    draw.rectangle((5, 5, 40, 30), fill=(200, 30, 30, 255))
    draw.ellipse((45, 20, 75, 55), fill=(30, 30, 200, 128))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "cutout.tif"
    stored.save(path, exif=exif, compression=compression, save_all=True, append_images=[stored.copy()][:pages - 1])
    stored.info["exif"] = exif.tobytes()
    want = np.asarray(ImageOps.exif_transpose(stored))  # what a viewer shows
    rgb, alpha, _ = load_image(path)
    assert rgb.shape[:2] == want.shape[:2] and alpha is not None
    np.testing.assert_array_equal(alpha, want[..., 3])
    opaque = want[..., 3] == 255
    np.testing.assert_array_equal(rgb[opaque], want[..., :3][opaque])
    save_mask(alpha.astype(np.float32) / 255.0, path, tmp_path / "mask.png")
    with Image.open(tmp_path / "mask.png") as img:
        assert img.size == (want.shape[1], want.shape[0])
        np.testing.assert_array_equal(np.asarray(img), want[..., 3])


def test_save_mask_reads_a_picture_over_pillows_pixel_limit(tmp_path, monkeypatch):
    """The picture is read whatever its size (a 200 MP phone photo passes load_image, decoded reduced); its mask
    was then refused by Pillow's own limit (DecompressionBombError), which ended the add-on's worker."""
    picture = tmp_path / "picture.png"
    Image.new("RGB", (80, 60), "white").save(picture)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4,800 pixels: over twice the limit, Pillow's error
    save_mask(np.ones((30, 40), np.float32), picture, tmp_path / "mask.png")
    assert Image.MAX_IMAGE_PIXELS == 100, "the limit is as it was"
    monkeypatch.undo()
    with Image.open(tmp_path / "mask.png") as img:
        assert img.size == (80, 60)


# -- the user's object mask (recon-mesh --mask) ------------------------------------------------------------


def _picture_and_mask(tmp_path, size=(120, 90)):
    """An RGB picture and a soft (H, W) uint8 mask of it that differs from what the border colour finds."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    picture = tmp_path / "photo.png"
    Image.fromarray(_object_image(size), "RGB").save(picture)
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[25:75, 35:60] = 255
    mask[25:75, 60:65] = 100  # a soft edge: grey levels are kept
    return picture, mask


def test_load_mask_reads_back_what_save_mask_writes(tmp_path):
    picture, mask = _picture_and_mask(tmp_path)
    save_mask(mask.astype(np.float32) / 255.0, picture, tmp_path / "mask.png")
    values, read = load_mask(tmp_path / "mask.png", picture, (90, 120))
    assert np.array_equal(values, mask) and read == "grey levels"


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA opaque", "I;16", "P", "RGBA one clear pixel", "LA all clear"])
def test_load_mask_takes_the_grey_levels_of_an_image_without_a_cutout(tmp_path, mode):
    """Grey levels: of an opaque image, and of one whose alpha holds no mask (opaque but for an eraser's pixel, or
    transparent everywhere)."""
    picture, mask = _picture_and_mask(tmp_path)
    path = tmp_path / "mask.png"
    if mode == "RGB":
        Image.fromarray(np.repeat(mask[..., None], 3, axis=2), "RGB").save(path)
    elif mode == "RGBA opaque":
        rgba = np.concatenate([np.repeat(mask[..., None], 3, axis=2), np.full(mask.shape + (1,), 255, np.uint8)], 2)
        Image.fromarray(rgba, "RGBA").save(path)
    elif mode == "I;16":
        Image.fromarray(mask.astype(np.uint16) * 257).save(path)  # 16-bit grey: 0..65535
    elif mode == "P":
        Image.fromarray(mask, "L").convert("P").save(path)  # a palette of greys
    elif mode == "RGBA one clear pixel":
        rgba = np.concatenate([np.repeat(mask[..., None], 3, axis=2), np.full(mask.shape + (1,), 255, np.uint8)], 2)
        rgba[0, 0, 3] = 0
        Image.fromarray(rgba, "RGBA").save(path)
    elif mode == "LA all clear":
        Image.fromarray(np.stack([mask, np.zeros_like(mask)], axis=2), "LA").save(path)
    else:
        Image.fromarray(mask, "L").save(path)
    values, read = load_mask(path, picture, (90, 120))
    assert np.array_equal(values, mask) and read == "grey levels"


def test_a_mask_of_the_pictures_shape_at_another_size_is_resized(tmp_path):
    """A mask exported at half (or twice) the picture's size: resized to it, and the note says so."""
    picture, mask = _picture_and_mask(tmp_path)
    big = np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1)  # 240 x 180
    Image.fromarray(big, "L").save(tmp_path / "big.png")
    values, read = load_mask(tmp_path / "big.png", picture, (90, 120))
    assert values.shape == (90, 120) and read == "grey levels, resized from 240x180 to the picture's 120x90"
    assert ((values > 127) != (mask > 127)).mean() < 0.01  # the block, its edge softened by the resampling
    Image.fromarray(mask[::2, ::2], "L").save(tmp_path / "half.png")
    values, read = load_mask(tmp_path / "half.png", picture, (90, 120))
    assert values.shape == (90, 120) and "resized from 60x45" in read
    assert ((values > 127) != (mask > 127)).mean() < 0.05  # the block, its edges a pixel softer
    odd, _ = _picture_and_mask(tmp_path / "odd", size=(120, 91))  # a half-size mask rounds an odd side either way
    for side in (45, 46):
        Image.new("L", (60, side), 255).save(tmp_path / "odd_half.png")
        assert load_mask(tmp_path / "odd_half.png", odd, (91, 120))[0].shape == (91, 120)


@pytest.mark.parametrize("size, match", [((60, 60), "the mask must have the picture's size, or its shape"),
                                         ((12, 9), "too small"), ((600, 450), "too large")])
def test_masks_of_another_shape_too_small_or_too_large_are_refused(tmp_path, size, match):
    picture, _ = _picture_and_mask(tmp_path)  # 120 x 90
    Image.new("L", size, 255).save(tmp_path / "mask.png")
    with pytest.raises(ImageError, match=match):
        load_mask(tmp_path / "mask.png", picture, (90, 120))


def test_load_mask_takes_a_cutouts_transparency(tmp_path):
    """A cut-out (the object kept, the rest transparent) is a mask too: its alpha, not its colours."""
    picture, mask = _picture_and_mask(tmp_path)
    rgba = np.zeros((90, 120, 4), np.uint8)
    rgba[..., :3] = 30  # dark colours everywhere: the grey levels would mark nothing
    rgba[..., 3] = mask
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    values, read = load_mask(tmp_path / "cutout.png", picture, (90, 120))
    assert np.array_equal(values, mask) and read == "transparency"
    Image.fromarray(rgba, "RGBA").convert("P").save(tmp_path / "palette.png")  # a palette with transparency
    assert load_mask(tmp_path / "palette.png", picture, (90, 120))[1] == "transparency"


def test_load_mask_follows_a_large_jpeg_decoded_at_reduced_size(tmp_path):
    side = 2 * DECODE_MIN_SIDE
    picture = tmp_path / "big.jpg"
    Image.fromarray(_object_image((side, side), (side // 4, side // 4, side // 2, 3 * side // 4)), "RGB").save(picture)
    rgb, _, _ = load_image(picture)
    assert rgb.shape[:2] == (DECODE_MIN_SIDE, DECODE_MIN_SIDE)
    mask = np.zeros((side, side), np.uint8)
    mask[side // 4:3 * side // 4, side // 4:side // 2] = 255
    Image.fromarray(mask, "L").save(tmp_path / "mask.png")
    small, _ = load_mask(tmp_path / "mask.png", picture, rgb.shape[:2])
    expected = mask[::2, ::2]  # the block at half size; the resampling only softens its outline
    assert small.shape == expected.shape
    differ = np.abs(small.astype(int) - expected) > 1
    padded = np.pad(expected, 1, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
    outline = windows.max(axis=(2, 3)) != windows.min(axis=(2, 3))  # pixels within one of the block's edge
    assert not (differ & ~outline).any()
    assert np.array_equal(object_box(rgb, small), object_box(rgb, expected))


@pytest.mark.parametrize("case, match", [
    ("missing", "Mask file not found"),
    ("not an image", "not an image file"),
    ("truncated", "truncated or corrupt"),
    ("picture gone", "cannot be read again"),
    ("other shape", "is 60x60 pixels but the picture is 120x90"),
    ("empty", "marks no object"),
    ("faint", "marks no object"),
    ("zero one", r"holds only the values 0 and 1 \(a 0/1 array saved as it is\): save it with 255 on the object"),
])
def test_bad_masks_are_refused_in_one_sentence(tmp_path, case, match):
    picture, mask = _picture_and_mask(tmp_path)
    path = tmp_path / "mask.png"
    if case == "not an image":
        path.write_bytes(b"not a png")
    elif case == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120), dtype=np.uint8), "L").save(path)
        path.write_bytes(path.read_bytes()[:500])
    elif case == "picture gone":
        Image.fromarray(mask, "L").save(path)
        picture.unlink()
    elif case == "other shape":
        Image.fromarray(mask[:60, :60], "L").save(path)
    elif case == "empty":
        Image.fromarray(np.zeros_like(mask), "L").save(path)
    elif case == "faint":
        Image.fromarray(np.minimum(mask, 127), "L").save(path)
    elif case == "zero one":  # NumPy's or OpenCV's mask saved as it is: it was "marks no object"
        Image.fromarray((mask > 127).astype(np.uint8), "L").save(path)
    with pytest.raises(ImageError, match=match) as err:
        load_mask(path, picture, (90, 120))
    assert "\n" not in str(err.value)


def test_load_picture_puts_the_mask_in_place_of_the_alpha_with_a_note(tmp_path):
    picture, mask = _picture_and_mask(tmp_path)
    Image.fromarray(mask, "L").save(tmp_path / "mask.png")
    rgb, alpha, notes = load_picture(picture, tmp_path / "mask.png")
    assert np.array_equal(alpha, mask) and notes == [f"the object is the mask {tmp_path / 'mask.png'} (its grey levels)"]
    rgba = np.concatenate([rgb, np.full((90, 120, 1), 255, np.uint8)], axis=2)
    rgba[:, :40, 3] = 0  # a cut-out: a third of it transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    _, alpha, notes = load_picture(tmp_path / "cut.png", tmp_path / "mask.png")
    assert np.array_equal(alpha, mask) and any("instead of the picture's own transparency" in n for n in notes)
    assert load_picture(picture)[1] is None


# -- photos taken turned (EXIF orientation) -----------------------------------------------------------------

# EXIF orientation -> what a viewer does to the stored pixels to show them upright, written out plainly
_UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # turned 180°
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: np.swapaxes(a, 0, 1),  # transposed
    6: lambda a: np.rot90(a, k=-1),  # turned 90° clockwise
    7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),  # transversed (stored row 0 shown as the right column)
    8: lambda a: np.rot90(a, k=1),  # turned 90° counter-clockwise
}


def _stored_with_orientation(path, stored: np.ndarray, orientation: int) -> None:
    img = Image.fromarray(stored, "RGB")
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_photo_taken_turned_is_read_upright(tmp_path, orientation):
    """The stored pixels and an EXIF orientation: the arrays are the picture as a viewer shows it, with a note."""
    stored = _object_image((120, 90), box=(10, 20, 50, 40))  # a red block off centre: every turn moves it
    stored[20:40, 10:20] = (30, 30, 200)  # and a blue end, so that mirror images differ too
    path = tmp_path / "photo.png"
    _stored_with_orientation(path, stored, orientation)
    rgb, alpha, notes = load_image(path)
    assert alpha is None and np.array_equal(rgb, _UPRIGHT[orientation](stored))
    assert any("EXIF orientation" in n for n in notes) == (orientation != 1)


def test_the_mask_of_a_photo_taken_turned_lies_over_it_upright(tmp_path):
    """save_mask writes at the upright size; load_mask takes a mask of that size, and one of another shape is
    refused, naming the upright size."""
    path = tmp_path / "photo.png"
    _stored_with_orientation(path, _object_image((120, 90)), 6)  # stored 120 x 90, shown 90 x 120
    rgb, _, _ = load_image(path)
    assert rgb.shape == (120, 90, 3)
    mask = np.zeros((120, 90), np.float32)
    mask[10:50, 5:40] = 1.0
    save_mask(mask, path, tmp_path / "mask.png")
    with Image.open(tmp_path / "mask.png") as img:
        assert img.size == (90, 120)
    values, read = load_mask(tmp_path / "mask.png", path, rgb.shape[:2])
    assert np.array_equal(values > 127, mask > 0.5)
    assert "taken as lying over the picture upright, which its EXIF orientation, 6, turns:" in read
    Image.new("L", (100, 100), 255).save(tmp_path / "square.png")
    with pytest.raises(ImageError, match="90x120"):
        load_mask(tmp_path / "square.png", path, rgb.shape[:2])


@pytest.mark.parametrize("orientation", range(5, 9))
def test_a_mask_painted_over_a_turned_photo_as_stored_is_turned_as_the_photo_is(tmp_path, orientation):
    """An editor that ignores the EXIF orientation (Blender does) shows a photo as stored: a mask painted over it there
    has the stored size, sides swapped. It is turned upright as the picture is (the plain reference _UPRIGHT), with
    a note; such a mask was refused as of the wrong size."""
    path = tmp_path / "photo.png"
    stored = _object_image((120, 90))  # 120 wide, 90 high as stored
    _stored_with_orientation(path, stored, orientation)
    rgb, _, _ = load_image(path)
    painted = np.zeros(stored.shape[:2], np.uint8)  # over the stored pixels: an off-centre block with a tail
    painted[10:50, 5:40] = 255
    painted[50:70, 5:12] = 255
    Image.fromarray(painted, "L").save(tmp_path / "painted.png")
    values, read = load_mask(tmp_path / "painted.png", path, rgb.shape[:2])
    assert np.array_equal(values, _UPRIGHT[orientation](painted))
    assert f"EXIF orientation ({orientation})" in read
    # the note quotes it in parentheses: none of its own inside but the orientation's ("says (the mask has ...))")
    assert read.count("(") == 1, read


# -- several objects in one picture --------------------------------------------------------------------------


def _parts_reference(inside: np.ndarray, share: float) -> int:
    """separate_parts written plainly: flood fill from every unvisited pixel, 8 neighbours, then the sizes."""
    h, w = inside.shape
    seen = np.zeros_like(inside, dtype=bool)
    sizes = []
    for r in range(h):
        for c in range(w):
            if inside[r, c] and not seen[r, c]:
                stack, size = [(r, c)], 0
                seen[r, c] = True
                while stack:
                    y, x = stack.pop()
                    size += 1
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            yy, xx = y + dy, x + dx
                            if 0 <= yy < h and 0 <= xx < w and inside[yy, xx] and not seen[yy, xx]:
                                seen[yy, xx] = True
                                stack.append((yy, xx))
                sizes.append(size)
    if len(sizes) < 2:
        return len(sizes)
    return sum(s >= share * max(sizes) and s >= 4 for s in sizes)  # 4: crop.PART_MIN_PIXELS


@pytest.mark.parametrize("seed", range(6))
def test_separate_parts_equal_the_flood_fill_reference(seed):
    from recon_core.network.crop import separate_parts

    rng = np.random.default_rng(seed)
    mask = (rng.random((40, 50)) < rng.uniform(0.05, 0.5)).astype(np.float32)
    for share in (0.5, 0.1):
        assert separate_parts(mask, share) == _parts_reference(mask > 0.5, share)
    assert separate_parts(np.zeros((20, 20))) == 0


def test_separate_parts_of_two_objects_and_of_one():
    from recon_core.network.crop import PARTS_SIDE, separate_parts

    one = np.zeros((90, 120), np.float32)
    one[20:70, 10:50] = 1.0
    one[40:45, 60:62] = 1.0  # a speck: not a sizeable part
    assert separate_parts(one) == 1
    lamp = one.copy()
    lamp[30:60, 70:95] = 1.0  # a smaller second object, 750 of the first's 2,000 pixels (37.5 %): two (at 0.5: one)
    assert separate_parts(lamp) == 2 and separate_parts(lamp, 0.5) == 1
    two = one.copy()
    two[20:65, 70:110] = 1.0  # a second object, 90 % of the first
    assert separate_parts(two) == 2
    diagonal = np.zeros((90, 120), np.float32)
    diagonal[10:40, 10:40] = diagonal[40:70, 40:70] = 1.0  # two halves that touch at one corner only: one part
    assert separate_parts(diagonal) == 1
    big = np.kron(two, np.ones((20, 20), np.float32))  # 1,800 x 2,400: reduced by 5 x 5 blocks
    assert max(big.shape) > PARTS_SIDE and separate_parts(big) == 2
    joined = big.copy()
    joined[901:903, 1000:1400] = 1.0  # a 2-pixel bar joins the two, between every 5th row: the reduction keeps it
    assert separate_parts(joined) == 1
    specks = np.zeros((137, 137))
    specks[10, 10:12] = specks[100, 50:52] = 1  # two 2-pixel specks (a dark picture's stray pixels): not two objects
    assert separate_parts(specks) == 0


def test_a_picture_of_two_objects_gets_a_note(tiny_model_path):
    from recon_core.io.inference import Reconstructor

    rec = Reconstructor.from_file(tiny_model_path)
    rgb = np.full((80, 160, 3), 255, np.uint8)
    alpha = np.zeros((80, 160), np.uint8)
    alpha[20:60, 10:60] = 255
    one = rec.reconstruct(rgb, alpha)
    alpha[20:60, 100:150] = 255
    two = rec.reconstruct(rgb, alpha)
    assert not any("separate sizeable parts" in n for n in one.notes)
    assert any("2 separate sizeable parts" in n for n in two.notes)


def test_a_large_jpeg_taken_turned_is_decoded_reduced_and_upright(tmp_path):
    """The reduced decode (draft) first, then the turn: a 2,400 x 2,200 JPEG stored turned comes out 1,100 x 1,200
    pixels, its object where a viewer shows it."""
    stored = np.full((2200, 2400, 3), 255, np.uint8)
    stored[100:700, 200:1000] = (200, 30, 30)  # at the stored top left: a viewer shows it at the top right
    path = tmp_path / "phone.jpg"
    img = Image.fromarray(stored, "RGB")
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(path, quality=95, exif=exif)
    rgb, _, notes = load_image(path)
    assert rgb.shape == (1200, 1100, 3) and any("EXIF orientation (6)" in n for n in notes)
    expected = np.rot90(stored[::2, ::2], k=-1)  # the same picture, reduced and turned plainly
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 100)
    assert ((expected[..., 1] < 100) == red).mean() > 0.99


def test_a_tiff_taken_turned_is_read_upright_and_its_mask_fits(tmp_path):
    """Pillow opens a TIFF upright itself: no second turn, and the mask's size is the arrays'."""
    stored = _object_image((64, 40), box=(2, 2, 20, 12))
    path = tmp_path / "scan.tif"
    _stored_with_orientation(path, stored, 6)
    rgb, _, _ = load_image(path)
    assert np.array_equal(rgb, _UPRIGHT[6](stored))
    save_mask(np.ones(rgb.shape[:2], np.float32), path, tmp_path / "mask.png")
    with Image.open(tmp_path / "mask.png") as img:
        assert img.size == (rgb.shape[1], rgb.shape[0])
    values, _ = load_mask(tmp_path / "mask.png", path, rgb.shape[:2])
    assert values.shape == rgb.shape[:2]


def test_a_faint_cutout_is_taken_at_full_opacity(tmp_path):
    """No pixel of the alpha even half opaque (a glass object, a cut-out exported at 40 %): the alpha is scaled so
    that its most opaque pixel is 255, in proportion, with a note; an alpha above half somewhere is left as it is."""
    from recon_core.io.image import FAINT_ALPHA

    rgba = np.zeros((60, 80, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[10:50, 20:60, :3] = (40, 90, 160)
    rgba[10:50, 20:60, 3] = 100
    rgba[10:50, 40:60, 3] = 50
    Image.fromarray(rgba, "RGBA").save(tmp_path / "glass.png")
    _, alpha, notes = load_image(tmp_path / "glass.png")
    assert alpha[30, 30] == 255 and alpha[30, 50] == 128 and alpha[0, 0] == 0
    assert any("faint" in n for n in notes)
    rgba[10:12, 20:22, 3] = FAINT_ALPHA + 1  # one pixel above half: the alpha is the picture's own
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    _, alpha, notes = load_image(tmp_path / "half.png")
    assert alpha[30, 30] == 100 and not any("faint" in n for n in notes)


def test_faint_alphas_at_the_limits(tmp_path):
    """Scaled from FAINT_ALPHA_MIN to FAINT_ALPHA; an alpha faint and uniform is no mask (then refused as one colour,
    as the same picture opaque is); fainter than FAINT_ALPHA_MIN, a picture that shows nothing, refused as a fully
    transparent one is (it was read, exit 0, its mask marking nothing and the silhouette fit skipped)."""
    from recon_core.io.image import FAINT_ALPHA, FAINT_ALPHA_MIN

    def saved(name, peak, uniform=False):
        rgba = np.zeros((40, 40, 4), np.uint8)
        rgba[..., :3] = (30, 60, 90) if uniform else 255
        rgba[10:30, 10:30, :3] = (30, 60, 90)
        rgba[..., 3] = peak if uniform else 0
        rgba[10:30, 10:30, 3] = peak
        return _save(tmp_path / name, rgba)

    for peak in (FAINT_ALPHA, FAINT_ALPHA_MIN):
        _, alpha, notes = load_image(saved(f"a{peak}.png", peak))
        assert alpha[20, 20] == 255 and any("faint" in n for n in notes), peak
    for peak in (FAINT_ALPHA_MIN - 1, 1):
        with pytest.raises(ImageError, match=rf"is almost fully transparent \(its most opaque pixel is {peak} of 255\)"):
            load_image(saved(f"a{peak}.png", peak))
    with pytest.raises(ImageError, match="one uniform colour|uniform"):
        load_image(saved("flat.png", 100, uniform=True))


def test_an_alpha_that_marks_the_whole_border_is_said_to_be_inverted_perhaps(tmp_path):
    """An inverted cut-out (the object transparent, the background opaque) was read silently, its mask the
    background; a --mask doing the same gets a note, and now the picture's own alpha does too. A cut-out is not."""
    rgba = np.full((40, 50, 4), 255, np.uint8)
    rgba[10:30, 15:35, 3] = 0  # the object transparent
    _, alpha, notes = load_image(_save(tmp_path / "inverted.png", rgba))
    assert alpha is not None and any("marks the picture's whole border as the object: if it is inverted" in n
                                     for n in notes), notes
    rgba[..., 3] = 255 - rgba[..., 3]  # the cut-out as it should be
    _, _, notes = load_image(_save(tmp_path / "cutout.png", rgba))
    assert not any("border" in n for n in notes), notes


def test_a_mask_given_takes_the_place_of_an_alpha_that_shows_nothing_or_may_be_inverted(tmp_path):
    """With the user's mask, the picture's own alpha is not used: one that shows nothing (peak below FAINT_ALPHA_MIN)
    is not refused, and the notes on it (inverted, faint, too opaque for a cut-out) are not said: the mask is how
    they are mended, and the opaque one's asked for it."""
    from recon_core.io.image import load_picture

    picture, mask = _picture_and_mask(tmp_path)
    Image.fromarray(mask, "L").save(tmp_path / "mask.png")
    rgb = np.asarray(Image.open(picture).convert("RGB"))
    for name, alpha in (("junk", 20), ("inverted", None), ("faint", 100), ("opaque", 255)):
        rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255 if alpha is None else alpha, np.uint8)])
        if alpha is None:
            rgba[25:75, 35:65, 3] = 0  # the object transparent
        elif alpha == 100:
            rgba[..., 3] = 0
            rgba[25:75, 35:65, 3] = 100  # a cut-out exported faint
        elif alpha == 255:
            rgba[0, 0, 3] = 254  # one pixel short of opaque: no cut-out
        path = _save(tmp_path / f"{name}.png", rgba)
        if alpha == 20:
            with pytest.raises(ImageError, match="almost fully transparent"):
                load_image(path)
        else:
            assert any(n.startswith("its transparency") for n in load_image(path)[2]), name
        _, used, notes = load_picture(path, tmp_path / "mask.png")
        np.testing.assert_array_equal(used, mask)
        assert not any("its transparency" in n for n in notes), (name, notes)


def test_an_exif_block_after_the_pixels_is_read_as_stored_by_both(tmp_path):
    """A PNG whose eXIf chunk follows its pixels: load_image and upright_size agree (both read it as stored)."""
    from recon_core.io.image import upright_size

    stored = _object_image((120, 90))
    buf = io.BytesIO()
    img = Image.fromarray(stored, "RGB")
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(buf, format="PNG", exif=exif)
    data = buf.getvalue()
    # move the eXIf chunk behind the image data (before IEND)
    pos = data.index(b"eXIf") - 4
    length = struct.unpack(">I", data[pos:pos + 4])[0]
    chunk = data[pos:pos + 12 + length]
    rest = data[:pos] + data[pos + 12 + length:]
    iend = rest.index(b"IEND") - 4
    (tmp_path / "late.png").write_bytes(rest[:iend] + chunk + rest[iend:])
    rgb, _, _ = load_image(tmp_path / "late.png")
    with Image.open(tmp_path / "late.png") as opened:
        assert upright_size(opened) == (rgb.shape[1], rgb.shape[0]) == (120, 90)


def test_a_jpeg_and_a_png_of_one_size_are_read_at_one_size(tmp_path):
    """4,200 x 4,095: the JPEG's reduced decode stops at 1/2 (1/4 would leave its width a pixel short), and the PNG
    is reduced by 2 as well, not once more after the decode."""
    picture = _object_image((4200, 4095), (1000, 900, 3000, 3000))
    jpeg = _save(tmp_path / "big.jpg", picture, quality=90)
    png = _save(tmp_path / "big.png", picture)
    assert load_image(jpeg)[0].shape == load_image(png)[0].shape == (2048, 2100, 3)


def test_a_large_sixteen_bit_picture_is_reduced_too(tmp_path):
    grey = np.full((2100, 2200), 60000, np.uint16)
    grey[500:1500, 600:1600] = 2000
    path = tmp_path / "scan.png"
    Image.fromarray(grey).save(path)
    rgb, alpha, _ = load_image(path)
    assert rgb.shape == (1050, 1100, 3) and alpha is None


@pytest.mark.parametrize("mode, key, ink", [("L", 255, 0), ("RGB", (255, 255, 255), (150, 90, 40)),
                                           ("P", 0, 1)])
def test_a_pngs_transparent_colour_is_its_alpha(tmp_path, mode, key, ink):
    """A grey, RGB or palette PNG whose transparency is one colour (its tRNS key) gives that colour alpha 0 and
    the rest 255, as a cut-out with an alpha channel does (not a picture without transparency)."""
    img = Image.new(mode, (64, 64), key)
    if mode == "P":
        img.putpalette([255, 255, 255, 150, 90, 40] + [0] * 762)
    img.paste(ink, (16, 8, 48, 56))
    p = tmp_path / f"key_{mode}.png"
    img.save(p, transparency=key)
    rgb, alpha, _ = load_image(p)
    expected = np.zeros((64, 64), np.uint8)
    expected[8:56, 16:48] = 255
    assert alpha is not None and np.array_equal(alpha, expected)


def test_a_float_tiff_with_a_pixel_that_is_not_a_number_is_read(tmp_path):
    """A float grey picture (mode F) with NaN and infinite pixels: those are black, the rest scaled over the largest
    finite value, without a warning (before: the NaN made the maximum NaN and the picture "one uniform colour")."""
    grey = np.full((64, 64), 200.0, np.float32)
    grey[16:48, 20:44] = 20.0
    grey[0, 0], grey[0, 1] = np.nan, np.inf
    p = tmp_path / "float.tif"
    Image.fromarray(grey, "F").save(p)
    with np.errstate(all="raise"):
        rgb, alpha, notes = load_image(p)
    assert alpha is None and rgb[32, 32, 0] == round(20 / 200 * 255) and rgb[40, 5, 0] == 255
    assert rgb[0, 0, 0] == 0 and rgb[0, 1, 0] == 0
    # said, not silent (a probe's NaN patch grew the mask to a corner), and named by its depth, not "16-bit"
    assert notes == ["floating-point image converted to 8 bits per channel",
                     "2 of its pixels are not numbers (NaN or infinite): read as black"]
    Image.fromarray((np.nan_to_num(grey, posinf=0.0) * 100).astype(np.int32), "I").save(p)
    assert load_image(p)[2][0].startswith("32-bit integer image converted to 8 bits per channel")


def test_a_sixteen_bit_pngs_transparent_grey_is_its_alpha(tmp_path):
    """A 16-bit grey PNG whose transparency is one grey value (its tRNS key) gives that value alpha 0 and the rest
    255, as the 8-bit grey, RGB and palette PNGs above do (before: read without transparency)."""
    grey = np.full((64, 64), 60000, np.uint16)
    grey[8:56, 16:48] = 9000
    p = tmp_path / "key16.png"
    Image.fromarray(grey).save(p, transparency=60000)
    assert Image.open(p).info.get("transparency") == 60000  # the file holds the key
    rgb, alpha, _ = load_image(p)
    expected = np.zeros((64, 64), np.uint8)
    expected[8:56, 16:48] = 255
    assert alpha is not None and np.array_equal(alpha, expected)
    assert rgb[32, 32, 0] == round(9000 / 65535 * 255)
    p2 = tmp_path / "all_key16.png"
    Image.fromarray(np.full((64, 64), 7, np.uint16)).save(p2, transparency=7)
    with pytest.raises(ImageError, match="fully transparent"):
        load_image(p2)


def test_twelve_bit_values_in_a_sixteen_bit_file_are_scaled_from_their_range(tmp_path):
    """Sensor data of 12 bits (0-4,095) in a 16-bit file is read over 4,095, not 65,535 (before: grey levels 0-16,
    refused as "one uniform colour"); a 16-bit picture that uses more than 12 bits is read as stored."""
    grey = np.full((64, 64), 3000, np.uint16)
    grey[16:48, 16:48] = 300
    p = tmp_path / "sensor.png"
    Image.fromarray(grey).save(p)
    rgb, alpha, notes = load_image(p)
    assert alpha is None and rgb[0, 0, 0] == round(3000 / 4095 * 255) and rgb[32, 32, 0] == round(300 / 4095 * 255)
    assert any("12 bits" in n for n in notes)
    keyed = tmp_path / "sensor_keyed.png"  # its transparent grey, 65,535, is not a value of the picture's
    Image.fromarray(np.where(np.arange(64)[None, :] < 4, 65535, grey).astype(np.uint16)).save(keyed, transparency=65535)
    rgb, alpha, _ = load_image(keyed)
    assert alpha is not None and alpha[:, :4].max() == 0 and rgb[32, 32, 0] == round(300 / 4095 * 255)
    grey[0, 0] = 40000  # now a 16-bit picture
    Image.fromarray(grey).save(p)
    rgb, _, notes = load_image(p)
    assert rgb[0, 0, 0] == round(40000 / 65535 * 255) and rgb[1, 1, 0] == round(3000 / 65535 * 255)
    assert not any("bits:" in n for n in notes)


def test_the_file_is_closed_whether_it_is_read_or_refused(tmp_path, monkeypatch):
    """Every file load_image opens is closed when it returns or refuses (a refused picture, a GIF's frames)."""
    from recon_core.io import image as image_module

    opened = []
    real = image_module._open_unlimited

    def spy(path):
        img = real(path)
        opened.append(img)
        return img

    monkeypatch.setattr(image_module, "_open_unlimited", spy)
    frames = [Image.new("RGB", (64, 64), (255, 255, 255)) for _ in range(2)]
    for f in frames:
        f.paste((20, 20, 20), (16, 16, 48, 48))
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (8, 8)).save(tmp_path / "small.png")
    load_image(tmp_path / "anim.gif")
    with pytest.raises(ImageError, match="too small"):
        load_image(tmp_path / "small.png")
    assert len(opened) == 2
    for img in opened:
        assert img.fp is None  # Pillow drops the file once closed


def test_pictures_opened_from_two_threads_at_once_leave_pillows_pixel_limit_as_it_was(tmp_path, monkeypatch):
    """Pillow's pixel limit is a global that _open_unlimited lifts for a moment: two threads must not be inside at
    once (each would save the other's lifted limit, and the last to restore could leave it lifted for good)."""
    import threading

    from recon_core.io import image as image_module

    p = tmp_path / "chair.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(p)
    real_open, limit = Image.open, Image.MAX_IMAGE_PIXELS
    overlap = threading.Barrier(2, timeout=0.5)  # met only if both threads are inside Image.open together
    inside, most, guard = [0], [0], threading.Lock()

    def slow_open(path, *args, **kwargs):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            overlap.wait()
        except threading.BrokenBarrierError:
            pass
        with guard:
            inside[0] -= 1
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(image_module.Image, "open", slow_open)
    seen = []

    def read():
        with image_module._open_unlimited(str(p)) as img:
            seen.append(img.size)

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [(64, 64), (64, 64)]
    assert most[0] == 1
    assert Image.MAX_IMAGE_PIXELS == limit


def test_an_unreadable_file_is_said_to_be_unreadable_not_corrupt(tmp_path, monkeypatch):
    from recon_core.io import image as image_module

    p, picture = tmp_path / "locked.png", tmp_path / "picture.png"
    Image.new("RGB", (64, 64)).save(p)
    Image.new("RGB", (64, 64)).save(picture)
    opened = image_module._open_unlimited

    def denied(path):
        if str(path) == str(p):
            raise PermissionError(13, "Permission denied", str(path))
        return opened(path)

    monkeypatch.setattr(image_module, "_open_unlimited", denied)
    with pytest.raises(ImageError, match="permission denied") as err:
        load_image(p)
    assert "corrupt" not in str(err.value)
    with pytest.raises(ImageError, match="permission denied"):
        load_mask(p, picture, (64, 64))


def test_an_animation_is_read_at_its_first_frame_with_a_note(tmp_path):
    """A GIF of two frames: the first frame's pixels, and a note naming the frames; one frame: no note."""
    first = Image.fromarray(_object_image())
    second = Image.fromarray(_object_image(box=(80, 10, 110, 40)))
    first.save(tmp_path / "anim.gif", save_all=True, append_images=[second])
    first.save(tmp_path / "still.gif")
    rgb, _, notes = load_image(tmp_path / "anim.gif")
    assert any("2 frames" in n and "the first is read" in n for n in notes)
    assert rgb[50, 50].tolist() == [200, 30, 30] and rgb[20, 90].tolist() == [255, 255, 255]
    assert not any("frames" in n for n in load_image(tmp_path / "still.gif")[2])
    # a camera's JPEG with its preview picture (Pillow: MPO, two frames) is one photograph: no note
    first.save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[second.resize((30, 20))])
    assert Image.open(tmp_path / "camera.jpg").format == "MPO"
    assert not any("frames" in n for n in load_image(tmp_path / "camera.jpg")[2])


def test_object_side_is_the_masks_box_longer_side():
    from recon_core.network.crop import object_side

    mask = np.zeros((50, 60), np.float32)
    assert object_side(mask) == 0
    mask[10:20, 5:45] = 1.0
    mask[30, 7] = 0.4  # not above half: not the object
    assert object_side(mask) == 40
    mask[49, 7] = 0.6  # rows 10-49 and columns 5-44: 40 each way
    assert object_side(mask) == 40
    mask[49, 59] = 1.0  # columns 5-59
    assert object_side(mask) == 55


def test_cut_sides_are_the_edges_the_mask_runs_off():
    from recon_core.network.crop import CUT_MIN_PIXELS, CUT_MIN_SHARE, cut_sides

    mask = np.zeros((50, 60), np.float32)
    assert cut_sides(mask) == []
    mask[10:30, 5:45] = 1.0  # 40 wide, 20 tall
    assert cut_sides(mask) == []
    least = max(CUT_MIN_PIXELS, int(np.ceil(CUT_MIN_SHARE * 40)))  # of the bottom edge: 4
    mask[30:50, 20:20 + least - 1] = 1.0  # a leg's end on the bottom row, the object now 40 tall: not cut
    assert cut_sides(mask) == []
    mask[49, 20:20 + least] = 0.6
    assert cut_sides(mask) == ["bottom"]
    mask[10:30, 40:60] = 1.0  # 20 of the object's 40 rows on the right edge; the object now 55 wide
    assert cut_sides(mask) == ["right"], "the bottom's 4 pixels are under a tenth of 55"
    mask[49, 20:26] = 1.0
    mask[0, 0:10] = 0.4  # not above half: not the object
    assert cut_sides(mask) == ["bottom", "right"]
    mask[0, 10:20] = 1.0
    assert cut_sides(mask) == ["top", "bottom", "right"]
    mask[20:30, 0] = 1.0  # the box now spans the whole picture both ways: trimmed to it, or cut on every side
    assert cut_sides(mask) == []
    mask[:] = 1.0  # the whole picture (no cut-out), or an inverted mask's border with one dark corner pixel
    mask[0, 0] = 0.0
    mask[20:30, 20:30] = 0.0
    assert cut_sides(mask) == []


def test_an_object_touching_the_edges_with_its_tips_is_not_cut():
    """A pointed shape's tips on the edges (here a diamond's, 5 pixels of 61) are not a side it runs off, trimmed to its
    box or with a margin on the other sides; cut across its middle, it runs off that edge."""
    from recon_core.network.crop import cut_sides

    yy, xx = np.mgrid[-30:31, -30:31]
    diamond = (np.abs(yy) + np.abs(xx) <= 32).astype(np.float32)  # (61, 61), every edge touched by 5 pixels
    assert all(int(line.sum()) == 5 for line in (diamond[0], diamond[-1], diamond[:, 0], diamond[:, -1]))
    assert cut_sides(diamond) == []
    assert cut_sides(np.pad(diamond, ((10, 0), (10, 10)))) == [], "nor with a margin on three sides"
    assert cut_sides(np.pad(diamond[:31], ((10, 0), (10, 10)))) == ["bottom"], "cut across its middle"


def test_the_example_chair_trimmed_to_its_box_is_not_cut():
    """The example chair's cut-out trimmed to its alpha's box touches the top edge with 7 of its 66 pixels across (the
    back's top): its box spans the whole picture both ways, so no edge is named; cut across, it is."""
    from recon_core.network.crop import CUT_MIN_SHARE, cut_sides

    alpha = np.asarray(Image.open(Path(__file__).resolve().parents[1] / "examples" / "chair.png"))[..., 3] > 127
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    trimmed = alpha[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32)
    assert trimmed[0].sum() >= CUT_MIN_SHARE * trimmed.shape[1], "the back's top alone would count"
    assert cut_sides(trimmed) == []
    assert cut_sides(np.pad(trimmed[: len(trimmed) // 2], ((5, 0), (5, 5)))) == ["bottom"], "cut across its middle"
    assert cut_sides(np.pad(trimmed, ((0, 5), (5, 5)))) == ["top"], "a margin elsewhere: the top's 7 pixels are a cut"


def test_an_object_cut_by_the_border_gets_a_note(tiny_model_path):
    """An object that runs off the picture's edges is noted, naming them; one inside the picture is not."""
    from recon_core.io.inference import Reconstructor

    rec = Reconstructor.from_file(tiny_model_path)
    rgb = np.full((80, 80, 3), 255, np.uint8)
    alpha = np.zeros((80, 80), np.uint8)
    alpha[20:60, 20:60] = 255
    inside = rec.reconstruct(rgb, alpha)
    alpha[20:80, 40:80] = 255
    cut = rec.reconstruct(rgb, alpha)
    assert not any("touches the picture's" in n for n in inside.notes)
    assert any(n.startswith("the object touches the picture's bottom and right edges: if it is cut there, the shape")
               for n in cut.notes), cut.notes
    # a mask found in the picture (here against the border colour) may run off the edge by taking the background
    rgb[40:80, 30:50] = (150, 90, 40)
    found = rec.reconstruct(rgb, None)
    assert any(n.startswith("the object mask that was found touches the picture's bottom edge: either the object "
                            "is cut by the picture") and "--save-mask" in n for n in found.notes), found.notes


def test_a_small_object_gets_a_note(tiny_model_path):
    """An object fewer than SMALL_OBJECT_SIDE pixels across is noted as read from few pixels; a larger one is not."""
    from recon_core.io.inference import Reconstructor
    from recon_core.network.crop import SMALL_OBJECT_SIDE

    rec = Reconstructor.from_file(tiny_model_path)
    rgb = np.full((80, 80, 3), 255, np.uint8)
    alpha = np.zeros((80, 80), np.uint8)
    alpha[30:50, 30:30 + SMALL_OBJECT_SIDE - 1] = 255
    small = rec.reconstruct(rgb, alpha)
    alpha[30:50, 30:30 + SMALL_OBJECT_SIDE] = 255
    large = rec.reconstruct(rgb, alpha)
    assert any(f"only {SMALL_OBJECT_SIDE - 1} pixels across" in n for n in small.notes)
    assert not any("pixels across" in n for n in large.notes)


# -- an alpha that holds no cut-out, 16-bit colour PNGs, an inverted mask ------------------------------------


def _shaded_object(size: int = 96) -> np.ndarray:
    """(size, size, 3) uint8: a dark disk on white."""
    yy, xx = np.mgrid[:size, :size]
    rgb = np.full((size, size, 3), 255, np.uint8)
    rgb[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2] = (60, 40, 30)
    return rgb


def test_an_alpha_opaque_nearly_everywhere_is_no_cut_out(tmp_path):
    """Rounded transparent corners (a card exported so), or one pixel a little transparent, hold no cut-out: taken as
    the object they would make it the whole picture. The picture is read over white without its alpha, with a note;
    a real cut-out (a third transparent) keeps its alpha."""
    rgb = _shaded_object()
    yy, xx = np.mgrid[:96, :96]
    corners = np.minimum(np.minimum(xx, 95 - xx), np.minimum(yy, 95 - yy)) < 3  # a thin frame: ~12 % of it...
    corners &= (np.minimum(xx, 95 - xx) < 3) & (np.minimum(yy, 95 - yy) < 3)  # ...only its corners: 36 pixels
    for name, transparent, level in (("card", corners, 0), ("one", (yy == 0) & (xx == 0), 254)):
        alpha = np.where(transparent, level, 255).astype(np.uint8)
        Image.fromarray(np.dstack([np.where(transparent[..., None], 0, rgb), alpha]).astype(np.uint8), "RGBA").save(
            tmp_path / f"{name}.png")
        got, got_alpha, notes = load_image(tmp_path / f"{name}.png")
        assert got_alpha is None, name
        assert any("too much for a cut-out" in n for n in notes), (name, notes)
        # over white: black at alpha a becomes 255 - a (rounded)
        assert (np.abs(got[transparent].astype(int) - (255 - level)) <= 1).all(), "read over white"
        assert np.array_equal(got[~transparent], rgb[~transparent])
    cut = np.where(xx < 32, 0, 255).astype(np.uint8)
    Image.fromarray(np.dstack([rgb, cut]), "RGBA").save(tmp_path / "cut.png")
    _, got_alpha, notes = load_image(tmp_path / "cut.png")
    assert np.array_equal(got_alpha, cut) and not any("cut-out" in n for n in notes)


def _png16(path, arr: np.ndarray) -> None:
    """A 16-bit colour (3 channels) or colour-with-alpha (4) PNG, written by hand: Pillow writes neither."""
    import zlib

    h, w, channels = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_16_bit_colour_pngs_are_read_with_the_conversion_noted(tmp_path):
    """Pillow decodes 16-bit RGB and RGBA PNGs at 8 bits itself: the conversion is noted as for 16-bit grey, and an
    8-bit PNG gets no such note."""
    rgb = _shaded_object()
    alpha = np.where(rgb[..., 0] < 128, 255, 0).astype(np.uint8)
    _png16(tmp_path / "rgb16.png", rgb.astype(np.uint16) * 257)
    _png16(tmp_path / "rgba16.png", np.dstack([rgb, alpha]).astype(np.uint16) * 257)
    Image.fromarray(rgb).save(tmp_path / "rgb8.png")
    got, got_alpha, notes = load_image(tmp_path / "rgb16.png")
    assert np.array_equal(got, rgb) and got_alpha is None and "16-bit image converted to 8 bits per channel" in notes
    got, got_alpha, notes = load_image(tmp_path / "rgba16.png")
    assert np.array_equal(got_alpha, alpha) and "16-bit image converted to 8 bits per channel" in notes
    assert not any("16-bit" in n for n in load_image(tmp_path / "rgb8.png")[2])


def test_a_mask_that_takes_the_whole_border_asks_whether_it_is_inverted(tmp_path):
    """An inverted mask (the object black, the rest white) marks the picture's whole border as the object: it is read
    as given (a mask of an object filling the picture is possible), with a note asking whether it is inverted. A
    blank white mask, which has nothing to invert, is said to fill the picture's rectangle instead."""
    rgb = _shaded_object()
    Image.fromarray(rgb).save(tmp_path / "picture.png")
    right = np.where(rgb[..., 0] < 128, 255, 0).astype(np.uint8)
    Image.fromarray(right, "L").save(tmp_path / "right.png")
    Image.fromarray(255 - right, "L").save(tmp_path / "inverted.png")
    got, read = load_mask(tmp_path / "inverted.png", tmp_path / "picture.png", (96, 96))
    assert np.array_equal(got, 255 - right) and "inverted" in read
    Image.fromarray(np.full((96, 96), 255, np.uint8), "L").save(tmp_path / "blank.png")  # nothing to invert
    got, read = load_mask(tmp_path / "blank.png", tmp_path / "picture.png", (96, 96))
    assert (got == 255).all() and "inverted" not in read and "marks the whole picture as the object" in read
    got, read = load_mask(tmp_path / "right.png", tmp_path / "picture.png", (96, 96))
    assert np.array_equal(got, right) and read == "grey levels"


# -- a cut-out's drop shadow -------------------------------------------------------------------------------------


def _cut_out_with_shadow(shadow_alpha: int) -> tuple[np.ndarray, np.ndarray]:
    """A 200 x 200 RGBA cut-out: a brown box (opaque, its edge anti-aliased) over a black, blurred ellipse of shadow
    at ``shadow_alpha``; and the box's own pixels."""
    from PIL import ImageDraw, ImageFilter

    shadow = Image.new("L", (200, 200), 0)
    ImageDraw.Draw(shadow).ellipse((30, 120, 190, 180), fill=shadow_alpha)
    shadow = shadow.filter(ImageFilter.GaussianBlur(4))
    rgba = np.zeros((200, 200, 4), np.uint8)
    rgba[..., 3] = np.asarray(shadow)
    box = np.zeros((200, 200), bool)
    box[40:150, 60:140] = True
    rgba[box] = (150, 90, 40, 255)
    rgba[39, 60:140, 3] = rgba[150, 60:140, 3] = 128  # an anti-aliased edge, the object's too
    rgba[39, 60:140, :3] = rgba[150, 60:140, :3] = (150, 90, 40)
    box[39, 60:140] = box[150, 60:140] = True
    return rgba, box


def test_a_cut_outs_drop_shadow_is_not_the_object(tmp_path):
    """A product cut-out keeps its shadow: black, half transparent, above half alpha; it was half of the mask (a
    chair came out 53 mm wide instead of 68). Its area is taken out, with a note; the object stays whole."""
    rgba, box = _cut_out_with_shadow(170)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "shadow.png")
    assert ((rgba[..., 3] > 127) & ~box).sum() > box.sum() * 0.2, "the shadow would be a large part of the mask"
    rgb, alpha, notes = load_image(tmp_path / "shadow.png")
    assert np.array_equal(alpha > 127, box) and np.array_equal(alpha[box], rgba[..., 3][box])
    assert [n for n in notes if "drop shadow" in n] == [
        f"a dark, half-transparent area ({((rgba[..., 3] > 127) & ~box).sum() / (rgba[..., 3] > 127).sum():.0%} of the "
        "cut-out: a drop shadow) is not taken as the object; if it is part of the object, give the object's mask "
        "(recon-mesh --mask; the add-on's Object: Mask Image)"]


def test_a_dark_objects_soft_edge_and_a_faint_shadow_stay(tmp_path):
    """What is not a shadow's area stays as it is: a black object's anti-aliased edge (a band, not an area), and a
    shadow under half alpha (not in the mask anyway)."""
    rgba = np.zeros((120, 120, 4), np.uint8)
    rgba[30:90, 30:90] = (10, 10, 10, 255)  # a black box
    for ring, a in ((29, 180), (28, 90)):  # its soft edge, two pixels wide
        rgba[ring, ring:120 - ring, 3] = rgba[119 - ring, ring:120 - ring, 3] = a
        rgba[ring:120 - ring, ring, 3] = rgba[ring:120 - ring, 119 - ring, 3] = a
    Image.fromarray(rgba, "RGBA").save(tmp_path / "black.png")
    _, alpha, notes = load_image(tmp_path / "black.png")
    assert np.array_equal(alpha, rgba[..., 3]) and not any("shadow" in n for n in notes)
    faint, _ = _cut_out_with_shadow(100)
    Image.fromarray(faint, "RGBA").save(tmp_path / "faint.png")
    _, alpha, notes = load_image(tmp_path / "faint.png")
    assert np.array_equal(alpha, faint[..., 3]) and not any("shadow" in n for n in notes)
    # a marker drawing on a transparent sheet: thick dark strokes, all half transparent, are the object (a review's
    # sketch lost 75 % of its object as a "drop shadow")
    marker = np.zeros((120, 120, 4), np.uint8)
    marker[20:100, 30:38] = marker[20:100, 82:90] = marker[20:28, 30:90] = (20, 20, 25, 190)
    marker[60:62, 38:82] = marker[70:100, 58:60] = (20, 20, 25, 190)  # thin strokes: they would be what is left
    Image.fromarray(marker, "RGBA").save(tmp_path / "marker.png")
    _, alpha, notes = load_image(tmp_path / "marker.png")
    assert np.array_equal(alpha, marker[..., 3]) and not any("shadow" in n for n in notes)


def test_a_mask_given_drops_the_shadows_note(tmp_path):
    """With --mask the picture's alpha is not used: its drop shadow's note, which asked for a mask, is not said."""
    from recon_core.io.image import load_picture

    rgba, box = _cut_out_with_shadow(170)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "shadow.png")
    Image.fromarray(box.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    assert any("drop shadow" in n for n in load_picture(tmp_path / "shadow.png")[2])
    _, alpha, notes = load_picture(tmp_path / "shadow.png", tmp_path / "mask.png")
    assert np.array_equal(alpha > 127, box) and not any("drop shadow" in n for n in notes)


# -- a phone's HEIC, and files that are no picture -----------------------------------------------------------


def _heic_cutout(path, size=(120, 90), box=(30, 20, 70, 60), exif=None):
    """A cut-out saved as HEIC (lossy HEVC, its alpha too): a red block on transparency."""
    rgba = np.zeros((size[1], size[0], 4), np.uint8)
    rgba[..., :3] = 255
    rgba[box[1]:box[3], box[0]:box[2]] = (200, 30, 30, 255)
    Image.fromarray(rgba, "RGBA").save(path, quality=95, **({"exif": exif} if exif else {}))
    return rgba


def test_a_heic_photo_reads_as_its_png_does(tmp_path):
    """An iPhone's default format: its colours within HEVC's loss, its transparency the object's mask."""
    rgba = _heic_cutout(tmp_path / "cut.heic")
    rgb, alpha, _ = load_image(tmp_path / "cut.heic")
    assert rgb.shape == (90, 120, 3) and alpha is not None and alpha.shape == (90, 120)
    inside = rgba[..., 3] > 127
    assert np.abs(rgb[25:55, 35:65].astype(int) - (200, 30, 30)).mean() < 8
    found = alpha > 127
    assert (found & inside).sum() / (found | inside).sum() > 0.95


def test_a_heic_photo_taken_turned_is_read_upright_once_and_its_mask_fits(tmp_path):
    """HEIF stores the turn as a transform that the reader applies: the picture comes out upright, not turned a
    second time by its EXIF orientation, and its mask is written at the upright size."""
    stored = _object_image((120, 90), box=(10, 20, 50, 40))
    stored[20:40, 10:20] = (30, 30, 200)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored, "RGB").save(tmp_path / "photo.heic", quality=95, exif=exif.tobytes())
    rgb, _, _ = load_image(tmp_path / "photo.heic")
    upright = _UPRIGHT[6](stored).astype(int)
    assert rgb.shape == upright.shape  # turned twice, or not at all: 120 wide
    assert np.abs(rgb.astype(int) - upright).mean() < 4 < np.abs(rgb.astype(int) - upright[::-1, ::-1]).mean()
    save_mask(np.ones(rgb.shape[:2], np.float32), tmp_path / "photo.heic", tmp_path / "mask.png")
    with Image.open(tmp_path / "mask.png") as img:
        assert img.size == (90, 120)
    values, _ = load_mask(tmp_path / "mask.png", tmp_path / "photo.heic", rgb.shape[:2])
    assert values.shape == rgb.shape[:2]


def test_a_truncated_heic_is_refused_in_one_line(tmp_path):
    _heic_cutout(tmp_path / "cut.heic")
    (tmp_path / "cut.heic").write_bytes((tmp_path / "cut.heic").read_bytes()[:1500])
    with pytest.raises(ImageError, match="truncated or corrupt") as err:
        load_image(tmp_path / "cut.heic")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("content, kind", [
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF document"),
    (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "SVG drawing"),
    (b'\xef\xbb\xbf<?xml version="1.0" encoding="UTF-8"?>\n<!-- Inkscape -->\n<svg width="10"/>', "SVG drawing"),
    (b'<?xml version="1.0"?>\n<note>not a drawing</note>', "not an image file that can be read"),
    (b"hello, I am text", "not an image file that can be read"),
])
def test_a_pdf_or_svg_is_refused_by_name_with_what_to_do(tmp_path, content, kind):
    path = tmp_path / "sketch.png"  # named as a picture: what it holds decides
    path.write_bytes(content)
    with pytest.raises(ImageError, match=kind) as err:
        load_image(path)
    assert ("PNG" in str(err.value)) and "\n" not in str(err.value)


def test_a_heic_photo_without_its_plugin_is_refused_naming_it(tmp_path, monkeypatch):
    """An environment set up before pillow-heif was required: Pillow cannot identify the file, and the sentence says
    what it is and how to read it."""
    import recon_core.io.image as image_module
    from PIL import UnidentifiedImageError

    _heic_cutout(tmp_path / "photo.HEIC")
    assert image_module._unreadable_kind(str(tmp_path / "photo.HEIC")) is None  # read by the plug-in: no refusal

    def unidentified(path):
        raise UnidentifiedImageError(path)

    monkeypatch.setattr(image_module, "pillow_heif", None)
    monkeypatch.setattr(image_module, "_open_unlimited", unidentified)
    with pytest.raises(ImageError, match="HEIC photo, which needs the pillow-heif package"):
        load_image(tmp_path / "photo.HEIC")
