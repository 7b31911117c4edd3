"""The backbone interface: what an LLM-based recommender must say for DEALRec and ``bench rec`` to use it.

DEALRec (Lin et al., SIGIR 2024) is instantiated on two recommenders, BIGRec and TIGER. Everything that
differs between them sits behind :class:`Backbone`:

- what a training / validation / test sample is for a user (:meth:`Backbone.samples`);
- DEALRec's effort: the per-sample gradient norm of the backbone's own loss on each candidate's
  training sample(s), batched, with respect to a configurable parameter subset (:meth:`Backbone.effort`);
- how it is trained on a set of users, few-shot or full, and saved / loaded (:meth:`Backbone.train`);
- how it ranks all items for test users: top-K item lists (:meth:`Backbone.recommend`).

A backbone is one package under ``tunesift.rec`` with one registration line,
``@REC_BACKBONES.register("name")`` on its class; its settings are one dataclass (``Settings``) whose
fields are its command-line flags (``flag_prefix`` before each), and ``scales`` sizes ``bench rec``.
Nothing outside a backbone's package names it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from tunesift.registry import REC_BACKBONES

# chunked(n, chunk, factory) -> (n,) values: ``factory()`` builds the worker ``slice -> values`` where the
# chunks run (here, or once per Ray actor: then it is pickled, with what it refers to); each chunk is
# saved as it comes back (resumable)
Chunked = Callable[[int, int, Callable[[], Callable[[slice], np.ndarray]]], np.ndarray]


@dataclass(frozen=True)
class RecScale:
    """Everything that sizes one ``bench rec`` for one backbone.

    Attributes:
        name: the scale's name (``tiny``, ``cpu``, ``gpu``...).
        n_users: pool size (users with a training item, seeded subsample); None = all.
        n_test_users: test users (users with test items, seeded subsample); None = all.
        budget: default number of selected users.
        ks: the cut-offs of Recall@K and NDCG@K.
        stages: overrides of the selection stages' settings (flat field names, e.g. ``lissa_depth``).
        backbone: the backbone's settings (its ``Settings`` dataclass) for this scale.
        note: one line on what the scale is for and what it costs (shown in ``--help`` and results.md).
    """

    name: str
    n_users: int | None
    n_test_users: int | None
    budget: int
    ks: tuple[int, ...]
    backbone: Any
    stages: dict = field(default_factory=dict)
    note: str = ""

    def describe(self) -> dict:
        from tunesift.settings import settings_record

        return {"name": self.name, "n_users": self.n_users, "n_test_users": self.n_test_users,
                "budget": self.budget, "ks": list(self.ks), "stages": dict(self.stages),
                "backbone": settings_record(self.backbone)}


@dataclass
class Recommendations:
    """What :meth:`Backbone.recommend` returns for ``n`` users.

    Attributes:
        top_items: (n, k) 1-based item ids, best first; 0 pads lists shorter than k.
        rows: optional per-user details for ``generations.jsonl`` (e.g. BIGRec's generated title).
        info: entries for the run record (e.g. empty generations).
    """

    top_items: np.ndarray
    rows: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)


class Backbone:
    """Base class of backbones (see the module docstring). Subclasses set ``name``, ``Settings``,
    ``flag_prefix`` and ``scales`` and implement the abstract methods.

    Args:
        settings: an instance of ``Settings`` (None: its defaults).
        device: a concrete device ("cpu", "cuda", ...).
        cache_dir: where expensive per-dataset results (item embeddings, semantic IDs...) are cached.
    """

    name: ClassVar[str] = ""
    Settings: ClassVar[type] = object
    flag_prefix: ClassVar[str] = ""
    scales: ClassVar[dict[str, RecScale]] = {}
    uses_prompts: ClassVar[bool] = False  # whether its samples are worded per data set (the run's log says how)

    def __init__(self, settings: Any = None, device: str = "cpu", progress: bool = True,
                 cache_dir: str | os.PathLike | None = None):
        self.settings = settings if settings is not None else self.Settings()
        if not isinstance(self.settings, self.Settings):
            raise TypeError(f"backbone {self.name} takes {self.Settings.__name__} settings, "
                            f"got {type(self.settings).__name__}")
        self.device = device
        self.progress = progress
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    # ------------------------------------------------------------------------------------ lifecycle

    def prepare(self, data: Any, workdir: str | os.PathLike | None = None) -> None:
        """Build what every later call needs from the data (default: nothing). Called once per data set."""

    def describe(self) -> dict:
        """Identity and settings for manifests and bench files."""
        from tunesift.settings import settings_record

        return {"name": self.name, "settings": settings_record(self.settings)}

    def protocol_notes(self) -> str:
        """One paragraph of Markdown on how the bench trains and ranks with this backbone (results.md)."""
        return ""

    def paper_table(self, dataset: str) -> str:
        """Markdown of the paper's numbers for ``dataset`` on this backbone, or "" when there are none."""
        return ""

    # -------------------------------------------------------------------------------------- samples

    def samples(self, data: Any, users: Sequence[int], split: str) -> list:
        """The ``split`` ("train", "valid", "test") sample of each of ``users`` (positions in ``data``)."""
        raise NotImplementedError

    def sample_rows(self, data: Any, users: Sequence[int]) -> list[dict]:
        """One row per user for ``selected.jsonl``: what the backbone will be trained on."""
        raise NotImplementedError

    # --------------------------------------------------------------------------------------- effort

    def effort_key(self, data: Any, users: Sequence[int], seed: int) -> dict | None:
        """Everything the effort of ``users`` depends on besides the data and seed (None: do not cache)."""
        raise NotImplementedError

    def effort(self, data: Any, users: Sequence[int], seed: int, chunked: Chunked) -> tuple[np.ndarray, dict]:
        """(N,) DEALRec's effort of each user, and an info dict; computes through ``chunked``."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------- training

    def train(self, data: Any, users: Sequence[int], seed: int, full: bool, folder: str | os.PathLike) -> tuple[Any, dict]:
        """Train a fresh (seeded) model on ``users``' training samples, validating on theirs; save it in
        ``folder`` (resumable where the backbone can). Returns (model, record entries)."""
        raise NotImplementedError

    def load(self, folder: str | os.PathLike, seed: int) -> Any:
        """The model :meth:`train` saved in ``folder``, or None when it has not finished."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------------- ranking

    def recommend(self, model: Any, data: Any, users: Sequence[int], k: int) -> Recommendations:
        """Top-``k`` items of each user's test sample (history = train + valid items) over all items."""
        raise NotImplementedError


def get_backbone(name: str) -> type:
    """The registered backbone class."""
    return REC_BACKBONES.get(name)
