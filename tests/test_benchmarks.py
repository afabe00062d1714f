"""The benchmark scripts run end to end (their figures are read by people, not asserted)."""
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_decoding_benchmark_prints_its_table(tiny_t5):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "decoding.py"), "--model", str(tiny_t5), "--n", "5",
         "--batch-size", "2", "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip()[:2] for row in rows[2:]] == ["A:", "B:", "C:"]
    assert "C/A:" in result.stdout and "C/B:" in result.stdout


def test_matching_benchmark_prints_its_table():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "matching.py"), "--repeats", "1", "--per-bucket", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("x |") == 8
