"""`tunesift dealrec`: pick the users whose samples to fine-tune a recommender on (DEALRec or a
baseline, on the BIGRec or TIGER backbone) and write scores.parquet, selected.jsonl and manifest.json.

Every flag comes from a settings dataclass (:mod:`tunesift.settings`): the methods', the stages'
(:mod:`tunesift.rec.stages`) and each backbone's; a flag reaches only its owner.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from tunesift.cli import add_device_argument, add_executor_arguments, add_threads_argument, apply_threads, out_arg

log = logging.getLogger("tunesift")


def add_split_argument(p: argparse.ArgumentParser) -> None:
    """``--split``: how an interaction table's (or RecBole files') interactions become train/valid/test."""
    from tunesift.rec.data import SPLIT_METHODS

    p.add_argument("--split", default=None, choices=SPLIT_METHODS,
                   help="table or RecBole files: leave-one-out (each user's last item is the test item, the one "
                   "before it the validation item; the default) or time (global cut-offs at 80/10/10%% of all "
                   "interactions by timestamp); a DEALRec folder keeps the split of its files")


def add_rec_flags(p: argparse.ArgumentParser, bench: bool, methods: bool = True):
    """The method (when ``methods``), stage and backbone flags of a rec command; returns their FlagTable.
    ``bench``: include the backbones' training and evaluation settings."""
    from tunesift.rec.backbone import REC_BACKBONES
    from tunesift.rec.pipeline import STAGE_SETTINGS
    from tunesift.registry import REC_METHODS, Method
    from tunesift.settings import FlagTable, settings_flags

    table = FlagTable()
    if methods:
        Method.add_flags(p, table, REC_METHODS)
    for name, cls in STAGE_SETTINGS.items():
        table.add(p.add_argument_group(f"{name} stage"), settings_flags(cls, name, bench=bench))
    for name in REC_BACKBONES:
        bb = REC_BACKBONES.get(name)
        table.add(p.add_argument_group(f"{name} backbone (--backbone {name})"),
                  settings_flags(bb.Settings, name, prefix=bb.flag_prefix, bench=bench))
    return table


def rec_settings_from_args(args: argparse.Namespace, table: Any, methods: list[str], backbone: str):
    """(RecSettings, {method: instance}) from the given flags; refuses flags of unused owners."""
    from tunesift.rec.backbone import get_backbone
    from tunesift.rec.pipeline import STAGE_SETTINGS, RecSettings
    from tunesift.registry import REC_METHODS
    from tunesift.settings import replace_settings

    table.check_unused(args, [*methods, *STAGE_SETTINGS, backbone])
    bb = get_backbone(backbone)
    parts = {name: replace_settings(cls(), table.values(args, name)) for name, cls in STAGE_SETTINGS.items()}
    settings = RecSettings(**parts, backbone=replace_settings(bb.Settings(), table.values(args, backbone)))
    instances = {m: REC_METHODS.get(m).from_args(args, table) for m in methods if m in REC_METHODS}
    return settings, instances


def register(sub: argparse._SubParsersAction) -> None:
    from tunesift.rec.backbone import REC_BACKBONES
    from tunesift.registry import REC_METHODS

    p = sub.add_parser(
        "dealrec",
        help="select few-shot fine-tuning users for an LLM recommender (DEALRec or a baseline)",
        description="Score every user with a training item and write scores.parquet, selected.jsonl "
        "(what the backbone trains on for each selected user) and manifest.json to --out. Stages are cached "
        "in OUT/cache, so a rerun resumes.",
    )
    p.add_argument("--data", required=True, help="DEALRec folder, RecBole .inter folder/file, or interaction table")
    p.add_argument("--budget", type=int, required=True, help="how many users to select")
    p.add_argument("--out", required=True, type=out_arg, help="output folder")
    p.add_argument("--method", default="dealrec", choices=REC_METHODS.names(), help="selection method (default: dealrec)")
    p.add_argument("--backbone", default="bigrec", choices=REC_BACKBONES.names(),
                   help="the recommender whose effort DEALRec measures (default: bigrec)")
    p.add_argument("--format", default=None, choices=("dealrec", "recbole", "table"), help="data layout (default: detected)")
    add_split_argument(p)
    p.add_argument("--name", default=None, help="the data set, which sets λ and the prompt wording: games, book, "
                   "microlens-50k, movies, or anything else for the generic 'items' (default: a DEALRec folder's "
                   "name or a RecBole file's; 'items' for a table)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    p.add_argument("--max-users", type=int, default=None, help="score a random subset of this many users")
    p.add_argument("--user-field", default="user", help="table: user column (default: user)")
    p.add_argument("--item-field", default="item", help="table: item column (default: item)")
    p.add_argument("--time-field", default="timestamp", help="table: time column (default: timestamp)")
    p.add_argument("--title-field", default="title", help="table: title column (default: title)")
    add_device_argument(p)
    add_threads_argument(p)
    add_executor_arguments(p)
    p.add_argument("--no-plot", action="store_true", help="do not draw OUT/selection.png (what was picked)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    table = add_rec_flags(p, bench=False)
    p.set_defaults(func=run, _flags=table)


def load_data_from_args(args: argparse.Namespace):
    from tunesift.rec.data import load_rec_data

    options = {}
    if args.format == "table" or (args.format is None and not _looks_like_folder(args.data)):
        options = {"user_field": args.user_field, "item_field": args.item_field,
                   "time_field": args.time_field, "title_field": args.title_field}
    return load_rec_data(args.data, format=args.format, name=getattr(args, "name", None),
                         split=getattr(args, "split", None), **options)


def run(args: argparse.Namespace) -> int:
    from tunesift.io.lock import LOCK_NAME, hold_lock
    from tunesift.rec.pipeline import select_samples

    from tunesift.executor import make_executor

    apply_threads(args)
    settings, methods = rec_settings_from_args(args, args._flags, [args.method], args.backbone)
    executor = make_executor(args.ray, args.ray_workers)
    data = load_data_from_args(args)
    log.info("%s", dataset_defaults(data, methods[args.method], args.backbone, args.name))
    with hold_lock(Path(args.out) / LOCK_NAME, f"--out {args.out}"), executor:
        result = select_samples(data, args.budget, method=methods[args.method], seed=args.seed, out_dir=args.out,
                                settings=settings, backbone=args.backbone, device=args.device,
                                progress=not args.no_progress, max_users=args.max_users, executor=executor)
    if not args.no_plot:
        try:
            from tunesift.rec.plot import plot_selection

            result.paths["plot"] = plot_selection(result.paths["scores"], Path(args.out) / "selection.png",
                                                  title=f"{args.method} on {data.name} ({args.backbone}): "
                                                  f"{args.budget:,} of {len(result.pool):,} candidate users")
        except ImportError as e:
            log.info("no selection.png: %s", e)
    t = result.manifest["timings_s"]
    log.info("selected %d of %d users with %s in %.1f s (%s); wrote %s", args.budget, len(result.pool), args.method,
             t.get("total", 0.0), ", ".join(f"{k} {v:.1f}s" for k, v in t.items() if k != "total"),
             ", ".join(str(p) for p in result.paths.values()))
    return 0


def dataset_defaults(data: Any, method: Any, backbone: str, given_name: str | None) -> str:
    """One line: which data set the run takes the data for, from where, and the defaults that follow (λ, the
    prompt wording), so that no dataset-dependent default is silent."""
    from tunesift.rec.backbone import get_backbone
    from tunesift.rec.methods import resolve_lambda
    from tunesift.rec.prompts import dataset_key

    source = ("--name" if given_name else {"dealrec": "the DEALRec folder's name", "recbole": "the RecBole file's "
              "name"}.get(data.format, "a table names no data set"))
    key = dataset_key(data.name)
    parts = [f"data set {key!r} ({source})"]
    if hasattr(method, "lam"):
        lam = resolve_lambda(method.lam, data.name)
        parts.append(f"λ {lam:g} ({'--lambda' if method.lam is not None else 'the default for ' + repr(key)})")
    if get_backbone(backbone).uses_prompts:
        parts.append(f"prompt wording {key!r}")
    if data.format != "dealrec":
        parts.append(f"split {data.split}")
    return "dealrec: " + ", ".join(parts) + "; --name and --lambda set them"


def _looks_like_folder(path: str) -> bool:
    p = Path(path)
    return p.is_dir() or p.suffix == ".inter"
