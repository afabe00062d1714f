"""The instruction prompt (GNER's, byte-identical to the reference, or an output format's) and
GNER's word(tag) target strings."""
from typing import Any, Iterable, List, Mapping, Optional, Sequence

INSTRUCTION = (
    "Please analyze the sentence provided, identifying the type of entity for each word "
    "on a token-by-token basis.\n"
    "Output format is: word_1(label_1), word_2(label_2), ...\n"
    "We'll use the BIO-format to label the entities, where:\n"
    "1. B- (Begin) indicates the start of a named entity.\n"
    "2. I- (Inside) is used for words within a named entity but are not the first word.\n"
    "3. O (Outside) denotes words that are not part of a named entity.\n"
)
PROMPT_FORMATS = ("inst", "chat_template", "plain")


def build_prompt(
    words: Sequence[str],
    labels: Iterable[str],
    descriptions: Optional[Mapping[str, str]] = None,
    output_format: Any = None,
) -> str:
    """The instruction for one sentence: the task, the entity types, the words.

    `output_format` (see `formats`; default GNER's word(tag), the reference's prompt) gives
    the task's instruction and the line naming the types. `descriptions` ({type: short
    description}) adds a line `- type: description` for each offered type that has one, after
    the types; with none the prompt is the reference's."""
    labels = list(labels)
    described = [f"- {label}: {descriptions[label]}\n" for label in labels
                 if descriptions and descriptions.get(label)]
    meanings = f"The tags mean:\n{''.join(described)}" if described else ""
    if output_format is None:
        instruction, types = INSTRUCTION, f"Use the specific entity tags: {', '.join(labels)} and O.\n"
    else:
        instruction, types = output_format.instruction, output_format.types_line(labels)
    return f"{instruction}\n{types}{meanings}Sentence: {' '.join(words)}"


def build_target(words: Sequence[str], tags: Sequence[str]) -> str:
    """The target string: every word followed by its BIO tag, `word(tag)`."""
    if len(words) != len(tags):
        raise ValueError(f"{len(words)} words but {len(tags)} tags: {list(words)!r}")
    return " ".join(f"{word}({tag})" for word, tag in zip(words, tags))


def format_prompt(prompt: str, prompt_format: str, tokenizer: Optional[Any] = None) -> str:
    """Wrap a prompt for a decoder-only model.

    "inst" is the GNER-LLaMA wrapping `[INST] <prompt> [/INST]`, "chat_template" uses the
    tokenizer's chat template with the prompt as the user turn, "plain" leaves it as it is.
    """
    if prompt_format == "inst":
        return f"[INST] {prompt} [/INST]"
    if prompt_format == "plain":
        return prompt
    if prompt_format == "chat_template":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "prompt_format 'chat_template' needs a tokenizer with a chat template; "
                "use 'inst' or 'plain' for this model"
            )
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"Unknown prompt_format {prompt_format!r}: expected one of {PROMPT_FORMATS}")


def encode_prompts(
    tokenizer: Any, prompts: Sequence[str], prompt_format: Optional[str]
) -> List[List[int]]:
    """The token ids a model reads for prompts, in training and inference alike.

    Seq2seq models (`prompt_format` None) read the bare prompt; decoder-only models the
    prompt wrapped by `format_prompt`. Special tokens are added, except to chat templates,
    which hold their own.
    """
    if prompt_format is None:
        return tokenizer(list(prompts))["input_ids"]
    texts = [format_prompt(prompt, prompt_format, tokenizer) for prompt in prompts]
    return tokenizer(texts, add_special_tokens=prompt_format != "chat_template")["input_ids"]


def encode_prompt_start(
    tokenizer: Any,
    prompt_format: str,
    labels: Optional[Sequence[str]] = None,
    descriptions: Optional[Mapping[str, str]] = None,
    output_format: Any = None,
) -> List[int]:
    """The token ids that a decoder-only model's prompts start with: everything before the
    sentence for these `labels` (and `descriptions`) or, without labels, everything before the
    label list (the same for every label set). Tokenized alone, so its last token may differ
    from the prompts' (see `decoding.SharedPrefix.common_length`)."""
    marker = "\u2063\u2063"  # invisible separators: no prompt holds them
    prompt = (build_prompt([marker], labels, descriptions, output_format) if labels is not None
              else build_prompt(["."], [marker], None, output_format))
    text = format_prompt(prompt, prompt_format, tokenizer)
    start = text[: text.index(marker)].rstrip(" ")
    return tokenizer(start, add_special_tokens=prompt_format != "chat_template")["input_ids"]
