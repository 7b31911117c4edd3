"""Zero-shot classification with a causal LM: which label's verbalizer is most likely after a prompt?

GOT-D (Kang et al., ICLR 2024) also evaluates without labels: GPT-2 XL is pre-fine-tuned (causal LM) on
each method's selection and then classifies AG News zero-shot (49.5 without warm-up; at 20k selected,
GOT-D 61.4, DSIR 53.1, TAPT/c 57.0). Each test text is put into a prompt template, every label has a
verbalizer (a short continuation such as " Sports"), and the prediction is the label whose verbalizer
the model finds most likely after the prompt (Radford et al. 2019, §3; Brown et al. 2020, §2.4)::

    ll_k(x) = Σ_{t=1..m_k} log p(v_{k,t} | prompt(x), v_{k,1..t-1})     ("sum")
    ll_k(x) / m_k                                                      ("mean": per token)
    ŷ(x)   = argmax_k score_k(x)

``m_k`` is the number of tokens of label k's verbalizer. Neither the paper nor its released code says
which of the two GOT-D used; Brown et al. normalise per token for most tasks. The default here is
"sum" (``ZeroShotConfig.length_norm``); the default verbalizers are one token each for SmolLM2's
tokenizer, where the two give the same predictions.

Computation: the prompt is encoded once per text. Labels whose verbalizer is one token are all scored
from the prompt's last logits (one forward pass per text, whatever the number of labels); a longer
verbalizer costs one more pass over prompt + verbalizer. Passes are batched, left-padded with position
ids counted from each sequence's first real token, and only the last positions' logits are computed,
so a score does not depend on the batch it was computed in (up to float rounding).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

TEXT_FIELD = "{text}"
LENGTH_NORMS = ("sum", "mean")


def _bare(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


# ----------------------------------------------------------------------------------------------------
# Prompts


def check_template(template: Any, what: str = "template") -> str:
    """``template`` if it is a string with exactly one ``{text}`` placeholder; ValueError naming ``what``."""
    if not isinstance(template, str):
        raise ValueError(f"{what} must be a string with one {TEXT_FIELD} placeholder, got {type(template).__name__}")
    n = template.count(TEXT_FIELD)
    if n == 0:
        raise ValueError(f"{what}: no {TEXT_FIELD} placeholder in {template!r} (where each test text goes, "
                         "e.g. '{text}\\nTopic:')")
    if n > 1:
        raise ValueError(f"{what}: {TEXT_FIELD} appears {n} times in {template!r}; expected exactly once")
    return template


@dataclass(frozen=True)
class Prompt:
    """A prompt template and one verbalizer per label.

    Attributes:
        template: a string with one ``{text}`` placeholder (filled by plain replacement: other braces
            are literal). The verbalizer is appended right after it, so it should end where the label
            word begins (e.g. ``"{text}\\nTopic:"``).
        verbalizers: (K,) the continuation scored for each label id, taken literally (include the
            leading space that separates it from the template, e.g. ``" Sports"``).
        label_names: (K,) the task's label names, for the record.
        source: where the verbalizers came from ("default for ag_news" or a file), for messages.
    """

    template: str
    verbalizers: tuple[str, ...]
    label_names: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        check_template(self.template)
        object.__setattr__(self, "verbalizers", tuple(self.verbalizers))
        object.__setattr__(self, "label_names", tuple(str(n) for n in self.label_names))
        where = f"{self.source}: " if self.source else ""
        if len(self.verbalizers) != len(self.label_names):
            raise ValueError(f"{where}{len(self.verbalizers)} verbalizers for {len(self.label_names)} labels")
        if len(self.label_names) < 2:
            raise ValueError(f"{where}zero-shot classification needs at least two labels, got {self.label_names}")
        for name, v in zip(self.label_names, self.verbalizers):
            if not isinstance(v, str):
                raise ValueError(f"{where}label {name!r}: the verbalizer must be a string, got {type(v).__name__}")
            if not v.strip():
                raise ValueError(f"{where}label {name!r}: empty verbalizer {v!r}")
        seen: dict[str, str] = {}
        for name, v in zip(self.label_names, self.verbalizers):
            if v in seen:
                raise ValueError(f"{where}labels {seen[v]!r} and {name!r} have the same verbalizer {v!r}")
            seen[v] = name

    def fill(self, text: str) -> str:
        return self.template.replace(TEXT_FIELD, text)

    def to_dict(self) -> dict[str, Any]:
        return {"template": self.template, "verbalizers": dict(zip(self.label_names, self.verbalizers)),
                "source": self.source}


SENTIMENT = "Review: {text}\nSentiment:"

# Task name -> (template, label name -> verbalizer). AG News' classes.txt says "Sci/Tech" (three tokens
# for SmolLM2); "Technology" is one token and the word Zhao et al. (ICML 2021) use for that class.
DEFAULT_PROMPTS: dict[str, tuple[str, dict[str, str]]] = {
    "ag_news": ("{text}\nTopic:", {"World": " World", "Sports": " Sports", "Business": " Business",
                                   "Sci/Tech": " Technology"}),
    "sst-2": (SENTIMENT, {"0": " negative", "1": " positive"}),
    "mr": (SENTIMENT, {"0": " negative", "1": " positive"}),
    "cr": (SENTIMENT, {"0": " negative", "1": " positive"}),
}


def default_prompt(task_name: str, label_names: Sequence[str]) -> Prompt | None:
    """The default prompt of a known task (by name, up to case and punctuation: "SST-2", "sst2"), or None.

    ``synthetic`` (the tiny test task) gets ``"{text}\\nLabel:"`` and each label name as its own
    verbalizer. A default applies only when it covers exactly the task's label names.
    """
    names = [str(n) for n in label_names]
    if _bare(task_name) == "synthetic":
        return Prompt("{text}\nLabel:", tuple(f" {n}" for n in names), tuple(names), source="default for synthetic")
    for name, (template, verbalizers) in DEFAULT_PROMPTS.items():
        if _bare(name) == _bare(task_name) and sorted(verbalizers) == sorted(names):
            return Prompt(template, tuple(verbalizers[n] for n in names), tuple(names), source=f"default for {name}")
    return None


def read_verbalizers(path: str | os.PathLike, label_names: Sequence[str]) -> tuple[str, ...]:
    """(K,) verbalizers, aligned with ``label_names``, from a JSON file mapping each label to its word.

    Example file: ``{"negative": " terrible", "positive": " great"}`` (keys are the labels as written in
    the task's data; integer labels as strings, ``"0"``). Every label needs a non-empty verbalizer, no
    key may be a label the task lacks, and no two labels may share one.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such verbalizer file (a JSON object mapping each label to its verbalizer)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a JSON object mapping each label to its verbalizer, "
                         f"got a JSON {type(data).__name__}")
    names = [str(n) for n in label_names]
    missing = [n for n in names if n not in data]
    if missing:
        raise ValueError(f"{p}: no verbalizer for label(s) {', '.join(map(repr, missing))} "
                         f"(the task's labels: {', '.join(map(repr, names))})")
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ValueError(f"{p}: {', '.join(map(repr, unknown))} not label(s) of the task "
                         f"(its labels: {', '.join(map(repr, names))})")
    for n in names:
        v = data[n]
        if not isinstance(v, str):
            raise ValueError(f"{p}: label {n!r}: the verbalizer must be a string, got {json.dumps(v)}")
        if not v.strip():
            raise ValueError(f"{p}: label {n!r}: empty verbalizer {v!r}")
    return tuple(data[n] for n in names)


def resolve_prompt(task_name: str, label_names: Sequence[str], template: str | None = None,
                   verbalizer: str | os.PathLike | None = None) -> Prompt:
    """The prompt of a task: the given template and/or verbalizer file, the task's default for the rest.

    Raises:
        ValueError: the task has no default and ``template`` or ``verbalizer`` is missing, or either is bad.
    """
    default = default_prompt(task_name, label_names)
    if template is not None:
        check_template(template, "--template")
    if template is None and default is None:
        raise ValueError(f"task {task_name!r} has no default zero-shot prompt (known: {', '.join(DEFAULT_PROMPTS)}, "
                         "synthetic); give --template (with a {text} placeholder) and --verbalizer FILE")
    if verbalizer is None and default is None:
        raise ValueError(f"task {task_name!r} (labels {', '.join(map(repr, map(str, label_names)))}) has no default "
                         "verbalizers; give --verbalizer FILE (a JSON object mapping each label to its verbalizer)")
    words = default.verbalizers if verbalizer is None else read_verbalizers(verbalizer, label_names)
    source = default.source if verbalizer is None else str(verbalizer)
    return Prompt(template if template is not None else default.template, words, tuple(label_names), source)


# ----------------------------------------------------------------------------------------------------
# Settings and results


@dataclass
class ZeroShotConfig:
    """Settings of zero-shot scoring."""

    length_norm: str = "sum"  # "sum" of the verbalizer's token log-probs, or their "mean" (Brown et al.)
    max_length: int = 128  # tokens of the text inside the prompt; a longer text loses its end, never the template
    batch_size: int = 32  # sequences per forward pass (results do not depend on it)

    def __post_init__(self) -> None:
        if self.length_norm not in LENGTH_NORMS:
            raise ValueError(f"`length_norm` must be one of {', '.join(LENGTH_NORMS)}, got {self.length_norm!r}")
        for name in ("max_length", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}")


@dataclass
class LabelLikelihoods:
    """Log-likelihoods of every label's verbalizer after every text's prompt.

    Attributes:
        log_likelihood: (n, K) float64, Σ_t log p(v_{k,t} | prompt(x_i), v_{k,<t}).
        tokens: (K,) int, the number of tokens of each verbalizer.
        truncated: how many texts were cut to fit ``max_length``.
    """

    log_likelihood: np.ndarray
    tokens: np.ndarray
    truncated: int = 0

    def scores(self, length_norm: str = "sum") -> np.ndarray:
        """(n, K) the classification scores: the sums, or the sums over the token counts ("mean")."""
        if length_norm not in LENGTH_NORMS:
            raise ValueError(f"`length_norm` must be one of {', '.join(LENGTH_NORMS)}, got {length_norm!r}")
        return self.log_likelihood if length_norm == "sum" else self.log_likelihood / self.tokens[None, :]


@dataclass
class ZeroShotResult:
    """One zero-shot evaluation.

    Attributes:
        predictions, labels: (n,) predicted and true label ids.
        scores: (n, K) the scores the predictions are the argmax of.
        correct: (n,) bool, prediction == label (the per-example values of the paired statistics).
        score: the task's ``metric`` of the predictions; ``accuracy`` and ``macro_f1`` always.
    """

    metric: str
    score: float
    accuracy: float
    macro_f1: float
    predictions: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    length_norm: str
    seconds: float
    truncated: int = 0
    tokens: list[int] = field(default_factory=list)

    @property
    def correct(self) -> np.ndarray:
        return self.predictions == self.labels


# ----------------------------------------------------------------------------------------------------
# Scoring


def _special_tail(tokenizer: Any) -> bool:
    """Whether the tokenizer appends its end-of-text token to every text (it must not end a prompt)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        return False
    with_special = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return len(with_special) > len(plain) and with_special[-1] == eos and (not plain or plain[-1] != eos)


def encode_prompts(tokenizer: Any, prompt: Prompt, texts: Sequence[str],
                   max_length: int) -> tuple[list[list[int]], list[list[int]], int]:
    """Token ids of each filled prompt (with the tokenizer's leading special tokens) and of each verbalizer.

    A text longer than ``max_length`` tokens loses its end: the prompt keeps its first
    ``n_template + max_length − n_suffix`` tokens and its last ``n_suffix`` (the template after
    ``{text}``, e.g. "\\nTopic:"), so the template's cue always precedes the verbalizer. An empty
    prompt (template "{text}", empty text, no beginning-of-text token) becomes the end-of-text token.

    Returns:
        (prompts, verbalizers, truncated): (n,) lists of ids, (K,) lists of ids, texts cut.
    """
    words = [list(tokenizer(v, add_special_tokens=False)["input_ids"]) for v in prompt.verbalizers]
    for name, v, ids in zip(prompt.label_names, prompt.verbalizers, words):
        if not ids:
            raise ValueError(f"label {name!r}: the verbalizer {v!r} encodes to no tokens")
    seen: dict[tuple[int, ...], str] = {}
    for name, v, ids in zip(prompt.label_names, prompt.verbalizers, words):
        if tuple(ids) in seen:
            raise ValueError(f"labels {seen[tuple(ids)]!r} and {name!r}: their verbalizers encode to the same tokens "
                             f"{ids} (words missing from the model's vocabulary?)")
        seen[tuple(ids)] = name
    strip_eos = _special_tail(tokenizer)
    suffix = prompt.template.split(TEXT_FIELD, 1)[1]
    n_suffix = len(tokenizer(suffix, add_special_tokens=False)["input_ids"]) if suffix else 0
    n_template = len(tokenizer(prompt.fill(""))["input_ids"]) - int(strip_eos)
    budget = n_template + max_length
    filler = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    out, truncated = [], 0
    encoded = tokenizer([prompt.fill(t) for t in texts])["input_ids"] if len(texts) else []
    for ids in encoded:
        ids = list(ids)[:-1] if strip_eos and ids else list(ids)
        if len(ids) > budget:
            ids = ids[: budget - n_suffix] + (ids[len(ids) - n_suffix:] if n_suffix else [])
            truncated += 1
        if not ids:
            if filler is None:
                raise ValueError("an empty prompt and a tokenizer without an end- or beginning-of-text token: "
                                 "nothing to condition the verbalizer on")
            ids = [filler]
        out.append(ids)
    return out, words, truncated


def _forward_kwargs(model: Any) -> tuple[bool, bool]:
    import inspect

    params = inspect.signature(model.forward).parameters
    return "position_ids" in params, "logits_to_keep" in params


def label_log_likelihoods(model: Any, tokenizer: Any, texts: Sequence[str], prompt: Prompt,
                          config: ZeroShotConfig | None = None, progress: bool = False) -> LabelLikelihoods:
    """(n, K) log-likelihood of each label's verbalizer after each text's prompt (eval mode, on the
    model's device).

    Args:
        model: a transformers causal LM (``...ForCausalLM``).
        tokenizer: its tokenizer (with a pad token).
        texts: (n,) the texts filled into ``prompt.template``.
    """
    import torch
    from tqdm.auto import tqdm

    config = config or ZeroShotConfig()
    prompts, words, truncated = encode_prompts(tokenizer, prompt, texts, config.max_length)
    lengths = np.asarray([len(w) for w in words], dtype=np.int64)
    singles = [k for k, w in enumerate(words) if len(w) == 1]
    # work items: (text, input ids, [(label, verbalizer ids)]); the input's last len(ids) positions predict ids
    items: list[tuple[int, list[int], list[tuple[int, list[int]]]]] = []
    for i, ids in enumerate(prompts):
        if singles:
            items.append((i, ids, [(k, words[k]) for k in singles]))
        for k, w in enumerate(words):
            if len(w) > 1:
                items.append((i, ids + w[:-1], [(k, w)]))
    out = np.full((len(prompts), len(words)), np.nan, dtype=np.float64)
    if not items:
        return LabelLikelihoods(out, lengths, truncated)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad token nor an end-of-text token to pad with")
    device = next(model.parameters()).device
    with_positions, with_keep = _forward_kwargs(model)
    order = np.argsort([-len(it[1]) for it in items], kind="stable")
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(items), desc="zero-shot scoring", unit="seq", disable=not progress)
    try:
        with torch.inference_mode():
            for start in range(0, len(order), config.batch_size):
                chunk = [items[j] for j in order[start : start + config.batch_size]]
                width = max(len(it[1]) for it in chunk)
                keep = max(len(w) for it in chunk for _, w in it[2])
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, (_, seq, _) in enumerate(chunk):  # left padding: every sequence ends at width - 1
                    ids[row, width - len(seq):] = torch.as_tensor(seq, dtype=torch.long)
                    mask[row, width - len(seq):] = 1
                kwargs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
                if with_positions:
                    kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp_min(0).to(device)  # (B, T)
                if with_keep:
                    kwargs["logits_to_keep"] = keep
                logits = model(**kwargs).logits[:, -keep:, :]  # (B, keep, V)
                logp = torch.log_softmax(logits.float(), dim=-1).double().cpu()
                for row, (i, _, targets) in enumerate(chunk):
                    for k, w in targets:
                        m = len(w)
                        picked = logp[row, keep - m:, :].gather(1, torch.as_tensor(w, dtype=torch.long)[:, None])
                        out[i, k] = float(picked.sum())
                bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return LabelLikelihoods(out, lengths, truncated)


def classify(lm: Any, texts: Sequence[str], labels: Sequence[int] | np.ndarray, prompt: Prompt,
             config: ZeroShotConfig | None = None, metric: str = "accuracy", progress: bool = False) -> ZeroShotResult:
    """Zero-shot predictions of a causal :class:`~tunesift.warmup.pretrain.LanguageModel` on labelled texts.

    Args:
        texts: (n,) texts; labels: (n,) their label ids in ``[0, K)``, K = ``len(prompt.verbalizers)``.
        metric: the task's metric (a name in ``tunesift.warmup.classify.METRICS``) for ``score``.
    """
    from tunesift.warmup.metrics import METRICS, accuracy, macro_f1, score

    if getattr(lm, "objective", "causal") != "causal":
        raise ValueError(f"zero-shot classification needs a causal LM, got a model loaded for {lm.objective!r}")
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    config = config or ZeroShotConfig()
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (len(texts),):
        raise ValueError(f"labels has shape {y.shape}, expected ({len(texts)},)")
    if len(texts) == 0:
        raise ValueError("texts is empty: nothing to classify")
    if y.min() < 0 or y.max() >= len(prompt.verbalizers):
        raise ValueError(f"labels must be in [0, {len(prompt.verbalizers)}) (one verbalizer each), "
                         f"got {y.min()}..{y.max()}")
    t0 = time.perf_counter()
    ll = label_log_likelihoods(lm.model, lm.tokenizer, texts, prompt, config, progress=progress)
    scores = ll.scores(config.length_norm)
    predictions = scores.argmax(axis=1).astype(np.int64)
    return ZeroShotResult(metric=metric, score=score(metric, y, predictions), accuracy=accuracy(y, predictions),
                          macro_f1=macro_f1(y, predictions), predictions=predictions, labels=y, scores=scores,
                          length_norm=config.length_norm, seconds=time.perf_counter() - t0, truncated=ll.truncated,
                          tokens=ll.tokens.tolist())
