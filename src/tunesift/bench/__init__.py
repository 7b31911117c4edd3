"""Benches: select, fine-tune and evaluate, per method and seed, with resumable runs and result tables.

``tunesift bench rec`` (DEALRec and its baselines, BIGRec protocol) lives in :mod:`tunesift.bench.rec`;
``tunesift bench gotd`` in :mod:`tunesift.bench.gotd`. Both share :mod:`tunesift.bench.common`.
"""
