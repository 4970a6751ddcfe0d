"""Reduced-size decoding (`fastgr.images.open_image`): a JPEG decoded at the DCT scale that still covers the size it
is fitted to, the same pixels within reason as a full decode, photos upright, other formats in full; every path."""

import numpy as np
import pytest
import torch
from PIL import Image

from fastgr.images import decode_files, decode_images, fit_square, open_image


def photo(w, h, seed=0):
    "Photographic content: smooth colour regions, a gradient and sensor noise."
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((8, 12, 3)) * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    a = np.asarray(small, np.float32) + np.linspace(0, 40, w)[None, :, None] + rng.normal(0, 5, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def psnr(a, b):
    mse = ((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2).mean()
    return np.inf if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize("size, scaled", [(64, (150, 100)), (40, (75, 50)), (120, (300, 200)), (300, (600, 400))])
def test_a_jpeg_is_decoded_at_the_smallest_scale_that_covers_the_size(tmp_path, size, scaled):
    path = tmp_path / "p.jpg"
    photo(600, 400).save(path, quality=90)
    im = open_image(path, "RGB", size)
    assert im.size == scaled and im.mode == "RGB"  # both sides >= size: 600/400 over 4, 8, 2, 1
    full = open_image(path, "RGB")
    assert full.size == (600, 400)
    # what the pipeline makes of it: within 35 dB of the full decode's resize (measured 47-51 dB)
    assert psnr(fit_square(im, size), fit_square(full, size)) > 35


def test_photos_taken_sideways_are_upright_and_other_formats_are_decoded_in_full(tmp_path):
    img = photo(60, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera turned: shown rotated 90 degrees clockwise
    img.save(tmp_path / "turned.jpg", quality=95, exif=exif)
    img.save(tmp_path / "p.png")
    turned = open_image(tmp_path / "turned.jpg", "RGB", 20)
    assert turned.size == (20, 30)  # upright (40 x 60), then half size: both sides still cover 20
    upright = img.transpose(Image.ROTATE_270).resize((20, 30), Image.BOX)
    assert psnr(turned, upright) > 30
    assert open_image(tmp_path / "p.png", "RGB", 8).size == (60, 40)  # no DCT to scale: full size
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "p.png", "L")), np.asarray(img.convert("L")))


def test_cmyk_and_grey_jpegs_keep_their_conversion_when_reduced(tmp_path):
    photo(400, 320).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    photo(400, 320).convert("L").save(tmp_path / "grey.jpg", quality=95)
    for name, mode in (("cmyk.jpg", "RGB"), ("grey.jpg", "RGB"), ("grey.jpg", "L")):
        reduced, full = open_image(tmp_path / name, mode, 48), open_image(tmp_path / name, mode)
        assert reduced.mode == mode and reduced.size == (100, 80)
        assert psnr(fit_square(reduced, 48), fit_square(full, 48)) > 35, name


def test_every_path_decodes_a_jpeg_folder_alike(tmp_path):
    from fastgr.stream import StreamDL

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.jpg")
        photo(320, 240, seed=i).save(paths[-1], quality=90)
    arrays, reasons = decode_files(paths, 32, 3)  # the in-memory path's one-time decode
    assert reasons == ["", "", ""]
    x = decode_images(paths, (32, 32), 3)  # predicting new files
    np.testing.assert_array_equal(np.stack(arrays), x.numpy())
    dl = StreamDL([(p, 0) for p in paths], ["a"], 32, bs=3, augment="none", mean=(0.0,), std=(1 / 255,))
    xb, _ = dl.one_batch()
    torch.testing.assert_close(xb, x.float(), rtol=0, atol=1e-3)  # the streamed path, un-normalised
