"""compare: two runs' summaries side by side, the ratio B / A per endpoint, in Markdown, JSON and PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadtests import compare, run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def endpoint(name: str, requests: int, rps: float, p50: float, p99: float, failures: int = 0) -> dict[str, Any]:
    return {"type": "GET", "name": name, "requests": requests, "failures": failures, "rps": rps, "p50_ms": p50,
            "p95_ms": p99 / 2, "p99_ms": p99}  # fmt: skip


def write_run(path: Path, target: float, endpoints: list[dict[str, Any]], **extra: Any) -> Path:
    path.mkdir(parents=True)
    aggregated = next(e for e in endpoints if e["name"] == "Aggregated")
    summary = {
        "scenario": "readers",
        "git_rev": extra.pop("git", "abc123"),
        "started_at": "2026-12-01T10:00:00+00:00",
        "slo_met": True,
        "measured": {
            "target_rps": target,
            "rps": aggregated["rps"],
            "requests": aggregated["requests"],
            "failure_ratio": 0.0,
            "p50_ms": aggregated["p50_ms"],
            "p95_ms": aggregated["p95_ms"],
            "p99_ms": aggregated["p99_ms"],
            "max_ms": 300.0,
            "schedule_lag_p99_ms": 0.0,
            "percentiles": "exact (HDR, per-request log)",
        },
        "endpoints": endpoints,
        "generator_flag": False,
        **extra,
    }
    (path / "summary.json").write_text(json.dumps(summary))
    return path


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    a = write_run(
        tmp_path / "readers-a",
        500.0,
        [
            endpoint("/feed", 6000, 100.0, 2.0, 20.0),
            endpoint("/posts/[id]", 3000, 50.0, 1.0, 10.0),
            endpoint("/tags", 100, 2.0, 1.0, 4.0),
            endpoint("Aggregated", 9100, 152.0, 1.5, 18.0),
        ],
    )
    b = write_run(
        tmp_path / "readers-b",
        505.0,
        [
            endpoint("/feed", 6100, 101.0, 1.0, 10.0),
            endpoint("/posts/[id]", 2900, 49.0, 1.5, 30.0, failures=2),
            endpoint("/authors/[username]", 50, 1.0, 3.0, 9.0),
            endpoint("Aggregated", 9050, 151.0, 1.2, 20.0),
        ],
        git="def456",
    )
    return a, b


def test_ratios_per_endpoint(runs: tuple[Path, Path]) -> None:
    result = compare.compare(compare.load(runs[0], "A"), compare.load(runs[1], "B"))
    rows = {r["name"]: r for r in result["endpoints"]}
    assert [r["name"] for r in result["endpoints"]] == [
        "Aggregated", "/feed", "/posts/[id]", "/tags", "/authors/[username]"
    ]  # fmt: skip
    assert rows["/feed"]["p99_ms_ratio"] == 0.5 and rows["/feed"]["p50_ms_ratio"] == 0.5
    assert rows["/posts/[id]"]["p99_ms_ratio"] == 3.0 and rows["/posts/[id]"]["b_failures"] == 2
    assert rows["/tags"]["b_p99_ms"] is None and rows["/tags"]["p99_ms_ratio"] is None  # only in A
    assert rows["/authors/[username]"]["a_rps"] is None
    headline = {r["what"]: r for r in result["headline"]}
    assert headline["p99 ms"]["ratio"] == pytest.approx(20 / 18, abs=1e-3)
    assert headline["git"]["a"] == "abc123" and headline["git"]["ratio"] is None
    assert result["warnings"] == []  # 505 vs 500 req/s offered: within 5%


def test_markdown_png_and_json(runs: tuple[Path, Path], tmp_path: Path) -> None:
    result = compare.compare(compare.load(runs[0], "A"), compare.load(runs[1], "B"))
    md, js, png = compare.write(result, tmp_path / "out")
    text = md.read_text()
    assert text.startswith("# Load test comparison: B / A")
    assert "| /feed | 100 | 101 | 1.01x | 2 | 1 | 0.50x | 10 | 5 | 0.50x | 20 | 10 | 0.50x | 0 / 0 |" in text
    assert "| /posts/[id] |" in text and "| 10 | 30 | 3.00x | 0 / 2 |" in text
    assert json.loads(js.read_text())["endpoints"][0]["name"] == "Aggregated"
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000


def test_unequal_loads_and_a_flagged_generator_are_warned(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", 500.0, [endpoint("Aggregated", 100, 10.0, 1.0, 2.0)])
    b = write_run(tmp_path / "b", 800.0, [endpoint("Aggregated", 100, 10.0, 1.0, 2.0)], generator_flag=True)
    result = compare.compare(compare.load(a, "A"), compare.load(b, "B"))
    assert any("different loads" in w for w in result["warnings"])
    assert any("run B: the generator" in w for w in result["warnings"])


def test_a_capacity_search_compares_its_knee_and_the_knee_step(tmp_path: Path) -> None:
    searches = []
    for name, knee in (("cap-a", 1000.0), ("cap-b", 1300.0)):
        root = tmp_path / name
        write_run(root / "steps" / "05-knee", knee, [endpoint("/feed", 100, knee, 2.0, knee / 100),
                                                     endpoint("Aggregated", 100, knee, 2.0, knee / 100)])  # fmt: skip
        summary = {"kind": "capacity", "knee_rps": knee, "lowest_failing_rps": knee * 1.1, "knee_step": "steps/05-knee"}
        (root / "summary.json").write_text(json.dumps(summary))
        searches.append(root)
    result = compare.compare(compare.load(searches[0], "A"), compare.load(searches[1], "B"))
    headline = {r["what"]: r for r in result["headline"]}
    assert headline["knee req/s"]["ratio"] == 1.3
    assert {r["name"]: r for r in result["endpoints"]}["/feed"]["p99_ms_ratio"] == 1.3
    assert any("different loads" in w for w in result["warnings"])  # the knees are different rates


def test_the_command(runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert run.main(["compare", str(runs[0]), str(runs[1]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| /feed |" in printed and str(out / "compare.png") in printed
    assert (out / "compare.md").exists() and (out / "compare.json").exists()
    assert run.main(["compare", str(runs[0]), str(tmp_path / "missing")]) == 2
    assert "no readable summary.json" in capsys.readouterr().err
