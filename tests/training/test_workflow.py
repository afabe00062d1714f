"""The whole training workflow of project.yml (prepare → finetune → package → evaluate) run by
`spacy project run all` on a tiny Llama and a few sentences, and the project file's checks."""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
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
    write_bio_dataset(tmp_path / "assets" / "diverse" / "firms", ["organization", "person"],
                      {"train": COMPANIES})
    toy_project(tmp_path, base_model=str(tiny_llama), data_dir="assets/toy",
                train_data="assets/toy/places", zero_shot_data="assets/toy/companies",
                diverse_data="assets/diverse", diverse_cap=1, never_train="organization",
                train_cap=4, calibration_cap=1,
                labels="person location", eval_limit=1, before_limit=3, batch_size=2, total_batch_size=2,
                lr=3e-3, finetune_args="--logging-steps 1")
    spacy_project("run", "all", ".", cwd=tmp_path)

    train = [json.loads(line) for line in (tmp_path / "corpus" / "train.jsonl").read_text().splitlines()]
    assert [r["dataset"] for r in train].count("places") == 4  # a sample of train + dev
    assert [r["dataset"] for r in train].count("firms") == 1
    assert not any("organization" in r["label_list"] for r in train)  # never_train
    held_out = (tmp_path / "corpus" / "held-out.jsonl").read_text().splitlines()
    assert len(held_out) == 2  # calibration_cap per training set
    calibration = json.loads((tmp_path / "metrics" / "calibration.json").read_text())
    assert calibration["candidates"] >= 0 and calibration["slope"] > 0
    assert (tmp_path / "corpus" / "test.spacy").is_file()
    assert (tmp_path / "training" / "models" / "gner-default" / "model.safetensors").is_file()
    pipeline = tmp_path / "training" / "pipelines" / "gner-default"
    nlp = spacy.load(pipeline)
    assert nlp.pipe_names == ["sentencizer", "gner"]
    assert nlp.get_pipe("gner").labels == ("person", "location")
    assert nlp.get_pipe("gner").calibration.to_list() == pytest.approx([calibration["slope"], calibration["intercept"]])
    assert not (pipeline / "gner" / "model" / "checkpoints").exists()

    before = json.loads((tmp_path / "metrics" / "before.json").read_text())
    metrics = json.loads((tmp_path / "metrics" / "crossner.json").read_text())
    assert list(before) == ["before"] and list(metrics) == ["after"]
    # the pipeline on eval_limit sentences but all of the zero-shot set, the base model on 3
    assert metrics["after"]["datasets"]["places"]["sentences"] == 1
    assert metrics["after"]["datasets"]["companies"]["sentences"] == 2
    assert before["before"]["datasets"]["places"]["sentences"] == 3
    for result, calibrated in ((before["before"], False), (metrics["after"], True)):
        assert list(result["datasets"]) == ["places", "companies"]
        assert set(result["datasets"]["companies"]) == {
            "sentences", "paper", "spacy", "thresholds", "calibration"} | (
            {"model_calibration"} if calibrated else set())
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
    assert dry.count("--output-format bracket") == 4  # prepare, calibrate, package, evaluate before
    multi = spacy_project("run", "finetune-multi-gpu", ".", "--dry", "--vars.n_gpus", "4",
                          cwd=tmp_path)
    assert "torch.distributed.run --nproc_per_node 4 -m training.finetune --model smollm2 " in multi


def test_the_default_training_mix_never_offers_the_zero_shot_types(tmp_path):
    project = srsly.read_yaml(ROOT / "project.yml")
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    srsly.write_yaml(tmp_path / "project.yml", project)
    spacy_project("run", "prepare", ".", cwd=tmp_path)
    never = set(project["vars"]["never_train"].split(","))
    assert {"political party", "election", "political group"} <= never
    for name in ("train.jsonl", "held-out.jsonl"):
        records = [json.loads(line) for line in (tmp_path / "corpus" / name).read_text().splitlines()]
        offered = {label for r in records for label in r["label_list"]}
        tagged = {tag[2:] for r in records for tag in r["instance"]["labels"] if tag != "O"}
        assert never.isdisjoint(offered | tagged)
    train = [json.loads(line) for line in (tmp_path / "corpus" / "train.jsonl").read_text().splitlines()]
    datasets = {r["dataset"] for r in train}
    assert {"crossner_ai", "multiconer2-en", "wnut17"} <= datasets and "crossner_politics" not in datasets
    assert "politician" in {label for r in train for label in r["label_list"]}  # allowed, documented


def test_the_shipped_training_data_is_shippable_and_attributed():
    notice = (ROOT / "NOTICE").read_text()
    shipped = sorted(path.name for path in (ROOT / "assets" / "ner-diverse").iterdir())
    assert shipped == ["anem", "multiconer2-en", "sec-filings", "stackoverflow-ner", "wikigold", "wnut17"]
    for name in shipped:
        source = (ROOT / "assets" / "ner-diverse" / name / "source.txt").read_text()
        assert "Licen" in source and "Upstream repository" in source
        assert f"assets/ner-diverse/{name}" in notice
    names = {path.name.lower() for path in (ROOT / "assets").rglob("*")}
    for never in ("pile-ner-subset", "gum", "re3d", "mit-movie", "mit-restaurant", "conll2003"):
        assert never not in names
