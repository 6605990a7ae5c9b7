"""The NumPy pre/post steps around the network: the reference model's reflect pad, bad requests and NaN refused."""

from __future__ import annotations

import numpy as np
import pytest


def test_pre_pad_is_the_reference_models_reflect_pad():
    """The one padding (prepost, shared with the Upscaler) equals ELAN's own `F.pad(mode="reflect")`
    wherever that is defined, and mirrors repeatedly for images smaller than the pad."""
    import torch
    import torch.nn.functional as F

    from elan_deploy.serve.prepost import pad_reflect, round_up

    rng = np.random.default_rng(0)
    for h, w in ((17, 33), (48, 64), (9, 20), (5, 40), (1, 1)):
        image = rng.integers(0, 256, (h, w, 3)).astype(np.float32)
        padded = pad_reflect(image, round_up(h), round_up(w))
        assert padded.shape == (round_up(h), round_up(w), 3) and np.array_equal(padded[:h, :w], image)
        if round_up(h) - h < h and round_up(w) - w < w:  # one reflection: torch defines it
            chw = torch.from_numpy(image).permute(2, 0, 1)[None]
            expected = F.pad(chw, (0, round_up(w) - w, 0, round_up(h) - h), mode="reflect")[0].permute(1, 2, 0).numpy()
            assert np.array_equal(padded, expected)


@pytest.mark.parametrize(
    "batch, message",
    [
        (np.zeros((1, 8, 8, 3), np.float32), "UINT8"),
        (np.zeros((8, 8, 3), np.uint8), "rank 4"),
        (np.zeros((1, 8, 8, 4), np.uint8), "3 channels"),
        (np.zeros((1, 0, 8, 3), np.uint8), "zero-size"),
        (np.zeros((2, 64, 64, 3), np.uint8), "over this server's limit"),
    ],
)
def test_pre_refuses_bad_requests(batch, message):
    from elan_deploy.serve.prepost import BadRequest, preprocess

    with pytest.raises(BadRequest, match=message):
        preprocess(batch, max_pixels=4096)


def test_post_refuses_nan():
    from elan_deploy.serve.prepost import BadRequest, postprocess

    sr = np.zeros((1, 3, 64, 64), np.float32)
    sr[0, 0, 3, 3] = np.nan
    with pytest.raises(BadRequest, match="NaN"):
        postprocess(sr, np.array([[16, 16]], np.int32))
