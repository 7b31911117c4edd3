"""BIGRec (Bao et al. 2023), the LLM backbone of DEALRec's main results: registered as ``bigrec``."""

from tunesift.rec.bigrec.backbone import BigRec, BigRecFitSettings, BigRecSettings

__all__ = ["BigRec", "BigRecFitSettings", "BigRecSettings"]
