"""Test scaffolding for the core: tiny checkpoints in every file format (`fixtures`), a small causal
stand-in VAE (`stand_in_vae`), the cache-free oracle the KV caches are tested against
(`recompute`) and small operations only tests need (`probes`). Used by tests/, scripts/selftest.py
and the benchmarks; the product never imports it.
"""
