"""CNN families: published parameter counts, keras.applications weight
compatibility, ImageNet weights from Keras's cache, CIFAR option-A shortcuts,
input checks, declared backbone stages, LRN, MACs.

The registry-driven tests (tests/test_models.py) cover forward/fit/save/export.
"""

import numpy as np
import pytest

import zoo
from zoo.models._blocks import stage_outputs

keras = pytest.importorskip("keras")


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _randomize_bn_statistics(model, rng):
    # Fresh BN layers have mean 0 / variance 1, which would hide a swapped
    # moving-statistics layout; give them random values first.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.normal(1, 0.1, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])


# Published counts of trainable parameters (ImageNet heads): the papers' tables
# where they print exact numbers, else torchvision's / keras.applications' models.
PUBLISHED = {
    "resnet18": 11_689_512, "resnet34": 21_797_672,  # torchvision
    "resnet50": 25_583_592, "resnet101": 44_601_832, "resnet152": 60_268_520,  # keras (biases)
    "resnet50v2": 25_568_360,
}


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])  # the others: with Keras's twin below
def test_imagenet_resnet_trainable_params_are_shape_independent_and_published(name):
    # ResNets end in global pooling, so a 32x32 build has the 224x224 count.
    model = zoo.build(name, input_shape=(32, 32, 3))
    assert _trainable(model) == PUBLISHED[name]
    assert model.count_params() == zoo.get_spec(name).num_params


VGG_TRAINABLE = {  # torchvision's counts at 224x224x3 with the 1000-way top
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
}


@pytest.mark.parametrize("name", sorted(VGG_TRAINABLE))
def test_vgg_trainable_params_match_published(name):
    # Convolutions at 32x32 without the top, plus the 224x224 top's fc1 (7*7*512
    # inputs), fc2 and predictions computed by hand.
    body = zoo.build(name, input_shape=(32, 32, 3), include_top=False)
    top = (7 * 7 * 512 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 1000
    assert _trainable(body) + top == VGG_TRAINABLE[name]


def test_vgg16_at_224_equals_keras_applications_count():
    # keras.applications.VGG16(weights=None).count_params() (its documented 138,357,544).
    assert zoo.build("vgg16").count_params() == 138_357_544


def test_alexnet_param_counts():
    assert zoo.build("alexnet").count_params() == 60_965_224  # Caffe bvlc_alexnet (grouped)
    assert zoo.build("alexnet", grouped=False).count_params() == 62_378_344


CIFAR_TABLE6 = {"resnet20": "0.27", "resnet32": "0.46", "resnet44": "0.66", "resnet56": "0.85",
                "resnet110": "1.7"}


@pytest.mark.parametrize("name", sorted(CIFAR_TABLE6))
def test_cifar_resnet_params_match_table6(name):
    model = zoo.build(name)
    printed = CIFAR_TABLE6[name]
    decimals = len(printed.split(".")[1])
    assert f"{_trainable(model) / 1e6:.{decimals}f}" == printed
    # Option A shortcuts are parameter-free: every weight sits in a conv, BN or the head.
    for layer in model.layers:
        if "_0_" in layer.name:
            assert not layer.weights, layer.name
        assert not isinstance(layer, keras.layers.Lambda)


# Zagoruyko & Komodakis 2016, Tables 1 and 4 (CIFAR-10, trainable, printed to 0.1M).
WRN_PAPER = {"wrn16_4": "2.7", "wrn28_10": "36.5", "wrn40_4": "8.9"}


@pytest.mark.parametrize("name", sorted(WRN_PAPER))
def test_wide_resnet_params_match_the_paper(name):
    model = zoo.build(name)
    assert f"{_trainable(model) / 1e6:.1f}" == WRN_PAPER[name]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(not c.use_bias for c in convs)
    depth, k = (int(v) for v in name[3:].split("_"))
    # The authors' rule n = (depth - 4) / 6 blocks per group: the stem and two 3x3
    # convolutions per block, plus one 1x1 shortcut where each group changes the width.
    n = (depth - 4) // 6
    assert sum(c.kernel_size == (3, 3) for c in convs) == 6 * n + 1
    assert sum(c.kernel_size == (1, 1) for c in convs) == 3
    assert max(c.filters for c in convs) == 64 * k


def test_wide_resnet_dropout_and_depth_checks():
    model = zoo.build("wrn16_4", input_shape=(8, 8, 3), num_classes=3, dropout=0.3)
    rates = {layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)}
    assert rates == {0.3}
    from zoo.models.wide_resnet import wide_resnet
    with pytest.raises(ValueError, match="depth must be 6n\\+4.*Received: depth=20"):
        wide_resnet(depth=20, widen_factor=2, spec_name="wrn16_4", name="x")
    with pytest.raises(ValueError, match="dropout"):
        zoo.build("wrn16_4", dropout=1.5)


def test_resnet9_layout_and_params():
    model = zoo.build("resnet9")
    assert _trainable(model) == 6_573_120  # Page's 6.57M
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [64, 128, 128, 128, 256, 512, 512, 512]
    assert model.get_layer("logit_scale").scale == 0.125
    assert not model.get_layer("classifier").use_bias
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    probs = model(x, training=False).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="logit_scale"):
        zoo.build("resnet9", logit_scale=0)


def test_option_a_shortcut_is_subsampling_plus_zero_channels():
    model = zoo.build("resnet20", input_shape=(8, 8, 3), num_classes=3)
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    block_in = model.get_layer("conv2_block3_out").output
    short = model.get_layer("conv3_block1_0_squeeze").output
    probe = keras.Model(model.input, [block_in, short])
    before, after = (np.asarray(t) for t in probe(x))
    assert after.shape == (2, 4, 4, 32)
    np.testing.assert_array_equal(after[..., 8:24], before[:, ::2, ::2, :])
    assert not after[..., :8].any() and not after[..., 24:].any()


APPLICATIONS = {
    "resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152",
    "resnet50v2": "ResNet50V2", "vgg16": "VGG16", "vgg19": "VGG19",
}


@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_weight_compatible_with_keras_applications(name):
    rng = np.random.default_rng(1)
    shape = (32, 32, 3)  # the smallest both accept: building dominates the cost
    ref = getattr(keras.applications, APPLICATIONS[name])(weights=None, input_shape=shape)
    _randomize_bn_statistics(ref, rng)
    model = zoo.build(name, input_shape=shape)
    assert model.count_params() == ref.count_params()
    if name in PUBLISHED:  # global pooling: the 224x224 counts at 32x32
        assert _trainable(model) == PUBLISHED[name]
        assert model.count_params() == zoo.get_spec(name).num_params
    assert [w.shape for w in model.weights] == [w.shape for w in ref.weights]
    model.set_weights(ref.get_weights())
    x = rng.random((2, *shape)).astype("float32") * 2 - 1
    # Softmax outputs of random nets are near uniform; compare the logits' inputs too.
    np.testing.assert_allclose(model(x, training=False), ref(x, training=False), atol=1e-5)
    last = stage_outputs(model)[-1][0]
    feats = [keras.Model(m.input, m.get_layer(last).output)(x, training=False)
             for m in (model, ref)]
    np.testing.assert_allclose(feats[0], feats[1], rtol=1e-5, atol=1e-5)


def test_weights_path_loads_keras_applications_file(tmp_path):
    # VGG16 (19 layers) rather than a ResNet: the same loading path, a fraction of the build.
    ref = keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), include_top=False,
                                   pooling="avg")
    path = str(tmp_path / "vgg16.weights.h5")
    ref.save_weights(path)
    model = zoo.build("vgg16", input_shape=(32, 32, 3), include_top=False, pooling="avg",
                      weights=path)
    x = np.random.default_rng(2).random((2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model(x), ref(x), rtol=1e-5, atol=1e-5)
    # A different channel count cannot take these weights: one short ValueError naming the
    # shapes, without Keras's per-container warnings or a dump of the variable's values.
    import warnings
    with warnings.catch_warnings(record=True) as caught, \
            pytest.raises(ValueError, match="does not fit") as raised:
        warnings.simplefilter("always")
        zoo.build("vgg16", input_shape=(32, 32, 1), include_top=False, pooling="avg",
                  weights=path)
    message = str(raised.value)
    assert "expects weights of shape (3, 3, 1, 64), the file holds (3, 3, 3, 64)" in message
    assert len(message) < 600 and "\n" not in message, message
    assert not [w for w in caught if "keras" in str(w.filename)], [str(w.message) for w in caught]


@pytest.mark.parametrize("name", ["alexnet", "resnet20"])
def test_imagenet_weights_refused_without_a_keras_twin(name):
    with pytest.raises(ValueError, match="publishes no ImageNet weights"):
        zoo.build(name, weights="imagenet")


def test_imagenet_weights_offline_without_cache_names_the_file(tmp_path, monkeypatch):
    from zoo.models import _blocks
    from zoo.models import weights

    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setattr(weights, "keras_cache_dir", lambda: str(tmp_path / "models"))
    with monkeypatch.context() as patch:
        # Nothing waits on a network, and nothing is built before the file is found.
        patch.setattr(keras.utils, "get_file", lambda *a, **k: pytest.fail("network"))
        patch.setattr(_blocks, "l2", lambda *a, **k: pytest.fail("built before the lookup"))
        with pytest.raises(ValueError) as err:
            zoo.build("resnet50", weights="imagenet", include_top=False, input_shape=(32, 32, 3))
    message = str(err.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path / "models") in message
    with pytest.raises(ValueError, match="3 input channels"):
        zoo.build("vgg16", weights="imagenet", include_top=False, input_shape=(32, 32, 1))
    with pytest.raises(ValueError, match="num_classes=1000"):
        zoo.build("vgg16", weights="imagenet", num_classes=10)


def test_imagenet_weights_load_from_keras_cache(tmp_path, monkeypatch):
    # A file under Keras's own name in Keras's cache (randomly initialised here:
    # no ImageNet weights exist offline) is what weights="imagenet" loads.
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from zoo.models import weights

    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setattr(weights, "keras_cache_dir", lambda: str(tmp_path))
    ref = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    name, _, _ = weights.imagenet_file_name("VGG16", include_top=False)
    with h5py.File(tmp_path / name, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, ref)
    model = zoo.build("vgg16", weights="imagenet", include_top=False, input_shape=(32, 32, 3))
    x = np.random.default_rng(4).random((2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model(x), ref(x), atol=1e-5)


def test_missing_weights_file():
    with pytest.raises(ValueError, match="not found"):
        zoo.build("resnet18", weights="/nonexistent/resnet18.weights.h5")


@pytest.mark.parametrize("name, shape, minimum", [
    ("alexnet", (66, 66, 3), "67"), ("vgg11", (31, 40, 3), "32"),
    ("resnet18", (16, 16, 3), "32"), ("resnet20", (4, 4, 3), "8"),
])
def test_too_small_input_names_minimum(name, shape, minimum):
    with pytest.raises(ValueError, match=f"minimum is \\({minimum}, {minimum}"):
        zoo.build(name, input_shape=shape)


@pytest.mark.parametrize("bad", [(32, 32), (1, 32, 32, 3), (32, 32, 0), "32x32"])
def test_bad_input_shape_rank(bad):
    with pytest.raises(ValueError, match="input_shape"):
        zoo.build("resnet20", input_shape=bad)


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"pooling": "sum"},
                                    {"include_top": "yes"}, {"weight_decay": -1.0},
                                    {"weights": 3}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        zoo.build("vgg11", input_shape=(32, 32, 3), **kwargs)


@pytest.mark.parametrize("name, shape, sizes", [
    ("resnet50", (64, 64, 3), [16, 8, 4, 2]),
    ("resnet18", (64, 64, 3), [16, 8, 4, 2]),
    ("resnet20", (32, 32, 3), [32, 16, 8]),
    ("wrn16_4", (32, 32, 3), [32, 16, 8]),
    ("resnet9", (32, 32, 3), [32, 16, 8, 4]),
    ("vgg11_bn", (32, 32, 3), [16, 8, 4, 2, 1]),
    ("alexnet", (227, 227, 3), [27, 13, 6]),
])
def test_stage_outputs(name, shape, sizes, tmp_path):
    model = zoo.build(name, input_shape=shape, include_top=False)
    stages = stage_outputs(model)
    assert [t.shape[1] for _, t in stages] == sizes
    if name == "resnet20":  # names survive a .keras round trip
        path = str(tmp_path / "m.keras")
        model.save(path)
        reloaded = keras.models.load_model(path)
        assert [n for n, _ in stage_outputs(reloaded)] == [n for n, _ in stages]


@pytest.mark.parametrize("name", ["resnet20", "resnet50v2", "vgg11_bn", "alexnet", "wrn16_4",
                                  "resnet9"])
def test_include_top_false_takes_any_image_size(name):
    model = zoo.build(name, input_shape=(None, None, 3), include_top=False, pooling="avg")
    for size in (67, 80):
        x = np.zeros((1, size, size, 3), "float32")
        assert model(x).shape[0] == 1
    with pytest.raises(ValueError, match="input_shape"):
        zoo.build(name, input_shape=(None, None, 3), include_top=True)


def test_backbone_info_declares_stages_first_conv_and_classifier():
    from zoo.registry import backbone_info

    for name in zoo.list_models():
        spec = zoo.get_spec(name)
        assert spec.backbone == (spec.features is not None), name
    info = backbone_info("resnet50")
    assert info.first_conv == "conv1_conv" and info.imagenet == "ResNet50"
    assert info.imagenet_preprocessing == "caffe"
    assert backbone_info("resnet50v2").imagenet_preprocessing == "tf"
    model = zoo.build("resnet18", input_shape=(64, 64, 3))
    assert isinstance(model.get_layer(info.first_conv), keras.layers.Conv2D)
    assert model.layers[-1].name == info.classifier
    with pytest.raises(ValueError, match="not a backbone.*resnet50"):
        backbone_info("lenet5")


@pytest.mark.parametrize("name", ["alexnet", "vgg11", "vgg16_bn", "resnet18", "resnet20",
                                  "wrn16_4", "resnet9"])
def test_search_space_default_point_is_the_registered_model(name):
    import inspect

    kt = pytest.importorskip("keras_tuner")
    spec = zoo.get_spec(name)
    point, recipe = spec.space_point(kt.HyperParameters())
    defaults = {k: p.default for k, p in inspect.signature(spec.builder).parameters.items()}
    assert point and all(defaults[k] == v for k, v in point.items()), (point, defaults)
    assert all(getattr(spec.recipe, k) == v for k, v in recipe.items())


def test_weight_decay_is_l2_with_half_coefficient():
    model = zoo.build("resnet20", input_shape=(8, 8, 3), num_classes=3, weight_decay=1e-4)
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    expected = 0.5e-4 * sum(float(np.sum(np.square(k))) for k in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    assert not zoo.build("resnet20", input_shape=(8, 8, 3), weight_decay=0.0).losses


def test_local_response_normalization_matches_formula():
    from zoo.models.layers.cnn import LocalResponseNormalization

    x = np.random.default_rng(3).normal(size=(2, 3, 3, 7)).astype("float32")
    layer = LocalResponseNormalization(size=5, bias=2.0, alpha=0.1, beta=0.75)
    got = np.asarray(layer(x))
    sq = x ** 2
    expected = np.empty_like(x)
    for i in range(7):
        window = sq[..., max(0, i - 2):min(7, i + 3)].sum(-1)
        expected[..., i] = x[..., i] / (2.0 + 0.1 * window) ** 0.75
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert LocalResponseNormalization.from_config(layer.get_config()).get_config() == \
        layer.get_config()


def test_count_macs_hand_computed():
    from zoo.flops import count_macs

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8*4 * 3*3*3 = 6912
    x = keras.layers.Conv2D(6, 3, strides=2, groups=2, padding="valid")(x)  # 3*3*6 * 9*2 = 972
    x = keras.layers.BatchNormalization()(x)  # not counted
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5)(x)  # 54*5 = 270
    assert count_macs(keras.Model(inputs, x)) == 6912 + 972 + 270
    # LeNet-5 by hand: C1 28*28*6*25 + C3 10*10*16*150 + C5 120*400 + F6 120*84 + 84*10.
    assert count_macs(zoo.build("lenet5")) == 117_600 + 240_000 + 48_000 + 10_080 + 840
    # He et al. Table 1 prints 3.8e9 multiply-adds for ResNet-50.
    assert count_macs(zoo.build("resnet50")) == pytest.approx(3.8e9, rel=0.02)


@pytest.mark.parametrize("options", [{}, {"center": False, "scale": False, "momentum": 0.9,
                                          "epsilon": 1e-5}])
def test_fused_batch_normalization_trains_as_keras_does(rng, options):
    import tensorflow as tf

    from zoo.models.layers.cnn import BatchNormalization
    x = tf.constant(rng.normal(2.0, 3.0, (4, 3, 5, 6)).astype("float32"))
    ours, theirs = BatchNormalization(**options), keras.layers.BatchNormalization(**options)
    ours.build(x.shape)
    theirs.build(x.shape)
    if ours.scale:
        ours.gamma.assign(rng.normal(1.0, 0.1, 6).astype("float32"))
        theirs.gamma.assign(ours.gamma)
    weights = tf.range(6, dtype="float32")  # a loss that is not symmetric in the channels
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ours, y_theirs = ours(x, training=True), theirs(x, training=True)
        loss_ours, loss_theirs = (tf.reduce_sum(y * weights) for y in (y_ours, y_theirs))
    np.testing.assert_allclose(y_ours, y_theirs, atol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss_ours, x), tape.gradient(loss_theirs, x),
                               atol=1e-5)
    for a, b in zip(ours.trainable_weights, theirs.trainable_weights):
        np.testing.assert_allclose(tape.gradient(loss_ours, a), tape.gradient(loss_theirs, b),
                                   atol=1e-4)
    # Moving averages of the biased batch variance, as Keras keeps them.
    np.testing.assert_allclose(ours.moving_mean, theirs.moving_mean, atol=1e-6)
    np.testing.assert_allclose(ours.moving_variance, theirs.moving_variance, atol=1e-6)
    np.testing.assert_allclose(ours(x, training=False), theirs(x, training=False), atol=1e-5)
    # Frozen (fine-tuning) and not 4-D: the Keras layer's own path.
    ours.trainable = theirs.trainable = False
    np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True), atol=1e-5)
    flat = tf.reshape(x, (-1, 6))
    ours, theirs = BatchNormalization(**options), keras.layers.BatchNormalization(**options)
    np.testing.assert_allclose(ours(flat, training=True), theirs(flat, training=True), atol=1e-5)


# One model per family that `zoo.training` trains in bfloat16 on an AMX CPU.
FUSED_BN_MODELS = ("resnet20", "wrn16_4", "resnet9", "vgg11_bn")


def test_every_bfloat16_family_is_checked_for_the_fused_layer():
    from zoo.training import CPU_BFLOAT16_FAMILIES
    assert {zoo.get_spec(name).family for name in FUSED_BN_MODELS} == set(CPU_BFLOAT16_FAMILIES)


@pytest.mark.parametrize("name", FUSED_BN_MODELS)
def test_batch_normalized_convnets_use_the_fused_layer_and_a_float32_head(tmp_path, name):
    from zoo.models.layers.cnn import BatchNormalization
    spec = zoo.get_spec(name)
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = zoo.build(name, input_shape=spec.test_input_shape, num_classes=3)
    finally:
        keras.config.set_dtype_policy(previous)
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(type(layer) is BatchNormalization for layer in norms)
    assert norms[0].compute_dtype == "bfloat16"
    assert model.layers[-1].compute_dtype == "float32"  # the softmax and what is served
    assert model.outputs[0].dtype == "float32"
    if name != "resnet20":
        return
    path = str(tmp_path / "m.keras")
    model.save(path)
    again = keras.saving.load_model(path)
    assert type(again.get_layer(norms[0].name)) is BatchNormalization
    x = np.random.default_rng(0).random((2, *spec.test_input_shape), dtype="float32")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0))
