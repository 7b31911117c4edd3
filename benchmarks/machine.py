"""What machine a benchmark or a study ran on: CPU model, cores, the instruction sets that change speed,
memory, GPU, and package versions. Every record under ``benchmarks/results`` carries one."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

# instruction sets that move the speed of matrix products, bfloat16 and int8 kernels
FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "neon",
         "asimd", "sve")


def machine_info() -> dict:
    """A JSON-able description of this machine and the environment."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        pass
    memory = None
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    from tunesift.output import versions

    info = {"cpu": model, "cores": os.cpu_count(), "cpu_flags": [f for f in FLAGS if f in flags],
            "memory_gib": memory, "versions": versions(),
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def write_record(path: str | Path, script: str, argv: list[str], results: list | dict) -> Path:
    """Write a benchmark's record, atomically: the machine, the command line and its results."""
    import shlex
    import sys

    from tunesift.io.atomic import write_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"command": shlex.join(["python", script, *argv]), "machine": machine_info(),
                      "results": results})
    print(f"wrote {path}", file=sys.stderr)
    return path
