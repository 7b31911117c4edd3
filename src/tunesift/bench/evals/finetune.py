"""``--eval finetune``: a classifier fine-tuned on the task's labels after pre-fine-tuning (GOT-D's NLU
tables): at most ``label_budget`` labels per seed, epoch chosen on the dev split, scored on the test split."""

from __future__ import annotations

from typing import Any

import numpy as np

from tunesift.bench.evals.base import WARMUP_EVALS, WarmupEval


@WARMUP_EVALS.register("finetune")
class FinetuneEval(WarmupEval):
    name = "finetune"
    objective = "mlm"
    seeded_baseline = True  # the labels (and the classifier's seed) change with the seed
    own_settings = ("finetune_lora_r",)

    def evaluate(self, bench, model, seed: int, record: dict) -> tuple[np.ndarray, dict]:
        from tunesift.bench.common import measure
        from tunesift.warmup.classify import ClassifierConfig, finetune_and_evaluate

        c = self.config
        ccfg = ClassifierConfig(learning_rate=c.finetune_lr, epochs=c.finetune_epochs, batch_size=c.finetune_batch_size,
                                max_length=c.max_length, seed=seed, device=c.device, lora_r=c.finetune_lora_r)
        with measure() as m_ft:
            ft = finetune_and_evaluate(bench.model_path, bench.task, ccfg, train=bench.labelled(seed), backbone=model,
                                       dev=bench.dev, test=bench.test, progress=c.progress)
        record.update(test_score=ft.test_score, dev_score=ft.dev_score, best_epoch=ft.best_epoch,
                      labels_used=ft.labels_used, test_examples=ft.test_examples, finetune_s=m_ft.seconds)
        return ft.test_predictions, {}

    def report(self, bench) -> dict[str, Any]:
        c, task = self.config, bench.task
        return {
            "metrics": ["test_score", "dev_score"] + (["test_accuracy"] if task.metric != "accuracy" else [])
            + ["lm_loss_after", "lm_loss_change"],
            "cost": ["selection_s", "pretrain_s", "finetune_s", "total_s", "peak_rss_mb"],
            "protocol": (f"Task **{task.name}** ({task.describe()['train']} train / "
                         f"{0 if bench.dev is None else len(bench.dev)} dev / {len(bench.test)} test examples scored; "
                         f"metric {task.metric}); at most {c.label_budget} labels per seed."),
            "training": (f"pre-fine-tuning {c.pretrain_epochs} epoch(s) at lr {c.pretrain_lr}"
                         + (f" (LoRA rank {c.pretrain_lora_r}, merged)" if c.pretrain_lora_r else "") + "; fine-tuning "
                         f"{c.finetune_epochs} epochs at lr {c.finetune_lr}"
                         + (f" (LoRA rank {c.finetune_lora_r} and the head, merged)" if c.finetune_lora_r else "")),
        }
