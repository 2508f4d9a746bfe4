"""MediaPipe Holistic landmarks -> COCO-WholeBody 133 (docs/keypoint_extraction.md, "MediaPipe").

MediaPipe Holistic returns four landmark sets per frame: 33 BlazePose body landmarks
(Bazarevsky et al., "BlazePose", 2020), 468 FaceMesh landmarks (478 with the refined irises;
Kartynnik et al., "Real-time Facial Surface Geometry from Monocular Video", 2019) and 21
landmarks per hand (Zhang et al., "MediaPipe Hands", 2020). This module maps them to the
133-point layout signgen uses (:mod:`signgen.keypoints.layout`):

=================  ===========================================================================
COCO-WholeBody     from MediaPipe
=================  ===========================================================================
0-16 body          BlazePose by name: nose, left/right eye (the eye centres 2/5, not the inner
                   or outer corners), ears, shoulders, elbows, wrists, hips, knees, ankles
17-22 feet         big toe <- ``*_FOOT_INDEX``, heel <- ``*_HEEL``; BlazePose has no small toe,
                   so 18 and 21 are missing (score 0)
23-90 face         68 FaceMesh vertices in the iBUG-68 order (:data:`FACE68_FROM_FACEMESH`)
91-111 left hand   ``left_hand_landmarks`` 0-20 (same order as COCO-WholeBody hands)
112-132 right hand ``right_hand_landmarks`` 0-20
=================  ===========================================================================

Scores: body points take the landmark's ``visibility`` (BlazePose's estimate that the point
is visible in the image), clipped to [0, 1]. Face and hand landmarks carry no per-point
confidence in the Holistic graph, so a found face or hand gives its points score 1 and a
missing one score 0 (the whole part missing, as HRNet's absent hands are).

Left and right: MediaPipe's ``LEFT_*`` body landmarks and ``left_hand_landmarks`` are the
person's own left, as COCO-WholeBody's "left" is; nothing is mirrored (checked on real
Phoenix frames by ``tests/test_mediapipe_real.py``).
"""

from __future__ import annotations

import numpy as np

from signgen.keypoints.layout import FACE, LEFT_HAND, NUM_POINTS, RIGHT_HAND

# BlazePose's 33 landmarks, in MediaPipe's order (``mp.solutions.pose.PoseLandmark``); .pose
# files from pose-format name the Holistic body points with these names.
BLAZEPOSE_NAMES: tuple[str, ...] = (
    "NOSE", "LEFT_EYE_INNER", "LEFT_EYE", "LEFT_EYE_OUTER", "RIGHT_EYE_INNER", "RIGHT_EYE",
    "RIGHT_EYE_OUTER", "LEFT_EAR", "RIGHT_EAR", "MOUTH_LEFT", "MOUTH_RIGHT", "LEFT_SHOULDER",
    "RIGHT_SHOULDER", "LEFT_ELBOW", "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST", "LEFT_PINKY",
    "RIGHT_PINKY", "LEFT_INDEX", "RIGHT_INDEX", "LEFT_THUMB", "RIGHT_THUMB", "LEFT_HIP",
    "RIGHT_HIP", "LEFT_KNEE", "RIGHT_KNEE", "LEFT_ANKLE", "RIGHT_ANKLE", "LEFT_HEEL",
    "RIGHT_HEEL", "LEFT_FOOT_INDEX", "RIGHT_FOOT_INDEX",
)  # fmt: skip

# MediaPipe's 21 hand landmarks (``mp.solutions.hands.HandLandmark``): the COCO-WholeBody
# hand order (0 wrist, 1-4 thumb CMC..tip, 5-8 index MCP..tip, ..., 17-20 pinky).
HAND_NAMES: tuple[str, ...] = (
    "WRIST", "THUMB_CMC", "THUMB_MCP", "THUMB_IP", "THUMB_TIP",
    "INDEX_FINGER_MCP", "INDEX_FINGER_PIP", "INDEX_FINGER_DIP", "INDEX_FINGER_TIP",
    "MIDDLE_FINGER_MCP", "MIDDLE_FINGER_PIP", "MIDDLE_FINGER_DIP", "MIDDLE_FINGER_TIP",
    "RING_FINGER_MCP", "RING_FINGER_PIP", "RING_FINGER_DIP", "RING_FINGER_TIP",
    "PINKY_MCP", "PINKY_PIP", "PINKY_DIP", "PINKY_TIP",
)  # fmt: skip

# COCO-WholeBody body/feet index -> BlazePose landmark name (indices 18 and 21, the small
# toes, have no BlazePose counterpart).
BODY_FROM_BLAZEPOSE: dict[int, str] = {
    0: "NOSE",
    1: "LEFT_EYE",
    2: "RIGHT_EYE",
    3: "LEFT_EAR",
    4: "RIGHT_EAR",
    5: "LEFT_SHOULDER",
    6: "RIGHT_SHOULDER",
    7: "LEFT_ELBOW",
    8: "RIGHT_ELBOW",
    9: "LEFT_WRIST",
    10: "RIGHT_WRIST",
    11: "LEFT_HIP",
    12: "RIGHT_HIP",
    13: "LEFT_KNEE",
    14: "RIGHT_KNEE",
    15: "LEFT_ANKLE",
    16: "RIGHT_ANKLE",
    17: "LEFT_FOOT_INDEX",  # left big toe
    19: "LEFT_HEEL",
    20: "RIGHT_FOOT_INDEX",  # right big toe
    22: "RIGHT_HEEL",
}

# The 68 iBUG/300-W face landmarks (COCO-WholeBody face points 23-90, in order) as FaceMesh
# vertex indices. This is the published correspondence of the pose-format library
# (Moryossef et al., sign-language-processing "pose"; ``pose_format.utils.pose_converter``,
# ``FACE_MAP``, its one-to-one entries), which sign-language tools use to turn Holistic faces
# into OpenPose/iBUG faces. tests/test_holistic_map.py checks this copy against the
# installed pose-format.
FACE68_FROM_FACEMESH: tuple[int, ...] = (
    # 0-16 jaw line, from the signer's right (image left for a frontal face) to the left
    127, 234, 93, 132, 58, 172, 136, 149, 152, 378, 365, 397, 288, 361, 323, 454, 356,
    # 17-21 right eyebrow, 22-26 left eyebrow
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # 27-30 nose bridge, 31-35 lower nose
    168, 197, 5, 4, 219, 237, 1, 457, 439,
    # 36-41 right eye, 42-47 left eye
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # 48-59 outer lips, 60-67 inner lips
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    78, 81, 13, 311, 308, 402, 14, 178,
)  # fmt: skip
FACEMESH_POINTS = 468  # without the refined irises (478 with them; 468-477 are not used)

assert len(BLAZEPOSE_NAMES) == 33 and len(HAND_NAMES) == 21
assert len(FACE68_FROM_FACEMESH) == len(FACE) == 68


def holistic_to_wholebody(
    body: np.ndarray | None,
    face: np.ndarray | None,
    left_hand: np.ndarray | None,
    right_hand: np.ndarray | None,
) -> np.ndarray:
    """One frame of Holistic landmarks (pixels) -> (133, 3) COCO-WholeBody x, y, score.

    ``body``: (33, 3) x, y, visibility; ``face``: (>= 468, 2+) x, y[, ...]; ``left_hand`` /
    ``right_hand``: (21, 2+). ``None`` (or an all-NaN array) for a part MediaPipe did not
    find. Face and hands get score 1 where found; missing points are (0, 0, 0).
    """
    out = np.zeros((NUM_POINTS, 3), dtype=np.float32)
    if body is not None:
        body = np.asarray(body, dtype=np.float32)
        assert body.shape == (33, 3), body.shape
        for dst, name in BODY_FROM_BLAZEPOSE.items():
            out[dst] = body[BLAZEPOSE_NAMES.index(name)]
        out[:23, 2] = np.clip(out[:23, 2], 0.0, 1.0)
    if face is not None:
        face = np.asarray(face, dtype=np.float32)
        assert face.ndim == 2 and face.shape[0] >= FACEMESH_POINTS, face.shape
        out[FACE, :2] = face[list(FACE68_FROM_FACEMESH), :2]
        out[FACE, 2] = 1.0
    for part, hand in ((LEFT_HAND, left_hand), (RIGHT_HAND, right_hand)):
        if hand is not None:
            hand = np.asarray(hand, dtype=np.float32)
            assert hand.ndim == 2 and hand.shape[0] == 21, hand.shape
            out[part, :2] = hand[:, :2]
            out[part, 2] = 1.0
    bad = ~np.isfinite(out).all(axis=1)  # a NaN landmark is a missing one
    out[bad] = 0.0
    return out
