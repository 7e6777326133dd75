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


def test_scatter_and_vector_field_draw_what_they_are_given():
    gm = example_mixture()
    x = gm.sample(100)
    ax = scatter_2d(x, title="samples", lim=2.5)
    np.testing.assert_allclose(ax.collections[0].get_offsets(), x.numpy())
    assert ax.get_xlim() == (-2.5, 2.5) and ax.get_title() == "samples" and ax.get_xlabel() == "$x_1$"
    ax = vector_field(gm.score, normalize=True, lim=2.0, n=5)
    q = ax.collections[0]
    pts, X, Y = grid_points(2.0, 5)
    v = gm.score(pts).numpy()
    np.testing.assert_allclose(q.X, X.ravel())
    np.testing.assert_allclose(np.stack([q.U, q.V], 1), v / np.linalg.norm(v, axis=1, keepdims=True), rtol=1e-5)
    plt.close("all")
    assert pts.shape == (25, 2) and np.allclose(pts[:, 0].numpy().reshape(5, 5), X)
    np.testing.assert_allclose(pts[:, 1].numpy().reshape(5, 5), Y)


def test_image_grid_layout_and_value_range():
    """Images go left to right, top to bottom, with 1-pixel white borders; values in [-1, 1] map to
    [0, 1] (and are clipped outside it)."""
    imgs = torch.tensor([-1.0, -0.5, 0.0, 2.0])[:, None, None, None].expand(4, 1, 2, 3)  # 4 flat images
    ax = image_grid(imgs, nrow=3)
    canvas = np.asarray(ax.images[0].get_array())
    assert canvas.shape == (2 * 3 + 1, 3 * 4 + 1)  # 2 rows of 3 columns of 2x3 images
    for i, want in enumerate([0.0, 0.25, 0.5, 1.0]):
        r, c = divmod(i, 3)
        np.testing.assert_allclose(canvas[1 + 3 * r:3 + 3 * r, 1 + 4 * c:4 + 4 * c], want)
    assert (canvas[0] == 1).all() and (canvas[:, 0] == 1).all()  # borders
    np.testing.assert_allclose(canvas[4:6, 5:8], 1.0)  # the unused fifth place stays blank
    rgb = image_grid(torch.zeros(2, 3, 4, 4), nrow=2)
    assert np.asarray(rgb.images[0].get_array()).shape == (6, 11, 3)
    plt.close("all")


def test_animation_stays_small():
    path = torch.cumsum(0.05 * torch.randn(200, 3000, 2), 0)
    html = animate_trajectories(path, torch.linspace(0, 1, 200), max_frames=20)
    size = len(html.data)
    assert size < 600_000, f"animation is {size} bytes"
    assert html.data.count("data:image/png;base64") <= 20
    plt.close("all")


def test_snapshot_strip_shows_the_path_at_its_first_and_last_times():
    from course_utils.plotting import snapshot_strip
    path = torch.cumsum(0.05 * torch.randn(30, 50, 2), 0)
    fig = snapshot_strip(path, torch.linspace(0, 1, 30), n_panels=4)
    axes = fig.axes
    assert len(axes) == 4
    np.testing.assert_allclose(axes[0].collections[0].get_offsets(), path[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(axes[-1].collections[0].get_offsets(), path[-1].numpy(), rtol=1e-6)
    assert axes[0].get_title() == "t = 0.00" and axes[-1].get_title() == "t = 1.00"
    with pytest.raises(ValueError, match="n_panels"):
        snapshot_strip(path, n_panels=1)
    plt.close("all")


def test_plotting_bad_input():
    with pytest.raises(ValueError, match="x must have shape"):
        scatter_2d(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="images must have shape"):
        image_grid(torch.zeros(4, 8, 8))
    with pytest.raises(ValueError, match="path must have shape"):
        animate_trajectories(torch.zeros(10, 2))
    plt.close("all")


def test_explorer_draws_a_static_figure_then_redraws_with_each_controls_new_value():
    import ipywidgets as widgets

    from course_utils.plotting import explorer

    calls = []

    def draw(w, caption):
        calls.append((w, caption))
        plt.plot([0, 1], [0, w])
        plt.title(caption)

    slider = widgets.FloatSlider(value=1.0, min=0.0, max=5.0, continuous_update=False)
    text = widgets.Text(value="a red circle")
    box = explorer(draw, w=slider, caption=text)
    assert calls == [(1.0, "a red circle")]  # the static figure, at the initial values
    slider.value = 3.0
    text.value = "a blue square"
    assert calls[1:] == [(3.0, "a red circle"), (3.0, "a blue square")]  # one redraw per change
    assert box.children[1].value.startswith("redrawn in")
    with pytest.raises(TypeError, match="draw"):
        explorer(None, w=slider)
    with pytest.raises(ValueError, match="at least one control"):
        explorer(draw)
    with pytest.raises(TypeError, match="'w'"):
        explorer(draw, w=3.0)
    plt.close("all")
