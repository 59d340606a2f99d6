"""Property-based tests (Hypothesis) of the one image reader and the scorer (issue 16): random bytes,
mutated real files (cut, bit-flipped, header sizes rewritten) and valid-but-odd images (odd dtypes,
1, 3 or 4 channels, 1 x 1, 16-bit, float with NaN) must give an 8-bit BGR image or a
:class:`~edge.sources.SourceError`, never another exception; whatever the reader gives, the scorer
scores or abstains without raising. The long run is ``tests/fuzz_image_reader.py``."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge.sources import SourceError, decode_image, to_bgr8
from tests.fuzz_image_reader import SEED_FORMATS, check_decode, mutate, seed_corpus

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAGIC = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"II+\x00",
    b"RIFF\x00\x00\x00\x00WEBP",
]


@SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    check_decode(data)


@SETTINGS
@given(st.sampled_from(MAGIC), st.binary(max_size=2048))
def test_random_bytes_behind_a_real_magic_number(magic: bytes, tail: bytes) -> None:
    check_decode(magic + tail)


@pytest.fixture(scope="module")
def corpus() -> list[bytes]:
    return seed_corpus()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.randoms(use_true_random=False))
def test_mutated_real_files(corpus: list[bytes], rnd) -> None:
    check_decode(mutate(rnd.choice(corpus), rnd))


DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.float16, np.float32, np.float64, np.bool_]


@st.composite
def odd_images(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(DTYPES))
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    ch = draw(st.sampled_from([None, 1, 3, 4]))
    shape = (h, w) if ch is None else (h, w, ch)
    elements = None
    if np.issubdtype(dtype, np.floating):
        elements = st.floats(allow_nan=True, allow_infinity=True, width=np.dtype(dtype).itemsize * 8)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@SETTINGS
@given(odd_images())
def test_to_bgr8_on_odd_arrays(img: np.ndarray) -> None:
    try:
        out = to_bgr8(img, "x")
    except SourceError as e:
        assert np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).any(), e
        return
    assert out.dtype == np.uint8 and out.shape == (*img.shape[:2], 3)


@SETTINGS
@given(odd_images(), st.sampled_from(SEED_FORMATS))
def test_encoded_odd_images_read_back(img: np.ndarray, ext: str) -> None:
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    try:
        ok, buf = cv2.imencode(ext, img)
    except cv2.error:
        return  # this codec cannot hold this dtype/layout at all: nothing to read back
    if not ok:
        return
    check_decode(buf.tobytes())


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("onnxruntime")
    from edge.predictor import Predictor, load_model
    from edge.quality import frame_quality
    from edge.scales import RGS
    from tests.tiny_onnx import build_tiny_onnx

    path = build_tiny_onnx(tmp_path_factory.mktemp("fz") / "m.onnx", RGS, imgsz=160, cell=8, box=24)
    m = load_model(path, threads=1)
    yield Predictor(m, quality_fn=frame_quality)
    m.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(odd_images())
def test_scorer_takes_whatever_the_reader_gives(predictor, img: np.ndarray) -> None:
    try:
        bgr = to_bgr8(img, "x")
    except SourceError:
        return
    res = predictor([bgr], ["x"])[0]
    assert (res.score is None) == (res.abstained is not None)
    assert res.score is None or np.isfinite(res.score)


def test_decode_image_examples() -> None:
    """The properties above hold for the corpus itself (every seed decodes)."""
    for data in seed_corpus():
        out = decode_image(data, "seed")
        assert out.dtype == np.uint8 and out.ndim == 3


@pytest.mark.slow
def test_fuzz_the_reader_for_two_minutes() -> None:
    """``GRIMACE_FUZZ_SECONDS`` (default 120) of mutation fuzzing; prints the number of cases."""
    import os

    from tests.fuzz_image_reader import fuzz

    n, decoded = fuzz(float(os.environ.get("GRIMACE_FUZZ_SECONDS", "120")))
    print(f"{n} cases, {decoded} decoded")
    assert n > 0
