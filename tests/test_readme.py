"""The README cannot drift: every `zoo ...` command in it parses, names a real model
and real flags, and its first sections run in order in a fresh clone.

Every command is checked by the real parser (cheap, no TensorFlow);
examples/run_readme.py (which runs the whole README top to bottom) must
account for every block, and runs the Quick start, What is inside and Python
API sections for real with one epoch, each command in its own process, in a
fresh clone that must stay clean, as a newcomer would run them.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def _blocks(language):
    text = open(README).read()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _zoo_commands():
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("zoo "):
                commands.append(shlex.split(line)[1:])
    return commands


COMMANDS = _zoo_commands()


def test_the_readme_has_commands():
    assert len(COMMANDS) >= 20
    assert {c[0] for c in COMMANDS} >= {"list", "info", "train", "export", "evaluate",
                                        "finetune", "tune"}


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_every_readme_command_parses_and_names_a_real_model(argv):
    import zoo
    from zoo import cli
    args = cli.build_parser().parse_args(argv)
    name = getattr(args, "name", None)
    if argv[0] in ("train", "info") and name:
        zoo.get_spec(name)
    for key, value in getattr(args, "arg", None) or []:
        if name:
            assert key in zoo.get_spec(name).arguments, (argv, key)


def _run_readme():
    import importlib.util
    path = os.path.join(os.path.dirname(README), "examples", "run_readme.py")
    spec = importlib.util.spec_from_file_location("run_readme", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_script_runs_every_block_or_says_why_not():
    """examples/run_readme.py accounts for every bash and python block of the README."""
    run_readme = _run_readme()
    steps = run_readme.parse(open(README).read())
    blocks = len(_blocks("bash")) + len(_blocks("python"))
    assert len({(s.kind, s.line) for s in steps}) >= blocks - 1  # the bash line of a block
    assert all(s.skip is None or s.skip for s in steps)
    skipped = {s.text.split()[0] for s in steps if s.skip}
    assert skipped <= {"python3", ".", "pip", "pytest", "python", "from"}, skipped
    ran = [s for s in steps if not s.skip]
    assert sum(s.kind == "python" for s in ran) >= 5 and len(ran) >= 30
    # --quick caps every epoch count and search, and adds --epochs 1 where none is given.
    for step in map(run_readme.quick, ran):
        for flag, value in re.findall(r"(--epochs|--head-epochs|--max-trials|--tune) (\d+)",
                                      step.text):
            assert int(value) <= 2, step.text
        assert all(int(v) <= 2 for v in re.findall(r"\bepochs=(\d+)", step.text)), step.text
        if step.text.startswith("zoo train"):
            assert "--epochs" in step.text
    # No two README trainings write the same run directory (the second would be refused).
    targets = []
    for step in ran:
        if step.kind == "bash" and re.match(r"zoo train ", step.text):
            out = re.search(r"--out (\S+)", step.text)
            targets.append(out.group(1) if out else "runs/" + step.text.split()[2])
        targets += re.findall(r"run_dir=\"([^\"]+)\"", step.text)
    assert len(targets) == len(set(targets)), sorted(targets)


@pytest.mark.heavy
def test_the_readme_runs_in_order_in_a_fresh_clone(tmp_path):
    """Quick start, What is inside, Python API: every command and snippet, as written
    (one epoch each), in a fresh clone, which stays clean."""
    script = os.path.join(os.path.dirname(README), "examples", "run_readme.py")
    proc = subprocess.run(
        [sys.executable, script, "--quick", "--workdir", str(tmp_path / "clone"),
         "--sections", "Quick start", "What is inside", "Python API"],
        capture_output=True, text=True, env={**os.environ, "ZOO_OFFLINE": "1"}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "the clone is as clean as it started" in proc.stdout
    assert os.path.isdir(tmp_path / "clone" / "runs" / "lenet5_python" / "saved_model")
    assert "-- run   README:" in proc.stdout and "zoo train lenet5 --epochs 1" in proc.stdout
