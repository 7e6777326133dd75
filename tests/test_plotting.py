import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_utils.data import example_mixture  # noqa: E402
from course_utils.plotting import (  # noqa: E402
    animate_trajectories,
    density_2d,
    grid_points,
    image_grid,
    scatter_2d,
    vector_field,
)


def test_density_grid_sums_to_about_one():
    gm = example_mixture()
    ax, dens = density_2d(gm.log_prob, lim=5.0, n=200)
    cell = (10.0 / 199) ** 2
    assert abs(dens.sum() * cell - 1) < 0.01
    plt.close("all")


def test_plots_draw_without_error():
    gm = example_mixture()
    scatter_2d(gm.sample(100), title="samples")
    vector_field(gm.score, normalize=True)
    image_grid(torch.rand(10, 1, 8, 8) * 2 - 1, nrow=4)
    plt.close("all")
    pts, X, Y = grid_points(2.0, 5)
    assert pts.shape == (25, 2) and np.allclose(pts[:, 0].numpy().reshape(5, 5), X)


def test_animation_stays_small():
    path = torch.cumsum(0.05 * torch.randn(200, 3000, 2), 0)
    html = animate_trajectories(path, torch.linspace(0, 1, 200), max_frames=20)
    size = len(html.data)
    assert size < 600_000, f"animation is {size} bytes"
    assert html.data.count("data:image/png;base64") <= 20
    plt.close("all")


def test_plotting_bad_input():
    with pytest.raises(ValueError, match="x must have shape"):
        scatter_2d(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="images must have shape"):
        image_grid(torch.zeros(4, 8, 8))
    with pytest.raises(ValueError, match="path must have shape"):
        animate_trajectories(torch.zeros(10, 2))
    plt.close("all")
