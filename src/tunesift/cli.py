"""The `tunesift` command: one subcommand per job, each defined next to the code it runs.

A subcommand module exposes ``register(subparsers)`` and sets ``func`` on its parser.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# (module, required import) per subcommand group; a module missing an optional dependency still
# lets the other commands run.
COMMAND_MODULES = ("tunesift.pool.cli", "tunesift.rec.cli", "tunesift.bench.cli", "tunesift.demo")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's CPU threads for the command (read by :func:`apply_threads`)."""
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, usually one per core)")


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's CPU threads from ``args.threads`` (if given), after checking it."""
    threads = getattr(args, "threads", None)
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def device_arg(text: str) -> str:
    """``--device``: auto, cpu, cuda, cuda:N (a GPU that is there) or mps, checked when the flag is read."""
    import re

    if text in ("auto", "cpu"):
        return text
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if m is None and text != "mps":
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; expected auto, cpu, cuda, cuda:N or mps")
    try:
        import torch
    except ImportError:
        raise argparse.ArgumentTypeError(f"{text!r} needs torch, which is not installed") from None
    if text == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError("'mps': no Apple GPU here")
        return text
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no CUDA device here (torch {torch.__version__}, "
                                         f"torch.cuda.is_available() is False); use cpu or auto")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                                         f"numbered from 0")
    return text


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", type=device_arg,
                        help="cpu, cuda, cuda:1, mps or auto (default: CUDA when there is one)")


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray ADDRESS`` and ``--ray-workers N``: run the per-example stages on Ray actors."""
    parser.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                        help="run per-example stages (embedding, DSIR's n-gram counts, DEALRec's effort) on Ray "
                        "actors, each loading the model once, and split GOT-D's Sinkhorn over them: 'local' starts "
                        "Ray on this machine, 'auto' or HOST:PORT joins a running cluster (default: in this process; "
                        "needs `pip install 'tunesift[ray]'`)")
    parser.add_argument("--ray-workers", type=int, default=None, metavar="N",
                        help="Ray actors per stage (default: the cluster's CPUs; a GPU stage: at most its GPUs)")


def out_arg(text: str) -> str:
    """``--out``: a folder that is, or can be made, writable; nothing is created when the flag is read."""
    import os
    from pathlib import Path

    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file, expected a folder (or a path where one can be made)")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {probe} is a file, so no folder can be made there")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: {probe} is not writable by this user")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunesift", description="Pick the examples worth fine-tuning an LLM on.")
    from tunesift import __version__

    parser.add_argument("--version", action="version", version=f"tunesift {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(command words, parser) of every subcommand, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from _commands(sub, prefix + (name,))


def _unrecognised(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> None:
    """Exit 2 with the usage of the command that was run (not the top level's), naming the commands that
    do take an unknown flag."""
    words = tuple(w for w in (getattr(args, "command", None), getattr(args, "bench_command", None)) if w)
    commands = dict(_commands(parser))
    here = commands.get(words, parser)
    hints = []
    for flag in (e.split("=", 1)[0] for e in extra if e.startswith("--")):
        owners = [" ".join(w) for w, p in commands.items() if w != words and flag in p._option_string_actions]
        if owners:
            hints.append(f"{flag} is a flag of `tunesift {'`, `tunesift '.join(owners)}`")
    here.error(f"unrecognized arguments: {' '.join(extra)}" + (f" ({'; '.join(hints)})" if hints else ""))


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so ``finally`` blocks and atomic writes clean up."""


def _raise_terminated(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit codes: 0 done, 1 a chunk failed in a worker process (``--ray``; one
    message naming the stage, the chunk and the cause), 2 bad input (one message naming it), 130
    interrupted (SIGINT / Ctrl-C), 143 terminated (SIGTERM); outputs are atomic and finished stages
    cached, so the same command again resumes."""
    import signal
    import threading

    from tunesift.executor.base import ChunkError
    from tunesift.io.lock import FolderBusyError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _unrecognised(parser, args, extra)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    name = " ".join(c for c in (args.command, getattr(args, "bench_command", None)) if c)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        if getattr(args, "no_progress", False):
            from tunesift.output import quiet_progress

            with quiet_progress():
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, ImportError, FolderBusyError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"tunesift {name}: error: {e}", file=sys.stderr)
        return 2
    except ChunkError as e:
        if getattr(args, "debug", False):
            raise
        print(f"tunesift {name}: error: {e}; chunks finished before it stay in the cache, so the same "
              "command resumes after them", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as e:
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else "terminated"
        print(f"tunesift {name}: {why}; outputs already written are intact and finished stages are cached: "
              "the same command resumes", file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
