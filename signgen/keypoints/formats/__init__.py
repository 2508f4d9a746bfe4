"""Readers for the keypoint file formats signgen understands (docs/keypoints.md).

Each reader maps its format onto the COCO-WholeBody 133-point layout with missing points
at score 0. :func:`signgen.keypoints.io.load_keypoints` picks the reader.
"""
