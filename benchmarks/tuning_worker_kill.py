"""Kill a worker of a distributed search mid-trial: the chief re-queues its trial.

Runs `zoo tune ... --workers 2` (KerasTuner's chief/worker protocol on
127.0.0.1), SIGKILLs the worker running the first trial once it has
finished an epoch, and checks that the search still ends with every trial
completed exactly once, the lost trial continued from its last epoch by
another worker (upstream issue 915: the chief used to wait forever).

    python benchmarks/tuning_worker_kill.py --max-trials 6 --max-epochs 3
"""

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time


def main(argv=None):
    import psutil

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--max-trials", type=int, default=6)
    parser.add_argument("--max-epochs", type=int, default=3)
    args = parser.parse_args(argv)
    directory = os.path.join(tempfile.mkdtemp(), "search")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    start = time.time()
    chief = subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", "tune", args.model, "--data", args.data, "--tuner",
         "random", "--max-trials", str(args.max_trials), "--max-epochs", str(args.max_epochs),
         "--workers", "2", "--out", directory, "--early-stopping", "none", "--verbose", "0"],
        env=env)
    killed = None
    while chief.poll() is None and killed is None:
        for path in glob.glob(os.path.join(directory, "kt", "trial_*", "zoo_trial.json")):
            try:
                with open(path) as f:
                    record = json.load(f)
            except (OSError, ValueError):
                continue
            if record.get("status") != "running" or not record.get("epochs_run"):
                continue
            for child in psutil.Process(chief.pid).children(recursive=True):
                try:
                    if "tuning.worker" in " ".join(child.cmdline()) and \
                            child.environ().get("KERASTUNER_TUNER_ID") == record["tuner_id"]:
                        child.send_signal(signal.SIGKILL)
                        killed = (record["trial_id"], record["tuner_id"])
                        break
                except psutil.Error:
                    continue
            if killed:
                break
        time.sleep(0.05)
    chief.wait()
    records = []
    for path in sorted(glob.glob(os.path.join(directory, "kt", "trial_*", "zoo_trial.json"))):
        with open(path) as f:
            records.append(json.load(f))
    print(f"killed worker {killed[1] if killed else None} during trial "
          f"{killed[0] if killed else None}; chief exit code {chief.returncode}, "
          f"{time.time() - start:.0f} s")
    for r in records:
        print(f"trial {r['trial_id']}: {r['status']} by {r['tuner_id']}"
              f"{' (resumed)' if r.get('resumed') else ''}, epochs {sorted(r.get('curve', {}))}")
    ok = chief.returncode == 0 and len(records) == args.max_trials and all(
        r["status"] == "completed" for r in records)
    print("every trial completed exactly once" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
