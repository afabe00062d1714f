"""Torch threads in forked processes.

Torch's CPU thread pool on Linux is GNU OpenMP's, which does not survive `fork`: a process
forked after its parent ran a parallel region waits forever in its own first parallel region
with more than one thread (the pool's other threads were not copied). spaCy's
`nlp.pipe(n_process=N)` forks its workers, so a process forked from one that had imported torch
runs torch on one thread from the start, as torch's own DataLoader workers do: gner and every
other torch component before it (a spacy-transformers `transformer`, say). Importing
spacy_gner (spaCy does, for a pipeline with gner) registers this.
"""
import os
import sys


def _one_thread_after_fork() -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_one_thread_after_fork)
