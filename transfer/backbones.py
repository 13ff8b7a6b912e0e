"""Backbones behind one name, with verified weights.

    resnet50, vgg16, resnet20, ...          a registered zoo model that declares its features
    keras:MobileNetV2, keras:ResNet50, ...  a keras.applications model
    runs/resnet20_fashion                   a finished zoo run (its head is cut off)

A backbone is an architecture (`ZooArchitecture`, `KerasApplication`: its
`FeatureInfo`, minimum input, how to build it) and weights (`RandomInit`,
`ImagenetWeights`, `WeightsFile`, `RunWeights`: validated without
TensorFlow, loaded into the built model).  `resolve` turns a name and its
weights into a `BackboneSource` without TensorFlow; `build` makes the feature
extractor (input -> last stage's feature map) with the weights loaded,
adapting the first convolution to the data's channels.

A new kind of backbone name (a keras-hub preset, say) is one class with
`claims(name)`, `resolve(name, *, weights, weights_sha256, preprocessing)`
and `rows()`, added to `NAME_KINDS`; a new kind of weights (a timm-converted
checkpoint) is one class with `claims(weights)`, `resolve(weights,
architecture, *, sha256)`, `value`, `sha256`, `preprocessing` and `load`,
added to `WEIGHT_KINDS`.
"""

import dataclasses
import hashlib
import os
from typing import ClassVar, Optional

from zoo import checks, runs
from zoo.registry import FeatureInfo, get_spec, list_models

IN_CHANNELS = ("adapt", "tile")
PREPROCESSING = ("none", "raw", "caffe", "tf", "torch")

# Builder arguments a run records that the backbone sets itself.
_ARCH_KWARGS = ("input_shape", "num_classes", "include_top", "weights", "pooling",
                "classifier_activation", "name")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_run_dir(text):
    return isinstance(text, (str, os.PathLike)) and os.path.isdir(os.fspath(text))


def _finished_run(run_dir):
    run_dir = os.path.abspath(os.fspath(run_dir))
    if not (runs.is_finished(run_dir) and os.path.exists(os.path.join(run_dir, runs.MODEL_FILE))):
        raise runs.RunError(f"A run directory used as a backbone must hold a finished run "
                            f"(metrics.json and model.keras). Received: {run_dir!r}")
    return run_dir, runs.read_config(run_dir)


def _run_architecture(config):
    """(architecture name, builder kwargs, preprocessing, source kind) of a run's backbone."""
    backbone = config.extra.get("backbone") if config.extra else None
    if not config.registered and backbone:  # a fine-tuned run: its nested backbone
        return backbone.get("architecture"), dict(backbone.get("model_kwargs") or {}), \
            backbone.get("preprocessing", "none"), backbone.get("source")
    return config.base_model or config.model, dict(config.model_kwargs or {}), "none", "zoo"


# ------------------------------------------------------------------------ architectures


class Architecture:
    """What every architecture offers: its features, minimum input and a builder.

    Subclasses set `name`, `arch`, `base_model`, `features` (a `FeatureInfo`),
    `min_size`, `native_size` (the input size it was designed for: what
    images of no size of their own, a folder's, are resized to), `adapt`
    (False: the first convolution cannot take other channel counts) and
    `make(channels, size, model_kwargs)`; as a kind of
    backbone name also `claims(name)`, `named(name)` and `rows()`.
    """

    kind: ClassVar[str]

    @property
    def stages(self):
        return self.features.stages

    @property
    def first_conv(self):
        return self.features.first_conv

    @classmethod
    def resolve(cls, name, *, weights, weights_sha256, preprocessing):
        return _with_weights(cls.named(name), weights, weights_sha256, preprocessing)


@dataclasses.dataclass(frozen=True)
class ZooArchitecture(Architecture):
    """A registered zoo model that declares its features (`backbone=True`)."""

    arch: str
    kind: ClassVar[str] = "zoo"
    adapt: ClassVar[bool] = True

    @property
    def name(self):
        return self.arch

    @property
    def base_model(self):
        return self.arch

    @property
    def features(self):
        return get_spec(self.arch).features

    @property
    def min_size(self):
        spec = get_spec(self.arch)
        return spec.min_input_shape[0] if spec.min_input_shape else 1

    @property
    def native_size(self):
        return get_spec(self.arch).input_shape[0]

    @staticmethod
    def claims(name):
        return name in list_models()

    @classmethod
    def named(cls, arch, *, backbone=None):
        if arch not in list_models() or get_spec(arch).features is None:
            hint = "" if arch in list_models() else " (not a registered model)"
            raise ValueError(f"{arch!r} is not a backbone{hint}. Backbones: "
                             f"{', '.join(_zoo_backbones())}, keras:NAME "
                             f"({', '.join(KERAS_BACKBONES)}) or a finished zoo run directory. "
                             f"Received: backbone={backbone or arch!r}")
        return cls(arch)

    @staticmethod
    def rows():
        """Zoo backbones show their default input and the preprocessing ImageNet weights expect."""
        for name in _zoo_backbones():
            spec = get_spec(name)
            info = spec.features
            pre = (f"none; weights='imagenet': {info.imagenet_preprocessing} (keras.applications."
                   f"{info.imagenet})" if info.imagenet else "none (the zoo's [0, 1] images)")
            yield (name, "zoo", "x".join(str(d) for d in spec.input_shape[:2])
                   + f" (min {spec.min_input_shape[0]})", pre)

    def make(self, channels, size, model_kwargs):
        """The architecture without its top at (size, size, channels), randomly initialised."""
        return get_spec(self.arch).build(include_top=False, input_shape=(size, size, channels),
                                         **model_kwargs)


def _zoo_backbones():
    return [n for n in list_models() if get_spec(n).features is not None]


@dataclasses.dataclass(frozen=True)
class KerasApplication(Architecture):
    """A `keras.applications` model; `features.imagenet_preprocessing` is the
    `preprocess_input` mode its ImageNet weights expect ("raw": [0, 255], the
    model normalises itself)."""

    arch: str
    features: FeatureInfo
    size: int = 224
    min_size: int = 32
    adapt: bool = True
    kind: ClassVar[str] = "keras"
    base_model: ClassVar[Optional[str]] = None

    @property
    def name(self):
        return f"keras:{self.arch}"

    @property
    def native_size(self):
        return self.size

    @staticmethod
    def claims(name):
        return name.startswith("keras:")

    @classmethod
    def named(cls, name):
        arch = name[len("keras:"):]
        if arch not in KERAS_BACKBONES:
            raise ValueError(f"Unknown keras.applications backbone. Received: "
                             f"backbone={name!r}. Allowed: "
                             f"{', '.join('keras:' + k for k in KERAS_BACKBONES)}")
        return KERAS_BACKBONES[arch]

    @staticmethod
    def rows():
        for app in KERAS_BACKBONES.values():
            yield (app.name, "keras.applications",
                   f"{app.size}x{app.size} (min {app.min_size})",
                   app.features.imagenet_preprocessing)

    def make(self, channels, size, model_kwargs):
        import keras
        return getattr(keras.applications, self.arch)(weights=None, include_top=False,
                                                      input_shape=(size, size, channels))


def _keras(arch, preprocessing, first_conv, stages, reductions, **kwargs):
    features = FeatureInfo(stages=stages, reductions=reductions, first_conv=first_conv,
                           imagenet=arch, imagenet_preprocessing=preprocessing)
    return KerasApplication(arch, features, **kwargs)


_VGG_STAGES = tuple(f"block{b}_pool" for b in range(1, 6))
KERAS_BACKBONES = {app.arch: app for app in (
    _keras("MobileNetV2", "tf", "Conv1", ("expanded_conv_project_BN", "block_2_add",
                                          "block_5_add", "block_12_add", "out_relu"),
           (2, 4, 8, 16, 32)),
    # Its per-channel Normalization layer sits before the stem: no other channel counts.
    _keras("EfficientNetB0", "raw", "stem_conv", ("block1a_project_bn", "block2b_add",
                                                  "block3b_add", "block5c_add", "top_activation"),
           (2, 4, 8, 16, 32), adapt=False),
    _keras("ResNet50", "caffe", "conv1_conv", ("conv2_block3_out", "conv3_block4_out",
                                               "conv4_block6_out", "conv5_block3_out"),
           (4, 8, 16, 32)),
    # V2 strides at the end of each stack, so conv2 already ends at 1/8.
    _keras("ResNet50V2", "tf", "conv1_conv", ("conv2_block3_out", "conv3_block4_out",
                                              "conv4_block6_out", "post_relu"),
           (8, 16, 32, 32)),
    _keras("VGG16", "caffe", "block1_conv1", _VGG_STAGES, (2, 4, 8, 16, 32)),
    _keras("VGG19", "caffe", "block1_conv1", _VGG_STAGES, (2, 4, 8, 16, 32)),
)}


def _architecture(arch, kind, *, backbone):
    """The architecture a run recorded: keras when it says so or no zoo model has the name."""
    if kind == "keras" or (arch in KERAS_BACKBONES and arch not in list_models()):
        return KERAS_BACKBONES[arch]
    return ZooArchitecture.named(arch, backbone=backbone)


class RunDirectory:
    """A finished zoo run as a backbone: the architecture it recorded, its weights and input."""

    @staticmethod
    def claims(name):
        return _is_run_dir(name)

    @staticmethod
    def resolve(name, *, weights, weights_sha256, preprocessing):
        if weights is not None:
            raise ValueError(f"A run directory brings its own weights; weights must be None. "
                             f"Received: weights={weights!r}")
        run_dir, config = _finished_run(name)
        arch, _, _, kind = _run_architecture(config)
        architecture = _architecture(arch, kind, backbone=run_dir)
        source = _with_weights(architecture, run_dir, None, preprocessing)
        shape = config.input_shape or []
        source.default_size = shape[0] if shape else None
        return source

    @staticmethod
    def rows():
        return ()


# What a backbone name can be, in order of precedence: a registered name wins
# over a directory of the same name.
NAME_KINDS = (ZooArchitecture, KerasApplication, RunDirectory)


# ------------------------------------------------------------------------ weights


class RandomInit:
    """No weights: the architecture's own initialisation."""

    value = None
    sha256 = None
    preprocessing = "none"

    @staticmethod
    def load(make, channels, *, size, first_conv):
        return make(channels), {"source": None, "sha256": None}


@dataclasses.dataclass(frozen=True)
class ImagenetWeights:
    """`keras.applications`' published ImageNet weights, through Keras's download cache."""

    app: str
    preprocessing: str
    value: ClassVar[str] = "imagenet"
    sha256: ClassVar[Optional[str]] = None

    @staticmethod
    def claims(weights):
        return isinstance(weights, str) and weights == "imagenet"

    @classmethod
    def resolve(cls, weights, architecture, *, sha256):
        if architecture.features.imagenet is None:
            compatible = [n for n in _zoo_backbones() if get_spec(n).features.imagenet]
            raise ValueError(f"keras.applications publishes no ImageNet weights for "
                             f"{architecture.arch}; weight-compatible zoo backbones: "
                             f"{', '.join(compatible)}, or use keras:NAME. "
                             f"Received: weights='imagenet'")
        return cls(architecture.features.imagenet, architecture.features.imagenet_preprocessing)

    def load(self, make, channels, *, size, first_conv):
        from zoo.models import weights
        # Before building anything: offline without a cached file fails at once.
        path = weights.imagenet_weights(self.app, include_top=False, rows=size)
        target = make(channels)
        loaded = target if channels == 3 else make(3)
        _load_file(loaded, path, f"ImageNet weights {os.path.basename(path)}")
        if loaded is not target:
            copy_weights(loaded, target, first_conv=first_conv, what="ImageNet weights")
        return target, {"source": "imagenet", "file": path, "sha256": sha256_of(path)}


@dataclasses.dataclass(frozen=True)
class RunWeights:
    """The weights of a finished zoo run of the same architecture (a fine-tuned run's backbone)."""

    value: str
    preprocessing: str
    model_kwargs: dict
    sha256: ClassVar[Optional[str]] = None

    @staticmethod
    def claims(weights):
        return _is_run_dir(weights)

    @classmethod
    def resolve(cls, weights, architecture, *, sha256):
        run_dir, config = _finished_run(weights)
        arch, kwargs, preprocessing, _ = _run_architecture(config)
        if arch != architecture.arch:
            raise ValueError(f"The run's model is {arch!r}, not the backbone's architecture "
                             f"{architecture.arch!r}. Received: weights={os.fspath(weights)!r}")
        return cls(run_dir, preprocessing,
                   {k: v for k, v in kwargs.items() if k not in _ARCH_KWARGS})

    def load(self, make, channels, *, size, first_conv):
        target = make(channels)
        _, run_model = runs.load_run(self.value)
        try:
            run_model = run_model.get_layer("backbone")  # a fine-tuned run's backbone
        except ValueError:
            pass
        copy_weights(run_model, target, first_conv=first_conv, what=f"the run {self.value}")
        return target, {"source": self.value,
                        "sha256": sha256_of(os.path.join(self.value, runs.MODEL_FILE))}


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    """A local .weights.h5 (or legacy .h5) file, checked against an expected sha256."""

    value: str
    sha256: str
    preprocessing: ClassVar[str] = "none"

    @staticmethod
    def claims(weights):
        return isinstance(weights, (str, os.PathLike))

    @classmethod
    def resolve(cls, weights, architecture, *, sha256):
        path = os.path.abspath(os.fspath(weights))
        if not os.path.isfile(path):
            raise ValueError(f"weights file not found. Received: weights={os.fspath(weights)!r}")
        if not path.endswith(".h5"):
            raise ValueError(f"weights must be a .weights.h5 (or legacy .h5) file. "
                             f"Received: weights={os.fspath(weights)!r}")
        digest = sha256_of(path)
        if sha256 is not None and digest != sha256.lower():
            raise ValueError(f"weights file sha256 mismatch: the file has {digest}; refusing to "
                             f"load it. Received: weights_sha256={sha256!r}")
        return cls(path, digest)

    def load(self, make, channels, *, size, first_conv):
        from zoo.models import weights as weights_module

        what = f"weights file {self.value!r}"
        target = make(channels)
        if channels == 3:
            _load_file(target, self.value, what)
        else:
            try:  # a file saved at the data's own channels
                with weights_module.quiet_loading():
                    target.load_weights(self.value)
            except Exception:
                loaded = make(3)
                _load_file(loaded, self.value, what)
                copy_weights(loaded, target, first_conv=first_conv, what=what)
        return target, {"source": self.value, "sha256": self.sha256}


# What `weights` can be besides None, in order: a directory is a run, any other path a file.
WEIGHT_KINDS = (ImagenetWeights, RunWeights, WeightsFile)


def _weights(weights, architecture, sha256):
    if weights is None:
        return RandomInit()
    kind = next((k for k in WEIGHT_KINDS if k.claims(weights)), None)
    if kind is None:
        raise ValueError(f"weights must be None, 'imagenet', a .h5 weights file or a run "
                         f"directory. Received: weights={weights!r}")
    return kind.resolve(weights, architecture, sha256=sha256)


# ------------------------------------------------------------------------ a resolved backbone


@dataclasses.dataclass
class BackboneSource:
    """A validated architecture, its weights and the input preprocessing (no TensorFlow yet)."""

    architecture: Architecture
    weights_source: object  # RandomInit, ImagenetWeights, RunWeights or WeightsFile
    preprocessing: str
    default_size: Optional[int] = None  # a run directory's own input size

    @property
    def name(self):
        return self.architecture.name

    @property
    def kind(self):
        """"zoo", "keras", or "run" when the weights come from a run."""
        return "run" if isinstance(self.weights_source, RunWeights) else self.architecture.kind

    @property
    def arch(self):
        return self.architecture.arch

    @property
    def base_model(self):
        return self.architecture.base_model

    @property
    def min_size(self):
        return self.architecture.min_size

    @property
    def native_size(self):
        """A run's own input size, else the architecture's (224 for keras.applications)."""
        return self.default_size or self.architecture.native_size

    @property
    def stages(self):
        return self.architecture.stages

    @property
    def first_conv(self):
        return self.architecture.first_conv

    @property
    def weights(self):
        """None, "imagenet", a weights file or a run directory."""
        return self.weights_source.value

    @property
    def weights_sha256(self):
        return self.weights_source.sha256

    @property
    def model_kwargs(self):
        """Builder arguments; only a run records its own (a zoo model's width, say)."""
        return dict(getattr(self.weights_source, "model_kwargs", {}))

    def describe(self):
        """What a fine-tuned run records as its backbone (read back by `RunDirectory`)."""
        described = {"name": self.name, "source": self.kind, "architecture": self.arch,
                     "base_model": self.base_model, "stages": list(self.stages),
                     "first_conv": self.first_conv, "preprocessing": self.preprocessing,
                     "model_kwargs": self.model_kwargs}
        if self.kind == "run":
            described["run_dir"] = self.weights
        return described

    def build(self, *, channels, size, in_channels="adapt"):
        """See `build`."""
        import keras

        model_channels = 3 if in_channels == "tile" else channels
        if model_channels != 3 and not self.architecture.adapt and self.weights is not None:
            raise ValueError(f"{self.name} normalises per channel before its first convolution, "
                             f"so it cannot be adapted to {channels} channels; pass "
                             f"in_channels='tile'. Received: in_channels={in_channels!r}")
        model_kwargs = self.model_kwargs

        def make(make_channels):
            return self.architecture.make(make_channels, size, model_kwargs)

        target, provenance = self.weights_source.load(make, model_channels, size=size,
                                                      first_conv=self.first_conv)
        missing = [n for n in self.stages if n not in {layer.name for layer in target.layers}]
        if missing:
            raise ValueError(f"Backbone {self.name} lacks its declared stage layers {missing}.")
        return keras.Model(target.input, target.output, name="backbone"), provenance


def _with_weights(architecture, weights, weights_sha256, preprocessing):
    weights_source = _weights(weights, architecture, weights_sha256)
    return BackboneSource(architecture, weights_source,
                          preprocessing or weights_source.preprocessing)


def list_backbones():
    """Rows (name, source, input size, preprocessing) of every backbone; no TensorFlow.

    A zoo run directory is a backbone too (`transfer.finetune("runs/NAME", ...)`).
    """
    return [row for kind in NAME_KINDS for row in kind.rows()]


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
    if weights_sha256 is not None and (
            not isinstance(weights_sha256, str) or len(weights_sha256) != 64
            or any(digit not in "0123456789abcdef" for digit in weights_sha256.lower())):
        raise ValueError(f"weights_sha256 must be 64 hexadecimal digits. "
                         f"Received: weights_sha256={weights_sha256!r}")
    if weights_sha256 is not None and next(
            (k for k in WEIGHT_KINDS if weights is not None and k.claims(weights)),
            None) is not WeightsFile:
        # Never silently unchecked: Keras checks ImageNet files itself, a run is ours.
        raise ValueError(f"weights_sha256 checks a weights file (--weights FILE.h5); it does "
                         f"not apply to weights={weights!r}. Received: "
                         f"weights_sha256={weights_sha256!r}")
    if not isinstance(backbone, (str, os.PathLike)):
        raise TypeError(f"backbone must be a name or a run directory. "
                        f"Received: backbone={backbone!r}")
    backbone = os.fspath(backbone)
    # Nothing claims an unknown name: the zoo reports it with the list of backbones.
    kind = next((k for k in NAME_KINDS if k.claims(backbone)), ZooArchitecture)
    return kind.resolve(backbone, weights=weights, weights_sha256=weights_sha256,
                        preprocessing=preprocessing)


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
    return source.build(channels=channels, size=size, in_channels=in_channels)


# ------------------------------------------------------------------------ copying weights


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
    """`model.load_weights(path)`; a file that does not fit is one ValueError naming the layer.

    The message names the first layer that does not fit, the shape it expects
    and the shape the file holds (never Keras's dump of the variable's values).
    """
    import numpy as np

    from zoo.models import weights as weights_module
    try:
        with weights_module.quiet_loading():
            model.load_weights(path)
        return
    except Exception as err:  # Keras raises ValueError, KeyError or h5py errors here
        first_error = err
    # Mark every variable, load what fits, and report the first layer left marked.
    for variable in model.weights:
        variable.assign(np.full(variable.shape, np.nan, variable.dtype))
    try:
        with weights_module.quiet_loading():
            model.load_weights(path, skip_mismatch=True)
    except Exception:
        pass
    layer = next((layer for layer in _weighted_layers(model)
                  if any(np.isnan(np.asarray(w)).all() for w in layer.get_weights())), None)
    mismatch = weights_module.load_mismatch(first_error)
    if mismatch is not None:
        expected, found, total, name = mismatch
        name = name or (layer.name if layer is not None else None)
        more = f" ({total} layers do not fit)" if total and total > 1 else ""
        detail = (f"the first layer that does not match is {name!r}: it " if name else
                  "a layer ") + f"expects weights of shape {expected}, the file holds {found}{more}"
    elif layer is not None:
        shapes = [tuple(w.shape) for w in layer.weights]
        detail = (f"the first layer that does not match is {layer.name!r} (expects "
                  f"{shapes}): {weights_module.first_line(first_error)}")
    else:
        detail = weights_module.first_line(first_error)
    raise ValueError(f"{what} does not fit the backbone {model.name}: {detail}. It must be "
                     f"saved from the same architecture (same widths, channels and "
                     f"include_top). Received: weights={path!r}") from None
