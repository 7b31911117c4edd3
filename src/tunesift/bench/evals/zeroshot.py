"""``--eval zero-shot``: no labels at all (the ``label_budget`` training texts are only the selection's
target); a causal LM classifies the test texts by the likelihood of each label's verbalizer after a prompt
(:mod:`tunesift.warmup.zeroshot`), as GOT-D's zero-shot AG News experiment does with GPT-2 XL. Template,
verbalizers and length normalisation are settings, recorded with the results; ``none`` is deterministic and
runs once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tunesift.bench.evals.base import WARMUP_EVALS, WarmupEval


@WARMUP_EVALS.register("zero-shot")
class ZeroShotEval(WarmupEval):
    name = "zero-shot"
    objective = "causal"
    own_settings = ("template", "verbalizer", "length_norm")
    seeded_baseline = False  # the starting model scored without labels: the same for every seed
    scale_settings = {
        # the packaged causal LM in place of the packaged encoder. At `cpu`, a run of SmolLM2-135M on one
        # loaded core costs ~5 min at budget 250 and 8-19 min at 1,000 (README, *Warm-up*): 5 methods x
        # 2 budgets x 3 seeds (`none` once, 25 runs) are ~3.5 h on one core, under 2 h as two benches
        "cpu": {"model": "smollm2", "budgets": (250, 1000), "seeds": 3},
        "gpu": {"model": "smollm2"},
    }
    title = " (zero-shot)"

    def __init__(self, config):
        super().__init__(config)
        self.prompt = None

    @classmethod
    def check_config(cls, config) -> None:
        from tunesift.warmup.zeroshot import LENGTH_NORMS, check_template

        if config.length_norm not in LENGTH_NORMS:
            raise ValueError(f"`length_norm` must be one of {', '.join(LENGTH_NORMS)}, got {config.length_norm!r}")
        if config.objective == "mlm":
            raise ValueError("--eval zero-shot scores a causal LM: --objective mlm does not apply")
        if config.template is not None:
            check_template(config.template, "--template")
        if config.verbalizer is not None and not Path(config.verbalizer).is_file():
            raise FileNotFoundError(f"{config.verbalizer}: no such verbalizer file (--verbalizer: a JSON object "
                                    "mapping each label to its verbalizer)")

    def setup(self, bench) -> list[str]:
        from tunesift.warmup.zeroshot import resolve_prompt

        task = bench.task
        if task.test.text_pairs is not None:
            raise ValueError(f"task {task.name!r} has sentence pairs: --eval zero-shot takes single texts")
        self.prompt = resolve_prompt(task.name, task.label_names, self.config.template, self.config.verbalizer)
        return [self.prompt.fill("")] + list(self.prompt.verbalizers)

    def check_model(self, bench) -> None:
        from transformers import AutoConfig

        from tunesift.warmup.pretrain import infer_objective

        objective = infer_objective(AutoConfig.from_pretrained(bench.model_path))
        if objective != "causal" and self.config.objective != "causal":
            raise ValueError(f"--eval zero-shot needs a causal LM, but {self.config.model} ({bench.model_path}) is "
                             "an encoder; use --model smollm2 or a local causal-LM folder")

    def settings(self) -> dict[str, Any]:
        return {"zero_shot_prompt": self.prompt.to_dict()}

    def evaluate(self, bench, model, seed: int, record: dict) -> tuple[np.ndarray, dict]:
        from tunesift.bench.common import measure
        from tunesift.warmup.zeroshot import ZeroShotConfig, classify

        c = self.config
        if model is None:
            model = bench.load_start_model()
            model.model.to(bench.device())
        with measure() as m_ev:
            zs = classify(model, bench.test.texts, bench.test.labels, self.prompt,
                          ZeroShotConfig(length_norm=c.length_norm, max_length=c.max_length),
                          metric=bench.task.metric, progress=c.progress)
        record.update(test_score=zs.score, labels_used=0, test_examples=len(bench.test), eval_s=m_ev.seconds,
                      truncated_texts=zs.truncated)
        return zs.predictions, {"label_scores": zs.scores.astype(np.float32)}

    def report(self, bench) -> dict[str, Any]:
        c, task, p = self.config, bench.task, self.prompt
        verbalizers = ", ".join(f"{n} → `{json.dumps(v)}`" for n, v in zip(p.label_names, p.verbalizers))
        return {
            "metrics": ["test_score"] + [m for m in ("test_accuracy", "test_macro_f1") if m != f"test_{task.metric}"]
            + ["lm_loss_after", "lm_loss_change"],
            "cost": ["selection_s", "pretrain_s", "eval_s", "total_s", "peak_rss_mb"],
            "protocol": (f"Task **{task.name}** ({task.describe()['train']} train / {len(bench.test)} test "
                         f"examples scored; metric {task.metric}). Evaluation **zero-shot**: no labels; "
                         f"{c.label_budget} unlabelled training texts per seed are the selection's target. Each "
                         f"test text fills the template `{json.dumps(p.template)}`; the prediction is the label "
                         f"whose verbalizer ({verbalizers}; {p.source}) has the highest log-likelihood after it "
                         f"({'summed over its tokens' if c.length_norm == 'sum' else 'mean per token'}; texts cut "
                         f"to {c.max_length} tokens). `none` (the starting model) is deterministic: one run."),
            "training": f"pre-fine-tuning {c.pretrain_epochs} epoch(s) at lr {c.pretrain_lr} (causal LM, "
                        + (f"LoRA rank {c.pretrain_lora_r}, merged)" if c.pretrain_lora_r else "all weights)"),
        }
