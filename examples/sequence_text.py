"""Write a small labelled-reviews CSV (text,label) and optionally train a text classifier on it.

    python examples/sequence_text.py --out reviews.csv
    zoo train lstm_classifier --data csv:reviews.csv --text-column text --label-column label

or both at once (trains with `zoo.train`, prints the test accuracy and the
SavedModel that takes raw strings):

    python examples/sequence_text.py --out reviews.csv --epochs 5
"""

import argparse
import csv

import numpy as np

POSITIVE = ["great", "good", "excellent", "love", "wonderful", "superb", "enjoyable", "fun"]
NEGATIVE = ["bad", "awful", "terrible", "hate", "boring", "dull", "poor", "waste"]
FILLER = ["the", "movie", "was", "a", "plot", "actor", "and", "it", "really", "film", "story",
          "scenes", "director", "music", "quite", "this", "cast", "ending"]


def write_reviews(path, rows, seed):
    """Reviews of 6-16 words; the label follows the majority of sentiment words."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for _ in range(rows):
            label = int(rng.integers(2))
            major, minor = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
            words = list(rng.choice(FILLER, rng.integers(4, 12)))
            words += list(rng.choice(major, 2)) + list(rng.choice(minor, rng.integers(0, 2)))
            rng.shuffle(words)
            writer.writerow([" ".join(words).capitalize() + ".", "pos" if label else "neg"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reviews.csv", help="CSV to write")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=0, help="train lstm_classifier if > 0")
    parser.add_argument("--model", default="lstm_classifier")
    args = parser.parse_args()
    write_reviews(args.out, args.rows, args.seed)
    print(f"wrote {args.rows} reviews to {args.out}")
    if args.epochs > 0:
        import zoo
        result = zoo.train(args.model, data=f"csv:{args.out}", epochs=args.epochs,
                           data_options={"text_column": "text", "label_column": "label",
                                         "sequence_length": 32},
                           model_kwargs={"vocab_size": 2000, "embedding_dim": 32, "units": 32},
                           run_dir=f"runs/{args.model}_reviews", overwrite=True, verbose=0)
        print(f"test accuracy {result.metrics['test_accuracy']:.3f}; "
              f"SavedModel (raw strings in): {result.run_dir}/saved_model")


if __name__ == "__main__":
    main()
