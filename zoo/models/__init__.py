"""Model families. Importing a family module registers its models.

One import line per family module; keep the list sorted.
"""

from zoo.models import alexnet  # noqa: F401
from zoo.models import attention  # noqa: F401
from zoo.models import autoencoder  # noqa: F401
from zoo.models import gan  # noqa: F401
from zoo.models import lenet  # noqa: F401
from zoo.models import mlp  # noqa: F401
from zoo.models import resnet  # noqa: F401
from zoo.models import resnet9  # noqa: F401
from zoo.models import rnn  # noqa: F401
from zoo.models import vae  # noqa: F401
from zoo.models import vgg  # noqa: F401
from zoo.models import wide_resnet  # noqa: F401
