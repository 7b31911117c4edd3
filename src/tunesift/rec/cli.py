"""`tunesift dealrec`: pick the users whose samples to fine-tune an LLM recommender on (DEALRec or a
baseline) and write scores.parquet, selected.jsonl and manifest.json."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tunesift.cli import add_threads_argument, apply_threads

log = logging.getLogger("tunesift")

# PipelineSettings field -> (flag, type, help); defaults come from PipelineSettings
_PIPELINE_FLAGS = {
    "surrogate_epochs": ("--surrogate-epochs", int, "SASRec training epochs"),
    "surrogate_batch_size": ("--surrogate-batch-size", int, "SASRec batch size"),
    "surrogate_lr": ("--surrogate-lr", float, "SASRec learning rate (Adam)"),
    "eval_every": ("--eval-every", int, "epochs between validations of the surrogate"),
    "patience": ("--patience", int, "validations without improvement before stopping (0: never)"),
    "metric_k": ("--metric-k", int, "best surrogate checkpoint by validation Recall@K"),
    "early_epoch": ("--early-epoch", int, "surrogate snapshot used by grand/el2n/ccs"),
    "hidden_size": ("--hidden-size", int, "SASRec hidden size"),
    "max_len": ("--max-len", int, "SASRec history length"),
    "influence_solver": ("--influence-solver", str, "lissa or exact (small parameter sets)"),
    "lissa_depth": ("--lissa-depth", int, "LiSSA recursion steps"),
    "lissa_damping": ("--lissa-damping", float, "LiSSA damping"),
    "lissa_scale": ("--lissa-scale", float, "LiSSA scale (raise it if LiSSA diverges)"),
    "lissa_batch_size": ("--lissa-batch-size", int, "samples per LiSSA Hessian-vector product"),
    "lissa_repeats": ("--lissa-repeats", int, "independent LiSSA estimates averaged"),
    "influence_scoring": ("--influence-scoring", str, "vmap (per-sample gradients) or jvp (forward mode)"),
    "gradient_batch_size": ("--gradient-batch-size", int, "samples per batched per-sample-gradient call"),
    "lora_r": ("--lora-r", int, "LoRA rank"),
    "lora_alpha": ("--lora-alpha", int, "LoRA alpha"),
    "lora_dropout": ("--lora-dropout", float, "LoRA dropout"),
    "llm_dtype": ("--llm-dtype", str, "float32, bfloat16 or float16: the LLM's weights and arithmetic in the "
                                      "effort stage (bfloat16: ~2x faster on GPUs and CPUs with bf16 units, "
                                      "Spearman ~0.998 to float32)"),
    "effort_batch_size": ("--effort-batch-size", int, "samples per LLM forward/backward"),
    "effort_loss_on": ("--effort-loss-on", str, "prompt (whole text, the paper) or response"),
    "effort_parameters": ("--effort-parameters", str, "regex of LLM parameters for the effort gradient "
                                                     "(default: last layer's v_proj lora_B)"),
    "max_tokens": ("--max-tokens", int, "token limit of a BIGRec prompt (oldest titles dropped)"),
    "prompt_tokenizer": ("--prompt-tokenizer", str, "llm (the LLM's tokenizer) or whitespace"),
}


def register(sub: argparse._SubParsersAction) -> None:
    import tunesift.rec  # noqa: F401  (registers the methods)
    from tunesift.rec.pipeline import PipelineSettings
    from tunesift.registry import REC_METHODS

    p = sub.add_parser(
        "dealrec",
        help="select few-shot fine-tuning users for an LLM recommender (DEALRec or a baseline)",
        description="Score every user with a training item and write scores.parquet, selected.jsonl "
        "(BIGRec prompt/response of each selected user) and manifest.json to --out. Stages are cached "
        "in OUT/cache, so a rerun resumes.",
    )
    p.add_argument("--data", required=True, help="DEALRec folder, RecBole .inter folder/file, or interaction table")
    p.add_argument("--budget", type=int, required=True, help="how many users to select")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", default="dealrec", choices=REC_METHODS.names(), help="selection method (default: dealrec)")
    p.add_argument("--format", default=None, choices=("dealrec", "recbole", "table"), help="data layout (default: detected)")
    p.add_argument("--name", default=None, help="dataset name for the prompt wording and λ (default: from the path)")
    p.add_argument("--llm", default=None, help="local Hugging Face causal LM folder (default: SmolLM2-135M-Instruct)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    p.add_argument("--max-users", type=int, default=None, help="score a random subset of this many users")
    p.add_argument("--user-field", default="user", help="table: user column (default: user)")
    p.add_argument("--item-field", default="item", help="table: item column (default: item)")
    p.add_argument("--time-field", default="timestamp", help="table: time column (default: timestamp)")
    p.add_argument("--title-field", default="title", help="table: title column (default: title)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    add_threads_argument(p)
    p.add_argument("--no-plot", action="store_true", help="do not draw OUT/selection.png (what was picked)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    seen: set[str] = set()
    for name in REC_METHODS:
        cls = REC_METHODS.get(name)
        if cls.cli_options:
            cls.add_arguments(p.add_argument_group(f"{name} options"), seen)
    group = p.add_argument_group("stage settings")
    defaults = PipelineSettings()
    for fname, (flag, typ, help_) in _PIPELINE_FLAGS.items():
        group.add_argument(flag, dest=fname, type=typ, default=None,
                           help=f"{help_} (default: {getattr(defaults, fname)})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesift.rec.data import load_rec_data
    from tunesift.rec.pipeline import PipelineSettings, select_samples
    from tunesift.registry import REC_METHODS

    apply_threads(args)
    options = {}
    if args.format == "table" or (args.format is None and not _looks_like_folder(args.data)):
        options = {"user_field": args.user_field, "item_field": args.item_field,
                   "time_field": args.time_field, "title_field": args.title_field}
    data = load_rec_data(args.data, format=args.format, name=args.name, **options)
    method = REC_METHODS.get(args.method).from_args(args)
    pipe = {f: getattr(args, f) for f in _PIPELINE_FLAGS if getattr(args, f, None) is not None}
    if args.llm is not None:
        pipe["llm"] = args.llm
    result = select_samples(data, args.budget, method=method, seed=args.seed, out_dir=args.out,
                            settings=PipelineSettings(**pipe), device=args.device, progress=not args.no_progress,
                            max_users=args.max_users)
    if not args.no_plot:
        try:
            from tunesift.rec.plot import plot_selection

            result.paths["plot"] = plot_selection(result.paths["scores"], Path(args.out) / "selection.png",
                                                  title=f"{args.method} on {data.name}: {args.budget:,} of "
                                                  f"{len(result.pool):,} candidate users")
        except ImportError as e:
            log.info("no selection.png: %s", e)
    t = result.manifest["timings_s"]
    log.info("selected %d of %d users with %s in %.1f s (%s); wrote %s", args.budget, len(result.pool), args.method,
             t.get("total", 0.0), ", ".join(f"{k} {v:.1f}s" for k, v in t.items() if k != "total"),
             ", ".join(str(p) for p in result.paths.values()))
    return 0


def _looks_like_folder(path: str) -> bool:
    p = Path(path)
    return p.is_dir() or p.suffix == ".inter"
