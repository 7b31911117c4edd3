"""TIGER (Rajput et al., NeurIPS 2023): generative retrieval over semantic IDs, registered as ``tiger``.

``rqvae`` (semantic IDs), ``model`` (vocabulary, T5, samples), ``beam`` (constrained beam search),
``train``, ``effort`` and ``backbone`` (the :class:`tunesift.rec.backbone.Backbone`).
"""

from tunesift.rec.tiger.backbone import Tiger
from tunesift.rec.tiger.settings import RQVAESettings, TigerFitSettings, TigerSettings

__all__ = ["RQVAESettings", "Tiger", "TigerFitSettings", "TigerSettings"]
