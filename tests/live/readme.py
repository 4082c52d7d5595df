"""README.md's shell blocks, by where they run (the convention README.md's "First hour" states):

- ```sh           against `make run` (http://127.0.0.1:8000)
- ```sh stack     against a running `make stack` (Nginx 8080, app 8000)
- ```sh no-test   not run by the tests: they start or stop servers, or take minutes

Any other spelling of a shell block (bash, console, an unknown marker) is an error, so a block
cannot silently fall out of the tests.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
WHERE = {"": "run", "stack": "stack", "no-test": "no-test"}
SHELLS = {"sh", "bash", "shell", "console", "zsh"}
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
# Every command runs as if typed with `set -euo pipefail`, and curl fails on any 4xx/5xx answer.
PRELUDE = """set -euo pipefail
curl() { command curl --fail-with-body --max-time 60 "$@"; }
"""


@dataclass(frozen=True)
class Block:
    line: int
    info: str
    body: str

    @property
    def where(self) -> str:
        language, _, marker = self.info.partition(" ")
        if language not in SHELLS:
            return "not-shell"
        if language != "sh" or marker.strip() not in WHERE:
            raise ValueError(
                f"README.md:{self.line}: shell block ```{self.info}: write ```sh, ```sh stack or ```sh no-test"
            )
        return WHERE[marker.strip()]


def blocks(text: str | None = None) -> list[Block]:
    text = README.read_text() if text is None else text
    return [Block(text.count("\n", 0, m.start()) + 1, m.group(1).strip(), m.group(2)) for m in _FENCE.finditer(text)]


def shell_blocks(where: str) -> list[Block]:
    return [block for block in blocks() if block.where == where]


def run_block(block: Block, ports: Mapping[int, int], env: Mapping[str, str], timeout: float = 300) -> str:
    """Run one block in bash from the repository root, with the README's ports moved to the
    test servers' (`127.0.0.1:8000` -> `127.0.0.1:<port>`); returns its output, raises with it."""
    script = block.body
    for documented, actual in ports.items():
        script = re.sub(rf"\b(127\.0\.0\.1|localhost):{documented}\b", rf"\g<1>:{actual}", script)
    result = subprocess.run(
        ["bash", "-c", PRELUDE + script],
        cwd=REPO,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    if result.returncode:
        raise AssertionError(
            f"README.md:{block.line} (```{block.info}) exited {result.returncode}:\n{script}\n--- output:\n{output[-4000:]}"
        )
    return output
