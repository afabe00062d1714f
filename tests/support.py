"""Test support: a scripted fake model, a tokenizer trained here, tiny T5 / Llama models."""
import ctypes
import os
import re
import signal
import stat
import struct
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

from spacy.util import registry

from spacy_gner.formats import get_format
from spacy_gner.generators import Request, Result, parse_output
from spacy_gner.prompt import INSTRUCTION, build_prompt, build_target

TRAIN_WORDS = "John explored Tokyo and flew back to New York . Mary visited Paris".split()
TRAIN_TAGS = ["B-person", "O", "B-location", "O", "O", "O", "O", "B-location", "I-location", "O",
              "B-person", "O", "B-location"]
LABELS = ["person", "location"]


class ScriptedGenerator:
    """A fake model: canned outputs by sentence (parsed and matched as free generation is),
    else every word tagged from a gazetteer, each tag with probability `prob` (None: no
    scores). Fixed tags are kept. Each word costs 2 tokens of a budget of `max_length`.

    It records the prompts it was given, so tests can check what the model saw.
    """

    def __init__(self, responses: Dict[str, str], gazetteer: Dict[str, str],
                 prob: Optional[float], max_length: int, delay: float = 0.0,
                 output_format: str = "word_tag") -> None:
        self.responses = responses
        self.output_format = get_format(output_format)  # the responses' format
        self.gazetteer = {tuple(k.split()): v for k, v in gazetteer.items()}
        self.prob = prob
        self.max_length = max_length
        self.delay = delay  # seconds per call, to stand for a slow model
        self.prompts: List[str] = []
        self.requests: List[Request] = []
        self.calls = 0

    def label(self, words: List[str]) -> List[str]:
        tags = ["O"] * len(words)
        i = 0
        while i < len(words):
            for entry, label in sorted(self.gazetteer.items(), key=lambda e: -len(e[0])):
                if tuple(words[i : i + len(entry)]) == entry:
                    tags[i : i + len(entry)] = [f"B-{label}"] + [f"I-{label}"] * (len(entry) - 1)
                    i += len(entry) - 1
                    break
            i += 1
        return tags

    def costs(self, words, labels):
        return [2] * len(words), self.max_length

    def __call__(self, requests: List[Request]) -> List[Result]:
        self.prompts.extend(request.prompt for request in requests)
        self.requests.extend(requests)
        self.calls += 1
        time.sleep(self.delay)
        results = []
        for request in requests:
            sentence = " ".join(request.words)
            if sentence in self.responses:
                results.append(parse_output(request, self.responses[sentence], None, self.output_format))
                continue
            tags = request.enforce(self.label(list(request.words)))
            fixed = request.fixed or (None,) * len(tags)
            probs = None if self.prob is None else tuple(1.0 if tag else self.prob for tag in fixed)
            results.append(Result(tags, probs))
        return results


@registry.gner_generators("spacy-gner.test.ScriptedGenerator.v1")
def make_scripted_generator(
    responses: Dict[str, str] = {}, gazetteer: Dict[str, str] = {}, prob: Optional[float] = 0.9,
    max_length: int = 640, delay: float = 0.0, output_format: str = "word_tag",
) -> ScriptedGenerator:
    return ScriptedGenerator(responses, gazetteer, prob, max_length, delay, output_format)


def scripted_config(responses: Optional[Dict[str, str]] = None, max_length: int = 640,
                    prob: Optional[float] = 0.9, delay: float = 0.0, output_format: str = "word_tag",
                    **gazetteer: str) -> dict:
    return {
        "output_format": output_format,
        "@gner_generators": "spacy-gner.test.ScriptedGenerator.v1",
        "responses": responses or {},
        "gazetteer": {k.replace("_", " "): v for k, v in gazetteer.items()},
        "prob": prob,
        "max_length": max_length,
        "delay": delay,
    }


# The training text of the test tokenizers: the prompt and target of one example, and
# every ASCII letter, digit and the punctuation of the format.
INSTRUCTION_CORPUS = [INSTRUCTION, build_prompt(TRAIN_WORDS, LABELS),
                      build_target(TRAIN_WORDS, TRAIN_TAGS),
                      "[INST] [/INST] abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ "
                      "0123456789 ()-,.:'[]|<>/"] * 20


def train_tokenizer(directory: Path, kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>", "<s>"])
    tokenizer.train_from_iterator(INSTRUCTION_CORPUS, trainer)
    if kind == "t5":
        tokenizer.post_processor = processors.TemplateProcessing(
            single="$A </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
        )
        special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    else:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
        )
        special = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_input_names=["input_ids", "attention_mask"], **special
    )
    fast.save_pretrained(directory)
    return fast


def train_sentencepiece(directory: Path, corpus: List[str], **special_ids: int) -> Path:
    """`directory`/tokenizer.model: a SentencePiece BPE model of `corpus` with byte fallback
    (any character can be spelled), special token ids as given (e.g. pad_id=0)."""
    import sentencepiece

    directory.mkdir(parents=True, exist_ok=True)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_prefix=str(directory / "tokenizer"),
        vocab_size=600, model_type="bpe", byte_fallback=True, character_coverage=1.0,
        minloglevel=2, **special_ids)
    return directory / "tokenizer.model"


def sentencepiece_checkpoint(directory: Path, model_file: Path, tokenizer_class: str,
                             **settings) -> Path:
    """`directory` with a tokenizer as older Hub checkpoints hold one: only the SentencePiece
    model (`spiece.model` for T5, `tokenizer.model` otherwise) and tokenizer_config.json naming
    the tokenizer class, no tokenizer.json (transformers converts it to a fast tokenizer)."""
    import json
    import shutil

    directory.mkdir(parents=True, exist_ok=True)
    name = "spiece.model" if tokenizer_class.startswith("T5") else "tokenizer.model"
    shutil.copyfile(model_file, directory / name)
    config = {"tokenizer_class": tokenizer_class, "legacy": True, **settings}
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf8")
    return directory


class OpenedFiles:
    """The names of the files opened in a directory while inside, by Python or native code
    alike (Linux inotify): `with OpenedFiles(path) as opened: ...; opened.names`."""

    IN_OPEN = 0x20
    EVENT = struct.Struct("iIII")  # watch, mask, cookie, length of the name that follows

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.names: Set[str] = set()

    def __enter__(self) -> "OpenedFiles":
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, str(self.directory).encode(), self.IN_OPEN) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {self.directory}")
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            while True:
                data = os.read(self.fd, 1 << 16)
                offset = 0
                while offset < len(data):
                    _, mask, _, length = self.EVENT.unpack_from(data, offset)
                    offset += self.EVENT.size
                    name = data[offset : offset + length].rstrip(b"\0").decode()
                    offset += length
                    if name and mask & self.IN_OPEN:
                        self.names.add(name)
        except BlockingIOError:
            pass
        finally:
            os.close(self.fd)


def assert_holds_only_what_loading_reads(directory):
    """Every file of a saved model directory is read when it loads, and readable by all whom
    the umask lets read new files."""
    files = {path.name for path in directory.iterdir()}
    from spacy_gner.models import load_model

    with OpenedFiles(directory) as opened:
        load_model(directory, device="cpu")
    assert files == opened.names
    umask = os.umask(0)
    os.umask(umask)
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in directory.iterdir()} == {
        name: 0o666 & ~umask for name in files}


def memorise(model, tokenizer, kind: str, steps: int = 150) -> None:
    """Teach a tiny model one GNER example, so generation has something right to say."""
    import torch

    prompt, target = build_prompt(TRAIN_WORDS, LABELS), build_target(TRAIN_WORDS, TRAIN_TAGS)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    if kind == "t5":
        inputs = tokenizer([prompt], return_tensors="pt")
        labels = tokenizer([target], return_tensors="pt")["input_ids"]
        batch = {**inputs, "labels": labels}
    else:
        text = f"[INST] {prompt} [/INST]"
        source = tokenizer(text)["input_ids"]
        full = source + tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labels = [-100] * len(source) + full[len(source) :]
        batch = {"input_ids": torch.tensor([full]), "labels": torch.tensor([labels])}
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def random_model(tokenizer, kind: str, width: int = 64, seed: int = 0):
    """A randomly initialised two-layer T5 or Llama of the given hidden width."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    if kind == "t5":
        config = T5Config(vocab_size=len(tokenizer), d_model=width, d_ff=2 * width, d_kv=width // 4,
                          num_layers=2, num_heads=4, decoder_start_token_id=tokenizer.pad_token_id, **ids)
        return T5ForConditionalGeneration(config).eval()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id, **ids)
    return LlamaForCausalLM(config).eval()


def tiny_model(directory: Path, kind: str) -> Path:
    """A tiny model that has memorised the John / Tokyo example, saved in `directory`."""
    tokenizer = train_tokenizer(directory, kind)
    model = random_model(tokenizer, kind)
    memorise(model, tokenizer, kind)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def sentence_of(prompt: str) -> str:
    return re.split(r"\nSentence: ", prompt, maxsplit=1)[1]


def run_process(command: Sequence[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run a command in its own process group and return its result; past `timeout` seconds
    the whole group (the command's worker processes too) is killed and the test fails, so a
    hang cannot block the test run."""
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True, **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        shown = " ".join(command)[:120]
        raise AssertionError(f"{shown!r} ran past {timeout} s (hung?)\n{stderr[-2000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


SUPPORT = __file__  # for --code: registers the scripted generator in worker processes
SENTENCES = ["John explored Tokyo.", "Mary visited Paris and New York.", "Nothing at all here.",
             "John and Mary met in Tokyo."]


def save_pipeline(path: Path, delay: float = 0.0) -> Path:
    """A saved pipeline: sentencizer + gner with a scripted model knowing John, Mary (person),
    Tokyo, Paris, New York (location), each word's tag with probability 0.9."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    generator = scripted_config(delay=delay, John="person", Mary="person", Tokyo="location",
                                Paris="location", New_York="location")
    nlp.add_pipe("gner", config={"labels": LABELS, "generator": generator})
    nlp.to_disk(path)
    return path


def files(directory: Path) -> Dict[str, bytes]:
    """Every file under a directory, by relative path: to compare outputs byte for byte."""
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in Path(directory).rglob("*") if p.is_file()}
