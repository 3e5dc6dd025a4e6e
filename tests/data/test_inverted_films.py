"""Inverted films (white background) are found and put right: real films of the RSNA export, and phantoms.

The six RSNA files were checked by eye: three with a white background (a MONOCHROME1 film
exported without its inversion), three the right way round, among them dense breasts and an
implant that touch the frame (the hard cases for a frame-based rule).
"""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from mammojax.data.preprocess import looks_inverted, preprocess_image
from paths import RSNA_ARCHIVE

INVERTED = ("benign/1853_1088475095_png.rf.1951dd29236a3036cd082a08e4172fad.jpg",
            "benign/1899_1646088879_png.rf.cb46d06d197b26d8e7a8d4ffa10e306a.jpg",
            "benign/1899_1973292874_png.rf.03285eaa733c7718614a40c72d20b260.jpg")
UPRIGHT = ("benign/126_1935916379_png.rf.3c4fe60fd5cd8da462ea9a863ff10ed0.jpg",
           "benign/1674_621776904_png.rf.4e5bf3fca102e2b7498f8629d6d5369e.jpg",  # dense, touches the frame
           "benign/1939_1244895701_png.rf.2ea0ff65f6bdb86833e333be1759cbe1.jpg")  # implant


@pytest.fixture(scope="module")
def rsna_films() -> dict:
    if not RSNA_ARCHIVE.is_file():
        pytest.skip(f"RSNA export not found at {RSNA_ARCHIVE}")
    wanted = {f"rsna-screening/{name}": name for name in INVERTED + UPRIGHT}
    films = {}
    with tarfile.open(RSNA_ARCHIVE) as archive:
        for member in archive:
            if member.name in wanted:
                data = archive.extractfile(member).read()
                films[wanted[member.name]] = np.asarray(Image.open(io.BytesIO(data)).convert("L"), np.float32)
                if len(films) == len(wanted):
                    break
    return films


def test_real_inverted_films_are_found_and_upright_ones_left_alone(rsna_films):
    assert [looks_inverted(rsna_films[name]) for name in INVERTED] == [True] * 3
    assert [looks_inverted(rsna_films[name]) for name in UPRIGHT] == [False] * 3


def test_a_fixed_film_is_the_inverse_and_reads_like_an_upright_one(rsna_films):
    film = rsna_films[INVERTED[0]]
    fixed = preprocess_image(film, image_size=64, fix_inverted=True)
    assert fixed.geometry.inverted
    by_hand = preprocess_image(film.max() + film.min() - film, image_size=64)
    np.testing.assert_array_equal(fixed.image, by_hand.image)
    # The background is now the darkest part, as in an upright film: the frame sits at the minimum.
    plane = fixed.image[..., 0]
    assert np.median(np.r_[plane[0], plane[-1]]) < plane.mean() and not looks_inverted(plane)
    assert not preprocess_image(rsna_films[UPRIGHT[1]], image_size=64, fix_inverted=True).geometry.inverted


def test_noise_and_constant_images_are_never_called_inverted():
    rng = np.random.default_rng(0)
    assert not looks_inverted(rng.uniform(0, 255, size=(200, 160)))
    assert not looks_inverted(np.full((50, 40), 7.0))
    phantom = np.zeros((120, 100), np.float32)
    phantom[20:100, :60] = 180.0  # a breast against the left edge, dark background
    assert not looks_inverted(phantom) and looks_inverted(255.0 - phantom)
