"""Each export rewrite on its own, against the reference piece of `elan_deploy.model.elan` it replaces.

Inputs are crops of real photos (never uniform noise: ELAN's unscaled softmax(q·qᵀ) blows noise
up to ~1e5). Features are produced by the reference head so the rewrites see realistic values.

Numeric bounds scale with the magnitude of the values and with how many products a sum adds up
(`float32_bound`): float32 kernels accumulate in an ISA-dependent order (AVX2, AVX-512, AMX),
so an absolute bound that holds on one CPU fails on another. Pure data movement is checked
for exact equality.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from elan_deploy.errors import ElanDeployError
from elan_deploy.export import ATTENTION_STRATEGIES, SHIFT_STRATEGIES, WINDOW_STRATEGIES, build_deploy_model
from elan_deploy.export.rewrites.window_gather import GatherGMSA, window_index, window_indices
from elan_deploy.export.rewrites import (
    DeployGMSA,
    build_shift_conv,
    fold_batchnorm,
    fold_output_affine,
    input_offset,
    merge_windows,
    partition_windows,
    static_roll,
)
from elan_deploy.export.rewrites.shift_conv import shift_runs
from elan_deploy.export.rewrites.windows import merge_windows_rank4, partition_windows_rank4
from elan_deploy.model import load_bundled
from elan_deploy.model.elan import ELAN, ShiftConv2d1, shift_kernel, window_merge, window_partition
from tests.helpers import natural_batch as natural_array


def natural_batch(batch: int, height: int, width: int) -> torch.Tensor:
    """N,3,H,W float32 0..255 crops of T91/t46.png (508x233), a different crop per sample."""
    return torch.from_numpy(natural_array(batch, height, width))


@pytest.fixture(scope="module")
def reference() -> ELAN:
    return load_bundled().model


@pytest.fixture(scope="module")
def features(reference: ELAN) -> torch.Tensor:
    """Head features (2,60,20,28) of natural crops; an odd-ish size exercises every border."""
    with torch.no_grad():
        return reference.head(reference.sub_mean(natural_batch(2, 20, 28)))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


FLOAT32_EPS = float(torch.finfo(torch.float32).eps)
# A whole GMSA (projections, unscaled softmax(q·qᵀ), mixing, projection): relative to the largest
# output. The softmax of unscaled logits in the hundreds amplifies rounding: 1.1e-5 was measured
# on AVX-512 (7.5e-4 at outputs near 66), so the bound leaves about 10x room for other ISAs' orders.
GMSA_RELATIVE = 1e-4


def float32_bound(reference: torch.Tensor, terms: int, ulps: float = 4.0) -> float:
    """Allowed max |Δ| between two float32 evaluations of sums of `terms` products.

    Rounding errors of a sum grow like √terms; `ulps` float32 eps per √term at the magnitude of
    the largest reference value (at least 1), so the bound holds whatever the summation order.
    """
    return ulps * FLOAT32_EPS * terms**0.5 * max(1.0, float(reference.abs().max()))


def relative_bound(reference: torch.Tensor, relative: float) -> float:
    return relative * max(1.0, float(reference.abs().max()))


# --- BatchNorm fold -----------------------------------------------------------------------------


def test_fold_batchnorm_matches_conv_then_bn(reference: ELAN, features: torch.Tensor) -> None:
    conv, bn = reference.body[0].modules_gmsa["gmsa_0"].project_inp
    before = {k: v.clone() for k, v in {**conv.state_dict(), **bn.state_dict()}.items()}
    fused = fold_batchnorm(conv, bn)
    with torch.no_grad():
        expected, got = bn(conv(features)), fused(features)
    assert max_diff(got, expected) <= float32_bound(expected, terms=conv.in_channels)
    assert all(torch.equal(before[k], v) for k, v in {**conv.state_dict(), **bn.state_dict()}.items())


def test_fold_batchnorm_nontrivial_stats() -> None:
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(6, 8, 1), nn.BatchNorm2d(8).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-2, 2)
        bn.running_var.uniform_(0.1, 3)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    x = torch.linspace(-3, 3, 6 * 25).reshape(1, 6, 5, 5)
    with torch.no_grad():
        expected = bn(conv(x))
        assert max_diff(fold_batchnorm(conv, bn)(x), expected) <= float32_bound(expected, terms=6)


def test_fold_batchnorm_needs_running_stats() -> None:
    with pytest.raises(ElanDeployError):
        fold_batchnorm(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2, track_running_stats=False))


# --- MeanShift --------------------------------------------------------------------------------


def test_input_offset_is_exact(reference: ELAN) -> None:
    x = natural_batch(1, 16, 24)
    with torch.no_grad():
        assert torch.equal(input_offset(reference.sub_mean)(x), reference.sub_mean(x))


def test_add_mean_folds_into_tail(reference: ELAN, features: torch.Tensor) -> None:
    scale = reference.scale
    folded = fold_output_affine(reference.tail[0], reference.add_mean, scale)
    with torch.no_grad():
        expected = reference.add_mean(reference.tail(features))
        got = nn.functional.pixel_shuffle(folded(features), scale)
    # outputs near 200; a 3x3 conv over 60 channels sums 540 products (AVX2 measured 4.3e-4)
    assert max_diff(got, expected) <= float32_bound(expected, terms=9 * features.shape[1])


def test_output_affine_fold_general_colour_matrix() -> None:
    torch.manual_seed(1)
    tail, colour = nn.Conv2d(5, 3 * 4, 3, padding=1), nn.Conv2d(3, 3, 1)
    x = torch.linspace(0, 1, 5 * 36).reshape(1, 5, 6, 6)
    folded = fold_output_affine(tail, colour, 2)
    with torch.no_grad():
        expected = colour(nn.functional.pixel_shuffle(tail(x), 2))
        assert max_diff(nn.functional.pixel_shuffle(folded(x), 2), expected) <= float32_bound(expected, terms=9 * 5 * 3)


# --- shift-conv ----------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", SHIFT_STRATEGIES)
@pytest.mark.parametrize("where", ["conv0", "conv1"])
def test_shift_strategy_matches_reference(reference: ELAN, features: torch.Tensor, strategy: str, where: str) -> None:
    lfe = reference.body[0].modules_lfe["lfe_0"]
    ref: ShiftConv2d1 = getattr(lfe, where).shift_conv
    x = features if where == "conv0" else torch.relu(lfe.conv0(features)).detach()
    with torch.no_grad():
        expected = ref(x)
        got = build_shift_conv(ref, strategy)(x)
    # depthwise/slice run the same 1x1 conv on the same shifted values; dense sums 9x the products
    terms = x.shape[1] * (9 if strategy == "dense" else 1)
    assert max_diff(got, expected) <= float32_bound(expected, terms=terms)


@pytest.mark.parametrize("strategy", SHIFT_STRATEGIES)
def test_shift_borders_use_zero_padding(strategy: str) -> None:
    """A constant image: interior outputs equal, border outputs lose exactly the missing neighbour."""
    ref = ShiftConv2d1(10, 10)
    with torch.no_grad():
        ref.conv1x1.weight.copy_(torch.eye(10).view(10, 10, 1, 1))
        ref.conv1x1.bias.zero_()
    x = torch.full((1, 10, 5, 7), 3.0)
    with torch.no_grad():
        expected, got = ref(x), build_shift_conv(ref, strategy)(x)
    assert torch.equal(got, expected)
    assert float(expected[0, 0, :, -1].abs().max()) == 0.0  # group 0 reads its right neighbour
    assert float(expected[0, 2, :, 0].abs().max()) == 0.0  # group 1 reads its left neighbour
    assert float(expected[0, 4, -1, :].abs().max()) == 0.0  # group 2 reads the pixel below
    assert float(expected[0, 6, 0, :].abs().max()) == 0.0  # group 3 reads the pixel above
    assert float(expected[0, 8].min()) == 3.0  # the rest stays in place


def test_shift_runs_follow_the_kernel() -> None:
    runs = shift_runs(shift_kernel(12))
    assert [(r.start, r.stop, r.dy, r.dx) for r in runs] == [(0, 2, 1, 2), (2, 4, 1, 0), (4, 6, 2, 1), (6, 8, 0, 1), (8, 12, 1, 1)]
    bad = shift_kernel(10)
    bad[0, 0, 1, 1] = 0.5
    with pytest.raises(ElanDeployError):
        shift_runs(bad)


def test_unknown_strategy_is_a_user_error(reference: ELAN) -> None:
    with pytest.raises(ElanDeployError, match="shift strategy"):
        build_deploy_model(reference, shift="winograd")
    with pytest.raises(ElanDeployError, match="attention strategy"):
        build_deploy_model(reference, attention="flash")


# --- roll ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [1, -1, 3, -3, 5, -5, 7, 9, -11])
@pytest.mark.parametrize("size", [7, 9, 16])
def test_static_roll_matches_torch_roll(shift: int, size: int) -> None:
    x = torch.arange(2 * 3 * size * (size + 2), dtype=torch.float32).reshape(2, 3, size, size + 2)
    assert torch.equal(static_roll(x, shift, 2), torch.roll(x, shift, 2))
    assert torch.equal(static_roll(x, (shift, -shift), (2, 3)), torch.roll(x, (shift, -shift), (2, 3)))


def test_static_roll_channel_last_half_windows() -> None:
    x = natural_batch(1, 32, 48).permute(0, 2, 3, 1)
    for wsize in (4, 8, 16):
        assert torch.equal(static_roll(x, (-wsize // 2, -wsize // 2), (1, 2)), torch.roll(x, (-wsize // 2, -wsize // 2), (1, 2)))


# --- windows ------------------------------------------------------------------------------------


@pytest.mark.parametrize("wsize", [4, 8, 16])
def test_window_partition_equals_reference(wsize: int) -> None:
    x = natural_batch(2, 32, 48)
    expected = window_partition(x, wsize)
    got = partition_windows(x.permute(0, 2, 3, 1), wsize, channels=3)
    assert torch.equal(got, expected)
    merged = merge_windows(got, wsize, 32, 48, channels=3)
    assert torch.equal(merged.permute(0, 3, 1, 2), x)
    assert torch.equal(merged.permute(0, 3, 1, 2), window_merge(expected, wsize, 2, 32, 48))


@pytest.mark.parametrize("wsize", [4, 8, 16])
def test_rank4_partition_is_the_reference_partition_with_the_batch_apart(wsize: int) -> None:
    x = natural_batch(2, 32, 48)
    expected = window_partition(x, wsize)
    got = partition_windows_rank4(x.permute(0, 2, 3, 1), wsize, channels=3)
    assert got.shape == (2, 32 // wsize, 48 // wsize, wsize * wsize, 3)
    assert torch.equal(got.reshape(expected.shape), expected)
    assert torch.equal(merge_windows_rank4(got, wsize, 32, 48, channels=3).permute(0, 3, 1, 2), x)


def reshape_ranks(run) -> list[int]:  # noqa: ANN001 - a callable
    """The rank of every `Tensor.reshape` result while `run()` runs."""
    seen: list[int] = []
    original = torch.Tensor.reshape

    def spy(self: torch.Tensor, *shape: object) -> torch.Tensor:
        out = original(self, *shape)
        seen.append(out.dim())
        return out

    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setattr(torch.Tensor, "reshape", spy)
        run()
    return seen


def test_rank4_windows_keep_at_most_four_axes_after_the_batch() -> None:
    """ncnn's tensors have at most four axes; PNNX drops the batch axis of 1."""
    deploy = build_deploy_model(load_bundled().model, windows="rank4")
    seen = reshape_ranks(lambda: deploy(natural_batch(1, 32, 32)))
    assert seen and max(seen) <= 5


def test_window_partition_never_above_rank_5() -> None:
    x = natural_batch(1, 32, 48).permute(0, 2, 3, 1)
    seen = reshape_ranks(lambda: merge_windows(partition_windows(x, 16, 3), 16, 32, 48, 3))
    assert seen and max(seen) <= 5


# --- GMSA with shared attention -----------------------------------------------------------------


@pytest.mark.parametrize("windows", WINDOW_STRATEGIES)
@pytest.mark.parametrize("attention", ATTENTION_STRATEGIES)
@pytest.mark.parametrize("block", [0, 1])  # block 1 uses shifted windows
def test_deploy_gmsa_pair_matches_reference(reference: ELAN, attention: str, block: int, windows: str) -> None:
    elab = reference.body[block]
    x = natural_batch(2, 32, 48)
    with torch.no_grad():
        feats = reference.head(reference.sub_mean(x))
        ref0, atn = elab.modules_gmsa["gmsa_0"](feats)
        ref1, _ = elab.modules_gmsa["gmsa_1"](feats, atn)
        if windows == "gather":
            g0 = GatherGMSA(elab.modules_gmsa["gmsa_0"], attention)
            g1 = GatherGMSA(elab.modules_gmsa["gmsa_1"], attention)
            indices = window_indices(32, 48, g0.window_sizes, shifted=block % 2 == 1)
            out0, state = g0(feats, None, indices)
            out1, _ = g1(feats, state, indices)
        else:
            g0 = DeployGMSA(elab.modules_gmsa["gmsa_0"], attention, windows)
            g1 = DeployGMSA(elab.modules_gmsa["gmsa_1"], attention, windows)
            out0, state = g0(feats)
            out1, _ = g1(feats, state)
    assert max_diff(out0, ref0) <= relative_bound(ref0, GMSA_RELATIVE)
    assert max_diff(out1, ref1) <= relative_bound(ref1, GMSA_RELATIVE)


# --- gather windows: roll + partition and merge + unroll as one permutation ---------------------


@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("wsize", [4, 8, 16])
def test_window_index_is_roll_and_partition(wsize: int, shifted: bool) -> None:
    """Pure data movement: the Gather equals the reference roll + partition (and back) exactly."""
    x = natural_batch(2, 32, 48)
    shift = wsize // 2 if shifted else 0
    index = window_index(32, 48, wsize, shift)
    tokens = x.permute(0, 2, 3, 1).reshape(2, 32 * 48, 3)
    windows = tokens[:, index.forward]
    expected = window_partition(torch.roll(x, (-shift, -shift), (2, 3)), wsize)
    assert torch.equal(windows.reshape(-1, wsize * wsize, 3), expected)
    back = windows.reshape(2, -1, 3)[:, index.inverse]  # b, H, W, c
    assert torch.equal(back.permute(0, 3, 1, 2), x)
    assert sorted(index.forward.flatten().tolist()) == list(range(32 * 48))  # a permutation


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_window_index_traced_sizes_match_eager() -> None:
    """Indices built from traced sizes (as in the exported graph) equal the eager ones at another size."""

    class Indices(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            index = window_index(x.shape[2], x.shape[3], 8, 4)
            return index.forward, index.inverse

    traced = torch.jit.trace(Indices(), torch.zeros(1, 3, 32, 48))
    forward, inverse = traced(torch.zeros(1, 3, 48, 64))
    expected = window_index(48, 64, 8, 4)
    assert torch.equal(forward, expected.forward) and torch.equal(inverse, expected.inverse)


# --- whole model, eager -------------------------------------------------------------------------


def test_deploy_model_rejects_sizes_not_multiple_of_16(reference: ELAN) -> None:
    deploy = build_deploy_model(reference)
    for shape in [(1, 3, 20, 32), (1, 3, 32, 40), (1, 3, 17, 17)]:
        with pytest.raises(ElanDeployError, match="multiples of 16"):
            deploy(torch.zeros(shape))
    with pytest.raises(ElanDeployError, match="N,3,H,W"):
        deploy(torch.zeros(1, 1, 16, 16))


def test_deploy_model_needs_eval_mode_and_leaves_reference_alone(reference: ELAN) -> None:
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    deploy = build_deploy_model(reference, shift="dense", attention="sdpa")
    assert not deploy.training
    assert all(torch.equal(state[k], v) for k, v in reference.state_dict().items())
    assert not any(p.data_ptr() == q.data_ptr() for p in deploy.parameters() for q in reference.parameters())
    reference.train()
    try:
        with pytest.raises(ElanDeployError, match="eval"):
            build_deploy_model(reference)
    finally:
        reference.eval()


@pytest.mark.parametrize("name,scale,shift,attention", [("elan-light", 2, "dense", "shared"), ("elan", 3, "slice", "sdpa")])
def test_other_configs_exact_stage_by_stage_in_float64(name: str, scale: int, shift: str, attention: str) -> None:
    """Randomly initialised ELANs (other scales; full ELAN has no attention sharing).

    End to end, a random ELAN is chaotic (its float32 and float64 outputs differ by ~1e2), so
    exactness is checked per stage in float64 from identical inputs.
    """
    from elan_deploy.export.rewrites.attention import WindowGeometry
    from elan_deploy.model import get_config

    torch.manual_seed(0)
    ref = ELAN(get_config(name, scale)).eval().double()
    deploy = build_deploy_model(ref, shift, attention)
    x = natural_batch(1, 16, 32).double()
    with torch.no_grad():
        feats = ref.head(ref.sub_mean(x))
        assert max_diff(deploy.head(deploy.sub_mean(x)), feats) == 0.0
        geometry = WindowGeometry.of(x, deploy.window_sizes)
        for ref_block, deploy_block in zip(ref.body, deploy.body):
            expected = ref_block(feats)
            assert max_diff(deploy_block(feats, geometry), expected) < 1e-9 * float(expected.abs().max())
            feats = expected
        expected = ref.add_mean(ref.tail(feats))
        assert max_diff(deploy.upsample(deploy.tail(feats)), expected) < 1e-9 * float(expected.abs().max())
