"""The compatibility layer gives, on whichever transformers line is installed, what the rest of
spacy-gner asks of it."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from spacy_gner.compat import (dtype_argument, dynamic_cache, layer_states, output_cache,
                               portable_model_dir, training_options, uses_rope, with_cache)
from spacy_gner.models import load_model, save_model


def test_a_cache_passed_in_comes_back_with_the_new_positions(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, **dtype_argument(torch.float32))
    assert model.dtype == torch.float32
    with torch.inference_mode():
        first = output_cache(model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True))
        states = layer_states(first)
        assert len(states) == model.config.num_hidden_layers and states[0][0].shape[2] == 3
        copy = dynamic_cache(states)  # built from its keys and values, it continues alike
        given = output_cache(model(input_ids=torch.tensor([[8]]), use_cache=True, **with_cache(copy)))
    assert [keys.shape[2] for keys, _ in layer_states(given)] == [4] * len(states)
    assert torch.equal(layer_states(given)[0][0][:, :, :3], states[0][0])


def test_training_options_are_a_warm_up_ratio_and_checkpointing(tmp_path):
    options = training_options(warmup_ratio=0.25, group_by_length=True, checkpointing=True)
    arguments = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, **options)
    assert arguments.get_warmup_steps(100) == 25
    with pytest.raises(ValueError, match="warmup ratio"):
        training_options(warmup_ratio=1.0, group_by_length=False, checkpointing=False)


def test_a_saved_tokenizer_names_a_class_both_lines_know(tiny_llama, tmp_path):
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "TokenizersBackend"  # what 5.x writes for a plain fast tokenizer
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    portable_model_dir(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == (
        "PreTrainedTokenizerFast")
    assert AutoTokenizer.from_pretrained(tmp_path).is_fast


def test_a_saved_config_gives_its_rope_base_under_both_lines_keys(tiny_llama, tmp_path):
    """4.x reads `rope_theta`, 5.x writes `rope_parameters`: a 4.x reader of a 5.x config
    without `rope_theta` would take its default base (10,000), another model."""
    model, tokenizer = load_model(tiny_llama, device="cpu")
    rope = getattr(model.config, "rope_parameters", None)  # 5.x's key
    if rope:
        rope["rope_theta"] = 123456.0  # not the default
    else:
        model.config.rope_theta = 123456.0
    save_model(model, tokenizer, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["rope_theta"] == 123456.0
    assert config.get("rope_parameters", {"rope_theta": 123456.0})["rope_theta"] == 123456.0
    reloaded = load_model(tmp_path, device="cpu")[0].config
    assert uses_rope(reloaded)
    rope = getattr(reloaded, "rope_parameters", None) or {"rope_theta": reloaded.rope_theta}
    assert rope["rope_theta"] == 123456.0
