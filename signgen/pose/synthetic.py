"""Random but plausible whole-body poses, for tests, benchmarks and smoke runs.

A seated signer seen from the front as in Phoenix-2014T: head near the top, shoulders
about 40% of the frame width apart, arms at random angles, both hands open or curled
at random, 68 face landmarks in the iBUG layout. Not a pose prior: just enough structure
that drawings and crops look like the real thing.
"""

from __future__ import annotations

import numpy as np

from signgen.keypoints.layout import FACE, LEFT_HAND, NUM_POINTS, RIGHT_HAND


def random_pose(
    width: int, height: int, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """One (133, 3) pose in pixels of a ``width`` x ``height`` frame; every score in [0.6, 1]."""
    rng = np.random.default_rng(rng)
    s = float(min(width, height))
    cx = width / 2 + rng.normal(0, 0.03 * width)
    pts = np.zeros((NUM_POINTS, 3), dtype=np.float32)

    head = np.array([cx, 0.22 * height + rng.normal(0, 0.02 * height)])
    face_w = 0.16 * s * rng.uniform(0.9, 1.1)
    shoulder_y = head[1] + 0.22 * s
    half = 0.2 * width * rng.uniform(0.9, 1.1)
    body = {
        0: head + s * np.array([0.0, 0.01]),
        1: head + s * np.array([0.035, -0.025]),  # left eye (signer's left = image right)
        2: head + s * np.array([-0.035, -0.025]),
        3: head + s * np.array([0.075, -0.01]),
        4: head + s * np.array([-0.075, -0.01]),
        5: [cx + half, shoulder_y],
        6: [cx - half, shoulder_y],
        11: [cx + 0.7 * half, shoulder_y + 0.55 * s],
        12: [cx - 0.7 * half, shoulder_y + 0.55 * s],
    }
    for k, xy in body.items():
        pts[k, :2] = xy
    for side, (sh, el, wr, hand) in {1: (5, 7, 9, LEFT_HAND), -1: (6, 8, 10, RIGHT_HAND)}.items():
        upper, lower = 0.28 * s, 0.25 * s
        a1 = np.pi / 2 - side * rng.uniform(-0.1, 0.6)  # elbow hangs down and out
        pts[el, :2] = pts[sh, :2] + upper * np.array([np.cos(a1), np.sin(a1)])
        a2 = -np.pi / 2 + side * rng.uniform(-1.2, 0.3)  # forearm raised towards the face
        pts[wr, :2] = pts[el, :2] + lower * np.array([np.cos(a2), np.sin(a2)])
        pts[hand, :2] = _hand(pts[wr, :2], a2 + rng.normal(0, 0.3), 0.11 * s, side, rng)
    pts[FACE, :2] = _face(head, face_w, rng)
    pts[13:23, :2] = pts[[11, 12], :2].mean(0) + np.array([0.0, 0.5 * s])  # legs and feet off-frame
    pts[:, 2] = rng.uniform(0.6, 1.0, NUM_POINTS)
    pts[13:23, 2] = 0.0  # not visible in a seated signer's frame
    return pts


def random_poses(
    n: int, width: int, height: int, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """(n, 133, 3) independent random poses."""
    rng = np.random.default_rng(rng)
    return np.stack([random_pose(width, height, rng) for _ in range(n)])


def _hand(wrist: np.ndarray, angle: float, length: float, side: int, rng) -> np.ndarray:
    """21 hand points: wrist then four joints per finger (thumb, index, middle, ring, pinky)."""
    out = np.zeros((21, 2))
    out[0] = wrist
    spread = np.array([-0.9, -0.3, 0.0, 0.25, 0.5]) * side
    seg = np.array([0.35, 0.3, 0.2, 0.18]) * length
    for f in range(5):
        a = angle + spread[f] + rng.normal(0, 0.08)
        curl = rng.uniform(0, 0.7) * side
        p = wrist.copy()
        for j in range(4):
            step = seg[j] * (0.8 if f == 0 else 1.0)
            p = p + step * np.array([np.cos(a), np.sin(a)])
            out[1 + 4 * f + j] = p
            a += curl
    return out


def _face(head: np.ndarray, w: float, rng) -> np.ndarray:
    """68 iBUG landmarks around ``head`` for a face ``w`` pixels wide."""
    h = 1.25 * w
    t = np.linspace(np.pi, 0, 17)
    jaw = np.stack([0.5 * w * np.cos(t), -0.1 * h + 0.55 * h * np.sin(t)], -1)
    brow_r = np.stack([np.linspace(-0.4, -0.1, 5) * w, np.full(5, -0.28 * h)], -1)
    brow_l = brow_r * [-1, 1]
    nose = np.stack([np.zeros(4), np.linspace(-0.2, 0.05, 4) * h], -1)
    nostrils = np.stack([np.linspace(-0.1, 0.1, 5) * w, np.full(5, 0.1 * h)], -1)
    e = np.linspace(0, 2 * np.pi, 7)[:-1]
    eye = np.stack([0.09 * w * np.cos(e), 0.03 * h * np.sin(e)], -1)
    eye_r = eye + np.array([-0.22 * w, -0.18 * h])
    eye_l = eye + np.array([0.22 * w, -0.18 * h])
    m = np.linspace(0, 2 * np.pi, 13)[:-1]
    mouth_open = rng.uniform(0.01, 0.06)
    lips = np.stack([0.2 * w * np.cos(m), (0.25 + mouth_open * np.sin(m)) * h], -1)
    m2 = np.linspace(0, 2 * np.pi, 9)[:-1]
    inner = np.stack([0.14 * w * np.cos(m2), (0.25 + 0.5 * mouth_open * np.sin(m2)) * h], -1)
    face = np.concatenate([jaw, brow_r, brow_l, nose, nostrils, eye_r, eye_l, lips, inner])
    assert face.shape == (68, 2), face.shape
    return head + face + rng.normal(0, 0.005 * w, face.shape)
