"""Pose images: keypoints drawn as a 3-channel RGB picture on black (docs/keypoints.md).

FPDM feeds one RGB pose image per frame to a small conv encoder (as ControlNet does), not
one channel per limb. The picture follows the OpenPose/ControlNet look: coloured thick
body limbs, per-finger coloured hand bones with small joint dots, white face dots.

Resolution independence. Every width and radius is a fraction of ``min(W, H)`` of the
*output* image (:class:`PoseStyle`), coordinates keep their sub-pixel part and every
shape is antialiased, so a pose drawn at 2x and downscaled with area averaging matches
the same pose drawn at 1x. Tolerance (tests/test_pose_draw.py, random whole-body poses):
mean abs diff < 1.5 grey levels (0-255) over the image, < 12 over the pixels either
drawing touches, SSIM (Gaussian, sigma 1.5) > 0.98, at 210x260 and 512x512; measured
0.53 / 7.3 / 0.996 at 210x260 and 0.17 / 2.6 / 0.9994 at 512x512. Below about 100 px
the minimum widths take over and the match degrades (64x80: SSIM 0.88). The reference
FPDM code renders training and inference pose images on canvases of different sizes
with fixed pixel widths; this module avoids that mismatch.

Why OpenCV and not PIL/skimage: cv2's antialiased rasteriser takes fixed-point
sub-pixel coordinates (the ``shift`` argument) and is fast (100-160 whole-body poses
per second on one shared CPU core, mostly Python overhead; see
benchmarks/results/pose_draw_speed.md). PIL draws no antialiased wide lines and skimage
has no sub-pixel wide lines. ``cv2.line`` only accepts an *integer* thickness, and
rounding it breaks resolution independence (2.4 px rounds to 2 at 1x but 4.8 to 5 at
2x), so every limb is one antialiased convex "stadium" polygon (a segment with round
caps) whose float vertices carry the exact width, and every dot a zero-length stadium
(a disc). OpenCV's antialiasing adds a fringe of ~0.65 px around any filled polygon at
every scale; :func:`_drawn_radius` removes it using measured tables, so the painted area
matches the geometric shape (tested) instead of being relatively fatter at low
resolution.

Coordinate convention: keypoints are in pixels of ``src_size`` with integer values at
pixel centres (OpenCV's and the detectors' convention); mapping to ``out_size`` scales
continuous coordinates per axis, i.e. ``x_out = (x + 0.5) * W_out / W_src - 0.5``.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np

from signgen.errors import InputError
from signgen.keypoints.layout import (
    BODY,
    BODY_LIMBS,
    FACE,
    HAND_BONES,
    LAYOUT_NAME,
    LEFT_HAND,
    NUM_POINTS,
    OPENPOSE18_LIMBS,
    OPENPOSE18_NAMES,
    OPENPOSE18_TO_COCO17,
    RIGHT_HAND,
)

OPENPOSE18 = "openpose-18"
LAYOUTS = (LAYOUT_NAME, OPENPOSE18)

_SHIFT = 6  # fixed-point bits for cv2 sub-pixel coordinates (1/64 px)
_ONE = 1 << _SHIFT
_ARC_POINTS = 9  # vertices per round cap of a limb polygon

# OpenPose's 18-colour palette (RGB), as used by OpenPose, ControlNet and PIDM drawings.
OPENPOSE_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip

# COCO-WholeBody feet (17-22: left big toe, small toe, heel, then right) hang off the
# ankles; the bones follow mmpose's coco_wholebody skeleton.
FOOT_BONES: tuple[tuple[int, int], ...] = (
    (15, 17),
    (15, 18),
    (15, 19),
    (16, 20),
    (16, 21),
    (16, 22),
)
FOOT_COLORS: tuple[tuple[int, int, int], ...] = ((255, 0, 170),) * 3 + ((255, 0, 85),) * 3


def _hand_bone_colors() -> tuple[tuple[int, int, int], ...]:
    """ControlNet's hand palette: hue = bone / 20, so each finger is one hue band."""
    out = []
    for i in range(len(HAND_BONES)):
        r, g, b = colorsys.hsv_to_rgb(i / len(HAND_BONES), 1.0, 1.0)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(out)


HAND_COLORS = _hand_bone_colors()
HAND_JOINT_COLOR = (0, 0, 255)
FACE_COLOR = (255, 255, 255)


@dataclass(frozen=True)
class PoseStyle:
    """Line widths and dot radii as fractions of ``min(W, H)`` of the output image.

    Defaults give, at 512x512 / 210x260: body limbs 8.2 / 3.4 px wide, hand bones
    3.3 / 1.4 px, hand joint dots 2.0 / 0.8 px radius, face dots 1.8 / 0.7 px radius.
    ``min_width`` / ``min_radius`` (pixels) keep shapes visible on tiny canvases; below
    them resolution independence no longer holds exactly.
    """

    body_width: float = 0.016
    body_joint_radius: float = 0.0095
    foot_width: float = 0.010
    hand_width: float = 0.0065
    hand_joint_radius: float = 0.004
    face_radius: float = 0.0035
    min_width: float = 1.0
    min_radius: float = 0.5
    draw_feet: bool = True


DEFAULT_STYLE = PoseStyle()


def draw_pose(
    points: np.ndarray,
    src_size: tuple[int, int],
    out_size: tuple[int, int] | None = None,
    *,
    threshold: float = 0.3,
    layout: str = LAYOUT_NAME,
    confidence_brightness: bool = False,
    style: PoseStyle = DEFAULT_STYLE,
) -> np.ndarray:
    """Draw one pose on black and return it as (H, W, 3) uint8 RGB.

    Args:
        points: (133, 3) x, y, score in pixels of ``src_size`` (or (18, 3) for
            ``layout="openpose-18"``, the DeepFashion body).
        src_size: (W, H) of the frame the points are measured in.
        out_size: (W, H) of the image to draw; defaults to ``src_size``.
        threshold: points with score below it are not drawn, nor any bone touching them.
        layout: ``"coco-wholebody-133"`` or ``"openpose-18"``.
        confidence_brightness: scale each colour by the score (a bone by the lower of
            its two end scores), so uncertain parts look dimmer.
        style: widths and radii; see :class:`PoseStyle`.
    """
    src_w, src_h = _check_size(src_size, "src_size")
    out_w, out_h = _check_size(out_size if out_size is not None else src_size, "out_size")
    pts = _check_points(points, layout)
    img = np.zeros((out_h, out_w, 3), dtype=np.uint8)
    _render(img, pts, (src_w, src_h), threshold, layout, confidence_brightness, style)
    return img


def draw_pose_batch(
    points: np.ndarray,
    src_size: tuple[int, int],
    out_size: tuple[int, int] | None = None,
    *,
    threshold: float = 0.3,
    layout: str = LAYOUT_NAME,
    confidence_brightness: bool = False,
    style: PoseStyle = DEFAULT_STYLE,
) -> np.ndarray:
    """Draw N poses: (N, K, 3) points -> (N, H, W, 3) uint8 RGB; see :func:`draw_pose`."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 3:
        raise InputError(f"draw_pose_batch expects (N, K, 3) points, got shape {points.shape}")
    src_w, src_h = _check_size(src_size, "src_size")
    out_w, out_h = _check_size(out_size if out_size is not None else src_size, "out_size")
    out = np.zeros((points.shape[0], out_h, out_w, 3), dtype=np.uint8)  # (N, H, W, 3)
    for i in range(points.shape[0]):
        pts = _check_points(points[i], layout)
        _render(out[i], pts, (src_w, src_h), threshold, layout, confidence_brightness, style)
    return out


def pose_to_tensor(images: np.ndarray):
    """(N, H, W, 3) uint8 pose images -> torch float32 (N, 3, H, W) in [0, 1].

    The FPDM pose encoder takes pose images in [0, 1] (ControlNet's hint convention),
    not [-1, 1] like the VAE. A single (H, W, 3) image gives a batch of one.
    """
    import torch

    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise InputError(
            f"pose images must be uint8 (N, H, W, 3), got {arr.dtype} {tuple(arr.shape)}"
        )
    t = torch.from_numpy(np.ascontiguousarray(arr))  # (N, H, W, 3) uint8
    return t.permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W)


def coco133_to_openpose18(points: np.ndarray) -> np.ndarray:
    """(..., 133, 3) COCO-WholeBody points -> (..., 18, 3) OpenPose-18 body (DeepFashion order).

    The neck, which COCO lacks, is the shoulder midpoint with the lower shoulder score.
    """
    pts = np.asarray(points, dtype=np.float32)
    if pts.shape[-2:] != (NUM_POINTS, 3):
        raise InputError(f"expected (..., {NUM_POINTS}, 3) points, got {pts.shape}")
    out = np.zeros((*pts.shape[:-2], len(OPENPOSE18_NAMES), 3), dtype=np.float32)
    for j, k in enumerate(OPENPOSE18_TO_COCO17):
        if k is not None:
            out[..., j, :] = pts[..., k, :]
    ls, rs = pts[..., 5, :], pts[..., 6, :]  # COCO left / right shoulder
    out[..., 1, :2] = (ls[..., :2] + rs[..., :2]) / 2
    out[..., 1, 2] = np.minimum(ls[..., 2], rs[..., 2])
    return out


# ---- internals --------------------------------------------------------------------------


def _check_size(size: tuple[int, int] | None, name: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be (width, height), got {size!r}") from None
    if w <= 0 or h <= 0:
        raise InputError(f"{name} must be positive, got {w}x{h}")
    return w, h


def _check_points(points: np.ndarray, layout: str) -> np.ndarray:
    if layout not in LAYOUTS:
        raise InputError(f"unknown pose layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    n = NUM_POINTS if layout == LAYOUT_NAME else len(OPENPOSE18_NAMES)
    pts = np.asarray(points, dtype=np.float32)
    if pts.shape != (n, 3):
        raise InputError(f"{layout} pose must have shape ({n}, 3), got {pts.shape}")
    return pts


def _render(
    img: np.ndarray,
    pts: np.ndarray,
    src_size: tuple[int, int],
    threshold: float,
    layout: str,
    confidence_brightness: bool,
    style: PoseStyle,
) -> None:
    out_h, out_w = img.shape[:2]
    unit = min(out_w, out_h)
    xy = _map_points(pts[:, :2], src_size, (out_w, out_h))  # (K, 2) cv2 pixel coordinates
    # Keep fixed-point coordinates far from int32 overflow for wild outliers.
    lim = 4.0 * max(out_w, out_h)
    xy = np.clip(np.nan_to_num(xy, nan=-lim), -lim, lim)
    score = np.where(np.isfinite(pts[:, 2]), pts[:, 2], 0.0)  # (K,)
    ok = score >= threshold

    def half_width(frac: float) -> float:
        return max(frac * unit, style.min_width) / 2.0

    def radius(frac: float) -> float:
        return max(frac * unit, style.min_radius)

    def bones(pairs, colors, r: float, offset: int = 0) -> None:
        ab = np.asarray(pairs, dtype=np.int64) + offset  # (M, 2)
        keep = ok[ab[:, 0]] & ok[ab[:, 1]]
        s = np.minimum(score[ab[:, 0]], score[ab[:, 1]])
        _fill(img, xy[ab[keep, 0]], xy[ab[keep, 1]], r, np.asarray(colors)[keep],
              s[keep] if confidence_brightness else None)  # fmt: skip

    def dots(indices, colors, r: float) -> None:
        idx = np.asarray(indices, dtype=np.int64)  # (M,)
        keep = ok[idx]
        colors = np.broadcast_to(np.asarray(colors), (len(idx), 3))[keep]
        p = xy[idx[keep]]
        _fill(img, p, p, r, colors, score[idx[keep]] if confidence_brightness else None, True)

    if layout == OPENPOSE18:
        bones(OPENPOSE18_LIMBS, OPENPOSE_COLORS[: len(OPENPOSE18_LIMBS)],
              half_width(style.body_width))  # fmt: skip
        dots(range(len(OPENPOSE18_NAMES)), OPENPOSE_COLORS, radius(style.body_joint_radius))
        return

    # Body limbs, then joints on top (OpenPose look); feet; face; hands last, on top.
    bones(BODY_LIMBS, OPENPOSE_COLORS[: len(BODY_LIMBS)], half_width(style.body_width))
    dots(BODY, OPENPOSE_COLORS[: len(BODY)], radius(style.body_joint_radius))
    if style.draw_feet:
        bones(FOOT_BONES, FOOT_COLORS, half_width(style.foot_width))
    dots(FACE, FACE_COLOR, radius(style.face_radius))
    bones(_BOTH_HANDS_BONES, _BOTH_HANDS_COLORS, half_width(style.hand_width))
    dots(_BOTH_HANDS, HAND_JOINT_COLOR, radius(style.hand_joint_radius))


# Both hands' bones in 133-point indices (left then right) and their colours.
_BOTH_HANDS_BONES = np.array(
    [(a + h.start, b + h.start) for h in (LEFT_HAND, RIGHT_HAND) for a, b in HAND_BONES]
)  # (40, 2)
_BOTH_HANDS_COLORS = np.array(HAND_COLORS * 2)  # (40, 3)
_BOTH_HANDS = np.r_[LEFT_HAND, RIGHT_HAND]  # (42,)


def _map_points(xy: np.ndarray, src_size: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    """Pixel-centre coordinates in ``src_size`` -> pixel-centre coordinates in ``out_size``."""
    scale = np.array(
        [out_size[0] / src_size[0], out_size[1] / src_size[1]], dtype=np.float64
    )  # (2,)
    return (xy.astype(np.float64) + 0.5) * scale - 0.5  # (K, 2)


# OpenCV's antialiased polygon fill paints a fringe of about 0.65 px outside the polygon
# edge at every resolution, which would make shapes relatively fatter at low resolution.
# So each shape is rasterised with a smaller radius, read off these tables: drawn radius
# -> effective radius (limbs: area of a long stadium / length / 2; discs: sqrt(area / pi)),
# measured with this module's own _fill averaged over angles and sub-pixel offsets
# (tests/test_pose_draw.py re-measures them).
_AA_DRAWN_LIMB = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5, 2.0, 3.0)
_AA_EFFECTIVE_LIMB = (0.843, 0.879, 0.909, 0.991, 1.069, 1.174, 1.26, 1.358, 1.467, 1.662,
                      2.167, 2.659, 3.649)  # fmt: skip
_AA_DRAWN_DISC = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5, 2.0, 3.0, 4.0)
_AA_EFFECTIVE_DISC = (0.336, 0.678, 0.85, 0.973, 1.078, 1.189, 1.279, 1.374, 1.469, 1.66,
                      2.131, 2.621, 3.602, 4.596)  # fmt: skip


def _drawn_radius(r: float, disc: bool) -> float:
    """The radius to rasterise so that the antialiased shape covers radius ``r`` (see above).

    Below the tables' first entry (0.84 px for limbs, 0.34 px for discs) no thinner
    antialiased shape exists; such shapes come out slightly fat.
    """
    drawn, eff = (
        (_AA_DRAWN_DISC, _AA_EFFECTIVE_DISC) if disc else (_AA_DRAWN_LIMB, _AA_EFFECTIVE_LIMB)
    )
    if r >= eff[-1]:
        return r - (eff[-1] - drawn[-1])
    return float(np.interp(r, eff, drawn))


def _shade(colors: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
    """(M, 3) colours scaled by clip(score, 0, 1) when ``scores`` is given."""
    if scores is None:
        return colors
    return np.round(colors * np.clip(scores, 0.0, 1.0)[:, None])


# Unit half circle for the round caps: a zero-length stadium is a disc (used for dots).
_CAP_ANGLES = np.linspace(-np.pi / 2, np.pi / 2, _ARC_POINTS)  # (A,)
_CAP = np.stack([np.cos(_CAP_ANGLES), np.sin(_CAP_ANGLES)], axis=-1)  # (A, 2)


def _fill(
    img: np.ndarray,
    p0: np.ndarray,
    p1: np.ndarray,
    r: float,
    colors: np.ndarray,
    scores: np.ndarray | None,
    disc: bool = False,
) -> None:
    """Draw M segments p0[i]-p1[i] of half-width ``r`` with round caps (discs if p0 == p1).

    Each is one antialiased convex polygon with sub-pixel vertices (see module docstring).
    """
    if len(p0) == 0:
        return
    d = p1 - p0  # (M, 2)
    length = np.hypot(d[:, 0], d[:, 1])[:, None]  # (M, 1)
    u = np.where(length > 1e-9, d / np.maximum(length, 1e-9), [1.0, 0.0])  # (M, 2) unit
    n = np.stack([-u[:, 1], u[:, 0]], axis=-1)  # (M, 2) normal
    rd = _drawn_radius(r, disc)
    offs = rd * (_CAP[None, :, :1] * u[:, None] + _CAP[None, :, 1:] * n[:, None])  # (M, A, 2)
    poly = np.concatenate([p1[:, None] + offs, p0[:, None] - offs], axis=1)  # (M, 2A, 2)
    poly = np.round(poly * _ONE).astype(np.int32)
    cols = _shade(np.asarray(colors, dtype=np.float64), scores).astype(int).tolist()
    for i in range(len(poly)):
        cv2.fillConvexPoly(img, poly[i], cols[i], cv2.LINE_AA, _SHIFT)
