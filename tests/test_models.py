import os
import subprocess
import sys

import pytest
import torch

from spacy_gner.models import ModelLoadError, load_model, resolve_device, resolve_dtype


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
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
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
