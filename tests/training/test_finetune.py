"""training.finetune: the training layout is what the gner component feeds the model, the loss
falls, bf16 autocast, LoRA merging, resuming after a crash, and DDP in two processes."""
import gzip
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence, Set, Tuple

import pytest
import spacy
import torch
from safetensors.torch import load_file
from support import LABELS, sentencepiece_checkpoint, train_sentencepiece
from transformers import AutoTokenizer, TrainerCallback

from spacy_gner.compat import checkpointing
from spacy_gner.copy_state import CopyState
from spacy_gner.formats import InlineBracket, InlineXML, WordTag
from spacy_gner.generation import HFGenerator
from spacy_gner.models import smollm2_path
from spacy_gner.generators import Request
from spacy_gner.output import bio_to_spans
from spacy_gner.prompt import build_prompt, build_target, encode_prompts
from training.finetune import (
    IGNORE_INDEX,
    GnerTrainer,
    apply_preset,
    build_parser,
    encode,
    finetune,
    last_checkpoint,
    read_examples,
)

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = [
    ("Mary visited Paris".split(), ["B-person", "O", "B-location"]),
    ("John flew to Tokyo".split(), ["B-person", "O", "O", "B-location"]),
    ("Paris is in France .".split(), ["B-location", "O", "O", "B-location", "O"]),
    ("York met Mary".split(), ["B-person", "O", "B-person"]),
]
PROMPT = build_prompt(SENTENCES[0][0], LABELS)
TARGET = build_target(*SENTENCES[0])


def write_jsonl(path: Path, sentences: Sequence[Tuple[List[str], List[str]]] = SENTENCES) -> Path:
    with open(path, "w", encoding="utf8") as file:
        for i, (words, tags) in enumerate(sentences):
            instance = {"id": str(i), "words": words, "labels": tags,
                        "instruction_inputs": build_prompt(words, LABELS),
                        "prompt_labels": build_target(words, tags)}
            record = {"id": str(i), "dataset": "toy", "split": "train", "label_list": LABELS,
                      "instance": instance}
            file.write(json.dumps(record) + "\n")
    return path


def cli(model: Path, data: Path, output: Path, *extra: str) -> List[str]:
    """Command line options for short runs on the tiny models: a batch of 2, a high constant
    learning rate, a log line every step."""
    return ["--model", str(model), "--train", str(data), "--output-dir", str(output),
            "--batch-size", "2", "--total-batch-size", "2", "--learning-rate", "3e-3",
            "--lr-scheduler", "constant", "--warmup-ratio", "0", "--logging-steps", "1", *extra]


def run(*args: str, callbacks: Sequence[TrainerCallback] = ()) -> Path:
    return finetune(build_parser().parse_args(list(args)), callbacks)


def losses(output: Path) -> List[float]:
    state = json.loads((last_checkpoint(output / "checkpoints") / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


# --- the training layout -----------------------------------------------------------------


def test_causal_model_learns_only_target_and_eos_after_the_component_prompt(tiny_llama):
    generator = HFGenerator(str(tiny_llama), device="cpu")
    tokenizer = generator.tokenizer
    [feature] = encode(tokenizer, [(PROMPT, TARGET)], encoder_decoder=False, prompt_format="inst",
                       max_source_length=640, max_target_length=640)
    [source] = generator.encode([PROMPT])  # what the component feeds
    target = tokenizer(TARGET, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert feature["input_ids"] == source + target
    assert feature["labels"] == [IGNORE_INDEX] * len(source) + target
    assert tokenizer.decode(feature["input_ids"]).startswith("<s> [INST] Please analyze")
    assert feature["input_ids"].count(tokenizer.bos_token_id) == 1


def test_causal_loss_from_the_target_positions_only_equals_the_full_loss(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    pairs = [(build_prompt(words, LABELS), build_target(words, tags)) for words, tags in SENTENCES]
    features = encode(tokenizer, pairs, encoder_decoder=False, prompt_format="inst",
                      max_source_length=640, max_target_length=640)
    batch = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)(features)
    trainer = GnerTrainer(model=model, args=TrainingArguments(str(tmp_path), report_to=[]))
    expected = model(**batch).loss  # logits at every position, labels shifted by the model
    loss = trainer.compute_loss(model, dict(batch))
    assert torch.allclose(loss, expected, atol=1e-5)
    assert trainer.examples_seen == len(SENTENCES)


def test_chat_template_prompt_gets_no_second_bos(tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    [ids] = encode_prompts(tokenizer, [PROMPT], "chat_template")
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids[1:]).strip().startswith("Please analyze")


def test_seq2seq_model_reads_the_bare_prompt_and_learns_target_and_eos(tiny_t5):
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5)
    [feature] = encode(tokenizer, [(PROMPT, TARGET)], encoder_decoder=True, prompt_format="inst",
                       max_source_length=640, max_target_length=640)
    assert feature["input_ids"] == tokenizer(PROMPT)["input_ids"]
    assert feature["labels"] == tokenizer(text_target=TARGET)["input_ids"]
    assert feature["labels"][-1] == tokenizer.eos_token_id


def test_examples_over_the_length_limits_are_left_out(tiny_t5, caplog):
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5)
    short, long = (PROMPT, "a(O)"), (PROMPT, build_target(*SENTENCES[2]))
    labels = tokenizer(text_target="a(O)")["input_ids"]
    kept = encode(tokenizer, [short, long], encoder_decoder=True, prompt_format="inst",
                  max_source_length=640, max_target_length=len(labels))
    assert [f["labels"] for f in kept] == [labels]
    assert "1 of 2 examples" in caplog.text
    with pytest.raises(ValueError, match="No training examples"):
        encode(tokenizer, [long], encoder_decoder=True, prompt_format="inst",
               max_source_length=8, max_target_length=640)


# --- training tokens = inference tokens ----------------------------------------------------


FORMATS = [WordTag(), InlineBracket(), InlineXML()]
FORMAT_IDS = ["word_tag", "bracket", "xml"]


def target_tokens(tokenizer, words, tags, labels, fmt=WordTag()):
    """(trained, forced): the target tokens `encode` puts after the prompt (before EOS), and
    the tokens copy-aware decoding forces for the same entities (a path through the format's
    lattice that reads them; nested formats also get an entity inside each longer one)."""
    spans = bio_to_spans(tags)
    if fmt.nests:
        spans += [(start, start + 1, label) for start, end, label in spans if end - start > 1]
    target = fmt.target(words, spans) if fmt.nests else build_target(words, tags)
    prompt = build_prompt(words, labels, None, fmt)
    [feature] = encode(tokenizer, [(prompt, target)], encoder_decoder=False, prompt_format="inst",
                       max_source_length=100_000, max_target_length=100_000)
    [source] = encode_prompts(tokenizer, [prompt], "inst")
    assert feature["input_ids"][: len(source)] == source
    assert feature["input_ids"][-1] == tokenizer.eos_token_id
    trained = feature["input_ids"][len(source) : -1]
    lattice = fmt.lattice(tokenizer, Request(tuple(words), tuple(labels)))
    assert lattice is not None, words
    state = CopyState(lattice)
    for token in trained:
        if token not in state.allowed():
            break
        state.step(token)
    assert state.done, words
    if fmt.nests:
        assert sorted(span[:3] for span in fmt.spans(state.actions, state.probs)) == sorted(spans), words
    else:
        assert state.actions == list(tags), words
    return trained, state.tokens


def tagged_sentences(count: int = 40):
    """(words, random valid tags, types): CrossNER test sentences and one of odd words."""
    rng = random.Random(0)
    with gzip.open(ROOT / "tests" / "fixtures" / "crossner-reference-prompts.jsonl.gz", "rt") as file:
        records = [json.loads(line) for line in file][:count]
    odd = ["(", "U.S.", ")", "1999", "Brontë", "'s", "e-mail", ":", "O)", "(B-x", "Zoë", "."]
    sentences = [(r["instance"]["words"], r["label_list"]) for r in records] + [(odd, LABELS)]
    for words, labels in sentences:
        tags = Request(tuple(words), tuple(labels)).tags
        yield words, [rng.choice(tags) for _ in words], labels


@pytest.fixture(scope="module")
def llama_sentencepiece(tmp_path_factory):
    """A Llama-style tokenizer as GNER-LLaMA has one: a SentencePiece BPE model (byte
    fallback) as a Llama checkpoint holds it, read by AutoTokenizer as the fast tokenizer converted
    from it, which adds BOS and prepends "▁" to a text."""
    directory = tmp_path_factory.mktemp("llama-sentencepiece")
    corpus = [build_prompt(words, labels) + " " + build_target(words, tags)
              for words, tags, labels in tagged_sentences(20)]
    model = train_sentencepiece(directory / "spm", corpus, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    sentencepiece_checkpoint(directory, model, "LlamaTokenizer", bos_token="<s>",
                             eos_token="</s>", unk_token="<unk>", add_bos_token=True)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert tokenizer.is_fast and tokenizer.bos_token == "<s>"
    return tokenizer


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_llama_style_training_tokens_are_the_forced_tokens(llama_sentencepiece, fmt):
    for words, tags, labels in tagged_sentences():
        trained, forced = target_tokens(llama_sentencepiece, words, tags, labels, fmt)
        assert trained == forced, words


def test_llama_style_word_tag_training_tokens_are_the_references(llama_sentencepiece):
    tokenizer = llama_sentencepiece
    for words, tags, labels in tagged_sentences():
        trained, _ = target_tokens(tokenizer, words, tags, labels)
        # and they are what the reference trains GNER-LLaMA on: after the prompt's tokens in
        # `[INST] prompt [/INST] target` tokenized as one string (the first word as "▁John")
        prompt = f"[INST] {build_prompt(words, labels)} [/INST]"
        joint = tokenizer(f"{prompt} {build_target(words, tags)}")["input_ids"]
        assert joint[len(tokenizer(prompt)["input_ids"]) :] == trained, words
        assert tokenizer.convert_ids_to_tokens(trained)[0].startswith("▁")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_smollm2_training_tokens_are_the_forced_tokens(fmt):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    for words, tags, labels in tagged_sentences():
        trained, forced = target_tokens(tokenizer, words, tags, labels, fmt)
        assert trained == forced, words


def test_read_examples_names_the_bad_line(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl")
    assert read_examples([path])[0] == (PROMPT, TARGET)
    with_bom = tmp_path / "bom.jsonl"
    with_bom.write_text("\ufeff" + path.read_text(encoding="utf8"), encoding="utf8")
    assert read_examples([with_bom]) == read_examples([path])
    with open(path, "a", encoding="utf8") as file:
        file.write('{"instance": {"words": []}}\n')
    with pytest.raises(ValueError, match=r"train.jsonl, line 5"):
        read_examples([path])


def test_presets_follow_the_architecture_and_flags_override():
    args = build_parser().parse_args(["--train", "x", "--output-dir", "y",
                                      "--learning-rate", "1e-4"])
    t5, llama = apply_preset(args, encoder_decoder=True), apply_preset(args, encoder_decoder=False)
    assert (t5.preset, t5.lr_scheduler, t5.learning_rate) == ("t5", "constant", 1e-4)
    assert (llama.preset, llama.lr_scheduler, llama.warmup_ratio) == ("llama", "cosine", 0.04)
    assert args.lr_scheduler is None  # the parsed options stay as given


def test_last_checkpoint_skips_one_whose_writing_did_not_finish(tmp_path):
    for step in (2, 4, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert last_checkpoint(tmp_path / "none") is None


# --- training ----------------------------------------------------------------------------


class OutputDtype(TrainerCallback):
    """Records the dtype of the language-model head's output during training."""

    def __init__(self) -> None:
        self.dtypes: Set[torch.dtype] = set()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model.get_output_embeddings().register_forward_hook(
            lambda module, inputs, output: self.dtypes.add(output.dtype))


def test_causal_model_memorises_and_the_component_reads_it(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl")
    dtype = OutputDtype()
    options = cli(tiny_llama, data, tmp_path / "out", "--max-steps", "60", "--save-steps", "60")
    output = run(*options, callbacks=[dtype])
    assert dtype.dtypes == {torch.float32}
    trained = losses(output)
    assert len(trained) == 60 and sum(trained[-5:]) / 5 < sum(trained[:5]) / 5 / 4
    nlp = spacy.blank("en")
    nlp.add_pipe("gner", config={"generator": {"model": str(output), "device": "cpu"}, "labels": LABELS})
    doc = nlp("Paris is in France .")
    assert [(e.text, e.label_) for e in doc.ents] == [("Paris", "location"), ("France", "location")]


class TrainingSetup(TrainerCallback):
    """Records whether the optimizer is fused and the model recomputes its activations."""

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.fused = getattr(optimizer, "optimizer", optimizer).defaults.get("fused")
        self.checkpointing = checkpointing(model)


def test_the_workflows_memory_options_learn_as_well(tiny_llama, tmp_path):
    # the workflow's finetune_args: bf16, gradient checkpointing, fused AdamW
    data = write_jsonl(tmp_path / "train.jsonl")
    setup = TrainingSetup()
    output = run(*cli(tiny_llama, data, tmp_path / "out", "--max-steps", "60", "--save-steps",
                      "60", "--bf16", "--gradient-checkpointing", "--optim", "adamw_torch_fused"),
                 callbacks=[setup])
    assert setup.fused and setup.checkpointing
    trained = losses(output)
    assert sum(trained[-5:]) / 5 < sum(trained[:5]) / 5 / 4


def test_seq2seq_loss_falls_under_bf16_autocast(tiny_t5, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl")
    dtype = OutputDtype()
    output = run(*cli(tiny_t5, data, tmp_path / "out", "--max-steps", "30", "--save-steps", "30",
                      "--bf16"), callbacks=[dtype])
    assert dtype.dtypes == {torch.bfloat16}
    trained = losses(output)
    assert sum(trained[-5:]) / 5 < sum(trained[:5]) / 5 / 2
    assert load_file(output / "model.safetensors")["shared.weight"].dtype == torch.float32


def test_lora_adapters_are_merged_into_the_saved_model(tiny_llama, tmp_path):
    pytest.importorskip("peft")
    data = write_jsonl(tmp_path / "train.jsonl")
    output = run(*cli(tiny_llama, data, tmp_path / "out", "--max-steps", "4", "--save-steps", "4",
                      "--lora", "--lora-r", "4"))
    base = load_file(tiny_llama / "model.safetensors")
    merged = load_file(output / "model.safetensors")
    assert set(merged) == set(base)  # plain weights, no adapter
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    assert "model.layers.0.self_attn.q_proj.weight" in changed
    assert "model.embed_tokens.weight" not in changed  # only the linear layers were adapted
    assert (output / "tokenizer.json").exists()


class Crash(TrainerCallback):
    """Stops the process dead after an optimizer step, as a killed job would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


class Steps(TrainerCallback):
    """Records the optimizer steps taken."""

    def __init__(self) -> None:
        self.steps: List[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_interrupted_run_resumes_from_its_last_checkpoint(tiny_t5, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl")
    options = ("--max-steps", "6", "--save-steps", "2")
    whole = run(*cli(tiny_t5, data, tmp_path / "whole", *options))
    with pytest.raises(KeyboardInterrupt):
        run(*cli(tiny_t5, data, tmp_path / "cut", *options), callbacks=[Crash(step=3)])
    assert last_checkpoint(tmp_path / "cut" / "checkpoints").name == "checkpoint-2"
    with pytest.raises(SystemExit, match="--resume"):
        run(*cli(tiny_t5, data, tmp_path / "cut", *options))
    steps = Steps()
    resumed = run(*cli(tiny_t5, data, tmp_path / "cut", *options, "--resume"), callbacks=[steps])
    assert steps.steps == [3, 4, 5, 6]
    assert losses(resumed)[2:] == pytest.approx(losses(whole)[2:], rel=1e-4)
    expected, got = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.allclose(expected[name], got[name], atol=1e-6) for name in expected)


def test_ddp_on_cpu_trains_in_two_processes_and_writes_one_checkpoint(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", SENTENCES * 2)
    output = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "training.finetune",
               *cli(tiny_llama, data, output, "--max-steps", "3", "--save-steps", "3",
                    "--total-batch-size", "4")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    seen = dict(re.findall(r"rank (\d) of 2 trained on (\d+) examples", log))
    assert seen == {"0": "6", "1": "6"}  # 3 steps x 2 examples on each rank
    assert "Total train batch size (w. parallel, distributed & accumulation) = 4" in log
    assert [path.name for path in (output / "checkpoints").iterdir()] == ["checkpoint-3"]
    assert (output / "model.safetensors").exists() and (output / "tokenizer.json").exists()
