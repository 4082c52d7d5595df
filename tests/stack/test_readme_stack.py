"""README.md's ```sh stack blocks, run as written against this run's stack (tests/stack/conftest.py:
`devstack.stack up` on free ports; README's 8080/8000 rewritten to them, STACK_DIR set)."""

from __future__ import annotations

import pytest

from tests.live.readme import run_block, shell_blocks
from tests.stack.conftest import StackInfo

pytestmark = pytest.mark.slow


def test_stack_blocks_run_as_written(stack: StackInfo) -> None:
    env = {**stack.env, "STACK_DIR": str(stack.root)}
    # The blocks get the stack's settings themselves (eval ... env); an enclosing make's are not theirs.
    for key in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(key, None)
    ports = {8080: stack.port("nginx"), 8000: stack.port("app")}
    blocks = shell_blocks("stack")
    assert blocks
    output = "\n".join(run_block(block, ports, env) for block in blocks)
    assert "x-cache-status" in output.lower() and "Created editor 'alice'" in output
