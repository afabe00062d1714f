import os
import subprocess
import sys

import pytest
import spacy
import torch
import transformers
from transformers import AutoTokenizer
from support import (INSTRUCTION_CORPUS, assert_holds_only_what_loading_reads, random_model,
                     sentencepiece_checkpoint, train_sentencepiece)

from spacy_gner.generation import HFGenerator
from spacy_gner.models import (
    ModelLoadError,
    load_model,
    native_bfloat16,
    resolve_device,
    resolve_dtype,
    save_model,
)


def test_missing_local_model_names_it_and_says_what_to_do(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError) as error:
        load_model(missing)
    assert str(missing) in str(error.value)
    assert "local directory" in str(error.value)


def test_hub_name_offline_says_how_to_use_a_local_directory():
    code = (
        "from spacy_gner.models import load_model\n"
        "try:\n"
        "    load_model('dyyyyyyyy/GNER-T5-base-not-cached')\n"
        "except OSError as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": "/nonexistent-hf-home"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    message = result.stdout
    assert message.startswith("ModelLoadError Could not load the GNER model 'dyyyyyyyy/GNER-T5-base-not-cached'")
    assert "huggingface-cli download" in message and "set `model` to DIR" in message


def test_devices_and_dtypes():
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:1")
    native = torch.bfloat16 if native_bfloat16(torch.device("cpu")) else torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == native
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype"):
        resolve_dtype("float8", torch.device("cpu"))


@pytest.mark.parametrize("model", ["tiny_t5", "tiny_llama"])
def test_load_model_picks_the_architecture(model, request):
    loaded, tokenizer = load_model(request.getfixturevalue(model), device="cpu")
    assert loaded.config.is_encoder_decoder == (model == "tiny_t5")
    assert tokenizer.padding_side == ("right" if model == "tiny_t5" else "left")
    assert not loaded.training


def test_remote_code_is_refused_unless_asked(tiny_llama):
    config = tiny_llama / "config.json"
    text = config.read_text()
    config.write_text(text.replace('"model_type": "llama"', '"model_type": "llama", "auto_map": {"AutoModelForCausalLM": "evil.Model"}'))
    try:
        model, _ = load_model(tiny_llama, device="cpu")
        assert type(model).__name__ == "LlamaForCausalLM"
    finally:
        config.write_text(text)


def test_t5_checkpoint_with_only_spiece_model_loads_with_a_fast_tokenizer(tmp_path):
    """A T5 checkpoint as older ones are (spiece.model, no tokenizer.json): the fast tokenizer
    is converted from it, which needs protobuf."""
    spiece = train_sentencepiece(tmp_path / "spm", INSTRUCTION_CORPUS, pad_id=0, eos_id=1,
                                 unk_id=2, bos_id=-1)
    sentencepiece_checkpoint(tmp_path / "model", spiece, "T5Tokenizer", extra_ids=0,
                             eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    random_model(tokenizer, "t5", width=16).save_pretrained(tmp_path / "model")
    files = {path.name for path in (tmp_path / "model").iterdir()}
    assert "spiece.model" in files and "tokenizer.json" not in files
    model, tokenizer = load_model(tmp_path / "model", device="cpu")
    assert model.config.is_encoder_decoder and tokenizer.is_fast
    nlp = spacy.blank("en")
    nlp.add_pipe("gner", config={"generator": {"model": str(tmp_path / "model"), "device": "cpu"},
                                 "labels": ["person"], "store_raw": True})
    doc = nlp("John explored Tokyo.")
    [raw] = doc.user_data["gner_raw"]
    assert raw["output"].startswith("John(")  # copy-aware decoding, on the fast tokenizer


def test_a_saved_model_holds_only_what_loading_reads(tiny_llama, tmp_path):
    spiece = train_sentencepiece(tmp_path / "spm", INSTRUCTION_CORPUS, pad_id=0, eos_id=1,
                                 unk_id=2, bos_id=-1)
    sentencepiece_checkpoint(tmp_path / "t5", spiece, "T5Tokenizer", extra_ids=0,
                             eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    random_model(AutoTokenizer.from_pretrained(tmp_path / "t5"), "t5", width=16).save_pretrained(tmp_path / "t5")
    for source in (tmp_path / "t5", tiny_llama):
        saved = tmp_path / "saved" / source.name
        save_model(*load_model(source, device="cpu"), saved)
        assert not {"spiece.model", "tokenizer.model"} & {path.name for path in saved.iterdir()}
        assert_holds_only_what_loading_reads(saved)


def test_any_loading_error_is_a_model_load_error(tiny_t5, monkeypatch):
    def missing_package(*args, **kwargs):
        raise ImportError("this tokenizer needs the protobuf library")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", missing_package)
    with pytest.raises(ModelLoadError) as error:
        load_model(tiny_t5, device="cpu")
    message = str(error.value)
    assert f"Could not load the GNER model {str(tiny_t5)!r}: ImportError: this tokenizer" in message
    assert "package needed to read this model is missing" in message
    assert isinstance(error.value.__cause__, ImportError)


def test_a_wrong_dtype_is_a_bad_value_before_anything_is_read(monkeypatch):
    def no_reading(*args, **kwargs):
        raise AssertionError("the model was looked up")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_reading)
    for make in (lambda: load_model("dyyyyyyyy/GNER-T5-base", dtype="fp16"),
                 lambda: HFGenerator("dyyyyyyyy/GNER-T5-base", dtype="fp16")):
        with pytest.raises(ValueError) as error:
            make()
        assert not isinstance(error.value, ModelLoadError)
        assert "'fp16'" in str(error.value)
        assert "'auto'" in str(error.value) and "'bfloat16'" in str(error.value)


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(False, False, torch.float32),
                                                        (True, False, torch.bfloat16),
                                                        (False, True, torch.bfloat16)])
def test_auto_is_bfloat16_on_cpus_that_compute_it_natively(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_dtype("auto", torch.device("cpu")) == expected
