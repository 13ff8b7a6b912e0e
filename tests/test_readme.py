"""The README cannot drift: every `zoo ...` command in it parses, names a real model
and real flags, and a chain of them runs in order in a fresh folder.

Every command is checked by the real parser (cheap, no TensorFlow); the
quick-start chain (train -> export -> evaluate, then the Python API snippet)
runs for real with one epoch, each in its own process, in a temporary
working directory, as a newcomer would run them.
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


def test_quick_start_and_python_api_run_in_order(tmp_path):
    """The README's first commands, in order, in a fresh folder (one epoch each)."""
    env = {**os.environ, "ZOO_OFFLINE": "1"}
    zoo_cmd = [sys.executable, "-m", "zoo.cli"]
    steps = [["train", "lenet5", "--epochs", "1", "--verbose", "0"],
             ["export", "runs/lenet5", "--format", "saved_model", "--out", "exported/lenet5"],
             ["evaluate", "runs/lenet5"]]
    for argv in steps:
        proc = subprocess.run([*zoo_cmd, *argv], cwd=tmp_path, env=env, capture_output=True,
                              text=True)
        assert proc.returncode == 0, (argv, proc.stderr[-3000:])
    python_api = next(b for b in _blocks("python") if "zoo.train(" in b)
    python_api = python_api.replace("epochs=40", "epochs=1")
    proc = subprocess.run([sys.executable, "-c", python_api + "\nprint(result.run_dir)\n"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isdir(tmp_path / "runs" / "lenet5_python" / "saved_model")
