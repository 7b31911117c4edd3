"""DEALRec (Lin et al., SIGIR 2024) and its baselines: pick the users whose samples to fine-tune an LLM
recommender on.

The methods register in ``tunesift.registry.REC_METHODS`` and the backbones (``bigrec``, ``tiger``) in
``tunesift.registry.REC_BACKBONES``; each registry imports its modules on first use. The entry point is
:func:`select_samples`; the pieces (data loaders, stages, backbones, selection) are usable on their own.
"""

from tunesift.rec.backbone import REC_BACKBONES, Backbone, RecScale, Recommendations
from tunesift.rec.data import RecData, load_rec_data
from tunesift.rec.methods import RecMethod, RecRanking
from tunesift.rec.pipeline import RecContext, RecSelection, RecSettings, select_samples
from tunesift.rec.prompts import Sample, build_samples

__all__ = ["REC_BACKBONES", "Backbone", "RecContext", "RecData", "RecMethod", "RecRanking", "RecScale",
           "RecSelection", "RecSettings", "Recommendations", "Sample", "build_samples", "load_rec_data",
           "select_samples"]
