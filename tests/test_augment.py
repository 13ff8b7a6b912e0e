"""zoo.augment: names, shapes and value ranges, determinism, crop/flip semantics,
soft labels, and augmentation of the training split only."""

import numpy as np
import pytest

from zoo.augment import AUGMENTATIONS, make_augmenter

tf = pytest.importorskip("tensorflow")


def _images(n=8, size=16, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, channels)).astype("float32"), rng.integers(0, 5, n)


def _apply(augmenter, x, y, batch_size=4):
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).map(augmenter)
    images, labels = zip(*[(np.asarray(i), np.asarray(l)) for i, l in ds])
    return np.concatenate(images), np.concatenate(labels)


def test_names():
    assert AUGMENTATIONS == ("flip", "crop", "rotation", "translation", "zoom", "contrast",
                             "brightness", "mixup", "cutmix", "randaugment", "erasing")


@pytest.mark.parametrize("names, match", [
    (("flip", "sharpen"), "Allowed: \\['flip', 'crop'"),
    (("flip", "flip"), "once"),
    (3, "names"),
])
def test_bad_names(names, match):
    with pytest.raises(ValueError, match=match):
        make_augmenter(names, seed=0, num_classes=5)


def test_mixing_needs_num_classes_and_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        make_augmenter(("mixup",), seed=0, num_classes=None)
    with pytest.raises(ValueError, match="seed"):
        make_augmenter(("flip",), seed=-1, num_classes=5)
    with pytest.raises(ValueError, match="value_range"):
        make_augmenter(("contrast",), seed=0, num_classes=5, value_range=(1, 0))


@pytest.mark.parametrize("name", AUGMENTATIONS)
@pytest.mark.parametrize("channels", [3, 1])
def test_shapes_ranges_and_labels(name, channels):
    x, y = _images(channels=channels)
    augmenter = make_augmenter((name,), seed=1, num_classes=5)
    images, labels = _apply(augmenter, x, y)
    assert images.shape == x.shape and images.dtype == np.float32
    assert np.isfinite(images).all()
    assert images.min() >= -1e-6 and images.max() <= 1 + 1e-6
    assert not np.allclose(images, x), f"{name} left every image unchanged"
    if augmenter.soft_labels:
        assert labels.shape == (len(y), 5)
        np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-5)
        # Every image keeps some of its own label's mass.
        assert (labels[np.arange(len(y)), y] > 0).all()
    else:
        np.testing.assert_array_equal(labels, y)


def test_deterministic_under_seed():
    x, y = _images(n=12)
    names = ("crop", "flip", "rotation", "contrast", "mixup")
    run = lambda seed: _apply(make_augmenter(names, seed=seed, num_classes=5), x, y)  # noqa: E731
    first, again, other = run(7), run(7), run(8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_crop_is_per_image_zero_padded_shift():
    x, y = _images(n=16, size=8)
    x += 0.5  # no zeros in the originals, so zeros in the output come from padding
    images, _ = _apply(make_augmenter(("crop",), seed=3, num_classes=5), x, y, batch_size=16)
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    offsets = []
    for image, source in zip(images, padded):
        match = [(dy, dx) for dy in range(9) for dx in range(9)
                 if np.array_equal(image, source[dy:dy + 8, dx:dx + 8])]
        assert len(match) == 1
        offsets.append(match[0])
    assert len(set(offsets)) > 1  # a new offset per image, not one per batch


def test_flip_is_horizontal_mirror_per_image():
    x, y = _images(n=16)
    images, _ = _apply(make_augmenter(("flip",), seed=0, num_classes=5), x, y, batch_size=16)
    flipped = [np.array_equal(a, b[:, ::-1]) for a, b in zip(images, x)]
    kept = [np.array_equal(a, b) for a, b in zip(images, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert any(flipped) and any(kept)


def test_integer_labels_become_one_hot_for_cutmix():
    x, y = _images(n=4)
    images, labels = make_augmenter(("cutmix",), seed=0, num_classes=5)(
        tf.constant(x), tf.constant(y))
    assert tuple(labels.shape) == (4, 5)


def test_only_training_split_is_augmented():
    from zoo.data import load

    rng = np.random.default_rng(0)
    x = (rng.random((60, 32, 32, 3)) * 255).astype("uint8")
    y = np.arange(60) % 3
    plain = load("resnet20", (x, y), batch_size=8, seed=0)
    augmented = load("resnet20", (x, y), batch_size=8, seed=0, augment=("crop", "flip"))
    for split in ("validation", "test"):
        a = np.concatenate([np.asarray(b[0]) for b in getattr(plain, split)])
        b = np.concatenate([np.asarray(b[0]) for b in getattr(augmented, split)])
        np.testing.assert_array_equal(a, b)
    a = np.concatenate([np.asarray(b[0]) for b in plain.train])
    b = np.concatenate([np.asarray(b[0]) for b in augmented.train])
    assert a.shape == b.shape and not np.array_equal(a, b)
    # Reproducible: the same seed gives the same augmented epoch.
    again = load("resnet20", (x, y), batch_size=8, seed=0, augment=("crop", "flip"))
    np.testing.assert_array_equal(b, np.concatenate([np.asarray(c[0]) for c in again.train]))


def test_erasing_replaces_one_rectangle_in_about_half_the_images_under_a_seed():
    x, y = _images(n=64, size=16, channels=1)
    first, _ = _apply(make_augmenter("erasing", seed=3), x, y)
    again, _ = _apply(make_augmenter("erasing", seed=3), x, y)
    other, _ = _apply(make_augmenter("erasing", seed=4), x, y)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.min() >= 0.0 and first.max() <= 1.0
    changed = (first != x)[..., 0]
    erased = changed.any(axis=(1, 2))
    assert 16 <= erased.sum() <= 48  # probability 0.5 per image
    for mask in changed[erased]:  # the changed pixels lie inside one rectangle
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert box.mean() > 0.5  # noise may equal a pixel (clipped to 0 or 1) here and there
