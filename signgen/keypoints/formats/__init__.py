"""Readers for the keypoint file formats signgen understands (DESIGN.md section 3).

Each reader maps its format onto the COCO-WholeBody 133-point layout with missing points
at score 0. :func:`signgen.keypoints.io.load_keypoints` picks the reader.
"""
