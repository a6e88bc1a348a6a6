"""Bad input to the ``sosm`` command: one line ``sosm <command>: error: ...`` naming the problem, exit 2.

Every case runs in process (fast, through ``sosm.cli.main``) and, in the slow suite, through the
real ``sosm`` command in a subprocess (all cases at once, in parallel), where a traceback would show.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from sosm.cli import main

NO_CUDA = not torch.cuda.is_available()

#: id -> (argv with {d} = the case folder and {run} = a tiny trained run, a fragment of the expected message)
CASES = {
    # item 15: output locations that cannot be written, refused before any work
    "train-out-is-a-file": (["train", "--config", "{d}/tiny.yaml", "--out", "{d}/a-file"],
                            "--out {d}/a-file is a file"),
    "train-out-under-a-file": (["train", "--config", "{d}/tiny.yaml", "--out", "{d}/a-file/run"],
                               "--out {d}/a-file/run is under {d}/a-file, which is a file"),
    "train-out-unwritable": (["train", "--config", "{d}/tiny.yaml", "--out", "/sys/sosm-test/run"],
                             "--out /sys/sosm-test/run cannot be written: nothing can be created in /sys"),
    "graph-out-is-a-folder": (["graph", "--text", "a list and a tuple", "--out", "{d}"], "--out {d} is a directory"),
    "graph-html-under-a-file": (["graph", "--text", "a list and a tuple", "--out", "{d}/g.json", "--html",
                                 "{d}/a-file/g.html"], "--html {d}/a-file/g.html is under {d}/a-file"),
    # a pipe stands for any device: a test must never risk replacing /dev/null (as root, a rename would)
    "graph-out-is-a-pipe": (["graph", "--text", "a list and a tuple", "--out", "{d}/a-pipe"],
                            "--out {d}/a-pipe exists and is not a regular file"),
    "demo-out-is-a-file": (["demo", "--out", "{d}/a-file"], "--out {d}/a-file is a file"),
    "inspect-out-is-a-file": (["inspect", "--checkpoint", "{run}", "--text", "To be", "--out", "{d}/a-file"],
                              "--out {d}/a-file is a file"),
    "eval-json-is-a-folder": (["eval", "--checkpoint", "{run}", "--json", "{d}"], "--json {d} is a directory"),
    "eval-json-under-a-file": (["eval", "--checkpoint", "{run}", "--json", "{d}/a-file/r.json"],
                               "--json {d}/a-file/r.json is under {d}/a-file"),
    # item 16, 25: graph --config files that do not parse name the file
    "graph-config-bad-yaml": (["graph", "--text", "a list", "--config", "{d}/bad.yaml", "--out", "{d}/g.json"],
                              "--config {d}/bad.yaml is not valid YAML"),
    "graph-config-bad-json": (["graph", "--text", "a list", "--config", "{d}/bad.json", "--out", "{d}/g.json"],
                              "--config {d}/bad.json is not valid JSON"),
    "graph-config-binary": (["graph", "--text", "a list", "--config", "{d}/binary.yaml", "--out", "{d}/g.json"],
                            "--config {d}/binary.yaml is not UTF-8 text"),
    "graph-config-wrong-type": (["graph", "--text", "a list", "--config", "{d}/typed.yaml", "--out", "{d}/g.json"],
                                "{d}/typed.yaml: "),
    "train-config-binary": (["train", "--config", "{d}/binary.yaml"], "config file {d}/binary.yaml is not UTF-8"),
    "train-config-wrong-type": (["train", "--config", "{d}/list.yaml"], "{d}/list.yaml: a training config must be"),
    # item 3, 21, 22
    "train-config-empty": (["train", "--config", "{d}/empty.yaml"],
                           "config file {d}/empty.yaml is empty: a training config needs max_steps, data.dataset"),
    "train-config-is-a-folder": (["train", "--config", "{d}"], "config file {d} is a directory"),
    "train-text-too-short": (["train", "--config", "{d}/two.yaml", "--out", "{d}/r-two"],
                             "needs at least 26 tokens in each split"),
    # item 17
    "eval-device-cuda": (["eval", "--checkpoint", "{run}", "--device", "cuda"], "--device cuda: no CUDA device"),
    "generate-device-cuda": (["generate", "--checkpoint", "{run}", "--device", "cuda"],
                             "--device cuda: no CUDA device"),
    # item 19
    "graph-dev-zero": (["graph", "--text-file", "/dev/zero", "--out", "{d}/g.json"],
                       "/dev/zero: longer than the limit of 268,435,456 bytes (256 MiB"),
    "graph-dev-urandom": (["graph", "--text-file", "/dev/urandom", "--out", "{d}/g.json"],
                          "/dev/urandom: not valid UTF-8 at byte offset"),
    "eval-text-file-is-a-folder": (["eval", "--checkpoint", "{run}", "--text-file", "{d}"], "{d} is a directory"),
    # item 20: --k names k
    "graph-k-0": (["graph", "--text", "a list", "--k", "0", "--out", "{d}/g.json"], "GraphConfig.k=0 is invalid"),
    "graph-k-adaptive": (["graph", "--text", "a list", "--k", "1", "--adaptive-k", "--out", "{d}/g.json"],
                         "GraphConfig.k=1 is invalid; accepted: k_min=2 <= k <= k_max=16 when adaptive_k=True"),
    # issue 17: fine-tuning and distillation configs
    "finetune-out-is-a-file": (["finetune", "--checkpoint", "{run}", "--config", "{d}/ft.yaml", "--out", "{d}/a-file"],
                               "--out {d}/a-file is a file"),
    "finetune-lora-unknown-key": (["finetune", "--checkpoint", "{run}", "--config", "{d}/ft-typo.yaml", "--out",
                                   "{d}/r-ft"], "in config section 'lora'"),
    "finetune-model-section": (["finetune", "--checkpoint", "{run}", "--config", "{d}/tiny.yaml", "--out",
                                "{d}/r-ft"], "has a model section, but the model is the one of --checkpoint"),
    "distill-context-differs": (["distill", "--teacher", "{run}", "--config", "{d}/kd.yaml", "--out", "{d}/r-kd"],
                                "data.block_size=12 differs from the model of --teacher"),
}
NEEDS_CUDA_ABSENT = {"eval-device-cuda", "generate-device-cuda"}
#: the cases also run through the real command (slow): every item, every command of item 15
REAL_COMMAND = ("train-out-under-a-file", "train-out-unwritable", "graph-out-is-a-folder", "demo-out-is-a-file",
                "inspect-out-is-a-file", "eval-json-is-a-folder", "graph-config-bad-yaml", "graph-config-bad-json",
                "graph-config-binary", "train-config-empty", "train-config-is-a-folder", "train-text-too-short",
                "eval-device-cuda", "generate-device-cuda", "graph-dev-zero", "graph-dev-urandom", "graph-k-adaptive",
                "finetune-lora-unknown-key", "distill-context-differs")


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_input")
    (d / "a-file").write_text("not a folder\n")
    os.mkfifo(d / "a-pipe")
    (d / "bad.yaml").write_text("k: [1, 2\n")
    (d / "bad.json").write_text('{"k": 2,')
    (d / "binary.yaml").write_bytes(b"\x00\xd7\xff\xfe" * 16)
    (d / "typed.yaml").write_text("k_min: many\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "empty.yaml").write_text("")
    (d / "two.txt").write_text("ab")
    model = {"model": "transformer", "n_layers": 1, "d_model": 16, "n_heads": 2}
    base = {"max_steps": 2, "progress_bar": False, "tensorboard": False, "device": "cpu", "model": model}
    (d / "two.yaml").write_text(yaml.safe_dump({**base, "data": {"dataset": "text_file", "path": str(d / "two.txt"),
                                                                 "block_size": 24}}))
    (d / "tiny.yaml").write_text(yaml.safe_dump({**base, "data": {"dataset": "default", "block_size": 24}}))
    finetune = {"max_steps": 2, "data": {"dataset": "default"}, "lora": {"rank": 2}}
    (d / "ft.yaml").write_text(yaml.safe_dump(finetune))
    (d / "ft-typo.yaml").write_text(yaml.safe_dump({**finetune, "lora": {"rnak": 2}}))
    (d / "kd.yaml").write_text(yaml.safe_dump({**base, "data": {"dataset": "default", "block_size": 12}}))
    return d


def _argv(case: str, d: Path, run: Path) -> tuple[list, str]:
    argv, fragment = CASES[case]
    fill = lambda text: text.replace("{d}", str(d)).replace("{run}", str(run))  # noqa: E731
    return [fill(a) for a in argv], fill(fragment)


def _check_one_line(case: str, code: int, err: str, fragment: str) -> None:
    command = CASES[case][0][0]
    lines = err.strip().splitlines()
    assert code == 2, (case, code, err)
    assert "Traceback" not in err and len(lines) == 1, (case, err)
    assert lines[0].startswith(f"sosm {command}: error: ") and fragment in lines[0], (case, lines[0], fragment)


def _skip(case: str) -> None:
    if case in NEEDS_CUDA_ABSENT and not NO_CUDA:
        pytest.skip("a CUDA device is present")
    if case == "train-out-unwritable" and not os.path.isdir("/sys/kernel"):
        pytest.skip("no sysfs here")


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_exit_2(case, case_dir, tiny_run, capsys):
    _skip(case)
    argv, fragment = _argv(case, case_dir, tiny_run)
    code = main(argv)
    captured = capsys.readouterr()
    _check_one_line(case, code, captured.err, fragment)
    if command_evaluates(argv):
        assert captured.out == "", "the output location is checked before anything is evaluated"


def command_evaluates(argv) -> bool:
    return argv[0] == "eval" and "--json" in argv


def _child(argv, env=None, preexec_fn=None):
    return subprocess.Popen([sys.executable, "-m", "sosm.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, preexec_fn=preexec_fn)


@pytest.mark.slow  # 17 commands that each import torch, run two at a time (~20 s on 2 cores)
def test_bad_input_through_the_real_command(case_dir, tiny_run):
    cases = [c for c in REAL_COMMAND if not (c in NEEDS_CUDA_ABSENT and not NO_CUDA)
             and not (c == "train-out-unwritable" and not os.path.isdir("/sys/kernel"))]
    pending = list(cases)
    running, failures = [], []
    while pending or running:
        while pending and len(running) < 2:
            case = pending.pop()
            argv, fragment = _argv(case, case_dir, tiny_run)
            running.append((case, fragment, _child(argv)))
        case, fragment, child = running.pop(0)
        out, err = child.communicate(timeout=120)
        try:
            _check_one_line(case, child.returncode, err, fragment)
        except AssertionError as failure:
            failures.append(str(failure))
    assert not failures, "\n".join(failures)


def _limit_file_size():
    """In the child: files may not grow past 2 kB (as on a full disk: the write fails with EFBIG)."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))


@pytest.mark.slow  # two subprocesses that import torch
def test_a_full_disk_while_writing_is_one_line(case_dir, tiny_run, tmp_path):
    """What no check can foresee: the disk fills up mid-write (here: a 2 kB file size limit)."""
    graph = _child(["graph", "--text", "a list and a tuple and a dict and a set", "--k", "2",
                    "--out", str(tmp_path / "g.json")], preexec_fn=_limit_file_size)
    train = _child(["train", "--config", str(case_dir / "tiny.yaml"), "--out", str(tmp_path / "run")],
                   preexec_fn=_limit_file_size)
    _, err = graph.communicate(timeout=120)
    assert graph.returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"sosm graph: error: --out {tmp_path / 'g.json'}: could not write it: " \
                                           f"File too large"
    _, err = train.communicate(timeout=120)
    assert train.returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("sosm train: error: ") and "File too large" in err
    assert not (tmp_path / "g.json").exists(), "nothing half-written is left at the target"


OFFLINE = textwrap.dedent("""
    import sys, urllib.error
    import sosm.data.corpus as corpus
    corpus.REPO_SIDE_DATA_DIR = corpus.DEFAULT_CACHE_DIR = corpus.Path(sys.argv[1])
    def offline(url, target, timeout=30.0):
        raise urllib.error.URLError("no network")
    corpus._download = offline
    from sosm.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def test_offline_without_data_is_one_line(case_dir, tmp_path, monkeypatch, capsys):
    """Item 18: no Tiny Shakespeare anywhere and no network."""
    import urllib.error

    import sosm.data.corpus as corpus

    monkeypatch.delenv("SOSM_DATA_DIR", raising=False)
    monkeypatch.setattr(corpus, "REPO_SIDE_DATA_DIR", tmp_path)
    monkeypatch.setattr(corpus, "DEFAULT_CACHE_DIR", tmp_path)

    def offline(url, target, timeout=30.0):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(corpus, "_download", offline)
    config = yaml.safe_load((case_dir / "tiny.yaml").read_text())
    config["data"]["dataset"] = "tinyshakespeare"
    (tmp_path / "ts.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "ts.yaml"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sosm train: error: could not download Tiny Shakespeare") and "SOSM_DATA_DIR" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow  # a subprocess that imports torch
def test_offline_without_data_through_the_real_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SOSM_DATA_DIR"}
    child = subprocess.run([sys.executable, "-c", OFFLINE, str(tmp_path), "graph", "--text", "a list and a tuple",
                            "--corpus", "tinyshakespeare", "--out", str(tmp_path / "g.json")],
                           capture_output=True, text=True, env=env, timeout=120)
    assert child.returncode == 2 and "Traceback" not in child.stderr, child.stderr
    assert child.stderr.startswith("sosm graph: error: could not download Tiny Shakespeare")
    assert len(child.stderr.strip().splitlines()) == 1
