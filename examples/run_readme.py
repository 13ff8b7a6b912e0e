"""Run the README top to bottom, as a newcomer would, in a fresh clone.

    python examples/run_readme.py                 # every command and snippet, as written
    python examples/run_readme.py --quick         # the same with 1-2 epochs everywhere
    python examples/run_readme.py --quick --sections "Quick start" "Python API"
    python examples/run_readme.py --list          # what would run, and what is skipped and why

Every ```bash line (continuations joined) and every ```python block of
README.md runs in order, in a fresh `git clone` of this repository (the
installed package and its `zoo` command are the ones in this environment),
each in its own process, as someone pasting them one by one would. A step
that fails stops the script with its output and exit code 1. At the end the
clone must be as clean as it started (`git status` lists nothing: what the
README writes is ignored by `.gitignore`).

Not run, with the reason printed: creating the virtual environment and
`pip install` (this environment already has the package), the test suite
(`pytest`: run it on its own), this script, the benchmark scripts (minutes
each: pass `--benchmarks`), and blocks the README marks with
`<!-- readme: not run -->` on the line before (templates with `...`
placeholders).

`--quick` caps the work, not the commands: `--epochs`/`epochs=` become 1,
`--head-epochs` 1, `--max-epochs`/`max_epochs=` 2, `--max-trials` and
`--tune` 2, and a `zoo train` without `--epochs` gets `--epochs 1`; the
Fashion-MNIST commands still read all 60,000 images. tests/test_readme.py
runs the first sections this way on every test run.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
NOT_RUN_MARK = "<!-- readme: not run"

# (pattern, reason): lines (or `&&` parts of a line) that are not run.
SKIPPED = (
    (r"^python3? -m venv\b", "creates the virtual environment this one stands for"),
    (r"^\. \S*activate$", "activates the virtual environment this one stands for"),
    (r"^pip install\b", "installs the package, already installed here"),
    (r"^pytest\b", "the test suite: run it on its own"),
    (r"^python3? examples/run_readme\.py\b", "this script"),
)
BENCHMARK = r"^python3? benchmarks/"

# --quick: (pattern, replacement) on every step's text.
QUICK = (
    (r"--epochs \d+", "--epochs 1"),
    (r"--head-epochs \d+", "--head-epochs 1"),
    (r"--max-epochs \d+", "--max-epochs 2"),
    (r"--max-trials \d+", "--max-trials 2"),
    (r"--tune \d+", "--tune 2"),
    (r"\bmax_epochs=\d+", "max_epochs=2"),
    (r"(?<![\w.])epochs=\d+", "epochs=1"),
)


class Step:
    """One command line or one Python block of the README."""

    def __init__(self, kind, text, line, section, skip=None):
        self.kind, self.text, self.line, self.section, self.skip = kind, text, line, section, skip

    def __repr__(self):
        return f"Step({self.kind}, line {self.line}, {self.text[:40]!r})"


def parse(text, *, benchmarks=False):
    """The README's steps in order: bash lines and python blocks, with skip reasons."""
    steps, section = [], ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        match = re.match(r"^```(\w*)\s*$", line)
        if not match:
            i += 1
            continue
        language, start = match.group(1), i + 1
        end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        not_run = None
        if previous.strip().startswith(NOT_RUN_MARK):  # <!-- readme: not run (why) -->
            why = previous.strip()[len(NOT_RUN_MARK):].removesuffix("-->").strip(" :-()")
            not_run = why or "marked not run"
        body = lines[start:end]
        if language == "python":
            steps.append(Step("python", "\n".join(body) + "\n", start + 1, section,
                              skip=not_run))
        elif language == "bash":
            joined, first = "", None
            for offset, raw in enumerate(body):
                first = start + offset + 1 if first is None else first
                if raw.rstrip().endswith("\\"):
                    joined += raw.rstrip()[:-1] + " "
                    continue
                joined += raw
                command = re.split(r"\s+#", joined, maxsplit=1)[0].strip()
                if command:
                    steps.extend(_bash_steps(command, first, section, not_run, benchmarks))
                joined, first = "", None
        i = end + 1
    return steps


def _bash_steps(command, line, section, not_run, benchmarks):
    if not_run:
        return [Step("bash", command, line, section, skip=not_run)]
    kept, skipped = [], []
    for part in (p.strip() for p in command.split("&&")):
        reason = next((r for pattern, r in SKIPPED if re.search(pattern, part)), None)
        if reason is None and re.search(BENCHMARK, part) and not benchmarks:
            reason = "a benchmark (minutes): pass --benchmarks"
        if reason:
            skipped.append(Step("bash", part, line, section, skip=reason))
        else:
            kept.append(part)
    steps = skipped
    if kept:
        steps.append(Step("bash", " && ".join(kept), line, section))
    return steps


def quick(step):
    """The step with its epochs, trials and searches capped (see the module docstring)."""
    text = step.text
    for pattern, replacement in QUICK:
        text = re.sub(pattern, replacement, text)
    if step.kind == "bash":
        text = re.sub(r"(^|&& )(zoo train (?:(?!&&).)*)",
                      lambda m: m.group(0) if "--epochs" in m.group(2)
                      else m.group(1) + m.group(2).rstrip() + " --epochs 1", text)
    return Step(step.kind, text, step.line, step.section, step.skip)


def _environment():
    env = dict(os.environ)
    bin_dir = os.path.dirname(sys.executable)  # `zoo` and `saved_model_cli` live beside python
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def fresh_clone(workdir):
    """A fresh clone of this repository in `workdir` (a copy of it outside git)."""
    if os.path.isdir(os.path.join(ROOT, ".git")):
        subprocess.run(["git", "clone", "--quiet", ROOT, workdir], check=True)
    else:
        shutil.copytree(ROOT, workdir, ignore=shutil.ignore_patterns(
            ".venv*", "runs", "__pycache__", "*.egg-info", ".pytest_cache"))
    return workdir


def run(steps, workdir, *, timeout=None, out=sys.stdout):
    """Run `steps` in `workdir`, in order; return (seconds per step, the failed step or None)."""
    env = _environment()
    times = []
    for step in steps:
        if step.skip:
            print(f"-- skip  README:{step.line} {step.text.splitlines()[0][:70]} ({step.skip})",
                  file=out, flush=True)
            continue
        print(f"-- run   README:{step.line} {step.text.splitlines()[0][:90]}", file=out, flush=True)
        argv = (["bash", "-e", "-c", step.text] if step.kind == "bash"
                else [sys.executable, "-c", step.text])
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=timeout)
        times.append((step, time.perf_counter() - start))
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=out)
            print(f"FAILED (exit {proc.returncode}): README line {step.line}, section "
                  f"{step.section!r}", file=out, flush=True)
            return times, step
        print(f"   ok    {times[-1][1]:.1f} s", file=out, flush=True)
    return times, None


def untracked_or_changed(workdir):
    """What following the README left in the clone that git would show (empty: clean)."""
    if not os.path.isdir(os.path.join(workdir, ".git")):
        return []
    proc = subprocess.run(["git", "status", "--porcelain"], cwd=workdir, capture_output=True,
                          text=True, check=True)
    return proc.stdout.splitlines()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1-2 epochs everywhere, 2 trials per search")
    parser.add_argument("--sections", nargs="+", metavar="HEADING",
                        help="only the steps under these '## ' headings")
    parser.add_argument("--benchmarks", action="store_true", help="run the benchmark scripts too")
    parser.add_argument("--workdir", help="clone into this (new) folder and keep it "
                        "(default: a temporary folder, removed at the end)")
    parser.add_argument("--list", action="store_true", help="print the steps; run nothing")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per step")
    args = parser.parse_args(argv)

    with open(README) as f:
        steps = parse(f.read(), benchmarks=args.benchmarks)
    if args.sections:
        known = {s.section for s in steps}
        unknown = [s for s in args.sections if s not in known]
        if unknown:
            parser.error(f"no '## ' section {unknown} with commands; sections: {sorted(known)}")
        steps = [s for s in steps if s.section in args.sections]
    if args.quick:
        steps = [quick(s) for s in steps]
    if args.list:
        for step in steps:
            state = f"skip: {step.skip}" if step.skip else "run"
            print(f"README:{step.line:<4} {step.kind:<6} {state:<60} "
                  f"{step.text.splitlines()[0][:80]}")
        return 0

    if args.workdir and os.path.exists(args.workdir):
        parser.error(f"--workdir {args.workdir} exists: name a new folder")
    workdir = args.workdir or os.path.join(tempfile.mkdtemp(prefix="zoo-readme-"), "clone")
    try:
        fresh_clone(workdir)
        start = time.perf_counter()
        times, failed = run(steps, workdir, timeout=args.timeout)
        if failed is not None:
            print(f"work folder kept: {workdir}")
            return 1
        dirty = untracked_or_changed(workdir)
        ran = len(times)
        print(f"\n{ran} steps ran, {len(steps) - ran} skipped, {time.perf_counter() - start:.0f} s "
              f"in {workdir}")
        if dirty:
            print("the clone is not clean afterwards (add these to .gitignore or stop writing "
                  "them):\n  " + "\n  ".join(dirty))
            return 1
        print("the clone is as clean as it started (git status: nothing)")
        return 0
    finally:
        if not args.workdir:
            shutil.rmtree(os.path.dirname(workdir), ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
