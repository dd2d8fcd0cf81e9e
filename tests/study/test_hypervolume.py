"""Hypervolume: exact against Optuna's implementation and a grid count; the reference box scaled to the unit cube."""

from __future__ import annotations

import numpy as np
import pytest
from optuna._hypervolume import compute_hypervolume  # test-only cross-check

from autocomp.study.hypervolume import contribution, hypervolume, to_minimization


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_hypervolume_matches_optuna(dims, seed):
    rng = np.random.default_rng(seed)
    pts = rng.random((30, dims))
    ref = np.full(dims, 0.9)
    inside = pts[np.all(pts < ref, axis=1)]
    assert hypervolume(pts, ref) == pytest.approx(compute_hypervolume(inside, ref), rel=1e-12)


def test_hypervolume_matches_a_grid_count():
    pts = np.array([[1, 3, 2], [2, 1, 3], [3, 2, 1], [2, 2, 2]], dtype=float)  # integer corners
    ref = np.array([4.0, 4.0, 4.0])
    grid = np.stack(np.meshgrid(*[np.arange(4) + 0.5] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    covered = np.any(np.all(pts[None, :, :] <= grid[:, None, :], axis=2), axis=1).sum()
    assert hypervolume(pts, ref) == float(covered)


def test_points_outside_the_reference_add_nothing():
    ref = np.ones(3)
    assert hypervolume(np.array([[1.0, 0.1, 0.1], [0.5, 2.0, 0.1]]), ref) == 0.0
    assert hypervolume(np.empty((0, 3)), ref) == 0.0
    assert contribution(np.array([0.5, 0.5, 0.5]), np.array([[0.1, 0.1, 0.1]]), ref) == 0.0
    assert contribution(np.array([0.5, 0.5, 0.5]), np.empty((0, 3)), ref) == pytest.approx(0.125)


def test_to_minimization_scales_the_reference_box_to_the_unit_cube():
    scaled, ref = to_minimization(np.array([[96.0, 100.0, 2.0], [100.0, 0.0, 0.0]]), (96.0, 100.0, 2.0))
    assert np.allclose(scaled, [[1, 1, 1], [0, 0, 0]]) and np.allclose(ref, 1)
