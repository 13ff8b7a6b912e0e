"""Keras's published ImageNet weight files: names, origins, hashes and the cache.

`imagenet_weights(app, include_top=...)` returns the path of
`keras.applications`' weight file for `app`: Keras's download cache if the
file is there, else one download through `keras.utils.get_file` (which
checks Keras's published hash).  The zoo's CNN builders and transfer's
backbone sources both come here, so a file fetched once serves both.

No Keras at import time.
"""

import contextlib
import os
import re
import warnings

from zoo import checks

# Keras's published ImageNet weight files, as keras.applications fetches them
# (keras/src/applications/*.py): app -> (origin folder, file stem, md5 without
# top, md5 with top).  The names are Keras's own, so a file downloaded by
# keras.applications on any machine is found in the same cache, and vice versa.
_KERAS = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS_WEIGHTS = {
    "VGG16": ("vgg16/", "vgg16_weights_tf_dim_ordering_tf_kernels",
              "6d6bbae143d832006294945121d1f1fc", "64373286793e3c8b2b4e3219cbf3544b"),
    "VGG19": ("vgg19/", "vgg19_weights_tf_dim_ordering_tf_kernels",
              "253f8cb515780f3b799900260a226db6", "cbe5617147190e668d6c5d5026f83318"),
    "ResNet50": ("resnet/", "resnet50_weights_tf_dim_ordering_tf_kernels",
                 "4d473c1dd8becc155b73f8504c6f6626", "2cb95161c43110f7111970584f804107"),
    "ResNet101": ("resnet/", "resnet101_weights_tf_dim_ordering_tf_kernels",
                  "88cf7a10940856eca736dc7b7e228a21", "f1aeb4b969a6efcfb50fad2f0c20cfc5"),
    "ResNet152": ("resnet/", "resnet152_weights_tf_dim_ordering_tf_kernels",
                  "ee4c566cf9a93f14d82f913c2dc6dd0c", "100835be76be38e30d865e96f2aaae62"),
    "ResNet50V2": ("resnet/", "resnet50v2_weights_tf_dim_ordering_tf_kernels",
                   "fac2f116257151a9d068a22e544a4917", "3ef43a0b657b3be2300d5770ece849e0"),
    "EfficientNetB0": ("https://storage.googleapis.com/keras-applications/", "efficientnetb0",
                       "50bc09e76180e00e4465e1a485ddc09d", "902e53a9f72be733fc0bcb005b3ebbac"),
    # Keras publishes no hash for MobileNetV2; the stem names alpha 1.0 and the
    # input size the weights were trained at (any size loads without the top).
    "MobileNetV2": ("mobilenet_v2/", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}",
                    None, None),
}
MOBILENET_V2_ROWS = (96, 128, 160, 192, 224)


def imagenet_file_name(app, *, include_top, rows=224):
    """(file name, origin URL, Keras's hash) of `app`'s ImageNet weights.

    Args:
        app: a `keras.applications` name, one of `KERAS_WEIGHTS`.
        include_top: the file with the classifier, or the one without.
        rows: input height, which picks MobileNetV2's file. Defaults to 224.
    """
    checks.choice("app", app, tuple(KERAS_WEIGHTS))
    folder, stem, hash_notop, hash_top = KERAS_WEIGHTS[app]
    if app == "MobileNetV2":
        stem = stem.format(rows=rows if rows in MOBILENET_V2_ROWS else 224)
        name = stem + (".h5" if include_top else "_no_top.h5")
    else:
        name = stem + (".h5" if include_top else "_notop.h5")
    origin = (folder if folder.startswith("https://") else _KERAS + folder) + name
    return name, origin, hash_top if include_top else hash_notop


def keras_cache_dir():
    """Keras's download cache for weights (`$KERAS_HOME/models`, as `keras.utils.get_file`)."""
    from keras.src.backend.config import keras_home  # the same place get_file uses

    base = os.path.expanduser(keras_home())
    if os.path.isdir(base) and not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")  # get_file's own fallback
    return os.path.join(base, "models")


def offline():
    """True when ZOO_OFFLINE asks never to touch the network."""
    return os.environ.get("ZOO_OFFLINE", "").lower() in ("1", "true", "yes")


def imagenet_weights(app, *, include_top, rows=224):
    """Path of `app`'s ImageNet weights: Keras's cache, else one download through Keras.

    A cached file is used as is (Keras checked its hash when it downloaded
    it); a missing one is fetched with `keras.utils.get_file` and Keras's
    published hash.  With ZOO_OFFLINE=1, or when the download fails, raises
    `ValueError` at once naming the file and the folder to put it in.

    Args:
        app: a `keras.applications` name, one of `KERAS_WEIGHTS`.
        include_top: the file with the classifier, or the one without.
        rows: input height, which picks MobileNetV2's file. Defaults to 224.
    """
    name, origin, file_hash = imagenet_file_name(app, include_top=include_top, rows=rows)
    cache = keras_cache_dir()
    path = os.path.join(cache, name)
    if os.path.isfile(path):
        return path
    where = (f"{name!r} is not in Keras's cache. Download {origin} on a machine with network "
             f"(or run keras.applications.{app}(weights='imagenet'"
             f"{'' if include_top else ', include_top=False'}) there) and copy it to {path}")
    if offline():
        raise ValueError(f"weights='imagenet' with ZOO_OFFLINE set: {where}. "
                         f"Received: weights='imagenet'")
    import keras
    try:
        return keras.utils.get_file(name, origin, cache_subdir="models", file_hash=file_hash)
    except Exception as err:  # urllib raises assorted errors; Keras wraps some in Exception
        raise ValueError(f"weights='imagenet': download failed ({type(err).__name__}: {err}); "
                         f"{where}. Received: weights='imagenet'") from None


# ------------------------------------------------------------ loading a weights file

@contextlib.contextmanager
def quiet_loading():
    """Keras's own warnings silenced around a weights load.

    A file that does not fit makes Keras warn once per container it skips (80
    lines for a ResNet-20); the caller reports the mismatch in one line instead.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def load_mismatch(err):
    """(expected shape, file's shape, objects that failed, first layer) from Keras's error, or None.

    Keras names them only in its message ("... variable.shape=(3, 3, 16, 32),
    Received: value.shape=(3, 3, 16, 16) ... A total of 21 objects could not be
    loaded"); anything else is left to the layer name.
    """
    text = str(err)
    shapes = re.search(r"variable\.shape=(\([0-9, ]*\)),\s*Received: value\.shape=(\([0-9, ]*\))",
                       text)
    if shapes is None:
        return None
    total = re.search(r"A total of (\d+) objects could not be loaded", text)
    name = re.search(r"error message for object <\w+ name=([^,>]+)", text)
    return (shapes.group(1), shapes.group(2), int(total.group(1)) if total else None,
            name.group(1) if name else None)


def first_line(err):
    """An error's first line, cut to 300 characters (Keras appends whole tensors)."""
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return line if len(line) <= 300 else line[:297] + "..."
