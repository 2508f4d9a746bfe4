"""Hand metrics: Hand SSIM and Hand PE (Saunders et al., "Signing at Scale", CVPR 2022).

Both compare the generated and the ground-truth frame inside a 60x60 patch centred on the
ground-truth middle-finger knuckle (MCP) of each hand: COCO-WholeBody indices 100 (left)
and 121 (right), at the evaluation resolution (260x210 for Phoenix).

Crop rule (``hand_crop_boxes``): the window is centred on the rounded knuckle position,
``x1 = round(x) - 30``; a window that would leave the image is shifted back inside so it
keeps its 60x60 size (an image smaller than 60 px in a dimension is an error). A hand whose
ground-truth knuckle is missing (score <= ``min_score`` or not finite) is skipped: it has no
box, contributes nothing to the frame's average and is counted in ``hands_skipped``.

Hand PE: a hand keypoint detector (HRNetv2 through mmpose in production, anything that
follows :class:`HandKeypointDetector` in tests) is run on the *same* 60x60 boxes of the
generated and of the ground-truth frame (no extra padding: the box is the paper's patch);
the error of a hand is the mean over its 21 keypoints of the L1 distance
``|x_gen - x_gt| + |y_gen - y_gt|`` in pixels of the evaluation resolution; a frame's value
is the mean over its present hands.

Hand PE detectors (``--hand-detector``, :data:`HAND_PE_DETECTORS`): ``hrnetv2`` (the paper's,
mmpose HRNetV2-W18, needs its checkpoint) reports ``hand_pe``; ``mediapipe`` (MediaPipe Hands,
no weights to download, :class:`signgen.keypoints.holistic.MediaPipeHandDetector`) reports
``hand_pe_mediapipe``. The two detectors give different numbers for the same frames, so a
MediaPipe figure is never stored, averaged or compared under the HRNetv2 name. A detector
that finds no hand in a box (MediaPipe detects before it locates; HRNetv2 always answers)
returns scores of 0 for it, and that hand is left out of the frame's Hand PE and its count.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from signgen.errors import InputError
from signgen.keypoints.layout import LEFT_HAND_KNUCKLE, RIGHT_HAND_KNUCKLE
from signgen.metrics.ssim import SSIM_VARIANTS, ssim_uint8

HAND_PATCH = 60
KNUCKLES = (LEFT_HAND_KNUCKLE, RIGHT_HAND_KNUCKLE)  # (100, 121): left, right
# Hand PE detector name -> the metric name its figures are reported under.
HAND_PE_DETECTORS = {"hrnetv2": "hand_pe", "mediapipe": "hand_pe_mediapipe"}
HAND_PE_COLUMNS = tuple(HAND_PE_DETECTORS.values())


@runtime_checkable
class HandKeypointDetector(Protocol):
    """Top-down 21-point hand keypoint detector.

    ``images``: list of N RGB frames, each (H, W, 3) uint8.
    ``boxes``: list of N float arrays (K_i, 4) of x1, y1, x2, y2 in pixels of that frame
    (K_i may be 0).
    Returns a list of N float arrays (K_i, 21, 3): x, y in pixels of the full frame, score.
    """

    def __call__(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]: ...


def crop_origin(center: float, size: int, patch: int = HAND_PATCH) -> int:
    """Top-left coordinate of a ``patch``-long window centred on ``center``, kept inside."""
    if size < patch:
        raise InputError(f"hand metrics need frames of at least {patch} px, got {size}")
    start = round(float(center)) - patch // 2
    return int(min(max(start, 0), size - patch))


def hand_crop_boxes(
    points: np.ndarray, height: int, width: int, min_score: float = 0.0
) -> np.ndarray:
    """(2, 4) int boxes x1, y1, x2, y2 (x2/y2 exclusive) of the left and right hand patch.

    ``points`` is one frame of (133, 3) keypoints in pixels of the ``width`` x ``height``
    frame. A skipped hand's row is all -1.
    """
    boxes = np.full((len(KNUCKLES), 4), -1, dtype=np.int64)
    for i, k in enumerate(KNUCKLES):
        x, y, s = (float(v) for v in points[k])
        if not (np.isfinite(x) and np.isfinite(y) and np.isfinite(s)) or s <= min_score:
            continue
        x1 = crop_origin(x, width)
        y1 = crop_origin(y, height)
        boxes[i] = (x1, y1, x1 + HAND_PATCH, y1 + HAND_PATCH)
    return boxes


def hand_ssim(
    pred: torch.Tensor, gt: torch.Tensor, boxes: np.ndarray, variant: str = "ssim"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hand SSIM of uint8 (B, 3, H, W) batches given (B, 2, 4) crop boxes.

    Returns ``(score, present)``: (B,) float64 mean SSIM over the present hands (0 when a
    frame has none, to be excluded from averages through ``present``) and (B,) int64 number
    of hands present.
    """
    b = pred.shape[0]
    assert boxes.shape == (b, len(KNUCKLES), 4), boxes.shape
    idx = [(i, h) for i in range(b) for h in range(len(KNUCKLES)) if boxes[i, h, 0] >= 0]
    score = torch.zeros(b, dtype=torch.float64)
    present = torch.zeros(b, dtype=torch.int64)
    if not idx:
        return score, present
    crops_p, crops_g = [], []
    for i, h in idx:
        x1, y1, x2, y2 = (int(v) for v in boxes[i, h])
        crops_p.append(pred[i, :, y1:y2, x1:x2])
        crops_g.append(gt[i, :, y1:y2, x1:x2])
    s = ssim_uint8(torch.stack(crops_p), torch.stack(crops_g), SSIM_VARIANTS[variant]).cpu()
    for (i, _), v in zip(idx, s.tolist()):
        score[i] += v
        present[i] += 1
    score = torch.where(present > 0, score / present.clamp(min=1), score)
    return score, present


def hand_pose_error(
    detector: HandKeypointDetector,
    pred: np.ndarray,
    gt: np.ndarray,
    boxes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Hand PE of uint8 (B, H, W, 3) frames given (B, 2, 4) crop boxes.

    Returns ``(error, present)``: (B,) float64 mean L1 keypoint distance over the present
    hands (NaN for a frame without hands) and (B,) int64 number of hands present. A hand the
    detector did not find (all 21 scores 0) in either image is not present.
    """
    b = pred.shape[0]
    assert boxes.shape == (b, len(KNUCKLES), 4), boxes.shape
    keep = [boxes[i][boxes[i, :, 0] >= 0].astype(np.float32) for i in range(b)]  # (K_i, 4)
    images_p = [np.ascontiguousarray(f) for f in pred]
    images_g = [np.ascontiguousarray(f) for f in gt]
    kp_p = detector(images_p, keep)
    kp_g = detector(images_g, keep)
    err = np.full(b, np.nan, dtype=np.float64)
    present = np.zeros(b, dtype=np.int64)
    for i in range(b):
        k = len(keep[i])
        if k == 0:
            continue
        p = np.asarray(kp_p[i], dtype=np.float64).reshape(k, 21, -1)  # (K, 21, 2 or 3)
        g = np.asarray(kp_g[i], dtype=np.float64).reshape(k, 21, -1)
        found = np.ones(k, dtype=bool)
        for kp in (p, g):
            if kp.shape[-1] > 2:
                found &= (kp[..., 2] > 0).any(axis=-1)
        if not found.any():
            continue
        per_hand = np.abs(p[found, :, :2] - g[found, :, :2]).sum(axis=-1).mean(axis=-1)  # (K',)
        err[i] = per_hand.mean()
        present[i] = int(found.sum())
    return err, present


def load_hand_detector(
    config: str | None, checkpoint: str | None, device: str, kind: str = "hrnetv2"
):
    """The Hand PE detector ``kind`` (:data:`HAND_PE_DETECTORS`) as a
    :class:`HandKeypointDetector`: mmpose HRNetv2 from ``config``/``checkpoint``, or
    MediaPipe Hands (no files; runs on CPU)."""
    if kind not in HAND_PE_DETECTORS:
        raise InputError(f"--hand-detector {kind!r}: choose one of {', '.join(HAND_PE_DETECTORS)}")
    if kind == "mediapipe":
        if config or checkpoint:
            raise InputError(
                "--hand-config/--hand-checkpoint are the HRNetv2 hand model's; "
                "--hand-detector mediapipe takes none"
            )
        from signgen.keypoints.holistic import MediaPipeHandDetector

        return MediaPipeHandDetector()
    if not config or not checkpoint:
        raise InputError(
            "hand_pe needs a hand keypoint model: pass --hand-config (an mmpose HRNetv2 "
            "hand config .py) and --hand-checkpoint (its .pth), or --hand-detector mediapipe "
            "(no weights; reported as hand_pe_mediapipe), or leave hand_pe out of --metrics"
        )
    try:
        from signgen.keypoints.extract import MMPoseHandDetector
    except ImportError as exc:
        raise InputError(
            f"hand_pe needs signgen.keypoints.extract and the mmpose stack ({exc}); "
            "install the 'extract' extra or leave hand_pe out of --metrics"
        ) from None
    return MMPoseHandDetector(config, checkpoint, device)
