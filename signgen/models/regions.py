"""The focal regions of multi-focal conditioning (MCLD, :mod:`signgen.models.mcld`): the
face and both hands, by their index ranges in the COCO-WholeBody layout. Written once here:
the model config validates region names against it and the focal adapter crops by it."""

from __future__ import annotations

from signgen.keypoints.layout import FACE, LEFT_HAND, RIGHT_HAND

REGIONS: dict[str, range] = {"face": FACE, "left_hand": LEFT_HAND, "right_hand": RIGHT_HAND}
