"""Sampling: the FPDM pipeline (render loop with cumulative guidance) and schedulers."""
