"""Keypoint sequences: the in-memory type, file formats, smoothing and extraction."""

from signgen.keypoints.sequence import KeypointSequence

__all__ = ["KeypointSequence"]
