"""Write a small hourly electricity-load CSV and optionally train a forecaster on it.

    python examples/sequence_forecast.py --out series.csv
    zoo train gru_forecaster --data csv:series.csv --target load --lookback 48 --horizon 12

or both at once (prints MAE/RMSE next to the naive and seasonal-naive baselines):

    python examples/sequence_forecast.py --out series.csv --epochs 10
"""

import argparse
import csv

import numpy as np


def write_series(path, hours, seed):
    """Daily and weekly cycles, a temperature driver, a slow trend and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(hours)
    temperature = 12 + 8 * np.sin(2 * np.pi * (t - 15) / 24) + rng.normal(0, 1.5, hours)
    load = (500 + 0.02 * t + 120 * np.sin(2 * np.pi * (t - 6) / 24)
            + 40 * (t // 24 % 7 < 5) + 6 * np.maximum(temperature - 18, 0)
            + rng.normal(0, 15, hours))
    start = np.datetime64("2024-01-01T00:00")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timestamp", "temperature", "load"])
        for i in range(hours):
            writer.writerow([str(start + np.timedelta64(i, "h")), f"{temperature[i]:.2f}",
                             f"{load[i]:.1f}"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="series.csv", help="CSV to write")
    parser.add_argument("--hours", type=int, default=24 * 90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=0, help="train gru_forecaster if > 0")
    parser.add_argument("--model", default="gru_forecaster")
    args = parser.parse_args()
    write_series(args.out, args.hours, args.seed)
    print(f"wrote {args.hours} hourly rows to {args.out}")
    if args.epochs > 0:
        import zoo
        result = zoo.train(args.model, data=f"csv:{args.out}", epochs=args.epochs,
                           data_options={"target": "load", "lookback": 48, "horizon": 12},
                           run_dir=f"runs/{args.model}_load", overwrite=True, verbose=0)
        m = result.metrics
        print(f"test MAE {m['test_mae']:.1f} (naive {m['naive_mae']:.1f}, seasonal naive "
              f"{m['seasonal_naive_mae']:.1f}, season {m['season']}); "
              f"SavedModel (raw window in, original units out): {result.run_dir}/saved_model")


if __name__ == "__main__":
    main()
