"""Pose images: keypoints drawn as RGB pictures for the FPDM pose encoder."""

from __future__ import annotations

from signgen.pose.draw import (
    DEFAULT_STYLE,
    LAYOUTS,
    PoseStyle,
    coco133_to_openpose18,
    draw_pose,
    draw_pose_batch,
    pose_to_tensor,
)

__all__ = [
    "DEFAULT_STYLE",
    "LAYOUTS",
    "PoseStyle",
    "coco133_to_openpose18",
    "draw_pose",
    "draw_pose_batch",
    "pose_to_tensor",
]
