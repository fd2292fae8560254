"""Deriving a phone's table from that phone's measurements: the reference blocks, the phone models
(`PhoneModel`: the per-class kernel model, the host-to-phone transfer, the joint model of blocks and
whole networks), their fits and errors, and the energy modelled from the phones' power profiles.

Only the derivation and whole-network pricing read this package; an arch priced from a table in a
search never runs it.
"""
