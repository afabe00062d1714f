import torch
from transformers import LlamaConfig, LlamaForCausalLM

from spacy_gner.decoding import _decoding_mode
from spacy_gner.models import native_bfloat16
from spacy_gner.prepacked import PrepackedLinear, can_prepack, prepacked_linears

CPU_BFLOAT16 = native_bfloat16(torch.device("cpu")) and torch.backends.mkldnn.is_available()


def _model(dtype: torch.dtype) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).to(dtype).eval()


def _linears(model: torch.nn.Module) -> list:
    return [module for module in model.modules() if type(module) is torch.nn.Linear]


def test_prepacked_layers_compute_what_the_model_computes_and_are_given_back():
    model = _model(torch.bfloat16)
    linears = _linears(model)
    ids = torch.tensor([[3, 14, 15, 92, 65, 35]])
    with torch.inference_mode():
        expected = model(ids).logits
        with prepacked_linears(model) as swapped:
            assert swapped == (len(linears) if CPU_BFLOAT16 else 0)
            assert all(isinstance(layer.mlp.down_proj, PrepackedLinear) == CPU_BFLOAT16
                       for layer in model.model.layers)
            logits = model(ids).logits
    torch.testing.assert_close(logits, expected)
    assert _linears(model) == linears  # the very same layers, back in place


def test_a_changed_weight_is_laid_out_again():
    model = _model(torch.bfloat16)
    ids = torch.tensor([[5, 6, 7]])
    with torch.inference_mode(), prepacked_linears(model):
        before = model(ids).logits
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(3)
    with torch.inference_mode():
        expected = model(ids).logits
        with prepacked_linears(model):
            logits = model(ids).logits
    assert not torch.allclose(expected, before)
    torch.testing.assert_close(logits, expected)


def test_only_bfloat16_cpu_layers_are_prepacked():
    assert not any(can_prepack(layer) for layer in _linears(_model(torch.float32)))
    assert all(can_prepack(layer) == CPU_BFLOAT16 for layer in _linears(_model(torch.bfloat16)))
    assert not can_prepack(torch.nn.Conv1d(2, 2, 1))


def test_decoding_runs_on_prepacked_layers():
    model = _model(torch.bfloat16)
    with _decoding_mode(model, list(range(10))):
        assert isinstance(model.model.layers[1].self_attn.q_proj, PrepackedLinear) == CPU_BFLOAT16
    assert type(model.model.layers[1].self_attn.q_proj) is torch.nn.Linear
