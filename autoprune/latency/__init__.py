"""Latency: the lookup table of measured blocks and its calibration."""
