"""Distributed jobs on Ray that compose the signgen library (render many clips,
augment a dataset, evaluate a benchmark). Library code lives in ``signgen``."""
