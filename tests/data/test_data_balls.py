"""Bouncing balls: the physics and the rendering of the Sutskever generator."""

import numpy as np
import pytest

from vrnnkit.data import bouncing_balls
from vrnnkit.data.balls import BOX, RADIUS, SPEED, _bounce_off_walls, _collide


@pytest.fixture(scope="module")
def balls():
    return bouncing_balls(40, length=30, size=16, seed=3, return_trajectories=True)


def test_videos_are_float32_frames_in_unit_range(balls):
    videos, _ = balls
    assert videos.shape == (40, 30, 16, 16)
    assert videos.dtype == np.float32
    assert videos.min() >= 0.0 and videos.max() <= 1.0
    assert videos.max() == 1.0  # a ball centre renders at full intensity


def test_same_seed_gives_same_videos_and_other_seed_differs():
    first = bouncing_balls(3, length=5, size=8, seed=11)
    assert np.array_equal(first, bouncing_balls(3, length=5, size=8, seed=11))
    assert not np.array_equal(first, bouncing_balls(3, length=5, size=8, seed=12))


def test_start_positions_are_in_range_and_do_not_overlap(balls):
    start = balls[1].positions[:, 0]
    assert start.min() >= 2.0 and start.max() <= BOX - RADIUS
    gaps = np.linalg.norm(start[:, :, None] - start[:, None, :], axis=-1)
    off_diagonal = ~np.eye(start.shape[1], dtype=bool)
    assert gaps[:, off_diagonal].min() >= 2 * RADIUS


def test_velocity_matrix_keeps_norm_one_half(balls):
    # Wall bounces and equal-mass elastic collisions both conserve kinetic energy.
    norms = np.linalg.norm(balls[1].velocities, axis=(2, 3))
    np.testing.assert_allclose(norms, SPEED, rtol=1e-9)


def test_balls_stay_inside_the_box(balls):
    # A ball may pass a wall by at most one sub-step (speed <= 0.5, sub-step 0.5) before turning.
    positions = balls[1].positions
    assert positions.min() >= RADIUS - SPEED / 2
    assert positions.max() <= BOX - RADIUS + SPEED / 2


def test_rendering_matches_the_formula_pixel_by_pixel(balls):
    videos, trajectories = balls
    size = videos.shape[-1]
    for n, t in [(0, 0), (5, 17), (39, 29)]:
        expected = np.zeros((size, size))
        for x, y in trajectories.positions[n, t]:
            for row in range(size):
                for col in range(size):
                    d2 = (col * BOX / size - x) ** 2 + (row * BOX / size - y) ** 2
                    expected[row, col] += np.exp(-((d2 / RADIUS**2) ** 4))
        np.testing.assert_allclose(videos[n, t], np.minimum(expected, 1.0), atol=1e-5)


def test_positions_advance_by_the_velocity_between_frames_without_events(balls):
    positions, velocities = balls[1]
    unchanged = (velocities[:, 1:] == velocities[:, :-1]).all(axis=(2, 3))
    moved = positions[:, 1:] - positions[:, :-1]
    np.testing.assert_allclose(moved[unchanged], velocities[:, :-1][unchanged], atol=1e-12)


def test_wall_turns_the_velocity_component_back_inside():
    positions = np.array([[[RADIUS - 0.1, 5.0], [5.0, BOX - RADIUS + 0.1]]])
    velocities = np.array([[[-0.2, 0.1], [0.1, 0.3]]])
    _bounce_off_walls(positions, velocities)
    np.testing.assert_array_equal(velocities, [[[0.2, 0.1], [0.1, -0.3]]])


def test_collision_exchanges_velocity_along_the_line_of_centres():
    positions = np.array([[[5.0, 5.0], [5.0 + 2.0, 5.0]]])  # touching along x
    velocities = np.array([[[0.3, 0.1], [-0.2, -0.05]]])
    _collide(positions, velocities)
    # Along x the two exchange components; across (y) each keeps its own.
    np.testing.assert_allclose(velocities, [[[-0.2, 0.1], [0.3, -0.05]]])


def test_balls_apart_do_not_collide():
    positions = np.array([[[2.0, 2.0], [8.0, 8.0]]])
    velocities = np.array([[[0.3, 0.1], [-0.2, -0.05]]])
    _collide(positions, velocities)
    np.testing.assert_array_equal(velocities, [[[0.3, 0.1], [-0.2, -0.05]]])
