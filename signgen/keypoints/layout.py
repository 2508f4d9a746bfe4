"""COCO-WholeBody 133-point layout (0-based) and the skeletons drawn on pose images.

Index ranges follow the COCO-WholeBody annotation format (Jin et al., ECCV 2020):
0-16 body in COCO-17 order, 17-22 feet, 23-90 face (68 landmarks), 91-111 left hand,
112-132 right hand. "Left" is the signer's own left. Odd body indices are left.
"""

from __future__ import annotations

LAYOUT_NAME = "coco-wholebody-133"
NUM_POINTS = 133

BODY = range(0, 17)
FEET = range(17, 23)
FACE = range(23, 91)
LEFT_HAND = range(91, 112)
RIGHT_HAND = range(112, 133)

PARTS: dict[str, range] = {
    "body": BODY,
    "feet": FEET,
    "face": FACE,
    "left_hand": LEFT_HAND,
    "right_hand": RIGHT_HAND,
}

# Body joints (COCO-17 order).
NOSE, LEFT_EYE, RIGHT_EYE, LEFT_EAR, RIGHT_EAR = 0, 1, 2, 3, 4
LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_ELBOW, RIGHT_ELBOW = 5, 6, 7, 8
LEFT_WRIST, RIGHT_WRIST, LEFT_HIP, RIGHT_HIP = 9, 10, 11, 12
LEFT_KNEE, RIGHT_KNEE, LEFT_ANKLE, RIGHT_ANKLE = 13, 14, 15, 16

# Within a 21-point hand: 0 wrist, 1-4 thumb, 5-8 index, 9-12 middle, 13-16 ring, 17-20 pinky.
HAND_MIDDLE_MCP = 9
LEFT_HAND_KNUCKLE = LEFT_HAND.start + HAND_MIDDLE_MCP  # 100
RIGHT_HAND_KNUCKLE = RIGHT_HAND.start + HAND_MIDDLE_MCP  # 121

BODY_LIMBS: tuple[tuple[int, int], ...] = (
    (LEFT_SHOULDER, RIGHT_SHOULDER),
    (LEFT_SHOULDER, LEFT_ELBOW),
    (LEFT_ELBOW, LEFT_WRIST),
    (RIGHT_SHOULDER, RIGHT_ELBOW),
    (RIGHT_ELBOW, RIGHT_WRIST),
    (LEFT_SHOULDER, LEFT_HIP),
    (RIGHT_SHOULDER, RIGHT_HIP),
    (LEFT_HIP, RIGHT_HIP),
    (LEFT_HIP, LEFT_KNEE),
    (LEFT_KNEE, LEFT_ANKLE),
    (RIGHT_HIP, RIGHT_KNEE),
    (RIGHT_KNEE, RIGHT_ANKLE),
    (NOSE, LEFT_EYE),
    (NOSE, RIGHT_EYE),
    (LEFT_EYE, LEFT_EAR),
    (RIGHT_EYE, RIGHT_EAR),
)

# 20 bones of a 21-point hand, in hand-local indices; four per finger.
HAND_BONES: tuple[tuple[int, int], ...] = tuple(
    (0 if j == 0 else base + j - 1, base + j) for base in (1, 5, 9, 13, 17) for j in range(4)
)

# 18-point OpenPose body order used by DeepFashion annotations.
OPENPOSE18_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)  # fmt: skip
OPENPOSE18_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
# COCO-17 index for each OpenPose-18 joint (neck has none: it is the shoulder midpoint).
OPENPOSE18_TO_COCO17 = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
