"""The builder limit check's cost: a dry build (shapes only) next to the real build.

`zoo.build` refuses arguments whose weights would pass `zoo.checks.MAX_PARAMS`
by first building the model in a Keras `StatelessScope` that never
initializes a variable (`zoo.checks.count_parameters`); only calls with large
arguments pay for it.  This prints, per model, the parameter count both ways
(they must agree) and the median time of the dry build and of the real one,
alternating, with their ratio.  Goal: the dry build costs well under the real
one (ratio < 0.5), so the check adds little to a build it lets through.

    python benchmarks/dry_build.py --repeats 3
"""

import argparse
import statistics
import time

CASES = [("mlp", {"hidden_units": [2048] * 4}), ("vgg16", {"num_classes": 2000}),
         ("resnet50", {"num_classes": 2000})]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from zoo import checks
    from zoo.registry import get_spec

    for name, kwargs in CASES:
        builder = get_spec(name).builder
        dry, real = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            counted = checks.count_parameters(builder, kwargs)
            dry.append(time.perf_counter() - start)
            start = time.perf_counter()
            built = builder(**kwargs).count_params()
            real.append(time.perf_counter() - start)
        assert counted == built, (name, counted, built)
        d, r = statistics.median(dry), statistics.median(real)
        print(f"{name:10s} {counted:>13,} parameters  dry build {d:6.2f} s  real build "
              f"{r:6.2f} s  ratio {d / r:.2f}")


if __name__ == "__main__":
    main()
