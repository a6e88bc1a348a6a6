"""The README's serving examples (``bash serve`` and ``python serve`` blocks) run against a real server."""
import contextlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
DEFAULT_URL = "http://127.0.0.1:8000"

pytestmark = pytest.mark.slow  # needs the session's server process


def blocks(language: str) -> list[str]:
    found = re.findall(rf"```{language} serve\n(.*?)```", README, re.S)
    assert found, f"README has no ```{language} serve block"
    return found


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_examples(hybrid_server):
    for block in blocks("bash"):
        for line in [ln for ln in block.splitlines() if ln.strip()]:
            out = subprocess.run(["bash", "-c", line.replace(DEFAULT_URL, hybrid_server.url)], capture_output=True,
                                 text=True, timeout=120)
            assert out.returncode == 0 and out.stdout.strip(), (line, out.stdout, out.stderr)
            if "stream" in line:
                assert out.stdout.rstrip().endswith("data: [DONE]")
            elif "| head" not in line and "| grep" not in line:
                assert "error" not in json.loads(out.stdout), out.stdout
            if "grep" in line:
                assert 'route="/v1/completions",status="200"' in out.stdout


def test_readme_python_client_example(hybrid_server):
    for block in blocks("python"):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(block.replace(DEFAULT_URL, hybrid_server.url), "README.md", "exec"), {})
        assert "completion_tokens" in printed.getvalue()
