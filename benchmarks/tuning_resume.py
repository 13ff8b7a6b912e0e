"""Kill -9 in the middle of a trial, resume, and compare with an uninterrupted search.

Runs `zoo tune` in a subprocess, kills it (SIGKILL) once trial `--kill-trial`
has finished `--kill-epoch` epochs, runs the same command again to the end,
and compares with the same search run without interruption: every trial id
exactly once, the same hyperparameters per trial, the same best trial, and
the killed trial continued from its last epoch (not from epoch 0).

    python benchmarks/tuning_resume.py --max-trials 6 --max-epochs 3
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time


def command(directory, args):
    return [sys.executable, "-m", "zoo.cli", "tune", args.model, "--data", args.data,
            "--tuner", args.tuner, "--max-trials", str(args.max_trials), "--max-epochs",
            str(args.max_epochs), "--seed", str(args.seed), "--out", directory,
            "--early-stopping", "none", "--verbose", "0"]


def trials(directory):
    project = os.path.join(directory, "kt")
    out = {}
    for entry in sorted(os.listdir(project)):
        if entry.startswith("trial_"):
            with open(os.path.join(project, entry, "zoo_trial.json")) as f:
                out[entry[6:]] = json.load(f)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--tuner", default="random")
    parser.add_argument("--max-trials", type=int, default=6)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kill-trial", default="2")
    parser.add_argument("--kill-epoch", type=int, default=1)
    args = parser.parse_args(argv)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    root = tempfile.mkdtemp()
    killed, straight = os.path.join(root, "killed"), os.path.join(root, "straight")

    history = os.path.join(killed, "kt", f"trial_{args.kill_trial}", "history.json")
    proc = subprocess.Popen(command(killed, args), env=env)
    while proc.poll() is None:
        try:
            with open(history) as f:
                if len(json.load(f)["epochs"]) >= args.kill_epoch:
                    break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    print(f"killed (SIGKILL) during trial {args.kill_trial} after epoch {args.kill_epoch}")
    start = time.time()
    subprocess.run(command(killed, args), env=env, check=True)
    print(f"resumed and finished in {time.time() - start:.0f} s")
    subprocess.run(command(straight, args), env=env, check=True)

    a, b = trials(killed), trials(straight)
    same_ids = sorted(a) == sorted(b)
    same_hp = all(a[i]["hyperparameters"] == b[i]["hyperparameters"] for i in a if i in b)
    best = {}
    for name, records in (("killed", a), ("straight", b)):
        done = [r for r in records.values() if r.get("score") is not None]
        best[name] = max(done, key=lambda r: r["score"])["trial_id"]
    resumed = a[args.kill_trial]
    print(f"trials: killed+resumed {sorted(a)}, uninterrupted {sorted(b)}: "
          f"{'same set' if same_ids else 'DIFFERENT'}; hyperparameters "
          f"{'identical' if same_hp else 'DIFFERENT'} per trial")
    print(f"best trial: killed+resumed {best['killed']}, uninterrupted {best['straight']}")
    print(f"trial {args.kill_trial}: resumed={resumed.get('resumed')}, epochs recorded "
          f"{sorted(int(e) for e in resumed.get('curve') or {})}, status {resumed['status']}"
          + (f" ({resumed.get('reason')}: {resumed.get('message')})"
             if resumed["status"] == "failed" else ""))
    scores = {i: (a[i].get("score"), b[i].get("score")) for i in sorted(a)}
    print("scores (killed+resumed, uninterrupted): " + ", ".join(
        f"{i}: {x:.4f}/{y:.4f}" for i, (x, y) in scores.items() if x is not None and y))
    return 0 if same_ids and same_hp else 1


if __name__ == "__main__":
    raise SystemExit(main())
