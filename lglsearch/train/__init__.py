"""Proxy data, supernet training, BN recalibration and evaluation."""
