"""Every command and Python snippet of README.md and docs/*.md, run as written (issue 12 item 28).

- Fenced ``bash`` blocks: each command is listed in :data:`HOW` (a new command fails
  :func:`test_every_documented_command_is_listed` until it is) and runs, as written, through
  ``bash -c`` in a sandbox folder that holds what a user would have there: ``experiments/`` (the
  repository's), a ``notes.txt``, a ``book.txt`` (the embedded default corpus), and ``runs/hybrid``, a tiny
  run trained by the session fixture
  (the README's own training command is run too, and stopped by SIGTERM as the README describes).
  ``pip install`` commands are what ``.ci/run`` installs; the test suite command is what CI runs.
- Fenced ``python`` blocks run with ``exec``, each in a fresh namespace.
- Fenced ``yaml`` blocks are config snippets: each parses, and a ``model:`` section is a valid ``SOSMConfig``.
- Fenced blocks without a language are not allowed (``text`` marks a diagram). A block whose info
  string adds ``serve`` (```` ```bash serve ````) talks to a running server: tests/serve/test_readme_serve.py
  runs it against one, so it is not run here.
- Inline ``sosm ...`` spans name a real subcommand and only its real options.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)( serve)?\n(.*?)^```", re.S | re.M)

#: appended to the commands of results runs (hundreds of steps): the command runs as written, for fewer steps
SHORTER = "--max-steps 12"
#: command as written -> how the test runs it
HOW = {
    'pip install torch==2.13.0 && pip install -e ".[dev]" && sosm demo': "install (.ci/run), then run",
    'TRITON_INTERPRET=1 python -m pytest -q -m "not slow" tests': "the suite itself (.ci/run runs all of it)",
    "sosm graph --text-file notes.txt --nodes word --k 4 --out g.json --html g.html --png g.png": "run",
    'sosm graph --text "the list and the tuple" --bidirectional --tokenizer bpe --out g.json': "run",
    "sosm --help": "run",
    "sosm recall --tiny --out recall_tiny.json    # a toy grid in seconds; the real grid: experiments/results/recall.md":
        "run",
    "sosm graph --text-file book.txt --nodes byte --out book.npz --html book.html   # a whole book: arrays, ~1 min":
        "run (book.txt in the sandbox: the embedded default corpus, ~0.5 MB, on the whole-text path)",
    "sosm train --config experiments/configs/shakespeare_char_cpu_hybrid.yaml --out runs/hybrid": "run, SIGTERM",
    "sosm eval --checkpoint runs/hybrid --leak-check": "run on the tiny run",
    'sosm generate --checkpoint runs/hybrid --prompt "ROMEO:" --max-new-tokens 200 --seed 0': "run on the tiny run",
    "sosm inspect --checkpoint runs/hybrid --text \"Whose bank? The river's, not the money's.\" --out report/":
        "run on the tiny run",
    "sosm quantize --checkpoint runs/hybrid --out runs/hybrid-int8        # dynamic INT8 linear layers (CPU)":
        "run on the tiny run",
    "sosm eval --checkpoint runs/hybrid-int8                              # loads like any other checkpoint":
        "run on the quantized tiny run (after the quantize command)",
    "sosm export --checkpoint runs/hybrid --format onnx --out hybrid.onnx # then checked with onnxruntime":
        "run on the tiny run",
    "sosm serve --checkpoint runs/hybrid --port 8000                      # FastAPI + uvicorn on 127.0.0.1":
        "a server: started on a free port by tests/serve (test_server.py), which the README's serve blocks talk to",
    "torchrun --standalone --nproc_per_node=2 -m sosm.cli train --config experiments/configs/scaleout_ddp.yaml "
    "--out runs/ddp": "torchrun, SIGTERM",
    "sosm finetune --checkpoint runs/hybrid --config experiments/configs/scaleout_lora.yaml --out runs/lora_default":
        f"run on the tiny run, {SHORTER}",
    "sosm distill --teacher runs/hybrid --config experiments/configs/scaleout_distill.yaml --out runs/student":
        f"run on the tiny run, {SHORTER}",
}
NOTES = ("A function returns a value to its caller. A method is a function defined inside a class, and calling "
         "the method on an instance passes that instance as the first argument.\n")


def _blocks() -> list[tuple[str, str, str]]:
    """``(document name, language, code)`` of every fenced block, but the ``serve`` ones (tests/serve runs those)."""
    return [(doc.name, language, code) for doc in DOCS
            for language, serve, code in FENCE.findall(doc.read_text("utf-8")) if not serve]


def _commands() -> list[str]:
    commands = []
    for _, language, code in _blocks():
        if language == "bash":
            joined = code.replace("\\\n", " ")
            commands += [line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]
    return commands


COMMANDS = _commands()


def test_every_block_says_what_it_is():
    known = {"bash", "python", "text", "yaml"}
    assert {language for _, language, _ in _blocks()} <= known, \
        [(doc, language) for doc, language, _ in _blocks() if language not in known]


@pytest.mark.parametrize("index", range(len([b for b in _blocks() if b[1] == "yaml"])))
def test_yaml_snippet_is_a_valid_config(index):
    import yaml

    from sosm.model import SOSMConfig

    doc, _, code = [b for b in _blocks() if b[1] == "yaml"][index]
    data = yaml.safe_load(code)
    assert isinstance(data, dict), (doc, code)
    if "model" in data:
        SOSMConfig.from_dict(data["model"])


def test_every_documented_command_is_listed():
    assert COMMANDS and set(COMMANDS) == set(HOW), (
        f"commands in the docs but not in HOW: {sorted(set(COMMANDS) - set(HOW))}; "
        f"in HOW but no longer in the docs: {sorted(set(HOW) - set(COMMANDS))}")


def test_install_and_suite_commands_are_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    for command in COMMANDS:
        for part in command.split(" && "):
            if part.startswith("pip install "):
                assert f"pip install -q {part[len('pip install '):]}" in ci, (part, "not installed by .ci/run")
    assert re.search(r"^python3 -m pytest .*tests$", ci, re.M), ".ci/run runs the whole suite"


@pytest.mark.parametrize("index", range(len([b for b in _blocks() if b[1] == "python"])))
def test_python_snippet_runs(index):
    doc, _, code = [b for b in _blocks() if b[1] == "python"][index]
    exec(compile(code, doc, "exec"), {})


def _inline_spans() -> list[str]:
    spans = []
    for doc in DOCS:
        text = FENCE.sub("", doc.read_text("utf-8"))
        spans += [s for s in re.findall(r"`([^`\n]+)`", text) if re.match(r"(timeout \S+ )?sosm( |$)", s)]
    return spans


def test_inline_commands_name_real_subcommands_and_options():
    from sosm.cli import build_parser

    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    spans = _inline_spans()
    assert spans
    for span in spans:
        words = span.split()
        words = words[words.index("sosm") + 1:]
        if words and words[0].startswith("<"):
            continue  # a placeholder (``sosm <command>: error: ...``), not a command
        if not words or words[0].startswith("-"):
            assert all(w in parser._option_string_actions for w in words if w.startswith("--")), span
            continue
        assert words[0] in subcommands, span
        options = subcommands[words[0]]._option_string_actions
        assert all(w.strip("[]()|") in options for w in words if w.lstrip("[(").startswith("--")), span


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, tiny_run):
    """A user's folder: experiments/, notes.txt, book.txt (the default corpus) and runs/hybrid (the tiny run)."""
    from sosm.data import default_corpus

    folder = tmp_path_factory.mktemp("readme")
    (folder / "experiments").symlink_to(REPO / "experiments")
    (folder / "notes.txt").write_text(NOTES, encoding="utf-8")
    (folder / "book.txt").write_text(default_corpus(), encoding="utf-8")
    (folder / "runs").mkdir()
    (folder / "runs" / "hybrid").symlink_to(tiny_run)
    return folder


def _shell(command: str, cwd: Path, **kwargs) -> subprocess.Popen:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.Popen(["bash", "-c", command], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PATH": path, "OMP_NUM_THREADS": "1"}, **kwargs)


RUN_AS_WRITTEN = [c for c in HOW if HOW[c].startswith("run") and HOW[c] != "run, SIGTERM"]
TORCHRUN = [c for c in HOW if HOW[c] == "torchrun, SIGTERM"]


@pytest.mark.slow  # each command starts python and torch; the BPE graph trains a tokenizer (~8 s)
@pytest.mark.parametrize("command", RUN_AS_WRITTEN)
def test_documented_command_runs_as_written(command, sandbox):
    child = _shell(f"{command} {SHORTER}" if HOW[command].endswith(SHORTER) else command, sandbox)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, (command, out[-2000:], err[-2000:])
    assert "Traceback" not in err, err


@pytest.mark.slow  # installs nothing: runs the part after the pip installs (sosm demo)
def test_quickstart_demo_runs(sandbox):
    [command] = [c for c in HOW if HOW[c].startswith("install")]
    rest = " && ".join(p for p in command.split(" && ") if not p.startswith("pip install "))
    child = _shell(rest, sandbox)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, (out, err)
    assert (sandbox / "out" / "demo" / "graph.html").is_file()


@pytest.mark.slow  # starts the README's full training run and stops it with SIGTERM after its first log record
def test_readme_training_command_starts_and_stops_cleanly(tmp_path):
    [command] = [c for c in HOW if HOW[c] == "run, SIGTERM"]
    (tmp_path / "experiments").symlink_to(REPO / "experiments")
    child = _shell(command, tmp_path, start_new_session=True)
    log = tmp_path / "runs" / "hybrid" / "log.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        if log.is_file() and '"kind": "train"' in log.read_text():
            break
        time.sleep(0.2)
    assert child.poll() is None, child.communicate()
    os.killpg(child.pid, signal.SIGTERM)  # bash and sosm, as a terminal's process group gets it
    out, err = child.communicate(timeout=240)
    assert child.returncode == 143, (child.returncode, out[-2000:], err[-2000:])
    assert "continue with: sosm train --config experiments/configs/shakespeare_char_cpu_hybrid.yaml --out " \
           "runs/hybrid --resume" in out
    assert list((tmp_path / "runs" / "hybrid" / "checkpoints").glob("step_*"))


@pytest.mark.slow  # two training processes under torchrun, stopped by SIGTERM after their first log record
@pytest.mark.parametrize("command", TORCHRUN)
def test_torchrun_command_starts_and_stops_cleanly(command, sandbox):
    """The README's torchrun command: rank 0 logs, SIGTERM (to torchrun and its ranks) leaves one checkpoint."""
    out = sandbox / command.split("--out ")[1].split()[0]
    child = _shell(command, sandbox, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        if (out / "log.jsonl").is_file() and '"kind": "train"' in (out / "log.jsonl").read_text():
            break
        time.sleep(0.2)
    assert child.poll() is None, child.communicate()
    os.killpg(child.pid, signal.SIGTERM)
    stdout, stderr = child.communicate(timeout=240)
    assert stdout.count("training scaleout:") == 1 and "2 processes (ddp)" in stdout, (stdout, stderr[-3000:])
    assert '"event": "stopped"' in (out / "log.jsonl").read_text(), stderr[-3000:]
    assert len(list((out / "checkpoints").glob("step_*"))) == 1
