"""tunesift: pick the examples worth fine-tuning a large language model on.

GOT-D (Kang et al., ICLR 2024) and DEALRec (Lin et al., SIGIR 2024) with their baselines behind one
Python API and one CLI. See the README for the two commands that set everything up.
"""

__version__ = "0.1.0"

from tunesift.io.tables import TextSet, read_text_set  # noqa: E402

__all__ = ["TextSet", "read_text_set", "select_from_pool", "select_samples", "__version__"]


def __getattr__(name):  # keep `import tunesift` light: torch-heavy parts load on first use
    if name == "select_from_pool":
        from tunesift.pool.run import select_from_pool

        return select_from_pool
    if name == "select_samples":
        from tunesift.rec import select_samples

        return select_samples
    raise AttributeError(name)
