"""The warm-up harness: does pre-fine-tuning on a selection help the target task?

GOT-D's claim (Kang et al., ICLR 2024) is that pre-fine-tuning on the pool examples it picks, then
fine-tuning on a small labelled set, beats doing the same with other picks or none. This package does the
two steps and the measurements: :mod:`~tunesift.warmup.pretrain` (masked-LM / causal-LM pre-fine-tuning
and the target-domain LM loss), :mod:`~tunesift.warmup.classify` (classifier fine-tuning and the tasks'
metrics), :mod:`~tunesift.warmup.zeroshot` (zero-shot classification by a causal LM's likelihood of each
label's verbalizer, GOT-D's zero-shot AG News evaluation) and :mod:`~tunesift.warmup.tasks` (target tasks
by name or file). ``tunesift bench gotd`` runs it over methods, budgets and seeds.

Importing this package does not import torch; the functions do, where they are used.
"""

from tunesift.warmup.tasks import (TASKS, ClassificationTask, LabelledSplit, load_task, sample_labels,
                                   synthetic_pool, synthetic_task)

__all__ = [
    "TASKS",
    "ClassificationTask",
    "LabelledSplit",
    "load_task",
    "sample_labels",
    "synthetic_pool",
    "synthetic_task",
]
