"""Keypoint sequences: the in-memory type, file formats, smoothing and extraction."""

from signgen.keypoints.formats.deepfashion import load_deepfashion_annotations, load_pcdms_pose_txt
from signgen.keypoints.formats.mska import load_mska_samples
from signgen.keypoints.io import FORMATS, detect_format, load_keypoints, parse_size, save_keypoints
from signgen.keypoints.sequence import KeypointSequence

__all__ = [
    "FORMATS",
    "KeypointSequence",
    "detect_format",
    "load_deepfashion_annotations",
    "load_keypoints",
    "load_mska_samples",
    "load_pcdms_pose_txt",
    "parse_size",
    "save_keypoints",
]
