"""The whole training workflow of project.yml (prepare → finetune → package → evaluate) run by
`spacy project run all` on a tiny Llama and a few sentences, and the project file's checks."""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import spacy
import srsly
from toy_data import COMPANIES, PEOPLE_AND_PLACES, write_bio_dataset

ROOT = Path(__file__).resolve().parents[2]


def spacy_project(*args: str, cwd: Path) -> str:
    """Run `python -m spacy project ...`, with the repository's `training` importable."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    result = subprocess.run([sys.executable, "-m", "spacy", "project", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def toy_project(directory: Path, **variables: Any) -> Path:
    """A copy of project.yml in `directory`, with variables overridden. (Values starting with
    "--" cannot be given as `--vars.x` on the command line.)"""
    project: Dict[str, Any] = srsly.read_yaml(ROOT / "project.yml")
    project["vars"].update(variables)
    srsly.write_yaml(directory / "project.yml", project)
    return directory


def test_workflow_runs_end_to_end_on_a_tiny_model(tiny_llama, tmp_path):
    data = tmp_path / "assets" / "toy"
    splits = {"train": PEOPLE_AND_PLACES, "dev": PEOPLE_AND_PLACES[:2], "test": PEOPLE_AND_PLACES}
    write_bio_dataset(data / "places", ["person", "location"], splits)
    write_bio_dataset(data / "companies", ["organization", "person"], {"test": COMPANIES})
    toy_project(tmp_path, base_model=str(tiny_llama), data_dir="assets/toy",
                train_data="assets/toy/places", zero_shot_data="assets/toy/companies",
                labels="person location", eval_limit=1, before_limit=3, batch_size=2, total_batch_size=2,
                lr=3e-3, finetune_args="--logging-steps 1")
    spacy_project("run", "all", ".", cwd=tmp_path)

    assert len((tmp_path / "corpus" / "train.jsonl").read_text().splitlines()) == 6  # train + dev
    assert (tmp_path / "corpus" / "test.spacy").is_file()
    assert (tmp_path / "training" / "models" / "gner-default" / "model.safetensors").is_file()
    pipeline = tmp_path / "training" / "pipelines" / "gner-default"
    nlp = spacy.load(pipeline)
    assert nlp.pipe_names == ["sentencizer", "gner"]
    assert nlp.get_pipe("gner").labels == ("person", "location")
    assert not (pipeline / "gner" / "model" / "checkpoints").exists()

    before = json.loads((tmp_path / "metrics" / "before.json").read_text())
    metrics = json.loads((tmp_path / "metrics" / "crossner.json").read_text())
    assert list(before) == ["before"] and list(metrics) == ["after"]
    # the pipeline on eval_limit sentences but all of the zero-shot set, the base model on 3
    assert metrics["after"]["datasets"]["places"]["sentences"] == 1
    assert metrics["after"]["datasets"]["companies"]["sentences"] == 2
    assert before["before"]["datasets"]["places"]["sentences"] == 3
    for result in (before["before"], metrics["after"]):
        assert list(result["datasets"]) == ["places", "companies"]
        assert set(result["datasets"]["companies"]) == {"sentences", "paper", "spacy", "thresholds",
                                                        "calibration"}
        assert "per_type" in result["datasets"]["places"]["spacy"]
        assert set(result["average"]) == {"paper", "spacy"}
    assert "| before |" in (tmp_path / "metrics" / "before.md").read_text()
    table = (tmp_path / "metrics" / "crossner.md").read_text()
    assert table.count("| Model | places | companies | Average |") == 2
    assert "| after |" in table
    assert "| places |" in table and "ECE" in table  # the threshold tables
    assert (tmp_path / "metrics" / "crossner.png").read_bytes().startswith(b"\x89PNG")


def test_project_file_documents_and_lists_the_workflow(tmp_path):
    readme = spacy_project("document", ".", cwd=ROOT)
    for command in ("prepare", "finetune", "finetune-multi-gpu", "package", "evaluate"):
        assert f"`{command}`" in readme
    toy_project(tmp_path)  # a dry run still creates the project's directories
    dry = spacy_project("run", "all", ".", "--dry", cwd=tmp_path)
    assert "training.package training/models/gner-default training/pipelines/gner-default" in dry
    assert "training.finetune --model smollm2 " in dry
    multi = spacy_project("run", "finetune-multi-gpu", ".", "--dry", "--vars.n_gpus", "4",
                          cwd=tmp_path)
    assert "torch.distributed.run --nproc_per_node 4 -m training.finetune --model smollm2 " in multi
