"""Pictures of a run: training curves, image grids, a VAE's latent space.

Every PNG is written atomically (temporary file, then rename), so a viewer
or a kill never leaves half a picture.  Matplotlib runs headless (Agg).
"""

import os

import numpy as np

from zoo import io as zio


def plot_curves(history, path):
    """Loss and metric curves (train vs validation) as a PNG, written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = [key for key in history if key not in ("epoch", "learning_rate")
             and not key.startswith("val_")]
    if not names:
        return None
    # At most three panels a row: five GAN losses stay readable, not a thin strip.
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    figure = Figure(figsize=(4.5 * cols, 3.5 * rows))
    axes = figure.subplots(rows, cols, squeeze=False).reshape(-1)
    for ax in axes[len(names):]:
        ax.axis("off")
    epochs = [int(epoch) + 1 for epoch in history.get("epoch", range(len(history[names[0]])))]
    for ax, name in zip(axes, names):
        ax.plot(epochs, history[name], label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend()
    figure.tight_layout()
    return _atomic_savefig(figure, path)


def _atomic_savefig(figure, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return zio.atomic_write(path, lambda temporary: figure.savefig(temporary, format="png",
                                                                  dpi=80), suffix=".png")


def _to_display(images, value_range):
    low, high = value_range
    images = (np.asarray(images, dtype="float32") - low) / (high - low)
    images = np.clip(images, 0.0, 1.0)
    if images.ndim == 2:  # flat vectors: show square ones as images when possible
        side = int(round(np.sqrt(images.shape[1])))
        images = images.reshape(len(images), side, -1) if side * side == images.shape[1] else \
            images[:, None, :]
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    return images


def save_image_grid(rows, path, *, value_range=(0.0, 1.0), title=None):
    """Write a PNG grid: one row per (label, images) pair in `rows`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = [(label, _to_display(images, value_range)) for label, images in rows]
    ncols = max(len(images) for _, images in rows)
    figure = Figure(figsize=(ncols * 0.9 + 1.2, len(rows) * 0.9 + 0.4))
    axes = figure.subplots(len(rows), ncols, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(images[c], cmap="gray" if images[c].ndim == 2 else None,
                          vmin=0.0, vmax=1.0)
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(label, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    _atomic_savefig(figure, path)


def save_latent_plot(vae, x, y, path, *, grid=10):
    """Latent means of `x` (coloured by `y`) and the decoded 2-D manifold of a 2-D VAE."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from zoo.metrics import prior_grid

    z = np.asarray(vae.encode(x))
    # Decode a grid over the prior's quantiles (Kingma & Welling 2013, fig. 4).
    decoded = _to_display(np.asarray(vae.decode(prior_grid(2, grid))), (0.0, 1.0))
    figure = Figure(figsize=(11, 5))
    ax1, ax2 = figure.subplots(1, 2)
    scatter = ax1.scatter(z[:, 0], z[:, 1], c=y if y is not None else None, s=6,
                          cmap="tab10")
    if y is not None:
        figure.colorbar(scatter, ax=ax1, label="label")
    ax1.set_xlabel("z[0]")
    ax1.set_ylabel("z[1]")
    ax1.set_title("posterior means of test images")
    if decoded.ndim == 3:
        h, w = decoded.shape[1:]
        canvas = decoded.reshape(grid, grid, h, w).transpose(0, 2, 1, 3).reshape(grid * h,
                                                                                 grid * w)
        ax2.imshow(canvas, cmap="gray", vmin=0, vmax=1)
    ax2.set_xticks([])
    ax2.set_yticks([])
    ax2.set_title("decoded grid over the prior's 5%-95% quantiles")
    _atomic_savefig(figure, path)
