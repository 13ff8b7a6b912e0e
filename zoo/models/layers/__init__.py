"""Every custom Keras layer, model and loss of the zoo, registered by import.

`zoo.runs.load_run` imports this package before `keras.saving.load_model`,
so any `.keras` file the zoo wrote reloads in a fresh process, whichever
family (or task hooks) produced it.  Importing it imports Keras; builders
import the one module they need inside their bodies, so `zoo list` stays
free of TensorFlow.

    cnn         LocalResponseNormalization (AlexNet)
    sequence    PositionalEmbedding, Denormalization, StandardizedError
    generative  GaussianSampler, VAE, GAN, ConditionalGAN
    transfer    ImagePreprocessing, the layer-decay optimizers (fine-tuning)
"""

from zoo.models.layers import cnn  # noqa: F401
from zoo.models.layers import generative  # noqa: F401
from zoo.models.layers import sequence  # noqa: F401
from zoo.models.layers import transfer  # noqa: F401
