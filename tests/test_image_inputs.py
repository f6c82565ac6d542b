"""fairgate.inputs.image against references written here: NumPy (the pixels themselves when no
resize is asked, ITU-R 601-2 luma, the normalisation in float64) and Pillow called directly for
the resampling filters; real PNG files.

The uint8 stage is compared bitwise (scale 1, mean 0, std 1 makes the output the pixels
themselves); the normalisation within 1e-6 of a float64 reference.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from fairgate.errors import DataError, PolicyError, UsageError
from fairgate.inputs.image import FORMATS, ImageSettings, decode_images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZES = [(30, 40), (7, 5), (16, 16), (33, 17), (64, 9)]  # (h, w) of the source images
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)).save(buf, "PNG")
    return buf.getvalue()


def random_pixels(seed: int, sizes: list[tuple[int, int]] = SIZES) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def identity(channels: str = "RGB", size: tuple[int, int] = (12, 10), **kw) -> ImageSettings:
    """Settings whose output is the uint8 pixels themselves, as float32."""
    c = 1 if channels == "L" else 3
    return ImageSettings("img", size, (0.0,) * c, (1.0,) * c, channels=channels,  # type: ignore[arg-type]
                         scale=1.0, **kw)


def binary(blobs: list[bytes | None]) -> pa.Array:
    return pa.array(blobs, pa.binary())


# ------------------------------------------------------------------------ references


def luma(a: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma L = R 299/1000 + G 587/1000 + B 114/1000, rounded (Pillow's documented
    RGB → L conversion), in NumPy integers."""
    x = a.astype(np.int64)
    return ((x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def pillow_reference(blob: bytes, channels: str, size: tuple[int, int], resample: str) -> np.ndarray:
    """Pillow called directly: decode, convert, resize; uint8 [H, W, C]."""
    img = Image.open(io.BytesIO(blob)).convert("L" if channels == "L" else "RGB")
    out = np.asarray(img.resize((size[1], size[0]), RESAMPLE[resample]))
    out = out.reshape(size[0], size[1], -1)
    return out[:, :, ::-1] if channels == "BGR" else out


def normalised(pixels: np.ndarray, scale: float, mean, std) -> np.ndarray:
    """(x * scale - mean) / std in float64, NHWC."""
    return (pixels.astype(np.float64) * scale - np.asarray(mean)) / np.asarray(std)


# ------------------------------------------------------------------------ preprocessing


@pytest.mark.parametrize("resample", sorted(RESAMPLE))
@pytest.mark.parametrize("channels", ["RGB", "BGR", "L"])
def test_uint8_stage_is_pillow_bitwise(resample: str, channels: str) -> None:
    blobs = [png(a) for a in random_pixels(1)]
    settings = identity(channels, resample=resample, layout="NHWC")
    out = decode_images(binary(blobs), settings, root=None, offset=0)
    expected = np.stack([pillow_reference(b, channels, (12, 10), resample) for b in blobs])
    assert out.dtype == np.float32
    assert out.shape == (len(blobs), 12, 10, 1 if channels == "L" else 3)
    assert np.array_equal(out, expected.astype(np.float32))


def test_same_size_is_the_pixels_themselves() -> None:
    """No resampling when the size is the image's own: the output is the decoded array."""
    pixels = random_pixels(2, [(12, 10)] * 4)
    for resample in RESAMPLE:
        settings = identity(resample=resample, layout="NHWC")
        out = decode_images(binary([png(a) for a in pixels]), settings, root=None, offset=0)
        assert np.array_equal(out, np.stack(pixels).astype(np.float32))


def test_luma_matches_itu_601() -> None:
    pixels = random_pixels(3, [(12, 10)] * 4)
    out = decode_images(binary([png(a) for a in pixels]), identity("L", layout="NHWC"), root=None, offset=0)
    assert np.array_equal(out, np.stack([luma(a)[..., None] for a in pixels]).astype(np.float32))


def test_bgr_reverses_rgb() -> None:
    pixels = random_pixels(4, [(12, 10)] * 4)
    blobs = [png(a) for a in pixels]
    bgr = decode_images(binary(blobs), identity("BGR", layout="NHWC"), root=None, offset=0)
    assert np.array_equal(bgr, np.stack(pixels)[..., ::-1].astype(np.float32))
    resized = decode_images(binary(blobs), identity("BGR", size=(5, 7), layout="NHWC"), root=None, offset=0)
    rgb = decode_images(binary(blobs), identity("RGB", size=(5, 7), layout="NHWC"), root=None, offset=0)
    assert np.array_equal(resized, rgb[..., ::-1])


@pytest.mark.parametrize("channels, mean, std", [
    ("RGB", IMAGENET_MEAN, IMAGENET_STD),
    ("BGR", IMAGENET_MEAN[::-1], IMAGENET_STD[::-1]),
    ("L", (0.5,), (0.25,)),
])
def test_normalisation_within_1e6_of_float64(channels: str, mean, std) -> None:
    blobs = [png(a) for a in random_pixels(5)]
    settings = ImageSettings("img", (12, 10), mean, std, layout="NHWC", channels=channels)
    out = decode_images(binary(blobs), settings, root=None, offset=0)
    pixels = np.stack([pillow_reference(b, channels, (12, 10), "bilinear") for b in blobs])
    expected = normalised(pixels, 1 / 255, mean, std)
    assert out.dtype == np.float32
    assert np.abs(out - expected).max() <= 1e-6


def test_scale_is_applied_before_mean() -> None:
    pixels = np.stack(random_pixels(6, [(6, 6)] * 3))
    settings = ImageSettings("img", (6, 6), (10.0, 20.0, 30.0), (2.0, 4.0, 8.0), layout="NHWC",
                             scale=0.5)
    out = decode_images(binary([png(a) for a in pixels]), settings, root=None, offset=0)
    assert np.abs(out - normalised(pixels, 0.5, settings.mean, settings.std)).max() <= 1e-6


@pytest.mark.parametrize("channels", ["RGB", "L"])
def test_nchw_is_nhwc_transposed(channels: str) -> None:
    c = 1 if channels == "L" else 3
    blobs = [png(a) for a in random_pixels(7)]
    common = dict(mean=(0.5,) * c, std=(0.2,) * c, channels=channels)
    nhwc = decode_images(binary(blobs), ImageSettings("img", (12, 10), layout="NHWC", **common),
                         root=None, offset=0)
    nchw = decode_images(binary(blobs), ImageSettings("img", (12, 10), layout="NCHW", **common),
                         root=None, offset=0)
    assert nhwc.shape == (len(blobs), 12, 10, c)
    assert nchw.shape == (len(blobs), c, 12, 10)
    assert nchw.flags.c_contiguous and nhwc.flags.c_contiguous
    assert np.array_equal(nchw, nhwc.transpose(0, 3, 1, 2))


def test_settings_shape() -> None:
    assert ImageSettings("x", (4, 5), IMAGENET_MEAN, IMAGENET_STD).shape == (3, 4, 5)
    assert ImageSettings("x", (4, 5), (0.0,), (1.0,), layout="NHWC", channels="L").shape == (4, 5, 1)


def test_modes_other_than_rgb_are_converted() -> None:
    """RGBA drops alpha, P expands its palette, L is replicated to RGB: as Pillow's convert."""
    a = random_pixels(8, [(10, 10)])[0]
    blobs = [png(a, "RGBA"), png(a, "P"), png(a, "L"), png(a)]
    out = decode_images(binary(blobs), identity(size=(10, 10), layout="NHWC"), root=None, offset=0)
    for got, blob in zip(out, blobs, strict=True):
        ref = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
        assert np.array_equal(got, ref.astype(np.float32))
    assert np.array_equal(out[0], a.astype(np.float32))  # same size: no resampling at all


# ------------------------------------------------------------------------ paths vs bytes


def write_images(folder: Path, pixels: list[np.ndarray], sub: str = "images") -> list[str]:
    (folder / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for i, a in enumerate(pixels):
        name = f"{sub}/{i:03d}.png"
        (folder / name).write_bytes(png(a))
        names.append(name)
    return names


@pytest.mark.parametrize("typ", [pa.string(), pa.large_string()])
def test_paths_and_bytes_give_identical_arrays(tmp_path: Path, typ: pa.DataType) -> None:
    pixels = random_pixels(9)
    names = write_images(tmp_path, pixels)
    settings = ImageSettings("img", (12, 10), IMAGENET_MEAN, IMAGENET_STD)
    from_paths = decode_images(pa.array(names, typ), settings, root=tmp_path, offset=0)
    from_bytes = decode_images(pa.array([png(a) for a in pixels], pa.large_binary()), settings,
                               root=None, offset=0)
    assert np.array_equal(from_paths, from_bytes)
    chunked = pa.chunked_array([pa.array(names[:2], typ), pa.array(names[2:], typ)])
    assert np.array_equal(decode_images(chunked, settings, root=tmp_path, offset=0), from_bytes)
    dictionary = pa.array(names, typ).dictionary_encode()
    assert np.array_equal(decode_images(dictionary, settings, root=tmp_path, offset=0), from_bytes)


def test_symlink_inside_the_folder_is_followed(tmp_path: Path) -> None:
    pixels = random_pixels(10, [(8, 8)])
    write_images(tmp_path, pixels)
    (tmp_path / "alias.png").symlink_to(tmp_path / "images" / "000.png")
    settings = identity(size=(8, 8), layout="NHWC")
    out = decode_images(pa.array(["alias.png", "./images/000.png"]), settings, root=tmp_path, offset=0)
    assert np.array_equal(out[0], pixels[0].astype(np.float32))
    assert np.array_equal(out[1], pixels[0].astype(np.float32))


def test_audit_folder_reached_through_a_symlink(tmp_path: Path) -> None:
    pixels = random_pixels(10, [(8, 8)])
    write_images(tmp_path / "real", pixels)
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    out = decode_images(pa.array(["images/000.png"]), identity(size=(8, 8), layout="NHWC"),
                        root=tmp_path / "linked", offset=0)
    assert np.array_equal(out[0], pixels[0].astype(np.float32))


# ------------------------------------------------------------------------ threads and order


def distinct_images(n: int) -> tuple[list[bytes], list[np.ndarray]]:
    """n images of different sizes (so decode times differ) whose pixels depend on the row."""
    rng = np.random.default_rng(11)
    pixels = [rng.integers(0, 256, (int(rng.integers(4, 200)), int(rng.integers(4, 200)), 3),
                           dtype=np.uint8) for _ in range(n)]
    return [png(a) for a in pixels], pixels


def test_thread_pool_keeps_input_order() -> None:
    blobs, _ = distinct_images(60)
    settings = identity(size=(6, 7), resample="nearest", layout="NHWC")
    out = decode_images(binary(blobs), settings, root=None, offset=0, workers=4)
    expected = np.stack([pillow_reference(b, "RGB", (6, 7), "nearest") for b in blobs])
    assert np.array_equal(out, expected.astype(np.float32))


@pytest.mark.parametrize("workers", [2, 3, 4, 8, 100])
def test_workers_do_not_change_the_result(workers: int) -> None:
    blobs, _ = distinct_images(37)
    settings = ImageSettings("img", (9, 9), IMAGENET_MEAN, IMAGENET_STD, resample="lanczos")
    one = decode_images(binary(blobs), settings, root=None, offset=0, workers=1)
    assert np.array_equal(decode_images(binary(blobs), settings, root=None, offset=0, workers=workers), one)


@pytest.mark.parametrize("workers", [1, 4])
def test_first_bad_row_is_named_whatever_the_workers(workers: int) -> None:
    blobs, _ = distinct_images(40)
    blobs[9] = b"not an image"
    blobs[33] = b"not one either"
    with pytest.raises(DataError, match=r"^image column 'img': row 1009: not an image"):
        decode_images(binary(blobs), identity(), root=None, offset=1000, workers=workers)


def test_a_bad_image_before_an_unreadable_file_is_the_one_named(tmp_path: Path) -> None:
    # files are read first, then decoded: the first bad row wins whichever phase finds it
    names = write_images(tmp_path, random_pixels(5, [(5, 5)] * 4))
    (tmp_path / names[1]).write_bytes(b"not a png")
    column = pa.array([names[0], names[1], names[2], "images/missing.png", names[3]])
    assert refused(column, tmp_path, offset=0).startswith(
        "image column 'img': row 1: 'images/001.png': not an image")
    (tmp_path / names[1]).write_bytes(png(random_pixels(6, [(5, 5)])[0]))
    assert "row 3: 'images/missing.png'" in refused(column, tmp_path, offset=0)


@pytest.mark.parametrize(("pool_bytes", "pooled"), [(10**9, False), (1, True)])
def test_small_images_decode_on_this_thread_large_ones_in_the_pool(
        monkeypatch: pytest.MonkeyPatch, pool_bytes: int, pooled: bool) -> None:
    import fairgate.inputs.image as image

    made: list[int] = []
    real = image.ThreadPoolExecutor

    def spy(max_workers: int, **kw: object) -> object:
        made.append(max_workers)
        return real(max_workers=max_workers, **kw)

    monkeypatch.setattr(image, "ThreadPoolExecutor", spy)
    monkeypatch.setattr(image, "POOL_BYTES", pool_bytes)
    blobs, _ = distinct_images(12)
    out = decode_images(binary(blobs), identity(size=(6, 7)), root=None, offset=0)
    assert made == ([image.WORKERS] if pooled else [])
    expected = np.stack([pillow_reference(b, "RGB", (6, 7), "bilinear") for b in blobs])
    assert np.array_equal(out, expected.transpose(0, 3, 1, 2).astype(np.float32))


def test_empty_batch() -> None:
    out = decode_images(binary([]), ImageSettings("img", (4, 5), IMAGENET_MEAN, IMAGENET_STD),
                        root=None, offset=0)
    assert out.shape == (0, 3, 4, 5) and out.dtype == np.float32


# ------------------------------------------------------------------------ refusals

NOT_IMAGE = ("not an image Pillow can open as one of " + ", ".join(FORMATS))


def refused(values: pa.Array, root: Path | None, offset: int = 40) -> str:
    with pytest.raises(DataError) as e:
        decode_images(values, identity(), root=root, offset=offset)
    return str(e.value)


def test_undecodable_bytes() -> None:
    good = png(random_pixels(12, [(5, 5)])[0])
    assert refused(binary([good, good, b"\x89PNG garbage"]), None) == (
        f"image column 'img': row 42: {NOT_IMAGE}")


def test_truncated_image() -> None:
    blob = png(random_pixels(13, [(64, 64)])[0])
    assert refused(binary([blob[:300]]), None) == (
        "image column 'img': row 40: the image does not decode: image file is truncated")


def test_format_outside_the_list_is_refused() -> None:
    buf = io.BytesIO()
    Image.fromarray(random_pixels(14, [(8, 8)])[0]).save(buf, "PCX")  # Pillow can read PCX
    assert Image.open(io.BytesIO(buf.getvalue())).format == "PCX"
    assert refused(binary([buf.getvalue()]), None) == f"image column 'img': row 40: {NOT_IMAGE}"


def test_null_bytes_and_null_path(tmp_path: Path) -> None:
    assert refused(binary([png(random_pixels(15, [(5, 5)])[0]), None]), None) == (
        "image column 'img': row 41 is null")
    write_images(tmp_path, random_pixels(15, [(5, 5)]))
    assert refused(pa.array([None, "images/000.png"]), tmp_path) == "image column 'img': row 40 is null"


def test_missing_file(tmp_path: Path) -> None:
    names = write_images(tmp_path, random_pixels(16, [(5, 5)]))
    assert refused(pa.array([names[0], "images/nope.png"]), tmp_path) == (
        "image column 'img': row 41: 'images/nope.png': image file not found")


@pytest.mark.parametrize("path", ["images", ".", "images/"])
def test_directory_is_not_an_image(tmp_path: Path, path: str) -> None:
    write_images(tmp_path, random_pixels(16, [(5, 5)]))
    assert refused(pa.array([path]), tmp_path) == (
        f"image column 'img': row 40: {path!r}: is a directory, expected an image file")


@pytest.mark.parametrize("path", ["/etc/passwd", "//server/share/x.png", "C:\\x.png", "c:x.png",
                                  "\\x.png"])
def test_absolute_paths(tmp_path: Path, path: str) -> None:
    assert refused(pa.array([path]), tmp_path) == (
        f"image column 'img': row 40: {path!r}: an absolute path; image paths are relative to the "
        "audit set's folder")


@pytest.mark.parametrize("path", ["../outside.png", "images/../../outside.png", "images/..",
                                  "..\\outside.png"])
def test_dot_dot_escapes(tmp_path: Path, path: str) -> None:
    inside = tmp_path / "audit"
    write_images(inside, random_pixels(17, [(5, 5)]))
    (tmp_path / "outside.png").write_bytes(png(random_pixels(17, [(5, 5)])[0]))
    assert refused(pa.array([path]), inside) == (
        f"image column 'img': row 40: {path!r}: the path leaves the audit set's folder ('..')")


def test_symlink_out_of_the_folder(tmp_path: Path) -> None:
    inside = tmp_path / "audit"
    write_images(inside, random_pixels(18, [(5, 5)]))
    (tmp_path / "secret.png").write_bytes(png(random_pixels(18, [(5, 5)])[0]))
    (inside / "images" / "link.png").symlink_to(tmp_path / "secret.png")
    (inside / "dirlink").symlink_to(tmp_path)
    for path in ("images/link.png", "dirlink/secret.png"):
        assert refused(pa.array(["images/000.png", path]), inside) == (
            f"image column 'img': row 41: {path!r}: the path leaves the audit set's folder "
            "(a symlink out)")


def test_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert refused(pa.array(["a"]), tmp_path).startswith(
        "image column 'img': row 40: 'a': ")


def test_path_column_without_a_folder() -> None:
    assert refused(pa.array(["images/000.png"]), None) == (
        "image column 'img' holds file paths, but this audit set has no folder to resolve them in "
        "(it is in memory): give the images as bytes (a binary column) or read the audit set "
        "from a file")


def test_wrong_column_type() -> None:
    assert refused(pa.array([1, 2]), None) == (
        "image column 'img' has type int64; it must hold file paths (string) or image bytes (binary)")


def test_hostile_path_is_shown_inert(tmp_path: Path) -> None:
    message = refused(pa.array(["x\n::error::owned\u202e.png"]), tmp_path)
    assert "\n" not in message and "\u202e" not in message
    assert message == "image column 'img': row 40: 'x\\n::error::owned\\u202e.png': image file not found"


def test_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's limit is kept (here lowered so a test image is over it): over 2x Pillow raises,
    between 1x and 2x it warns (an error under this suite's warning filter): a DataError."""
    blob = png(random_pixels(19, [(40, 40)])[0])  # 1,600 pixels
    for limit in (1000, 500):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        assert refused(binary([blob]), None).startswith(
            f"image column 'img': row 40: over Pillow's decompression-bomb limit of {limit:,} pixels (")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1600)
    assert decode_images(binary([blob]), identity(), root=None, offset=0).shape == (1, 3, 12, 10)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused_where_pillow_only_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under Python's default filter Pillow's warning is only printed: fairgate refuses anyway."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert refused(binary([png(random_pixels(19, [(40, 40)])[0])]), None) == (
        "image column 'img': row 40: over Pillow's decompression-bomb limit of 1,000 pixels (40 x 40)")


@pytest.mark.parametrize("kw, message", [
    (dict(mean=(0.5, 0.5), std=IMAGENET_STD), "mean has 2 value(s); channels RGB has 3"),
    (dict(mean=IMAGENET_MEAN, std=(0.2,)), "std has 1 value(s); channels RGB has 3"),
    (dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, channels="L"), "mean has 3 value(s); channels L has 1"),
    (dict(mean=IMAGENET_MEAN, std=(0.2, 0.0, 0.2)), "std must not be 0 (it divides), not [0.2, 0.0, 0.2]"),
    (dict(mean=(0.5, float("nan"), 0.5), std=IMAGENET_STD),
     "mean must be finite numbers, not [0.5, nan, 0.5]"),
    (dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, size=(0, 4)), "size must be [H, W], two positive integers, "
                                                                "not [0, 4]"),
    (dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, layout="CHW"), "layout must be NCHW or NHWC, not 'CHW'"),
    (dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, channels="RGBA"), "channels must be one of RGB, BGR, L, "
                                                                  "not 'RGBA'"),
    (dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, resample="box"), "resample must be one of bilinear, bicubic, "
                                                                 "nearest, lanczos, not 'box'"),
    (dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, scale=float("inf")), "scale must be a finite non-zero "
                                                                     "number, not inf"),
])
def test_impossible_settings_are_a_policy_error(kw: dict, message: str) -> None:
    kw.setdefault("size", (4, 4))
    with pytest.raises(PolicyError) as e:
        ImageSettings("img", **kw)
    assert str(e.value) == f"image input of column 'img': {message}"
    assert e.value.exit_code == 2


def test_without_pillow_is_exit_2_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = png(random_pixels(20, [(5, 5)])[0])
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now raises ImportError
    with pytest.raises(UsageError) as e:
        decode_images(binary([blob]), identity(), root=None, offset=0)
    assert str(e.value) == ("image inputs (model.inputs.image) need Pillow, which is not installed here: "
                            "pip install 'fairgate[image]'")
    assert e.value.exit_code == 2


def test_fifo_is_not_read(tmp_path: Path) -> None:
    """A FIFO among the images would block the gate forever; it is refused without opening."""
    os.mkfifo(tmp_path / "pipe.png")
    assert refused(pa.array(["pipe.png"]), tmp_path) == (
        "image column 'img': row 40: 'pipe.png': not a regular file (a FIFO), expected an image file")
