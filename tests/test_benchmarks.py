"""The benchmark scripts run end to end (their figures are read by people, not asserted)."""
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_decoding_benchmark_prints_its_table(tiny_t5_pipeline):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "decoding.py"), "--model", str(tiny_t5_pipeline), "--n", "5",
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


@pytest.mark.slow
def test_annotate_benchmark_prints_its_three_tables(tiny_t5_pipeline):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "annotate.py"), "--model", str(tiny_t5_pipeline),
         "--n", "4", "--shard-size", "2", "--sim-n", "24", "--latency", "0.01",
         "--sim-shard-size", "8", "--scaling", "1", "2", "--memory-lines", "20", "40"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ")]
    real = [r for r in rows if len(r) == 6 and r[0].strip().isdigit()]
    simulated = [r for r in rows if len(r) == 7 and r[0].strip() in ("processes", "ray")]
    memory = [r for r in rows if len(r) == 3 and r[0].strip()[:1].isdigit()]
    assert [r[0].strip() for r in real] == ["1", "2"]
    assert [(r[0].strip(), r[1].strip()) for r in simulated] == [
        ("processes", "1"), ("processes", "2"), ("ray", "1"), ("ray", "2")]
    assert [r[0].strip() for r in memory] == ["20", "40"]
    assert all(float(r[2]) > 0 for r in simulated)  # documents/s
    assert "the same output from every worker count: True" in result.stdout


@pytest.mark.slow
def test_finetune_benchmark_prints_its_table(tiny_llama):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "finetune.py"), "--model", str(tiny_llama), "--steps", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in rows[2:]] == ["plain", "shared"]
    assert "shared/plain:" in result.stdout


@pytest.mark.slow
def test_saved_pipeline_benchmark_prints_files_sizes_and_load_time(tiny_llama):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "saved_pipeline.py"), "--model", str(tiny_llama),
         "--repeats", "1"], capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "model.safetensors" in result.stdout and "-rw-------" not in result.stdout
    assert "wheel" in result.stdout and "spacy.load" in result.stdout


@pytest.mark.slow
def test_formats_benchmark_prints_a_row_per_format_and_encoder(tiny_llama):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "formats.py"), "--run", f"word_tag={tiny_llama}",
         "--run", f"bracket={tiny_llama}", "--run", f"xml={tiny_llama}", "--n", "5",
         "--batch-size", "2", "--device", "cpu", "--encoders", "small", "--branch-tokens", "0", "4",
         "--repeats", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("|") for line in result.stdout.splitlines() if line.startswith("| ")][2:]
    names = [row[1].strip() for row in rows]
    formats = [f"{name} (branches {n})" for name in ("word_tag", "bracket", "xml") for n in (0, 4)]
    assert names[:6] == formats and names[6].startswith("GLiNER-small-shaped encoder")
    assert "median of 2 rounds" in result.stdout
    speeds = {name: float(row[2].split()[0]) for name, row in zip(names, rows)}  # median (slowest-fastest)
    fastest = max(formats, key=speeds.get)
    word_tag = max(formats[:2], key=speeds.get)
    assert (f"{fastest}/{word_tag}:" in result.stdout) == (fastest != word_tag)
