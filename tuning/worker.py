"""A worker process of a local distributed search: `python -m tuning.worker SEARCH_DIR`.

Started by the chief (`tuning.distributed.run_chief`) with KERASTUNER_TUNER_ID,
KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set; re-creates the search
from the call SEARCH_DIR/search.json records (data loaded once per worker)
and runs trials until the chief has none left.
"""

import argparse
import os
import sys


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--verbose", type=int, default=1)
    parser.add_argument("--one-trial", action="store_true")
    args = parser.parse_args(argv)
    from tuning import distributed, searcher
    prepared = searcher.prepare_from_directory(args.directory, check_objective=False)
    return distributed.run_worker(prepared, verbose=args.verbose, one_trial=args.one_trial)


if __name__ == "__main__":
    sys.exit(main())
