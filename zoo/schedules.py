"""Learning-rate schedules Keras does not have, serializable as `zoo>NAME`.

Their own module (not `zoo.callbacks`) because `zoo.runs.load_model` must
register them before a `.keras` file that uses one can load, and
`zoo.callbacks` imports `zoo.runs`: the schedules import neither.
"""

import keras
import numpy as np

from zoo import checks


@keras.saving.register_keras_serializable(package="zoo")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle learning rate (Smith & Topin 2017): warm up, then anneal far below the start.

    Linear from `peak / initial_divisor` up to `peak` over the first
    `warmup_fraction` of the steps, then half a cosine down to
    `peak * final_fraction` at `total_steps` (held there after).  Keras has
    warm-up + cosine (`CosineDecay(warmup_target=...)`) but it warms up from a
    fixed value and decays to `alpha * peak`, not the one-cycle shape
    (starting at a fraction of the peak), hence this class.

    Args:
        peak: the highest learning rate.
        total_steps: optimizer steps of the whole run.
        warmup_fraction: share of the steps spent rising. Defaults to 0.3.
        initial_divisor: the first rate is `peak / initial_divisor`. Defaults to 25.
        final_fraction: the last rate is `peak * final_fraction`. Defaults to 1e-4.
    """

    def __init__(self, peak, total_steps, warmup_fraction=0.3, initial_divisor=25.0,
                 final_fraction=1e-4):
        self.peak = checks.positive_float("peak", peak)
        self.total_steps = checks.positive_int("total_steps", total_steps)
        self.warmup_fraction = checks.fraction("warmup_fraction", warmup_fraction)
        self.initial_divisor = checks.positive_float("initial_divisor", initial_divisor)
        if self.initial_divisor < 1:
            raise ValueError(f"initial_divisor must be at least 1. "
                             f"Received: initial_divisor={initial_divisor!r}")
        self.final_fraction = checks.fraction("final_fraction", final_fraction)

    def __call__(self, step):
        from keras import ops

        step = ops.cast(step, "float32")
        warmup = max(1.0, float(int(self.total_steps * self.warmup_fraction)))
        start = self.peak / self.initial_divisor
        rising = start + (self.peak - start) * ops.minimum(step / warmup, 1.0)
        progress = ops.clip((step - warmup) / max(1.0, self.total_steps - warmup), 0.0, 1.0)
        final = self.peak * self.final_fraction
        falling = final + (self.peak - final) * 0.5 * (1.0 + ops.cos(np.pi * progress))
        return ops.where(step < warmup, rising, falling)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_fraction": self.warmup_fraction,
                "initial_divisor": self.initial_divisor, "final_fraction": self.final_fraction}
