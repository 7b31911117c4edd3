"""Fine-tune an LLM recommender on a selection and measure it (the BIGRec backbone of DEALRec).

- :mod:`~tunesift.finetune.lora`: LoRA fine-tuning on (prompt, response) samples with early stopping.
- :mod:`~tunesift.finetune.generate`: batched beam-search generation of responses.
- :mod:`~tunesift.finetune.ground`: generations -> items by L2 distance of base-model last-token states.
- :mod:`~tunesift.finetune.metrics`: Recall@K and NDCG@K over all items.
- :mod:`~tunesift.finetune.tiny`: a tiny offline model + tokenizer for tests and the ``tiny`` bench scale.

Heavy dependencies (torch, transformers, peft) are imported inside the functions that use them.
"""

from tunesift.finetune.generate import GenerationSettings, generate_responses
from tunesift.finetune.ground import Grounding, ground_and_score, item_states, last_token_states
from tunesift.finetune.lora import LoraTrainSettings, TrainResult, train_lora
from tunesift.finetune.metrics import RankingMetrics, metrics_from_ranks, truth_ranks_from_distances

__all__ = [
    "GenerationSettings", "generate_responses", "Grounding", "ground_and_score", "item_states",
    "last_token_states", "LoraTrainSettings", "TrainResult", "train_lora", "RankingMetrics",
    "metrics_from_ranks", "truth_ranks_from_distances",
]
