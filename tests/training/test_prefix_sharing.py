"""training.prefix_sharing: the start a batch's prompts share, computed once, gives the loss and
the gradients of the whole rows, with and without activation checkpointing."""
import contextlib
import random

import pytest
import torch
from support import LABELS
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq
from transformers import TrainingArguments

from spacy_gner.compat import dtype_argument, enable_checkpointing
from spacy_gner.prompt import build_prompt, build_target, encode_prompt_start
from training import prefix_sharing
from training.finetune import IGNORE_INDEX, GnerTrainer, encode

SENTENCES = [
    ("Mary visited Paris".split(), ["B-person", "O", "B-location"]),
    ("John flew to Tokyo and back to New York .".split(),
     ["B-person", "O", "O", "B-location", "O", "O", "O", "B-location", "I-location", "O"]),
    ("Paris is in France .".split(), ["B-location", "O", "O", "B-location", "O"]),
]


def batch(tokenizer, label_orders):
    """A right-padded batch of the sentences, each offered its own type order."""
    pairs = [(build_prompt(words, labels), build_target(words, tags))
             for (words, tags), labels in zip(SENTENCES, label_orders)]
    features = encode(tokenizer, pairs, encoder_decoder=False, prompt_format="inst",
                      max_source_length=640, max_target_length=640)
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)(features)


def loss_and_gradients(model, inputs, tmp_path, share: bool):
    trainer = GnerTrainer(model=model, args=TrainingArguments(str(tmp_path), report_to=[]))
    trainer.share_start = share
    model.zero_grad()
    with prefix_sharing.enable(model) if share else contextlib.nullcontext():
        loss = trainer.compute_loss(model, dict(inputs))
        loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_shared_start_gives_the_loss_and_gradients_of_whole_rows(tiny_llama, tmp_path, checkpointing):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, **dtype_argument(torch.float32))
    model.train()
    if checkpointing:
        enable_checkpointing(model)
    labels = LABELS + ["organization", "event"]
    orders = [random.Random(seed).sample(labels, len(labels)) for seed in range(3)]
    inputs = batch(tokenizer, orders)
    start = prefix_sharing.shared_length(inputs["input_ids"], inputs["attention_mask"])
    # the rows share the instruction, up to the type list (less its last token, at most)
    assert len(encode_prompt_start(tokenizer, "inst")) - 1 <= start < len(SENTENCES[0][0]) + start
    calls = []
    model.model.register_forward_hook(lambda module, args, kwargs, out: calls.append(
        kwargs["input_ids"].shape), with_kwargs=True)
    shared_loss, shared_grads = loss_and_gradients(model, inputs, tmp_path, share=True)
    rows = inputs["input_ids"].shape
    assert calls[:2] == [(1, start), (rows[0], rows[1] - start)]
    assert model.config._attn_implementation == "sdpa"  # restored
    loss, grads = loss_and_gradients(model, inputs, tmp_path, share=False)
    assert torch.allclose(shared_loss, loss, atol=1e-6)
    for shared, whole in zip(shared_grads, grads):
        assert torch.allclose(shared, whole, atol=1e-6, rtol=1e-4)


def test_rows_that_share_nothing_take_the_plain_pass(tiny_llama, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, **dtype_argument(torch.float32))
    inputs = batch(tokenizer, [LABELS] * 3)
    inputs["input_ids"][1, 0] = tokenizer.unk_token_id  # the rows differ from the first token
    assert prefix_sharing.shared_length(inputs["input_ids"], inputs["attention_mask"]) == 0
    shared_loss, _ = loss_and_gradients(model, inputs, tmp_path, share=True)
    loss, _ = loss_and_gradients(model, inputs, tmp_path, share=False)
    assert torch.allclose(shared_loss, loss, atol=1e-6)


def test_which_models_can_share(tiny_llama, tiny_t5):
    from transformers import AutoModelForSeq2SeqLM

    assert prefix_sharing.supported(AutoModelForCausalLM.from_pretrained(tiny_llama))
    eager = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="eager")
    assert not prefix_sharing.supported(eager)
    assert not prefix_sharing.supported(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5))
