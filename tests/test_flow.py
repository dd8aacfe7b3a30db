"""Warping and forward-backward consistency on synthetic motion whose answer is known by construction."""

import numpy as np
import pytest

from nst_fast.flow import consistency_mask, optical_flow, warp


def constant_flow(height: int, width: int, dx: float, dy: float) -> np.ndarray:
    flow = np.empty((height, width, 2), dtype=np.float32)
    flow[..., 0], flow[..., 1] = dx, dy
    return flow


def test_warp_by_a_constant_whole_pixel_flow_is_a_shift() -> None:
    image = np.random.default_rng(0).random((6, 7, 3), dtype=np.float32)
    warped, inside = warp(image, constant_flow(6, 7, dx=2.0, dy=-1.0))  # sample at (y - 1, x + 2)
    np.testing.assert_allclose(warped[1:, :5], image[:5, 2:], atol=1e-6)
    expected_inside = np.zeros((6, 7), dtype=bool)
    expected_inside[1:, :5] = True
    np.testing.assert_array_equal(inside, expected_inside)


def test_warp_by_half_a_pixel_averages_neighbours() -> None:
    image = np.array([[0.0, 1.0, 3.0], [2.0, 4.0, 8.0]], dtype=np.float32)
    warped, inside = warp(image, constant_flow(2, 3, dx=0.5, dy=0.0))
    np.testing.assert_allclose(warped[:, :2], [[0.5, 2.0], [3.0, 6.0]], atol=1e-2)  # OpenCV: 5-bit weights
    assert inside[:, :2].all() and not inside[:, 2].any()


def test_warp_rejects_a_flow_of_another_size() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        warp(np.zeros((4, 4)), constant_flow(4, 5, 0.0, 0.0))


def test_consistency_mask_constant_flow_valid_where_it_stays_inside() -> None:
    forward, backward = constant_flow(8, 9, 1.5, 0.0), constant_flow(8, 9, -1.5, 0.0)
    mask = consistency_mask(forward, backward)
    assert mask[:, :7].all(), "a consistent translation is valid wherever it lands inside"
    assert not mask[:, 8].any(), "points that leave the frame are not"


def test_consistency_mask_flags_an_inconsistent_region() -> None:
    forward, backward = constant_flow(10, 10, 1.0, 0.0), constant_flow(10, 10, -1.0, 0.0)
    backward[4:7, 4:7] = (3.0, 2.0)  # an occluder in the second frame moving its own way
    mask = consistency_mask(forward, backward)
    assert not mask[4:7, 3:6].any(), "pixels whose forward flow lands on the occluder"
    assert mask[:3, :8].all() and mask[8:, :8].all()


def test_dis_flow_recovers_a_known_shift() -> None:
    rng = np.random.default_rng(1)
    texture = rng.random((16, 16)).astype(np.float32)
    big = np.kron(texture, np.ones((6, 6), dtype=np.float32))  # 96 x 96 blocks, smooth enough to track
    first, second = big[10:74, 10:74], big[8:72, 13:77]  # first[y, x] = big[y + 10, x + 10] = second[y + 2, x - 3]
    flow = optical_flow(first, second)  # so the flow (dx, dy) is (-3, 2) everywhere
    np.testing.assert_allclose(np.median(flow[16:-16, 16:-16], axis=(0, 1)), [-3.0, 2.0], atol=0.25)
    aligned, inside = warp(second, flow)
    assert np.abs(aligned - first)[16:-16, 16:-16].mean() < 0.05, "warping the second frame gives back the first"


def test_flow_module_needs_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys; sys.modules['torch'] = None; import nst_fast.flow as f, numpy as np; f.warp(np.zeros((2, 2)), np.zeros((2, 2, 2), np.float32))"
    subprocess.run([sys.executable, "-c", code], check=True)
