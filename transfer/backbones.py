"""Backbones from three sources behind one name, with verified weights.

    resnet50, vgg16, resnet20, ...   registered zoo models with declared features
    keras:MobileNetV2, keras:ResNet50, ...   keras.applications models
    runs/resnet20_fashion            a finished zoo run (its head is cut off)

`resolve` validates a name and its weights without TensorFlow; `build`
makes the feature extractor (input -> last stage's feature map) with the
weights loaded, adapting the first convolution to the data's channels.
"""

import dataclasses
import hashlib
import os
from typing import Optional

from zoo import checks, runs
from zoo.registry import get_spec, list_models

IN_CHANNELS = ("adapt", "tile")
PREPROCESSING = ("none", "raw", "caffe", "tf", "torch")

# keras.applications backbones: default and minimum input size, the
# `preprocess_input` mode their ImageNet weights expect ("raw": [0, 255], the
# model normalises itself), the stem convolution, and the layers ending each
# resolution stage, shallow to deep.
KERAS_BACKBONES = {
    "MobileNetV2": dict(size=224, min_size=32, preprocessing="tf", first_conv="Conv1",
                        stages=("expanded_conv_project_BN", "block_2_add", "block_5_add",
                                "block_12_add", "out_relu"), adapt=True),
    "EfficientNetB0": dict(size=224, min_size=32, preprocessing="raw", first_conv="stem_conv",
                           stages=("block1a_project_bn", "block2b_add", "block3b_add",
                                   "block5c_add", "top_activation"),
                           # Its per-channel Normalization layer sits before the stem.
                           adapt=False),
    "ResNet50": dict(size=224, min_size=32, preprocessing="caffe", first_conv="conv1_conv",
                     stages=("conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
                             "conv5_block3_out"), adapt=True),
    "ResNet50V2": dict(size=224, min_size=32, preprocessing="tf", first_conv="conv1_conv",
                       stages=("conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
                               "post_relu"), adapt=True),
    "VGG16": dict(size=224, min_size=32, preprocessing="caffe", first_conv="block1_conv1",
                  stages=tuple(f"block{b}_pool" for b in range(1, 6)), adapt=True),
    "VGG19": dict(size=224, min_size=32, preprocessing="caffe", first_conv="block1_conv1",
                  stages=tuple(f"block{b}_pool" for b in range(1, 6)), adapt=True),
}


@dataclasses.dataclass
class BackboneSource:
    """A validated backbone name and weights (no TensorFlow yet)."""

    name: str
    source: str  # "zoo", "keras" or "run"
    arch: str  # registered name, or the keras.applications class name
    base_model: Optional[str]
    min_size: int
    default_size: Optional[int]
    stages: tuple
    first_conv: str
    preprocessing: str
    adapt: bool
    weights: Optional[str]  # None, "imagenet", a file or a run directory
    weights_sha256: Optional[str]
    run_config: Optional[object] = None
    model_kwargs: dict = dataclasses.field(default_factory=dict)

    def describe(self):
        d = {"name": self.name, "source": self.source, "architecture": self.arch,
             "base_model": self.base_model, "stages": list(self.stages),
             "first_conv": self.first_conv, "preprocessing": self.preprocessing,
             "model_kwargs": dict(self.model_kwargs)}
        if self.source == "run":
            d["run_dir"] = self.weights
        return d


def list_backbones():
    """Rows (name, source, input size, preprocessing) of every backbone; no TensorFlow.

    Zoo backbones show their default input and, for ImageNet weights, the
    preprocessing those expect; a zoo run directory is a backbone too
    (`transfer.finetune("runs/NAME", ...)`).
    """
    rows = []
    for name in list_models():
        spec = get_spec(name)
        if spec.features is None:
            continue
        info = spec.features
        pre = (f"none; weights='imagenet': {info.imagenet_preprocessing} (keras.applications."
               f"{info.imagenet})" if info.imagenet else "none (the zoo's [0, 1] images)")
        rows.append((name, "zoo", "x".join(str(d) for d in spec.input_shape[:2])
                     + f" (min {spec.min_input_shape[0]})", pre))
    for name, meta in KERAS_BACKBONES.items():
        rows.append((f"keras:{name}", "keras.applications",
                     f"{meta['size']}x{meta['size']} (min {meta['min_size']})",
                     meta["preprocessing"]))
    return rows


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _backbone_names():
    return [n for n in list_models() if get_spec(n).features is not None]


def _is_run_dir(text):
    return isinstance(text, (str, os.PathLike)) and os.path.isdir(os.fspath(text))


def _finished_run(run_dir):
    run_dir = os.path.abspath(os.fspath(run_dir))
    if not (runs.is_finished(run_dir) and os.path.exists(os.path.join(run_dir, runs.MODEL_FILE))):
        raise runs.RunError(f"A run directory used as a backbone must hold a finished run "
                            f"(metrics.json and model.keras). Received: {run_dir!r}")
    return run_dir, runs.read_config(run_dir)


def _run_architecture(config):
    """(registered architecture, its builder kwargs, preprocessing) of a run's backbone."""
    backbone = config.extra.get("backbone") if config.extra else None
    if not config.registered and backbone:  # a fine-tuned run: its nested backbone
        return backbone.get("architecture"), dict(backbone.get("model_kwargs") or {}), \
            backbone.get("preprocessing", "none"), backbone.get("source")
    return config.base_model or config.model, dict(config.model_kwargs or {}), "none", "zoo"


_ARCH_KWARGS = ("input_shape", "num_classes", "include_top", "weights", "pooling",
                "classifier_activation", "name")


def resolve(backbone, *, weights=None, weights_sha256=None, preprocessing=None):
    """Validate a backbone name and its weights; returns a `BackboneSource`.

    Args:
        backbone: a registered backbone name, "keras:NAME" or a finished run directory.
        weights: None, "imagenet", a local .h5 file or a finished run directory
            of the same architecture. Defaults to None.
        weights_sha256: expected sha256 of a weights file; a mismatch is refused.
            Defaults to None.
        preprocessing: override of the input preprocessing mode (see
            `PREPROCESSING`); None picks the weights' own. Defaults to None.
    """
    if preprocessing is not None:
        checks.choice("preprocessing", preprocessing, PREPROCESSING)
    if weights_sha256 is not None and (not isinstance(weights_sha256, str) or len(
            weights_sha256) != 64 or any(c not in "0123456789abcdef" for c in weights_sha256.lower())):
        raise ValueError(f"weights_sha256 must be 64 hexadecimal digits. "
                         f"Received: weights_sha256={weights_sha256!r}")
    if not isinstance(backbone, (str, os.PathLike)):
        raise TypeError(f"backbone must be a name or a run directory. "
                        f"Received: backbone={backbone!r}")
    backbone = os.fspath(backbone)
    if backbone.startswith("keras:"):
        arch = backbone[len("keras:"):]
        if arch not in KERAS_BACKBONES:
            raise ValueError(f"Unknown keras.applications backbone. Received: "
                             f"backbone={backbone!r}. Allowed: "
                             f"{', '.join('keras:' + k for k in KERAS_BACKBONES)}")
        meta = KERAS_BACKBONES[arch]
        source = BackboneSource(
            name=backbone, source="keras", arch=arch, base_model=None,
            min_size=meta["min_size"], default_size=None, stages=meta["stages"],
            first_conv=meta["first_conv"], preprocessing=meta["preprocessing"],
            adapt=meta["adapt"], weights=None, weights_sha256=None)
        if weights is None:
            source.preprocessing = preprocessing or "none"
    elif _is_run_dir(backbone) and backbone not in list_models():
        if weights is not None:
            raise ValueError(f"A run directory brings its own weights; weights must be None. "
                             f"Received: weights={weights!r}")
        run_dir, config = _finished_run(backbone)
        arch, kwargs, pre, kind = _run_architecture(config)
        source = _zoo_or_keras_source(arch, kind, backbone=run_dir)
        source.source, source.weights, source.run_config = "run", run_dir, config
        source.preprocessing = preprocessing or pre
        source.model_kwargs = {k: v for k, v in kwargs.items() if k not in _ARCH_KWARGS}
        shape = config.input_shape or []
        source.default_size = shape[0] if shape else None
        return source
    else:
        source = _zoo_or_keras_source(backbone, "zoo", backbone=backbone)
        if weights != "imagenet":
            source.preprocessing = preprocessing or "none"

    # ---- weights
    if weights is None:
        return source
    if weights == "imagenet":
        if source.source == "zoo":
            info = get_spec(source.arch).features
            if info.imagenet is None:
                raise ValueError(f"keras.applications publishes no ImageNet weights for "
                                 f"{source.arch}; weight-compatible zoo backbones: "
                                 f"{', '.join(n for n in _backbone_names() if get_spec(n).features.imagenet)}, "
                                 f"or use keras:NAME. Received: weights='imagenet'")
            source.preprocessing = preprocessing or info.imagenet_preprocessing
        else:
            source.preprocessing = preprocessing or source.preprocessing
        source.weights = "imagenet"
        return source
    if _is_run_dir(weights):
        run_dir, config = _finished_run(weights)
        arch, kwargs, pre, _ = _run_architecture(config)
        if arch != source.arch:
            raise ValueError(f"The run's model is {arch!r}, not the backbone's architecture "
                             f"{source.arch!r}. Received: weights={os.fspath(weights)!r}")
        source.source, source.weights, source.run_config = "run", run_dir, config
        source.preprocessing = preprocessing or pre
        source.model_kwargs = {k: v for k, v in kwargs.items() if k not in _ARCH_KWARGS}
        return source
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be None, 'imagenet', a .h5 weights file or a run "
                         f"directory. Received: weights={weights!r}")
    path = os.path.abspath(os.fspath(weights))
    if not os.path.isfile(path):
        raise ValueError(f"weights file not found. Received: weights={os.fspath(weights)!r}")
    if not path.endswith(".h5"):
        raise ValueError(f"weights must be a .weights.h5 (or legacy .h5) file. "
                         f"Received: weights={os.fspath(weights)!r}")
    digest = sha256_of(path)
    if weights_sha256 is not None and digest != weights_sha256.lower():
        raise ValueError(f"weights file sha256 mismatch: the file has {digest}; refusing to load "
                         f"it. Received: weights_sha256={weights_sha256!r}")
    source.weights, source.weights_sha256 = path, digest
    source.preprocessing = preprocessing or "none"
    return source


def _zoo_or_keras_source(arch, kind, *, backbone):
    if kind == "keras" or (isinstance(arch, str) and arch in KERAS_BACKBONES
                           and arch not in list_models()):
        meta = KERAS_BACKBONES[arch]
        return BackboneSource(
            name=f"keras:{arch}", source="keras", arch=arch, base_model=None,
            min_size=meta["min_size"], default_size=None, stages=meta["stages"],
            first_conv=meta["first_conv"], preprocessing="none", adapt=meta["adapt"],
            weights=None, weights_sha256=None)
    names = _backbone_names()
    if arch not in list_models() or get_spec(arch).features is None:
        hint = "" if arch in list_models() else " (not a registered model)"
        raise ValueError(f"{arch!r} is not a backbone{hint}. Backbones: {', '.join(names)}, "
                         f"keras:NAME ({', '.join(KERAS_BACKBONES)}) or a finished zoo run "
                         f"directory. Received: backbone={backbone!r}")
    spec = get_spec(arch)
    info = spec.features
    return BackboneSource(
        name=arch, source="zoo", arch=arch, base_model=arch,
        min_size=spec.min_input_shape[0] if spec.min_input_shape else 1,
        default_size=None, stages=info.stages, first_conv=info.first_conv,
        preprocessing="none", adapt=True, weights=None, weights_sha256=None)


# ------------------------------------------------------------------------ TensorFlow below


def _make(source, channels, size):
    """The architecture without its top at (size, size, channels), randomly initialised."""
    import keras
    shape = (size, size, channels)
    if source.source == "keras" or source.arch in KERAS_BACKBONES and source.base_model is None:
        return getattr(keras.applications, source.arch)(weights=None, include_top=False,
                                                        input_shape=shape)
    return get_spec(source.arch).build(include_top=False, input_shape=shape,
                                       **source.model_kwargs)


def _weighted_layers(model):
    return [layer for layer in _flat_layers(model) if layer.weights]


def _flat_layers(model):
    import keras
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_flat_layers(layer))
        else:
            out.append(layer)
    return out


def adapt_kernel(kernel, channels):
    """First-conv kernel (kh, kw, C, out) for `channels` inputs (timm's adapt_input_conv).

    1 channel sums the kernels over C (a gray image g equals the RGB image
    (g, g, g)); otherwise the C kernels repeat cyclically, scaled by C / channels,
    so an input with all channels equal gives the same activation.
    """
    import numpy as np
    kernel = np.asarray(kernel)
    have = kernel.shape[2]
    if channels == have:
        return kernel
    if channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    index = [i % have for i in range(channels)]
    return kernel[:, :, index, :] * (have / channels)


def copy_weights(source_model, target, *, first_conv, what):
    """Copy weights layer by layer (same architecture, same order), adapting `first_conv`."""
    src_layers, dst_layers = _weighted_layers(source_model), _weighted_layers(target)
    if len(src_layers) < len(dst_layers):
        raise ValueError(f"{what} does not fit the backbone: it has {len(src_layers)} layers "
                         f"with weights, the backbone {len(dst_layers)}.")
    for src, dst in zip(src_layers, dst_layers):
        values = src.get_weights()
        shapes = [tuple(w.shape) for w in dst.weights]
        if dst.name == first_conv and values and values[0].ndim == 4 \
                and tuple(values[0].shape) != shapes[0]:
            values = [adapt_kernel(values[0], shapes[0][2]), *values[1:]]
        if [tuple(v.shape) for v in values] != shapes:
            raise ValueError(f"{what} does not fit the backbone: the first layer that does not "
                             f"match is {dst.name!r} (expects {shapes}, the weights have "
                             f"{[tuple(v.shape) for v in values]}).")
        dst.set_weights(values)


def _load_file(model, path, what):
    """`model.load_weights(path)`, naming the first layer that does not fit on failure."""
    import numpy as np
    try:
        model.load_weights(path)
        return
    except Exception as err:  # Keras raises ValueError, KeyError or h5py errors here
        first_error = err
    # Mark every variable, load what fits, and report the first layer left marked.
    for variable in model.weights:
        variable.assign(np.full(variable.shape, np.nan, variable.dtype))
    try:
        model.load_weights(path, skip_mismatch=True)
    except Exception:
        pass
    for layer in _weighted_layers(model):
        if any(np.isnan(np.asarray(w)).all() for w in layer.get_weights()):
            raise ValueError(f"{what} does not fit the backbone {model.name}: the first layer "
                             f"that does not match is {layer.name!r} ({first_error})") from None
    raise ValueError(f"{what} does not fit the backbone {model.name}: {first_error}") from None


def build(source, *, channels, size, in_channels="adapt"):
    """The feature extractor of `source`: a Model named "backbone" whose output is its last stage.

    Args:
        source: a `BackboneSource` from `resolve`.
        channels: channels of the data.
        size: input height and width.
        in_channels: "adapt" (first convolution adapted to `channels`) or
            "tile" (3 channels; the data pipeline repeats a gray channel). Defaults to "adapt".

    Returns:
        (backbone model, weights provenance dict).
    """
    import keras

    from zoo.models import _blocks

    model_channels = 3 if in_channels == "tile" else channels
    if model_channels != 3 and not source.adapt and source.weights is not None:
        raise ValueError(f"{source.name} normalises per channel before its first convolution, "
                         f"so it cannot be adapted to {channels} channels; pass "
                         f"in_channels='tile'. Received: in_channels={in_channels!r}")
    if source.weights == "imagenet":
        # Before building anything: offline without a cached file fails at once.
        app = source.arch if source.source == "keras" else get_spec(source.arch).features.imagenet
        path = _blocks.imagenet_weights(app, include_top=False, rows=size)
    target = _make(source, model_channels, size)
    provenance = {"source": source.weights, "sha256": source.weights_sha256}
    if source.weights == "imagenet":
        provenance = {"source": "imagenet", "file": path, "sha256": sha256_of(path)}
        loaded = target if model_channels == 3 else _make(source, 3, size)
        _load_file(loaded, path, f"ImageNet weights {os.path.basename(path)}")
        if loaded is not target:
            copy_weights(loaded, target, first_conv=source.first_conv, what="ImageNet weights")
    elif source.source == "run":
        _, run_model = runs.load_run(source.weights)
        try:
            run_model = run_model.get_layer("backbone")  # a fine-tuned run's backbone
        except ValueError:
            pass
        provenance = {"source": source.weights,
                      "sha256": sha256_of(os.path.join(source.weights, runs.MODEL_FILE))}
        copy_weights(run_model, target, first_conv=source.first_conv,
                     what=f"the run {source.weights}")
    elif source.weights is not None:
        what = f"weights file {source.weights!r}"
        if model_channels == 3:
            _load_file(target, source.weights, what)
        else:
            try:
                target.load_weights(source.weights)
            except Exception:
                loaded = _make(source, 3, size)
                _load_file(loaded, source.weights, what)
                copy_weights(loaded, target, first_conv=source.first_conv, what=what)
    missing = [n for n in source.stages if n not in {layer.name for layer in target.layers}]
    if missing:
        raise ValueError(f"Backbone {source.name} lacks its declared stage layers {missing}.")
    return keras.Model(target.input, target.output, name="backbone"), provenance
