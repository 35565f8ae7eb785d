"""Image files of every mode decode to the right values; absurd sizes are refused from the header."""
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from sycam.data.images import read_image, read_mask
from sycam.errors import DataError


def png_header(path, w, h):
    """A tiny PNG that only claims to be w x h (no pixel data to speak of): decoding it would fail."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 8)) + chunk(b"IEND", b""))
    return path


def test_sixteen_bit_png_is_scaled_by_65535_not_clipped_to_white(tmp_path):
    values = np.array([[0, 1000, 30000], [45000, 60000, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    image = read_image(tmp_path / "g16.png")
    assert image.shape == (3, 2, 3) and image.dtype == torch.float32
    expected = torch.from_numpy(values.astype(np.float32) / 65535)
    assert torch.allclose(image, expected.expand(3, -1, -1), atol=1e-6)


@pytest.mark.parametrize("mode, fmt", [("I", "TIFF"), ("F", "TIFF"), ("I;16B", "TIFF"), ("LA", "PNG"),
                                       ("P", "PNG"), ("CMYK", "TIFF"), ("CMYK", "JPEG"), ("1", "PNG"),
                                       ("L", "PNG"), ("RGBA", "PNG")])
def test_every_mode_decodes_to_rgb_in_unit_range(tmp_path, mode, fmt):
    grey = np.array([[0, 64, 128, 255]] * 3, np.uint8)
    if mode in ("I", "I;16B"):
        im = Image.fromarray(grey.astype(np.int32) * 257).convert(mode) if mode == "I" else \
            Image.frombuffer(mode, (4, 3), (grey.astype(">u2") * 257).tobytes(), "raw", mode, 0, 1)
        expected = grey / 255
    elif mode == "F":
        im = Image.fromarray(grey.astype(np.float32) / 255)
        expected = grey / 255
    elif mode == "1":
        im = Image.fromarray(grey > 100)
        expected = (grey > 100).astype(np.float32)
    else:
        im = Image.fromarray(grey).convert(mode)
        expected = grey / 255
    path = tmp_path / f"x.{fmt.lower()}"
    im.save(path, fmt)
    assert Image.open(path).mode == mode
    image = read_image(path)
    assert image.shape == (3, 3, 4) and 0 <= float(image.min()) and float(image.max()) <= 1
    if fmt != "JPEG":                       # lossy
        assert torch.allclose(image.mean(0), torch.tensor(expected, dtype=torch.float32), atol=2 / 255)


def test_sixteen_bit_mask_thresholds_at_half_its_range(tmp_path):
    Image.fromarray(np.array([[0, 20000, 40000, 65535]], np.uint16)).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").tolist() == [[False, False, True, True]]


@pytest.mark.parametrize("w, h, message", [(8000, 8000, "64.0 megapixels, over the budget of 50 megapixels"),
                                           (1, 100000, "aspect ratio of 100000:1"),
                                           (2000, 1, "aspect ratio of 2000:1")])
def test_absurd_sizes_are_refused_from_the_header_before_decoding(tmp_path, w, h, message):
    with pytest.raises(DataError, match=message):     # the file holds no pixels: decoding would fail otherwise
        read_image(png_header(tmp_path / "x.png", w, h))


def test_the_budget_is_settable_by_argument_and_environment(tmp_path, monkeypatch):
    Image.new("RGB", (100, 50)).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").shape == (3, 50, 100)
    with pytest.raises(DataError, match="over the budget of 0.004 megapixels"):
        read_image(tmp_path / "a.png", max_pixels=4000)
    with pytest.raises(DataError, match="aspect ratio of 2:1, over the limit of 1.5:1"):
        read_image(tmp_path / "a.png", max_aspect=1.5)
    monkeypatch.setenv("SYCAM_MAX_PIXELS", "4000")
    with pytest.raises(DataError, match="SYCAM_MAX_PIXELS"):
        read_image(tmp_path / "a.png")
    monkeypatch.setenv("SYCAM_MAX_PIXELS", "100000000")          # allowed now: decoding is tried (and fails)
    with pytest.raises(DataError, match="unreadable image"):
        read_image(png_header(tmp_path / "x.png", 8000, 8000))
    monkeypatch.setenv("SYCAM_MAX_PIXELS", "lots")
    with pytest.raises(DataError, match="SYCAM_MAX_PIXELS='lots' must be a positive number"):
        read_image(tmp_path / "a.png")
