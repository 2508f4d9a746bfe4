"""Helpers (no tests): write keypoint files in each third-party format's real layout.

Joint correspondences are spelled out by name here, independently of the readers' index
tables, so that a wrong table in signgen shows up as a test failure.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch

# COCO-WholeBody body + feet names, indices 0-22 (Jin et al., ECCV 2020 / mmpose config).
WB_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe",
    "right_heel",
]  # fmt: skip
# OpenPose BODY_25 (doc/02_output.md), written with the COCO-WholeBody names.
BODY25_NAMES = [
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe",
    "right_heel",
]  # fmt: skip
COCO18_NAMES = [
    *BODY25_NAMES[:8],
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
]  # fmt: skip
FACE0, LHAND0, RHAND0 = 23, 91, 112


def random_points(t: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """(T, 133, 3) float32 with x in [0, W), y in [0, H), scores in [0.05, 1]."""
    rng = np.random.default_rng(seed)
    pts = np.empty((t, 133, 3), np.float32)
    pts[..., 0] = rng.uniform(0, width, (t, 133))
    pts[..., 1] = rng.uniform(0, height, (t, 133))
    pts[..., 2] = rng.uniform(0.05, 1.0, (t, 133))
    return np.round(pts, 3)


def body_row(frame: np.ndarray, names: list[str]) -> list[float]:
    """Flat [x, y, c, ...] OpenPose body list; joints COCO-WholeBody lacks are 0, 0, 0."""
    flat: list[float] = []
    for name in names:
        flat += frame[WB_NAMES.index(name)].tolist() if name in WB_NAMES else [0.0, 0.0, 0.0]
    return flat


def write_openpose(folder: Path, frames: np.ndarray, body: str = "BODY_25", extra_people=()):
    """One ``{i:012d}_keypoints.json`` per frame; ``extra_people`` = list of (T,133,3)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = BODY25_NAMES if body == "BODY_25" else COCO18_NAMES

    def person(frame: np.ndarray) -> dict:
        face = np.concatenate([frame[FACE0 : FACE0 + 68], [[5, 5, 0.9], [6, 6, 0.9]]])  # + pupils
        return {
            "person_id": [-1],
            "pose_keypoints_2d": body_row(frame, names),
            "face_keypoints_2d": face.reshape(-1).tolist(),
            "hand_left_keypoints_2d": frame[LHAND0 : LHAND0 + 21].reshape(-1).tolist(),
            "hand_right_keypoints_2d": frame[RHAND0 : RHAND0 + 21].reshape(-1).tolist(),
            "pose_keypoints_3d": [],
        }

    for i, frame in enumerate(frames):
        people = [person(p[i]) for p in extra_people] + [person(frame)]
        doc = {"version": 1.3, "people": people}
        (folder / f"clip_{i:012d}_keypoints.json").write_text(json.dumps(doc))


def mmpose_instance(frame: np.ndarray, bbox: list[float] | None = None) -> dict:
    inst = {
        "keypoints": frame[:, :2].tolist(),
        "keypoint_scores": frame[:, 2].tolist(),
    }
    if bbox is not None:
        inst["bbox"] = (bbox,)  # mmpose's split_instances nests the box in a 1-tuple
        inst["bbox_score"] = 0.9
    return inst


def write_mska(path: Path, samples: dict[str, np.ndarray]) -> None:
    """A plain pickle of {name: {name, gloss, text, num_frames, keypoint: tensor}}."""
    data = {
        name: {
            "name": name,
            "gloss": "REGEN MORGEN",
            "text": "morgen regnet es",
            "num_frames": len(pts),
            "keypoint": torch.tensor(pts),
        }
        for name, pts in samples.items()
    }
    with open(path, "wb") as fh:
        pickle.dump(data, fh)


def write_deepfashion_csv(path: Path, rows: dict[str, np.ndarray]) -> None:
    """rows: name -> (18, 3) x, y, score (score 0 = missing, written as -1)."""
    lines = ["name:keypoints_y:keypoints_x"]
    for name, j in rows.items():
        ys = [int(v) if s > 0 else -1 for v, s in zip(j[:, 1], j[:, 2], strict=True)]
        xs = [int(v) if s > 0 else -1 for v, s in zip(j[:, 0], j[:, 2], strict=True)]
        lines.append(f"{name}: {json.dumps(ys)}: {json.dumps(xs)}")
    path.write_text("\n".join(lines) + "\n")
