"""DEALRec's effort score: the per-sample gradient norm of a causal LM's loss, in padded batches.

Lin et al., *Data-efficient Fine-tuning for LLM-based Recommendation* (SIGIR 2024), eq. (6):
``δ(s) = ‖∇_φ L_LLM(s)‖₂`` with φ the trainable (LoRA) parameters. The authors' code takes φ = the
``lora_B`` matrix of ``v_proj`` in the last decoder layer, the loss over the whole prompt (labels = input
ids), batch size 1, one full ``backward()`` per sample, LoRA dropout left on.

How it is computed here. Every LoRA matrix (and any projection) is an ``nn.Linear``: ``y_t = W x_t (+ b)``
at each token t. The gradient of one sample's loss with respect to W is a sum of outer products over that
sample's tokens, ``∇_W L(s) = Σ_t δ_t x_tᵀ`` with ``δ_t = ∂L(s)/∂y_t`` (for ``lora_B``, x_t is
``lora_A(dropout(h_t))`` and δ_t already carries LoRA's scaling). Samples in a padded batch do not
interact, so with the batch loss ``Σ_s L(s)`` one backward pass gives every δ_t of every sample; a
forward hook keeps x, ``torch.autograd.grad`` returns δ, and the per-sample norm is
``‖Σ_t δ_t x_tᵀ‖²`` — either by forming the (out × in) matrix per sample (cheap for ``lora_B``: 576×8
for SmolLM2) or, when ``T·(out + in) < out·in``, through Gram matrices
``Σ_{t,u} (δ_t·δ_u)(x_t·x_u)`` without forming it. Only the selected parameters require gradients, so
backward stops at the earliest selected layer (the last one by default) instead of running through the
whole network. Parameters that are not ``nn.Linear`` weights or biases (norms, embeddings) fall back to
a vmapped backward (``is_grads_batched``), still one forward per batch.

Each sample's loss is the mean over its own label tokens, exactly as Hugging Face computes it for a batch
of one; padding (left or right) is masked out of attention, labels, positions and gradients, so it does not
change a sample's score. ``tests/rec/test_effort.py`` checks this against a one-sample-at-a-time
``loss.backward()`` loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

IGNORE_INDEX = -100
LOSS_ON = ("prompt", "response")
_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def default_effort_parameters(model: nn.Module) -> list[str]:
    """The authors' choice: ``lora_B`` of ``v_proj`` in the last decoder layer (names as in ``named_parameters``)."""
    candidates = []
    for name, _ in model.named_parameters():
        if "v_proj" in name and ".lora_B." in name and name.endswith("weight"):
            match = _LAYER_INDEX.findall(name)
            if match:
                candidates.append((int(match[-1]), name))
    if not candidates:
        raise ValueError(
            "the model has no LoRA `v_proj.lora_B` weight (load it with tunesift.rec.llm.load_causal_lm, "
            "LoRA on v_proj), or pass `param_filter` to choose the parameters"
        )
    last = max(layer for layer, _ in candidates)
    return [name for layer, name in candidates if layer == last]


def select_parameters(model: nn.Module, param_filter: str | Callable[[str], bool] | None = None) -> list[str]:
    """Names of the parameters whose gradient enters the effort score.

    Args:
        param_filter: ``None`` (the last layer's ``v_proj`` ``lora_B``), a regular expression searched in
            each parameter name, or a callable ``name -> bool``.
    """
    if param_filter is None:
        return default_effort_parameters(model)
    if isinstance(param_filter, str):
        pattern = re.compile(param_filter)
        names = [name for name, _ in model.named_parameters() if pattern.search(name)]
    elif callable(param_filter):
        names = [name for name, _ in model.named_parameters() if param_filter(name)]
    else:
        raise TypeError(f"`param_filter` must be a regex string or a callable, got {type(param_filter).__name__}")
    if not names:
        raise ValueError(f"`param_filter` {param_filter!r} matches no parameter of the model")
    return names


@dataclass
class TokenizedSample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is taken


def tokenize_samples(
    tokenizer,
    texts: Sequence[str],
    responses: Sequence[str] | None = None,
    loss_on: str = "prompt",
    add_eos: bool = True,
    max_length: int | None = None,
) -> list[TokenizedSample]:
    """Token ids and labels of each sample, as the authors' ``tokenize`` (and BIGRec's) builds them.

    ``loss_on="prompt"``: the sample is ``text (+ response)``, labels = input ids. ``"response"``: the
    text is the prompt and the response is given separately; the prompt's tokens get no loss (the prompt
    is tokenised alone to find its length, as BIGRec does with ``train_on_inputs=False``). An EOS token is
    appended when missing (``add_eos``); ``max_length`` cuts longer samples.
    """
    if loss_on not in LOSS_ON:
        raise ValueError(f"`loss_on` must be one of {LOSS_ON}, got {loss_on!r}")
    if responses is not None and len(responses) != len(texts):
        raise ValueError(f"`responses` has {len(responses)} entries for {len(texts)} texts; they must align")
    if loss_on == "response" and responses is None:
        raise ValueError('`loss_on="response"` needs `responses` (the texts are then the prompts)')
    eos = tokenizer.eos_token_id
    samples = []
    for index, text in enumerate(texts):
        full = text if responses is None else text + responses[index]
        ids = list(tokenizer(full, add_special_tokens=True)["input_ids"])
        if max_length is not None:
            ids = ids[:max_length]
        if add_eos and eos is not None and (not ids or ids[-1] != eos) and (max_length is None or len(ids) < max_length):
            ids.append(eos)
        labels = list(ids)
        if loss_on == "response":
            n_prompt = len(tokenizer(text, add_special_tokens=True)["input_ids"])
            labels[:n_prompt] = [IGNORE_INDEX] * min(n_prompt, len(labels))
        if sum(label != IGNORE_INDEX for label in labels[1:]) == 0:
            raise ValueError(f"sample {index} has no token to take a loss on (its text or response is empty)")
        samples.append(TokenizedSample(ids, labels))
    return samples


def pad_batch(samples: Sequence[TokenizedSample], pad_id: int, padding_side: str = "right",
              device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Pad samples into ``input_ids``, ``attention_mask``, ``labels``, ``position_ids``, each (B, T).

    Position ids count real tokens only, so a left-padded sample sees the positions it sees alone, and
    the first real token is never a label (alone, nothing precedes it; left-padded, a pad would).
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"`padding_side` must be 'left' or 'right', got {padding_side!r}")
    width = max(len(s.input_ids) for s in samples)
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, sample in enumerate(samples):
        n = len(sample.input_ids)
        span = slice(0, n) if padding_side == "right" else slice(width - n, width)
        input_ids[row, span] = torch.tensor(sample.input_ids)
        labels[row, span] = torch.tensor(sample.labels)
        labels[row, span.start] = IGNORE_INDEX  # never a target alone; left-padded, a pad would predict it
        mask[row, span] = 1
    position_ids = (mask.cumsum(1) - 1).clamp_min(0)
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "position_ids": position_ids}
    return {key: value.to(device) for key, value in batch.items()} if device is not None else batch


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None,
                   min_fill: float = 0.75) -> list[slice]:
    """Cut samples sorted longest first into batches of at most ``batch_size`` samples and (padded to their
    first, longest sample) at most ``max_tokens`` tokens; a sample longer than that is a batch alone.

    ``max_tokens`` defaults to ``batch_size`` x the median length. A batch also ends before a sample
    shorter than ``min_fill`` x its first one, so a long tail of lengths does not pay for padding (in a
    sorted run of thousands of samples neighbours differ by a token or two and this never triggers).
    Returns slices into the sorted order.
    """
    if any(a < b for a, b in zip(lengths, lengths[1:])):
        raise ValueError("`lengths` must be sorted longest first")
    if not 0.0 <= min_fill <= 1.0:
        raise ValueError(f"`min_fill` must be in [0, 1], got {min_fill}")
    if max_tokens is None:
        max_tokens = batch_size * int(np.median(lengths)) if len(lengths) else 0
    batches, start = [], 0
    while start < len(lengths):
        size = max(1, min(batch_size, max_tokens // max(lengths[start], 1), len(lengths) - start))
        while size > 1 and lengths[start + size - 1] < min_fill * lengths[start]:
            size -= 1
        batches.append(slice(start, start + size))
        start += size
    return batches


def per_sample_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sample's causal-LM loss: mean next-token cross-entropy over its label tokens.

    Args:
        logits: (B, T, V). labels: (B, T), ``IGNORE_INDEX`` where no loss is taken.
    Returns:
        (B,) float32 losses (what Hugging Face's ``loss`` is for each sample alone).
    """
    sums, counts = _loss_sums(logits, labels)
    return sums / counts.clamp_min(1)


def _loss_sums(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) summed next-token cross-entropies over label tokens, and (B,) how many label tokens.

    ``labels`` is (B, T), aligned with the logits' tokens, or (B, T + 1) when the token after the last
    one is known. The labels are shifted rather than the logits: slicing the (B, T, V) logits would cost
    a copy forward and a zero-filled (B, T, V) gradient backward.
    """
    if labels.shape[1] == logits.shape[1] + 1:
        targets = labels[:, 1:]
    else:
        targets = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), IGNORE_INDEX)], dim=1)
    token_loss = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(targets.shape)
    return token_loss.sum(1), (targets != IGNORE_INDEX).sum(1)


def linear_squared_norms(x: torch.Tensor, delta: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """(B,) squared Frobenius norms of ``Σ_t δ_t x_tᵀ`` per sample.

    Args:
        x: (B, T, in) layer inputs. delta: (B, T, out) loss gradients at the layer outputs.
        method: ``"outer"`` forms the (B, out, in) sums; ``"gram"`` uses ``Σ (δδᵀ ⊙ xxᵀ)``; ``"auto"`` the cheaper.
    """
    _, tokens, n_in = x.shape
    n_out = delta.shape[-1]
    if method == "auto":
        method = "gram" if tokens * (n_in + n_out) < n_in * n_out else "outer"
    if method == "outer":
        return torch.einsum("bto,bti->boi", delta, x).pow(2).sum((1, 2))
    if method == "gram":
        return (delta @ delta.transpose(1, 2) * (x @ x.transpose(1, 2))).sum((1, 2))
    raise ValueError(f"`method` must be 'auto', 'outer' or 'gram', got {method!r}")


class LinearCapture:
    """Forward hooks that keep each hooked ``nn.Linear``'s inputs and outputs (every call)."""

    def __init__(self, modules: dict[str, nn.Linear]):
        self.inputs: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
        self.outputs: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
        self.handles = [module.register_forward_hook(self._hook(name)) for name, module in modules.items()]

    def _hook(self, name):
        def hook(module, inputs, output):
            self.inputs[name].append(inputs[0].detach())
            self.outputs[name].append(output)

        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


def split_linear_parameters(model: nn.Module, names: Sequence[str]) -> tuple[dict[str, nn.Linear], dict[str, set[str]], list[str]]:
    """Selected parameters as ``nn.Linear`` modules (with which of weight/bias) and the rest (names)."""
    named = dict(model.named_parameters())
    missing = [name for name in names if name not in named]
    if missing:
        raise ValueError(f"parameters {missing[:3]} are not in the model")
    linear: dict[str, nn.Linear] = {}
    parts: dict[str, set[str]] = {}
    other: list[str] = []
    for name in names:
        module_name, _, attribute = name.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        if isinstance(module, nn.Linear) and attribute in ("weight", "bias"):
            linear[module_name] = module
            parts.setdefault(module_name, set()).add(attribute)
        else:
            other.append(name)
    return linear, parts, other


class OnlySelectedTrainable:
    """Context: only the selected parameters require gradients (so backward stops at the earliest)."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        self.named = dict(model.named_parameters())
        self.selected = set(names)

    def __enter__(self):
        self.saved = {name: p.requires_grad for name, p in self.named.items()}
        for name, parameter in self.named.items():
            parameter.requires_grad_(name in self.selected)
        return self

    def __exit__(self, *exc):
        for name, parameter in self.named.items():
            parameter.requires_grad_(self.saved[name])


def _token_rows(tensor: torch.Tensor, batch_size: int, mask: torch.Tensor | None) -> torch.Tensor:
    """A hooked layer's input or output as (B, T, features) float32, zero at padded tokens."""
    rows = tensor.reshape(batch_size, -1, tensor.shape[-1]).float()
    if mask is not None and rows.shape[1] == mask.shape[1]:  # token-wise layer: padding gets no gradient
        rows = torch.where(mask.unsqueeze(-1), rows, 0.0)
    return rows


def _squared_norms(parts: dict[str, set[str]], pairs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]],
                   norm_method: str) -> torch.Tensor:
    """(B,) summed squared norms over the hooked layers, from their (x, δ) rows of every call."""
    total = None
    for module_name, module_pairs in pairs.items():
        x = torch.cat([p[0] for p in module_pairs], dim=1)  # calls and segments are more tokens of one sum
        delta = torch.cat([p[1] for p in module_pairs], dim=1)
        squared = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
        if "weight" in parts[module_name]:
            squared = squared + linear_squared_norms(x, delta, norm_method)
        if "bias" in parts[module_name]:
            squared = squared + delta.sum(1).pow(2).sum(-1)
        total = squared if total is None else total + squared
    return total


def per_sample_grad_norms(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    parameter_names: Sequence[str],
    norm_method: str = "auto",
) -> torch.Tensor:
    """(B,) L2 norms of each sample's loss gradient with respect to the named parameters, one forward.

    Args:
        model: a causal LM returning ``.logits`` (B, T, V); its mode (train/eval: dropout) is left as is.
        batch: ``input_ids``, ``attention_mask``, ``labels``, ``position_ids``, each (B, T) (``pad_batch``).
        parameter_names: names from ``model.named_parameters()``.
        norm_method: how ``nn.Linear`` norms are formed (see ``linear_squared_norms``).
    """
    linear, parts, other = split_linear_parameters(model, parameter_names)
    named = dict(model.named_parameters())
    mask = batch["attention_mask"].bool()
    batch_size = mask.shape[0]
    capture = None
    with OnlySelectedTrainable(model, parameter_names):
        try:
            capture = LinearCapture(linear)
            outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            position_ids=batch["position_ids"], use_cache=False)
        finally:
            if capture is not None:
                capture.remove()
        losses = per_sample_losses(outputs.logits, batch["labels"])  # (B,)
        squared = torch.zeros(batch_size, dtype=torch.float32, device=losses.device)
        hooked = [(m, call) for m in linear for call in range(len(capture.outputs[m]))]
        if hooked:
            targets = [capture.outputs[m][c] for m, c in hooked]
            deltas = torch.autograd.grad(losses.sum(), targets, retain_graph=bool(other), allow_unused=True)
            pairs: dict[str, list] = {m: [] for m in linear}
            for (module_name, call), delta, target in zip(hooked, deltas, targets):
                delta = torch.zeros_like(target) if delta is None else delta
                pairs[module_name].append((_token_rows(capture.inputs[module_name][call], batch_size, mask),
                                           _token_rows(delta, batch_size, mask)))
            squared = squared + _squared_norms(parts, pairs, norm_method)
        if other:
            eye = torch.eye(batch_size, dtype=losses.dtype, device=losses.device)
            grads = torch.autograd.grad(losses, [named[name] for name in other], grad_outputs=eye,
                                        is_grads_batched=True, allow_unused=True)
            for grad in grads:
                if grad is not None:
                    squared = squared + grad.reshape(batch_size, -1).float().pow(2).sum(1)
    return squared.sqrt().detach()


# --- Shared prefix -------------------------------------------------------------------------------------
# BIGRec prompts all start with the same ~80 tokens (the Alpaca preamble, the instruction, "The user has
# purchased ... titles as:"), about 45% of a Games sample. A causal LM computes those positions identically
# for every sample, so they are run ONCE and their keys/values reused for every batch. What differs per
# sample is only how much each sample's own tokens pull on the prefix: that is the gradient of the
# sample's loss with respect to the cached keys/values, pushed back through the one prefix pass.
_DECODER_LAYER = re.compile(r"\.layers\.(\d+)\.")


def _common_prefix_length(samples: Sequence[TokenizedSample]) -> int:
    """Length of the longest prefix on which all samples agree (token ids and labels)."""
    first = samples[0]
    length = min(len(s.input_ids) for s in samples)
    for sample in samples[1:]:
        n = 0
        while n < length and sample.input_ids[n] == first.input_ids[n] and sample.labels[n] == first.labels[n]:
            n += 1
        length = n
        if length == 0:
            break
    return length


def shared_prefix_length(samples: Sequence[TokenizedSample], min_prefix: int = 16) -> int:
    """Tokens that ``effort_scores`` runs once for all ``samples``: their common prefix less its last token
    (whose label still belongs to the common loss); 0 for one sample or a prefix under ``min_prefix``."""
    if len(samples) < 2:
        return 0
    length = _common_prefix_length(samples) - 1
    return length if length >= max(min_prefix, 1) else 0


def shared_prefix_supported(model: nn.Module, parameter_names: Sequence[str]) -> str | None:
    """``None`` when the shared-prefix path applies to these parameters, else the reason it does not."""
    config = getattr(model, "config", None)
    n_layers = getattr(config, "num_hidden_layers", None)
    if n_layers is None:
        return "the model's config has no num_hidden_layers"
    linear, _, other = split_linear_parameters(model, parameter_names)
    if other:
        return f"{other[0]} is not an nn.Linear weight or bias"
    layers = []
    for name in parameter_names:
        match = _DECODER_LAYER.findall(name)
        if not match:
            return f"{name} is not inside a decoder layer (model.layers.<i>)"
        layers.append(int(match[-1]))
    return None


def _first_layer(parameter_names: Sequence[str]) -> int:
    return min(int(_DECODER_LAYER.findall(name)[-1]) for name in parameter_names)


class _PrefixPass:
    """The common prefix run once: its keys/values, loss and the graph back to the chosen parameters."""

    def __init__(self, model: nn.Module, sample: TokenizedSample, length: int, linear: dict[str, nn.Linear],
                 first_layer: int, device: torch.device):
        from transformers import DynamicCache  # noqa: F401  (fail early if the cache API is missing)

        self.length = length  # tokens 0..length-1 are cached; the label of token `length` is still common
        ids = torch.tensor([sample.input_ids[:length]], device=device)
        labels = torch.tensor([sample.labels[: length + 1]], device=device)
        labels[0, 0] = IGNORE_INDEX
        capture = LinearCapture(linear)
        try:
            outputs = model(input_ids=ids, position_ids=torch.arange(length, device=device)[None], use_cache=True)
        finally:
            capture.remove()
        # logits at 0..length-1 predict tokens 1..length, all common: their loss is the same for every sample
        sums, counts = _loss_sums(outputs.logits, labels)
        self.loss_sum = sums[0]  # scalar, in the graph of the chosen parameters
        self.n_labels = int(counts[0])
        cache = _returned_cache(outputs)
        self.keys = [layer.keys for layer in cache.layers]  # each (1, kv heads, length, head dim)
        self.values = [layer.values for layer in cache.layers]
        if len(self.keys) != model.config.num_hidden_layers:
            raise ValueError("the model's cache does not hold one key/value pair per decoder layer")
        self.first_layer = first_layer
        self.inputs = capture.inputs  # module -> [(1, length, in)]
        self.outputs = capture.outputs  # module -> [(1, length, out)] in the graph
        self.targets = [(m, call) for m in linear for call in range(len(self.outputs[m]))]
        self.config = model.config
        # ∂A/∂(hooked outputs on the prefix): the same for every sample up to the factor 1/N(s), so taken
        # once here; only the samples' pulls on the cached keys/values need a per-sample backward.
        self.loss_deltas = [None] * len(self.targets)
        if self.loss_sum.requires_grad and self.targets:
            self.loss_deltas = list(torch.autograd.grad(self.loss_sum, [self.outputs[m][c] for m, c in self.targets],
                                                        retain_graph=True, allow_unused=True))

    def cache_for(self, batch_size: int):
        """A cache holding the prefix for ``batch_size`` samples, and the leaves whose gradients are per sample."""
        from transformers import DynamicCache

        layers, leaves = [], []  # leaves: (stage-one tensor, its per-sample copy)
        for index, (key, value) in enumerate(zip(self.keys, self.values)):
            pair = []
            for tensor in (key, value):
                expanded = tensor.detach().expand(batch_size, *tensor.shape[1:])
                if tensor.requires_grad and index >= self.first_layer:
                    expanded = expanded.clone().requires_grad_(True)
                    leaves.append((tensor, expanded))
                pair.append(expanded)
            layers.append(tuple(pair))
        return DynamicCache(ddp_cache_data=layers, config=self.config), leaves


def _cache_argument(model: nn.Module) -> str:
    """The name a causal LM's ``forward`` takes its KV cache under: ``cache`` (transformers 5.25 on;
    ``past_key_values`` is deprecated there and goes in 5.40) or ``past_key_values`` (earlier versions)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper passes it on
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _returned_cache(outputs: Any) -> Any:
    """The KV cache a forward pass returned (``cache``, or ``past_key_values`` before transformers 5.25)."""
    cache = getattr(outputs, "cache", None)
    return cache if cache is not None else outputs.past_key_values


def per_sample_grad_norms_shared_prefix(
    model: nn.Module,
    prefix: _PrefixPass,
    batch: dict[str, torch.Tensor],
    parameter_names: Sequence[str],
    norm_method: str = "auto",
) -> torch.Tensor:
    """Like ``per_sample_grad_norms`` for samples that all start with ``prefix``; ``batch`` holds the rest.

    ``batch`` is the samples from token ``prefix.length`` on (``pad_batch``, right-padded, its position ids
    not yet offset). Each sample's gradient is ``(∇A + ∇S(s)) / N(s)``: A the (common) loss on the prefix
    tokens, S(s) the loss on the sample's own tokens, N(s) its label count. ∇S(s) has two parts: the hooked
    layers on the sample's own tokens, and its pull on the cached prefix keys/values, taken back through
    the prefix pass for all samples at once (a vmapped backward, ``is_grads_batched``).
    """
    linear, parts, other = split_linear_parameters(model, parameter_names)
    if other:
        raise ValueError(f"the shared-prefix path needs nn.Linear parameters; {other[0]} is not")
    mask = batch["attention_mask"].bool()
    batch_size, width = mask.shape
    device = mask.device
    cache, leaves = prefix.cache_for(batch_size)
    attention_mask = torch.cat([torch.ones(batch_size, prefix.length, dtype=batch["attention_mask"].dtype,
                                           device=device), batch["attention_mask"]], dim=1)
    capture = LinearCapture(linear)
    try:
        outputs = model(input_ids=batch["input_ids"], attention_mask=attention_mask,
                        position_ids=batch["position_ids"] + prefix.length, use_cache=True,
                        **{_cache_argument(model): cache})
    finally:
        capture.remove()
    sums, counts = _loss_sums(outputs.logits, batch["labels"])
    n_labels = (counts + prefix.n_labels).float()  # (B,)
    objective = (sums / n_labels).sum()

    hooked = [(m, call) for m in linear for call in range(len(capture.outputs[m]))]
    targets = [capture.outputs[m][c] for m, c in hooked] + [leaf for _, leaf in leaves]
    grads = torch.autograd.grad(objective, targets, allow_unused=True)
    pairs: dict[str, list] = {m: [] for m in linear}
    for (module_name, call), delta, target in zip(hooked, grads, targets):
        delta = torch.zeros_like(target) if delta is None else delta
        pairs[module_name].append((_token_rows(capture.inputs[module_name][call], batch_size, mask),
                                   _token_rows(delta, batch_size, mask)))

    # Prefix tokens: ∂A/∂y / N(s) (taken once) plus each sample's pull on the cached keys/values, pushed
    # back through the prefix pass for all samples at once.
    roots, root_grads = [], []
    for (stage_one, _), leaf_grad in zip(leaves, grads[len(hooked):]):
        if leaf_grad is not None:
            roots.append(stage_one)
            root_grads.append(leaf_grad.unsqueeze(1))  # (B, 1, heads, length, head dim)
    pulls = [None] * len(prefix.targets)
    if roots and prefix.targets:
        pulls = torch.autograd.grad(roots, [prefix.outputs[m][c] for m, c in prefix.targets],
                                    grad_outputs=root_grads, is_grads_batched=True, retain_graph=True,
                                    allow_unused=True)
    for (module_name, call), pull, loss_delta in zip(prefix.targets, pulls, prefix.loss_deltas):
        x = prefix.inputs[module_name][call]
        x = x.reshape(1, -1, x.shape[-1]).float().expand(batch_size, -1, -1)  # (B, length, in)
        n_out = prefix.outputs[module_name][call].shape[-1]
        delta = torch.zeros(batch_size, x.shape[1], n_out, device=device)
        if pull is not None:
            delta = delta + pull.reshape(batch_size, x.shape[1], n_out).float()
        if loss_delta is not None:
            delta = delta + loss_delta.reshape(1, x.shape[1], n_out).float() / n_labels[:, None, None]
        pairs[module_name].append((x, delta))
    return _squared_norms(parts, pairs, norm_method).sqrt().detach()


def effort_scores(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    responses: Sequence[str] | None = None,
    batch_size: int = 8,
    loss_on: str = "prompt",
    param_filter: str | Callable[[str], bool] | None = None,
    dropout: bool = False,
    seed: int = 0,
    add_eos: bool = True,
    max_length: int | None = None,
    padding_side: str | None = None,
    share_prefix: bool | None = None,
    min_prefix: int = 16,
    max_batch_tokens: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> np.ndarray:
    """DEALRec's effort score of each sample: ``‖∇_φ L_LLM(s)‖₂``, computed in padded batches.

    Args:
        model, tokenizer: e.g. from ``tunesift.rec.llm.load_causal_lm``.
        texts: (n,) full samples (``loss_on="prompt"``) or prompts (``"response"``).
        responses: (n,) responses appended to the texts; required for ``loss_on="response"``.
        batch_size: samples per forward/backward pass (samples are sorted by length to pad little).
        loss_on: ``"prompt"``: loss over every token (the paper's and code's choice); ``"response"``: only
            the response's tokens.
        param_filter: which parameters φ are: ``None`` = last decoder layer's ``v_proj`` ``lora_B`` (the
            authors'), a regex on parameter names, or a callable ``name -> bool``.
        dropout: run in train mode so LoRA dropout is on, as the authors' code does (then the scores are
            random; ``seed`` fixes them for one batch layout). Default off: deterministic scores.
        add_eos, max_length: see ``tokenize_samples``.
        padding_side: ``"left"``/``"right"``; default the tokenizer's. Scores do not depend on it.
        share_prefix: run the token prefix common to all samples once and reuse it (BIGRec prompts share
            ~80 tokens); same scores, less work. ``None``: whenever it applies (no dropout, parameters in
            the second half of the decoder layers, a common prefix of at least ``min_prefix`` tokens).
        max_batch_tokens: at most this many (padded) tokens per batch, so a few very long samples do not
            pad a whole batch to their length; default ``batch_size`` x the median sample length.
        device: where to run (the model is moved there); default the model's device.

    Returns:
        (n,) float64 gradient norms, in the order of ``texts``.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
    if len(texts) == 0:
        return np.zeros(0, dtype=np.float64)
    names = select_parameters(model, param_filter)
    samples = tokenize_samples(tokenizer, texts, responses, loss_on, add_eos, max_length)
    if device is not None:
        model.to(device)
    run_device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has no pad or eos token to pad with")
    side = padding_side or getattr(tokenizer, "padding_side", "right") or "right"

    reason = shared_prefix_supported(model, names) if share_prefix is not False else None
    if share_prefix and (reason is not None or dropout):
        raise ValueError(f"`share_prefix=True` does not apply: {reason or 'LoRA dropout draws per sample'}")
    if share_prefix is None and reason is None and _first_layer(names) < model.config.num_hidden_layers // 2:
        # the per-sample backward through the prefix pass would cost about what sharing saves
        reason = "parameters in the first half of the decoder layers"
    prefix_length = 0
    if share_prefix is not False and reason is None and not dropout:
        prefix_length = shared_prefix_length(samples, min_prefix if share_prefix is None else 1)
    use_prefix = prefix_length > 0
    order = np.argsort([-len(s.input_ids) for s in samples], kind="stable")  # longest first: little padding
    scores = np.empty(len(samples), dtype=np.float64)
    was_training = model.training
    model.train(dropout)
    bar = tqdm(total=len(samples), desc="effort", unit="sample", disable=not progress)
    try:
        with torch.random.fork_rng(devices=[run_device] if run_device.type == "cuda" else []):
            torch.manual_seed(seed)
            if use_prefix:
                linear, _, _ = split_linear_parameters(model, names)
                first_layer = _first_layer(names)
                with OnlySelectedTrainable(model, names):
                    prefix = _PrefixPass(model, samples[0], prefix_length, linear, first_layer, run_device)
                rest = [TokenizedSample(s.input_ids[prefix_length:], s.labels[prefix_length:]) for s in samples]
            run = rest if use_prefix else samples
            for index in length_batches([len(run[i].input_ids) for i in order], batch_size, max_batch_tokens):
                index = order[index]
                if use_prefix:
                    batch = pad_batch([rest[i] for i in index], pad_id, "right", run_device)
                    with OnlySelectedTrainable(model, names):
                        norms = per_sample_grad_norms_shared_prefix(model, prefix, batch, names)
                else:
                    batch = pad_batch([samples[i] for i in index], pad_id, side, run_device)
                    norms = per_sample_grad_norms(model, batch, names)
                scores[index] = norms.double().cpu().numpy()
                bar.update(len(index))
    finally:
        bar.close()
        model.train(was_training)
    return scores
