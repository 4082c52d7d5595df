"""README.md's ```sh blocks, run as written against the real `make run` (tests/live/conftest.py),
in the order a reader meets them, so the README cannot rot."""

from __future__ import annotations

import pytest

from tests.live.conftest import LiveServer
from tests.live.readme import Block, blocks, run_block, shell_blocks

pytestmark = pytest.mark.slow


def test_every_shell_block_says_where_it_runs() -> None:
    where = [block.where for block in blocks()]  # raises on a block with no known marker
    assert where.count("run") >= 4 and where.count("stack") >= 1, where


def test_the_marker_convention_is_enforced() -> None:
    with pytest.raises(ValueError, match=r"README\.md:3"):
        _ = Block(3, "bash", "curl x\n").where
    with pytest.raises(ValueError):
        _ = Block(3, "sh later", "curl x\n").where
    assert Block(3, "", "app/ ...\n").where == "not-shell"


def test_make_run_blocks_run_as_written(make_run: LiveServer) -> None:
    outputs = []
    for block in shell_blocks("run"):
        output = run_block(block, {8000: make_run.port}, make_run.env)
        assert output.strip(), f"README.md:{block.line} printed nothing"
        outputs.append(output)
    assert len(outputs) >= 4
    everything = "\n".join(outputs)
    # The blocks did what their comments say (beyond exiting 0 with every answer below 400).
    for marker in ('rel="next"', '"status":"draft"', "Created editor 'alice'", "http://www.w3.org/2005/Atom",
                   '"username":"ada_lovelace"', '"access_token"'):  # fmt: skip
        assert marker in everything, marker
