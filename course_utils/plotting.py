"""Plots used across the chapters: 2-D scatter, density and vector-field plots, image grids, and
trajectory animations small enough to keep inside a committed notebook."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation

__all__ = ["grid_points", "scatter_2d", "density_2d", "vector_field", "image_grid", "captioned_grid",
           "animate_trajectories", "snapshot_strip", "explorer"]


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def grid_points(lim: float = 3.0, n: int = 100):
    """An n x n grid over [-lim, lim]^2: returns (points (n*n, 2) tensor, X, Y meshes as arrays)."""
    if n < 2 or lim <= 0:
        raise ValueError(f"need n >= 2 and lim > 0, got n={n}, lim={lim}")
    xs = np.linspace(-lim, lim, n)
    X, Y = np.meshgrid(xs, xs)
    pts = torch.tensor(np.stack([X.ravel(), Y.ravel()], 1), dtype=torch.float32)
    return pts, X, Y


def _ax(ax):
    return ax if ax is not None else plt.subplots(figsize=(4, 4))[1]


def _label_plane(ax, title, labels=("$x_1$", "$x_2$")):
    ax.set_aspect("equal")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    if title:
        ax.set_title(title)
    return ax


def scatter_2d(x, ax=None, lim: float | None = 3.0, title: str | None = None, s: float = 2,
               alpha: float = 0.4, labels=("$x_1$", "$x_2$"), **kw):
    """Scatter plot of points x (n, 2) with equal axes."""
    ax = _ax(ax)
    x = _np(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (n, 2), got {x.shape}")
    ax.scatter(x[:, 0], x[:, 1], s=s, alpha=alpha, **kw)
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    return _label_plane(ax, title, labels)


def density_2d(log_prob_fn, ax=None, lim: float = 3.0, n: int = 100, title: str | None = None,
               cmap: str = "viridis", batch: int = 4096, vmax: float | None = None, colorbar: bool = False):
    """Image of exp(log_prob_fn(points)) on a grid over [-lim, lim]^2. Returns (ax, density array).

    Pass the same ``vmax`` to panels that should be compared colour for colour."""
    ax = _ax(ax)
    pts, X, Y = grid_points(lim, n)
    with torch.no_grad():
        lp = torch.cat([log_prob_fn(pts[i:i + batch]) for i in range(0, len(pts), batch)])
    dens = _np(lp.exp()).reshape(X.shape)
    im = ax.imshow(dens, origin="lower", extent=(-lim, lim, -lim, lim), cmap=cmap, vmin=0, vmax=vmax)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="density")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title)
    return ax, dens


def vector_field(fn, ax=None, lim: float = 3.0, n: int = 20, title: str | None = None,
                 normalize: bool = False, labels=("$x_1$", "$x_2$"), **kw):
    """Quiver plot of a field fn: (B, 2) -> (B, 2) on an n x n grid over [-lim, lim]^2."""
    ax = _ax(ax)
    pts, X, Y = grid_points(lim, n)
    with torch.no_grad():
        v = _np(fn(pts))
    if normalize:
        v = v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-8)
    ax.quiver(X, Y, v[:, 0].reshape(X.shape), v[:, 1].reshape(X.shape), **kw)
    return _label_plane(ax, title, labels)


def image_grid(images, nrow: int = 8, ax=None, title: str | None = None, value_range=(-1.0, 1.0)):
    """Show a batch of images (B, C, H, W) with values in ``value_range`` as one grid."""
    x = _np(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (B, C, H, W) with C in (1, 3), got {x.shape}")
    lo, hi = value_range
    x = np.clip((x - lo) / (hi - lo), 0, 1)
    B, C, H, W = x.shape
    ncol = min(nrow, B)
    rows = -(-B // ncol)
    canvas = np.ones((rows * (H + 1) + 1, ncol * (W + 1) + 1, C))
    for i in range(B):
        r, c = divmod(i, ncol)
        canvas[1 + r * (H + 1):1 + r * (H + 1) + H, 1 + c * (W + 1):1 + c * (W + 1) + W] = \
            x[i].transpose(1, 2, 0)
    ax = ax if ax is not None else plt.subplots(figsize=(ncol * 0.6 + 0.5, rows * 0.6 + 0.5))[1]
    ax.imshow(canvas.squeeze(-1) if C == 1 else canvas, cmap="gray" if C == 1 else None,
              vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return ax


def captioned_grid(images, captions, ncol: int = 6, title: str | None = None, size: float = 1.6):
    """Images (B, 3, H, W) in [-1, 1] in a grid, each with its caption (wrapped) above it (chapter 5)."""
    import textwrap
    x = _np(images)
    if x.ndim != 4 or len(captions) != len(x):
        raise ValueError(f"need images (B, C, H, W) and B captions, got {x.shape} and {len(captions)} captions")
    rows = -(-len(x) // ncol)
    fig, axes = plt.subplots(rows, ncol, figsize=(ncol * size, rows * (size + 0.35)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, im, cap in zip(axes.flat, x, captions):
        ax.imshow(np.clip((im.transpose(1, 2, 0) + 1) / 2, 0, 1).squeeze(), cmap="gray" if im.shape[0] == 1 else None,
                  vmin=0, vmax=1, interpolation="nearest")
        ax.set_title("\n".join(textwrap.wrap(cap, 20)), fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def snapshot_strip(path, ts=None, n_panels: int = 5, lim: float = 3.0, max_points: int = 1000, s: float = 2,
                   title: str = "", labels=("$x_1$", "$x_2$")):
    """The static companion of ``animate_trajectories``: point clouds of a path (n_times, n_points, 2) at
    ``n_panels`` evenly spaced times, first and last included, in one row. Animations play only in a live,
    trusted notebook; this row carries the same point on GitHub, in the static site and in nbval's
    stored outputs. Returns the figure."""
    p = _np(path)
    if p.ndim != 3 or p.shape[2] != 2:
        raise ValueError(f"path must have shape (n_times, n_points, 2), got {p.shape}")
    if isinstance(n_panels, bool) or not isinstance(n_panels, int) or n_panels < 2:
        raise ValueError(f"n_panels must be an int >= 2, got {n_panels!r}")
    frames = np.unique(np.linspace(0, p.shape[0] - 1, min(n_panels, p.shape[0])).round().astype(int))
    t = _np(ts) if ts is not None else np.arange(p.shape[0])
    fig, axes = plt.subplots(1, len(frames), figsize=(2.6 * len(frames), 2.8), squeeze=False)
    for ax, i in zip(axes[0], frames):
        ax.scatter(p[i, :max_points, 0], p[i, :max_points, 1], s=s, alpha=0.5)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        _label_plane(ax, None, labels)
        ax.set_title(f"t = {float(t[i]):.2f}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def animate_trajectories(path, ts=None, lim: float = 3.0, max_frames: int = 25, max_points: int = 1000,
                         dpi: int = 60, title: str = "", s: float = 2, labels=("$x_1$", "$x_2$")):
    """Animate point clouds along a path of shape (n_times, n_points, 2) as HTML/JavaScript.

    Kept small for a committed notebook: at most ``max_frames`` frames (evenly subsampled), at most
    ``max_points`` points and a low ``dpi``. Returns an ``IPython.display.HTML`` object.
    """
    from IPython.display import HTML

    p = _np(path)
    if p.ndim != 3 or p.shape[2] != 2:
        raise ValueError(f"path must have shape (n_times, n_points, 2), got {p.shape}")
    frames = np.unique(np.linspace(0, p.shape[0] - 1, min(max_frames, p.shape[0])).round().astype(int))
    p = p[:, :max_points]
    t = _np(ts) if ts is not None else np.arange(p.shape[0])
    fig, ax = plt.subplots(figsize=(3, 3), dpi=dpi)
    sc = ax.scatter(p[0, :, 0], p[0, :, 1], s=s, alpha=0.5)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    _label_plane(ax, None, labels)
    label = ax.set_title("")

    def draw(i):
        sc.set_offsets(p[i])
        label.set_text(f"{title} t = {float(t[i]):.2f}".strip())
        return sc, label

    anim = animation.FuncAnimation(fig, draw, frames=frames, interval=150, blit=False)
    html = anim.to_jshtml(default_mode="once")
    plt.close(fig)
    return HTML(html)


def explorer(draw, **controls):
    """An interactive figure for self-study that degrades to a static one.

    ``draw(**values)`` makes a figure from the controls' values (``controls``: ipywidgets, e.g.
    ``w=widgets.FloatSlider(...)``). It is drawn once at the controls' initial values as an ordinary output,
    which is what GitHub, the course's site, the slides and nbval show. Where widgets run (JupyterLab with a
    live kernel), the controls follow, and every change redraws the figure below them, with the time the
    redraw took (the static drawing prints its time too). Sliders should pass ``continuous_update=False``
    so that dragging redraws once, on release.
    Returns the widget box (its ``redraw()`` attribute redraws by hand)."""
    import time

    import ipywidgets as widgets
    from IPython.display import display

    if not callable(draw):
        raise TypeError(f"draw must be callable, got {type(draw).__name__}")
    if not controls:
        raise ValueError("explorer needs at least one control, e.g. w=ipywidgets.FloatSlider(...)")
    for name, control in controls.items():
        if not isinstance(control, widgets.ValueWidget):
            raise TypeError(f"control {name!r} must be an ipywidgets value widget, got {type(control).__name__}")

    def values():
        return {name: control.value for name, control in controls.items()}

    t0 = time.perf_counter()
    draw(**values())  # the static figure
    plt.show()
    print(f"drawn in {time.perf_counter() - t0:.1f} s; where widgets run, the controls below redraw it")
    out = widgets.Output()
    status = widgets.Label("change a control: the figure redraws below")

    def redraw(_change=None):
        t0 = time.perf_counter()
        with out:
            out.clear_output(wait=True)
            draw(**values())
            plt.show()
        status.value = f"redrawn in {time.perf_counter() - t0:.1f} s"

    for control in controls.values():
        control.observe(redraw, names="value")
    box = widgets.VBox([widgets.HBox(list(controls.values())), status, out])
    box.redraw = redraw
    display(box)
    return box
