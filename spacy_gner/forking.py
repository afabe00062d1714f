"""Torch threads in forked processes.

Torch's CPU thread pool on Linux is GNU OpenMP's, which does not survive `fork`: a process
forked after its parent ran a parallel region waits forever in its own first parallel region
with more than one thread (the pool's other threads were not copied). spaCy's
`nlp.pipe(n_process=N)` forks its workers, so gner runs torch on one thread in any process
forked from one that had imported torch, as torch's own DataLoader workers do.
"""
import os
import sys

_forked_after_torch = False


def _note_fork() -> None:
    global _forked_after_torch
    _forked_after_torch = "torch" in sys.modules


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_note_fork)


def fork_safe_threads() -> None:
    """In a process forked after torch was imported, set torch to one thread (once)."""
    global _forked_after_torch
    if _forked_after_torch:
        import torch

        torch.set_num_threads(1)
        _forked_after_torch = False
