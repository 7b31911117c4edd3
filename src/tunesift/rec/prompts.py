"""BIGRec prompts (Bao et al. 2023, as used by DEALRec): a user's past item titles in, the next title out.

The Alpaca template with a per-dataset instruction; the input lists the history's titles, oldest first,
"T1; T2; ...; Tk;". When the text is longer than ``max_tokens`` (DEALRec: 512), the OLDEST titles are
dropped one at a time until it fits (or one title is left).

Samples per user (DEALRec's ``gen_fewshot.py``):
- train: history = ``train[:-1]``, response = title of ``train[-1]``;
- valid: history = all training items, response = title of the first validation item;
- test: history = train + valid items, targets = ALL test items (response: the first one).

The length is measured on what the LLM reads: prompt + response for train/valid (the fine-tuning text),
the prompt alone for test (the inference input). With no tokenizer, whitespace-separated words count
as tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tunesift.rec.data import RecData

TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)


@dataclass(frozen=True)
class PromptStyle:
    """The dataset-specific wording: the instruction and the words before the list of titles."""

    instruction: str
    history_intro: str

    def input_text(self, titles: Sequence[str]) -> str:
        return f"{self.history_intro}{'; '.join(titles)};"

    def prompt(self, titles: Sequence[str]) -> str:
        return TEMPLATE.format(instruction=self.instruction, input=self.input_text(titles))


# DEALRec's wording for its three datasets; "movies" for MovieLens; "items" for anything else.
PROMPT_STYLES: dict[str, PromptStyle] = {
    "games": PromptStyle(
        "Given the game products that the user purchased before, please recommend a new game product "
        "that the user likes to the user.",
        "The user has purchased the following game products before, with titles as: "),
    "book": PromptStyle(
        "Given the books that the user purchased before, please recommend a new book that the user likes "
        "to the user.",
        "The user has purchased the following books before, with titles as: "),
    "microlens-50k": PromptStyle(
        "Given the micro-videos that the user watched before, please recommend a new micro-video that the "
        "user likes to the user.",
        "The user has watched the following micro-videos before, with titles as: "),
    "movies": PromptStyle(
        "Given the movies that the user watched before, please recommend a new movie that the user likes "
        "to the user.",
        "The user has watched the following movies before, with titles as: "),
    "items": PromptStyle(
        "Given the items that the user interacted with before, please recommend a new item that the user "
        "likes to the user.",
        "The user has interacted with the following items before, with titles as: "),
}
_ALIASES = {"ml-100k": "movies", "ml-1m": "movies", "movielens": "movies", "books": "book",
            "microlens": "microlens-50k", "video_games": "games"}


def dataset_key(name: str) -> str:
    """The known data set a name stands for ("games", "book", "microlens-50k", "movies"), "items" otherwise."""
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    return key if key in PROMPT_STYLES else "items"


def style_for(name: str) -> PromptStyle:
    """The prompt style of a dataset name ("games", "book", ...); "items" when unknown."""
    return PROMPT_STYLES[dataset_key(name)]


@dataclass
class Sample:
    """One BIGRec sample of one user.

    Attributes:
        user: the user's original id; ``user_index``: their position in ``RecData.users``.
        split: "train", "valid" or "test".
        prompt: the Alpaca text up to and including "### Response:\\n".
        response: the target title (for test: the first ground-truth title).
        targets: every ground-truth title (one for train/valid; all test items for test).
        history: the item ids whose titles are in the prompt, oldest first.
        target_items: the item ids of ``targets``.
        n_dropped: how many of the oldest history items were dropped to fit ``max_tokens``.
        n_tokens: the measured length (prompt + response for train/valid, prompt for test).
    """

    user: Any
    user_index: int
    split: str
    prompt: str
    response: str
    targets: list[str]
    history: list[int]
    target_items: list[int]
    n_dropped: int = 0
    n_tokens: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The full fine-tuning text: prompt followed by response."""
        return self.prompt + self.response

    def to_row(self) -> dict:
        return {"user": self.user, "split": self.split, "prompt": self.prompt, "response": self.response,
                "targets": self.targets, "history": self.history, "target_items": self.target_items,
                "n_dropped": self.n_dropped}


def token_counter(tokenizer: Any = None) -> Callable[[Sequence[str]], list[int]]:
    """A batched length function: a Hugging Face tokenizer's token count (with its special tokens,
    as DEALRec measures), a callable ``text -> int``, or whitespace words when ``tokenizer`` is None."""
    if tokenizer is None:
        return lambda texts: [len(t.split()) for t in texts]
    if hasattr(tokenizer, "__call__") and hasattr(tokenizer, "convert_tokens_to_ids"):
        def count(texts: Sequence[str]) -> list[int]:
            return [len(ids) for ids in tokenizer(list(texts), padding=False, truncation=False)["input_ids"]]

        return count
    if callable(tokenizer):
        return lambda texts: [int(tokenizer(t)) for t in texts]
    raise TypeError(f"tokenizer must be a Hugging Face tokenizer, a callable text -> int, or None; "
                    f"got {type(tokenizer).__name__}")


def _fit(style: PromptStyle, titles: list[str], suffix: str, max_tokens: int,
         count: Callable[[Sequence[str]], list[int]], estimate: list[int]) -> tuple[int, int]:
    """The fewest oldest titles to drop so that ``prompt + suffix`` fits, and its length.

    ``estimate[k]`` approximates the length after dropping k titles; the answer is found from that
    guess by exact counts, stepping the way the linear scan of DEALRec would (identical whenever the
    length never grows when a title is dropped).
    """
    n = len(titles)
    cache: dict[int, int] = {}

    def length(k: int) -> int:
        if k not in cache:
            cache[k] = count([style.prompt(titles[k:]) + suffix])[0]
        return cache[k]

    last = max(n - 1, 0)  # keep at least the newest title
    guess = next((k for k in range(last + 1) if estimate[k] <= max_tokens), last)
    k = guess
    if length(k) <= max_tokens:
        while k > 0 and length(k - 1) <= max_tokens:
            k -= 1
    else:
        while k < last and length(k) > max_tokens:
            k += 1
    return k, length(k)


def build_samples(
    data: RecData,
    split: str = "train",
    users: Sequence[int] | None = None,
    tokenizer: Any = None,
    max_tokens: int = 512,
    style: PromptStyle | str | None = None,
) -> list[Sample]:
    """BIGRec samples for ``split`` ("train", "valid" or "test").

    Args:
        users: user positions in ``data`` (default: all). Users without a sample in this split (no
            training item; no validation item; no test item) are skipped.
        tokenizer: measures ``max_tokens`` (see :func:`token_counter`).
        style: a :class:`PromptStyle` or a dataset name (default: ``data.name``).
    """
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    st = style if isinstance(style, PromptStyle) else style_for(style or data.name)
    count = token_counter(tokenizer)
    idx = range(data.n_users) if users is None else users
    titles = data.titles
    drafts = []  # (user position, history, target items)
    for u in idx:
        u = int(u)
        tr, va, te = data.train[u], data.valid[u], data.test[u]
        if split == "train":
            if not tr:
                continue
            drafts.append((u, tr[:-1], [tr[-1]]))
        elif split == "valid":
            if not va:
                continue
            drafts.append((u, list(tr), [va[0]]))
        else:
            if not te:
                continue
            drafts.append((u, tr + va, list(te)))
    # One batched pass over the full texts; most fit and are done.
    suffixes = [titles[t[0]] if split != "test" else "" for _, _, t in drafts]
    full = [st.prompt([titles[i] for i in h]) + s for (_, h, _), s in zip(drafts, suffixes)]
    lengths = count(full) if full else []
    samples = []
    for (u, hist, targets), suffix, text, n_tok in zip(drafts, suffixes, full, lengths):
        hist_titles = [titles[i] for i in hist]
        dropped = 0
        if n_tok > max_tokens and len(hist_titles) > 1:
            # estimate: each title costs its own token count plus the separator
            per_title = count(hist_titles)
            estimate, total = [], n_tok
            for k in range(len(hist_titles)):
                estimate.append(total)
                total -= per_title[k] + (1 if tokenizer is not None else 0)
            dropped, n_tok = _fit(st, hist_titles, suffix, max_tokens, count, estimate)
        kept = hist[dropped:]
        prompt = st.prompt(hist_titles[dropped:])
        target_titles = [titles[t] for t in targets]
        samples.append(Sample(user=data.users[u], user_index=u, split=split, prompt=prompt,
                              response=target_titles[0], targets=target_titles, history=list(kept),
                              target_items=list(targets), n_dropped=dropped, n_tokens=n_tok))
    return samples
