"""The stress set's scores: what "holds" means, on outputs whose behaviour is known by construction."""

from __future__ import annotations

import numpy as np

from elan_deploy.stress import CLASSES, score_raw_outputs, stress_set

SCALE = 4


def nearest(image: np.ndarray) -> np.ndarray:
    """A pixel-replicating upscale: flat regions stay exactly their colour, nothing leaves 0..255."""
    return image.astype(np.float32).repeat(SCALE, axis=0).repeat(SCALE, axis=1)


def speckled(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """What an exploding network paints: large coloured values scattered over flat paper."""
    out = nearest(image)
    rng = np.random.default_rng(seed)
    mask = rng.random(out.shape[:2]) < 0.3
    out[mask] = rng.uniform(-600, 900, size=(int(mask.sum()), 3))
    return out


def test_the_set_is_deterministic_and_covers_every_class() -> None:
    first, second = stress_set(SCALE, per_class=1), stress_set(SCALE, per_class=1)
    assert [i.kind for i in first] == list(CLASSES)
    assert all(np.array_equal(a.lr, b.lr) and np.array_equal(a.hr, b.hr) for a, b in zip(first, second))
    assert all(i.hr.shape[:2] == (i.lr.shape[0] * SCALE, i.lr.shape[1] * SCALE) == (i.hr_lr.shape[0] * SCALE, i.hr_lr.shape[1] * SCALE) for i in first)


def test_a_clean_upscale_holds_and_an_exploding_one_fails_for_each_reason() -> None:
    images = stress_set(SCALE, per_class=1)
    clean = [nearest(i.lr) for i in images]
    scores = score_raw_outputs(images, clean, SCALE, reference=clean)
    assert scores.failures("fp32") == [] and scores.worst_fidelity_db == float("inf")
    assert scores.flat_share["text"] == scores.flat_share["qr"] == 1.0 and 0 <= scores.raw_min <= scores.raw_max <= 255

    exploded = score_raw_outputs(images, [speckled(i.lr, n) for n, i in enumerate(images)], SCALE, reference=clean)
    reasons = exploded.failures("int8")
    assert exploded.raw_min < -64 and exploded.raw_max > 320 and exploded.flat_share["text"] < 0.99
    assert any(r.startswith("raw output") for r in reasons) and any(r.startswith("text") for r in reasons)
    assert any(r.startswith("qr") for r in reasons) and any("dB from guarded fp32 < 30" in r for r in reasons)


def test_fp32_is_held_to_a_higher_fidelity_than_reduced_precisions() -> None:
    images = stress_set(SCALE, per_class=1)
    clean = [nearest(i.lr) for i in images]
    noisy = [c + np.random.default_rng(n).normal(0, 2.0, c.shape).astype(np.float32) for n, c in enumerate(clean)]
    scores = score_raw_outputs(images, noisy, SCALE, reference=clean)
    assert 30 < scores.worst_fidelity_db < 45  # about 42 dB: enough for fp16, not for an fp32 engine
    assert scores.failures("fp16") == [] and scores.failures("fp32") == [f"{scores.worst_fidelity_db:.1f} dB from guarded fp32 < 45"]


def test_non_finite_output_is_a_failure_not_a_range() -> None:
    images = stress_set(SCALE, per_class=1)
    outputs = [nearest(i.lr) for i in images]
    outputs[0][0, 0, 0] = np.nan
    scores = score_raw_outputs(images, outputs, SCALE)
    assert np.isnan(scores.raw_min) and scores.flat_share == {} and scores.failures("fp32") == ["non-finite output"]
