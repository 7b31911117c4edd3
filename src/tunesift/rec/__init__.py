"""DEALRec (Lin et al., SIGIR 2024) and its baselines: pick the users whose samples to fine-tune an LLM
recommender on.

Importing this package registers every method in ``tunesift.registry.REC_METHODS``. The entry point is
:func:`select_samples`; the pieces (data loaders, prompts, SASRec, influence, effort, selection) are
usable on their own.
"""

from tunesift.rec import methods as _methods  # noqa: F401  (registration)
from tunesift.rec.data import RecData, load_rec_data
from tunesift.rec.methods import RecMethod, RecRanking
from tunesift.rec.pipeline import PipelineSettings, RecSelection, select_samples
from tunesift.rec.prompts import Sample, build_samples

__all__ = ["PipelineSettings", "RecData", "RecMethod", "RecRanking", "RecSelection", "Sample",
           "build_samples", "load_rec_data", "select_samples"]
