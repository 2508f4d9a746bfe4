"""A synthetic signer world: cartoon signers whose every frame is an exact render of its keypoints.

Real data cannot be downloaded here, and a model can only be checked against a ground
truth that is known exactly. This module draws an articulated 2D figure (torso, arms,
a head with a face built from the 68 COCO-WholeBody face landmarks, two 21-point hands
with fingers) FROM a (133, 3) keypoint array, so the target frame for any pose is
defined by :func:`render_signer`. Each signer has an appearance (:class:`SignerAppearance`:
skin tone, clothing colour and pattern, hair, background) and a body shape
(:class:`BodyShape`: bone lengths, proportions, place in the frame); :func:`sample_motion`
produces smooth, signing-like motion (wrist trajectories near the chest and face from
random cubic splines, finger flexion, head sway, mouthing). A motion is kept apart from
the body that performs it (:class:`Motion`: joint angles, timing, expression), so any
signer can perform any other's motion with their own body (:func:`pose_from_motion`):
the exact ground truth of pose retargeting (``write_retarget_pairs``).

:func:`write_dataset` writes a dataset in the Phoenix-2014T layout (see
docs/datasets.md) plus signgen's prepared files (``prepared/manifest.csv`` and
``prepared/{split}_pairs.csv``, the format :mod:`signgen.data.pairs` reads), and the
part labels of every frame (:func:`render_part_labels`: background, torso, arms, head,
hands), from which :mod:`signgen.metrics.regions` scores how well a render follows the pose.

Coordinates: the motion is generated in pixels of a 210 x 260 reference frame (Phoenix)
and scaled to the requested size, so the same seed gives the same figure at any size.
"""

from __future__ import annotations

import csv
import logging
import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np
from scipy.interpolate import CubicSpline

from signgen.errors import InputError
from signgen.fileio import atomic_path
from signgen.keypoints import layout as L
from signgen.keypoints.sequence import KeypointSequence

if TYPE_CHECKING:
    from signgen.data.pairs import VideoEntry

log = logging.getLogger(__name__)

REF_W, REF_H = 210, 260  # reference frame the motion is generated in (Phoenix size)
FPS = 25.0
SPLITS = ("train", "dev", "test")
PHOENIX_ROOT = "PHOENIX-2014-T"
PATTERNS = ("solid", "stripes", "checks")
HAIR_STYLES = ("short", "long", "bun", "bald")
_VOCAB = (
    "REGEN SONNE WIND NORD SUED WEST OST MORGEN HEUTE ABEND WARM KALT WOLKE SCHNEE "
    "GEWITTER NEBEL TAG NACHT BISSCHEN STARK MEHR WENIGER GRAD SIEBEN ZEHN"
).split()

# Hand-local finger chains (wrist = 0): thumb, index, middle, ring, pinky.
_FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
_LEGS = (L.LEFT_KNEE, L.RIGHT_KNEE, L.LEFT_ANKLE, L.RIGHT_ANKLE, *L.FEET)


# ---------------------------------------------------------------------------------
# Appearance and body shape
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SignerAppearance:
    """How one signer looks. Colours are RGB uint8 triples."""

    skin: tuple[int, int, int] = (224, 172, 138)
    clothing: tuple[int, int, int] = (40, 40, 60)
    pattern: str = "solid"  # one of PATTERNS
    pattern_colour: tuple[int, int, int] = (200, 200, 200)
    pattern_period: float = 12.0  # pixels at the 210 x 260 reference size
    hair_style: str = "short"  # one of HAIR_STYLES
    hair: tuple[int, int, int] = (50, 35, 20)
    background_top: tuple[int, int, int] = (90, 110, 140)
    background_bottom: tuple[int, int, int] = (60, 70, 90)

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise InputError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}")
        if self.hair_style not in HAIR_STYLES:
            raise InputError(f"hair_style must be one of {HAIR_STYLES}, got {self.hair_style!r}")


@dataclass(frozen=True)
class BodyShape:
    """Proportions of one signer, in pixels of the 210 x 260 reference frame."""

    shoulder_width: float = 92.0
    head_height: float = 58.0  # chin to crown
    head_width: float = 44.0
    upper_arm: float = 62.0
    forearm: float = 56.0
    hand: float = 26.0  # wrist to middle fingertip
    neck: float = 14.0
    centre_x: float = 105.0
    shoulder_y: float = 130.0


@dataclass(frozen=True)
class Signer:
    name: str  # "Signer01"
    appearance: SignerAppearance
    body: BodyShape = field(default_factory=BodyShape)


def _rgb(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))  # type: ignore[return-value]


def sample_signer(rng: np.random.Generator, name: str) -> Signer:
    """Draw a random signer: appearance and body proportions."""
    skin_tones = np.array(
        [(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36),
         (92, 56, 32), (234, 192, 170), (200, 150, 120)],
        dtype=np.float64,
    )  # fmt: skip
    skin = skin_tones[rng.integers(len(skin_tones))] * rng.uniform(0.92, 1.05)
    clothing = _rgb(rng, 10, 230)
    pattern_colour = tuple(int((c + rng.integers(80, 176)) % 256) for c in clothing)
    top = _rgb(rng, 30, 220)
    bottom = tuple(int(np.clip(c + rng.integers(-60, 61), 0, 255)) for c in top)
    appearance = SignerAppearance(
        skin=tuple(int(v) for v in np.clip(skin, 0, 255)),  # type: ignore[arg-type]
        clothing=clothing,
        pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        pattern_colour=pattern_colour,  # type: ignore[arg-type]
        pattern_period=float(rng.uniform(8.0, 18.0)),
        hair_style=HAIR_STYLES[int(rng.integers(len(HAIR_STYLES)))],
        hair=_rgb(rng, 0, 200),
        background_top=top,
        background_bottom=bottom,  # type: ignore[arg-type]
    )
    s = float(rng.uniform(0.9, 1.1))
    body = BodyShape(
        shoulder_width=92.0 * s * float(rng.uniform(0.92, 1.08)),
        head_height=58.0 * s * float(rng.uniform(0.95, 1.05)),
        head_width=44.0 * s * float(rng.uniform(0.92, 1.08)),
        upper_arm=62.0 * s,
        forearm=56.0 * s,
        hand=26.0 * s,
        neck=14.0 * s,
        centre_x=105.0 + float(rng.uniform(-8, 8)),
        shoulder_y=130.0 + float(rng.uniform(-8, 8)),
    )
    return Signer(name, appearance, body)


# ---------------------------------------------------------------------------------
# Motion
# ---------------------------------------------------------------------------------
def _smooth(rng: np.random.Generator, T: int, dims: int, knots_per_s: float = 1.6) -> np.ndarray:
    """Smooth random curves in [-1, 1]: a cubic spline through random knots. (T, dims)."""
    n = max(2, math.ceil(T / FPS * knots_per_s) + 2)
    knots = rng.uniform(-1.0, 1.0, size=(n, dims))
    tk = np.linspace(0.0, max(T - 1, 1), n)
    spline = CubicSpline(tk, knots, bc_type="natural")
    return np.clip(spline(np.arange(T, dtype=np.float64)), -1.0, 1.0)


def _face_template() -> np.ndarray:
    """68 face landmarks (iBUG/300-W order) in units of the head box: x, y in [-0.5, 0.5].

    y = -0.5 is the crown, +0.5 the chin. Hand-placed once; the renderer draws from these.
    """
    pts = np.zeros((68, 2))
    a = np.linspace(math.pi * 0.98, math.pi * 0.02, 17)  # jaw from the image-left ear to right
    pts[0:17, 0] = 0.47 * np.cos(a)
    pts[0:17, 1] = 0.02 + 0.48 * np.sin(a)
    pts[17:22, 0] = np.linspace(-0.36, -0.08, 5)  # brow (image left)
    pts[17:22, 1] = -0.12 - 0.04 * np.sin(np.linspace(0, math.pi, 5))
    pts[22:27, 0] = np.linspace(0.08, 0.36, 5)
    pts[22:27, 1] = -0.12 - 0.04 * np.sin(np.linspace(0, math.pi, 5))
    pts[27:31, 0] = 0.0  # nose bridge
    pts[27:31, 1] = np.linspace(-0.06, 0.14, 4)
    pts[31:36, 0] = np.linspace(-0.09, 0.09, 5)  # nostrils
    pts[31:36, 1] = 0.17 + np.array([0.0, 0.015, 0.02, 0.015, 0.0])
    for start, cx in ((36, -0.2), (42, 0.2)):  # eyes: 6-point ovals
        ang = np.array([math.pi, 2 * math.pi / 3 + math.pi, 4 * math.pi / 3 + math.pi, 0.0,
                        math.pi / 3, 2 * math.pi / 3])  # fmt: skip
        pts[start : start + 6, 0] = cx + 0.09 * np.cos(ang)
        pts[start : start + 6, 1] = -0.04 + 0.035 * np.sin(ang)
    ang = np.linspace(math.pi, -math.pi, 12, endpoint=False)  # outer lip 48-59
    pts[48:60, 0] = 0.17 * np.cos(ang)
    pts[48:60, 1] = 0.31 - 0.05 * np.sin(ang)
    ang = np.linspace(math.pi, -math.pi, 8, endpoint=False)  # inner lip 60-67
    pts[60:68, 0] = 0.11 * np.cos(ang)
    pts[60:68, 1] = 0.31 - 0.02 * np.sin(ang)
    return pts


_FACE = _face_template()


def _rotate(v: np.ndarray, angle: np.ndarray | float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    x, y = v[..., 0], v[..., 1]
    return np.stack([c * x - s * y, s * x + c * y], axis=-1)


def _two_link_elbow(
    shoulder: np.ndarray, wrist: np.ndarray, l1: float, l2: float, side: float
) -> tuple[np.ndarray, np.ndarray]:
    """Elbow of a 2-link arm (law of cosines); the wrist is pulled in if out of reach.

    ``side`` (+1 / -1) chooses the elbow on the outer-lower side of the body. (T, 2) each.
    """
    d = wrist - shoulder
    dist = np.linalg.norm(d, axis=-1, keepdims=True)
    dist_c = np.clip(dist, abs(l1 - l2) + 1e-3, l1 + l2 - 1e-3)
    wrist = shoulder + d / np.maximum(dist, 1e-6) * dist_c
    cos_a = (l1**2 + dist_c**2 - l2**2) / (2 * l1 * dist_c)
    a = np.arccos(np.clip(cos_a, -1.0, 1.0))[..., 0]
    base = np.arctan2(d[..., 1], d[..., 0])
    elbow_angle = base + side * a
    elbow = shoulder + l1 * np.stack([np.cos(elbow_angle), np.sin(elbow_angle)], axis=-1)
    return elbow, wrist


def _hand(
    wrist: np.ndarray, direction: np.ndarray, flex: np.ndarray, size: float, mirror: float
) -> np.ndarray:
    """21 hand points from the wrist, the hand direction (rad) and per-finger flexion.

    wrist (T, 2); direction (T,); flex (T, 5) in [0, 1]; ``mirror`` +1/-1 puts the thumb
    on the correct side for a left or right hand seen from the front. Returns (T, 21, 2).
    """
    T = wrist.shape[0]
    out = np.zeros((T, 21, 2))
    out[:, 0] = wrist
    palm = 0.45 * size
    seg = np.array([0.22, 0.17, 0.14]) * size  # finger phalanges
    spreads = np.array([-0.62, -0.22, 0.0, 0.2, 0.4]) * mirror  # knuckle directions (rad)
    lengths = np.array([0.75, 1.0, 1.1, 1.0, 0.8])
    for f, chain in enumerate(_FINGERS):
        ang = direction + spreads[f]
        if f == 0:  # thumb: CMC close to the wrist, rotates outwards
            base = wrist + 0.25 * size * np.stack([np.cos(ang), np.sin(ang)], -1)
        else:
            base = wrist + palm * np.stack([np.cos(ang), np.sin(ang)], -1)
        out[:, chain[0]] = base
        pt = base
        # Flexion curls the finger towards the palm: each joint bends, and the projected
        # length shrinks (the finger points at the camera when fully curled).
        bend = flex[:, f] * (1.2 if f else 0.7) * mirror
        cur = ang + (0.35 * mirror if f == 0 else 0.0)
        for j in range(1, 4):
            cur = cur + bend * (0.6 if j == 1 else 0.5)
            shrink = 1.0 - 0.35 * flex[:, f]
            step = seg[j - 1] * lengths[f] * shrink
            pt = pt + step[:, None] * np.stack([np.cos(cur), np.sin(cur)], -1)
            out[:, chain[j]] = pt
    return out


@dataclass(frozen=True)
class Motion:
    """What a clip's signer does, apart from their body: angles, timing and expression.

    :func:`pose_from_motion` puts a motion on a body (:class:`BodyShape`: bone lengths,
    proportions, position), so one motion can be performed by any signer: "B performs A"
    is A's motion on B's body (A's joint angles and timing, B's lengths, size and place).
    Arrays are per frame (first axis T); angles in radians in image coordinates (x right,
    y down); arms and hands are (left, right) on the second axis.
    """

    sway: np.ndarray  # (T, 4) in [-1, 1]: torso x, torso y, head tilt, head turn
    shoulder_tilt: np.ndarray  # (T,) angle of the line neck -> left shoulder
    head_lean: np.ndarray  # (T,) angle of the neck -> head-centre line from straight up
    mouth_open: np.ndarray  # (T,) in [0, 1]
    upper_arm: np.ndarray  # (T, 2) angle shoulder -> elbow
    forearm: np.ndarray  # (T, 2) angle elbow -> wrist
    hand_direction: np.ndarray  # (T, 2) angle of the hand (wrist -> middle knuckle, unbent)
    flex: np.ndarray  # (T, 2, 5) finger flexion in [0, 1], thumb to little finger

    def __len__(self) -> int:
        return int(self.sway.shape[0])


_SIDES = ((+1.0, L.LEFT_SHOULDER, L.LEFT_ELBOW, L.LEFT_WRIST, L.LEFT_HAND.start),
          (-1.0, L.RIGHT_SHOULDER, L.RIGHT_ELBOW, L.RIGHT_WRIST, L.RIGHT_HAND.start))  # fmt: skip


def _torso(motion: Motion, b: BodyShape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neck (shoulder midpoint), left and right shoulder of ``b`` in ``motion``: (T, 2) each.

    The torso sways by a few pixels around the body's own place; the shoulder line keeps the
    motion's angle at the body's shoulder width (``half * (1, tan(tilt))`` from the neck).
    """
    sway = motion.sway
    neck = np.stack([b.centre_x + 4.0 * sway[:, 0], b.shoulder_y + 2.0 * sway[:, 1]], -1)
    half = b.shoulder_width / 2
    # Signer's left appears on the image right (the signer faces the camera).
    off = np.stack([np.full(len(motion), half), half * np.tan(motion.shoulder_tilt)], -1)
    return neck, neck + off, neck - off


def sample_signer_motion(rng: np.random.Generator, T: int, body: BodyShape | None = None) -> Motion:
    """Draw T frames of smooth, signing-like motion for a signer with ``body``.

    Wrist trajectories in the signing space (chest to face, between and a bit beyond the
    shoulders, relative to this body) from random cubic splines, arm angles from them by
    two-link inverse kinematics on this body's arm lengths; finger flexion, head sway and
    tilt, mouthing. The angles are then the motion: any body can perform it
    (:func:`pose_from_motion`).
    """
    # Over 80 lines: one smooth curve per body part (torso, head, arms, hands, face), each a
    # few lines of the same pattern; split up, the shared sway and body shape would be
    # passed to every piece.
    if T < 1:
        raise InputError(f"number of frames must be >= 1, got {T}")
    b = body or BodyShape()
    sway = _smooth(rng, T, 4, knots_per_s=0.6)  # (T, 4): torso x, torso y, head tilt, head turn
    mouth_open = 0.5 + 0.5 * _smooth(rng, T, 1, knots_per_s=3.0)[:, 0]
    half = b.shoulder_width / 2
    shoulder_tilt = np.arctan2(2.0 * sway[:, 2], half)
    head_lean = np.arctan2(3.0 * sway[:, 3], b.neck + b.head_height / 2)
    partial = Motion(sway, shoulder_tilt, head_lean, mouth_open, *(np.zeros((T, 2)),) * 3,
                     np.zeros((T, 2, 5)))  # fmt: skip
    neck, l_sh, r_sh = _torso(partial, b)
    upper, fore, direction = np.zeros((T, 2)), np.zeros((T, 2)), np.zeros((T, 2))
    flex = np.zeros((T, 2, 5))
    # Wrists move in the signing space: chest to face, between the shoulders and a bit out.
    chin_y = neck[:, 1] - b.neck
    for i, (side, sh) in enumerate(((+1.0, l_sh), (-1.0, r_sh))):
        traj = _smooth(rng, T, 2, knots_per_s=1.8)  # (T, 2)
        activity = 0.55 + 0.45 * rng.uniform()  # some clips use one hand more than the other
        wx = neck[:, 0] + side * (0.18 + 0.32 * traj[:, 0] * activity) * b.shoulder_width
        wy_lo, wy_hi = chin_y - 0.2 * b.head_height, neck[:, 1] + 95.0
        wy = wy_lo + (wy_hi - wy_lo) * (0.55 + 0.45 * traj[:, 1] * activity)
        elbow, wrist = _two_link_elbow(
            sh, np.stack([wx, wy], -1), b.upper_arm, b.forearm, side=-side
        )
        upper[:, i] = np.arctan2(*(elbow - sh)[:, ::-1].T)
        fore[:, i] = np.arctan2(*(wrist - elbow)[:, ::-1].T)  # forearm direction
        direction[:, i] = fore[:, i] + 0.5 * _smooth(rng, T, 1, knots_per_s=1.5)[:, 0]
        flex[:, i] = 0.5 + 0.5 * _smooth(rng, T, 5, knots_per_s=2.0)
    return Motion(sway, shoulder_tilt, head_lean, mouth_open, upper, fore, direction, flex)


def pose_from_motion(
    motion: Motion, body: BodyShape | None = None, size: tuple[int, int] = (REF_W, REF_H)
) -> np.ndarray:
    """``body`` performing ``motion``: (T, 133, 3) float32 x, y, score in pixels of ``size``.

    Forward kinematics: every limb takes the motion's angle and the body's length (upper
    arm, forearm, shoulder width, hand size), the head the motion's lean, tilt, turn and
    mouthing at the body's head size, the torso the motion's sway around the body's place.
    Legs and feet are outside the frame (score 0); every other point has score 1.
    """
    b = body or BodyShape()
    T = len(motion)
    pts = np.zeros((T, 133, 3))
    sway = motion.sway
    neck, l_sh, r_sh = _torso(motion, b)
    hip_y = neck[:, 1] + 125.0
    l_hip = np.stack([neck[:, 0] + 0.42 * b.shoulder_width, hip_y], -1)
    r_hip = np.stack([neck[:, 0] - 0.42 * b.shoulder_width, hip_y], -1)

    # Head: centre above the neck, small tilt; face landmarks from the template.
    tilt = 0.12 * sway[:, 2]
    rise = b.neck + b.head_height / 2
    head_c = np.stack([neck[:, 0] + rise * np.tan(motion.head_lean), neck[:, 1] - rise], -1)
    face = _FACE[None].repeat(T, 0).copy()  # (T, 68, 2)
    for lo, hi, n in ((60, 68, 8), (48, 60, 12)):  # the lower lip drops when the mouth opens
        lower = np.sin(np.linspace(math.pi, -math.pi, n, endpoint=False)) < 0
        face[:, lo:hi, 1] += lower[None] * (0.05 * motion.mouth_open[:, None])
    face[:, :, 0] += 0.05 * sway[:, 3:4]  # head turn shifts the features sideways
    face_px = face * np.array([b.head_width, b.head_height])
    face_px = _rotate(face_px, tilt[:, None]) + head_c[:, None]
    pts[:, 23:91, :2] = face_px
    pts[:, L.NOSE, :2] = face_px[:, 30]
    pts[:, L.RIGHT_EYE, :2] = face_px[:, 36:42].mean(1)  # image-left eye is the signer's right
    pts[:, L.LEFT_EYE, :2] = face_px[:, 42:48].mean(1)
    ear_off = _rotate(np.array([b.head_width * 0.5, -0.02 * b.head_height]), tilt)
    pts[:, L.LEFT_EAR, :2] = head_c + ear_off
    pts[:, L.RIGHT_EAR, :2] = head_c - _rotate(
        np.array([b.head_width * 0.5, 0.02 * b.head_height]), tilt
    )

    pts[:, L.LEFT_SHOULDER, :2] = l_sh
    pts[:, L.RIGHT_SHOULDER, :2] = r_sh
    pts[:, L.LEFT_HIP, :2] = l_hip
    pts[:, L.RIGHT_HIP, :2] = r_hip
    for i, (side, sh_i, elbow_i, wrist_i, hand_start) in enumerate(_SIDES):
        sh = pts[:, sh_i, :2]
        elbow = sh + b.upper_arm * np.stack([np.cos(motion.upper_arm[:, i]),
                                             np.sin(motion.upper_arm[:, i])], -1)  # fmt: skip
        wrist = elbow + b.forearm * np.stack([np.cos(motion.forearm[:, i]),
                                              np.sin(motion.forearm[:, i])], -1)  # fmt: skip
        pts[:, elbow_i, :2] = elbow
        pts[:, wrist_i, :2] = wrist
        pts[:, hand_start : hand_start + 21, :2] = _hand(
            wrist, motion.hand_direction[:, i], motion.flex[:, i], b.hand, side
        )

    pts[..., 2] = 1.0
    pts[:, list(_LEGS), 2] = 0.0  # outside the frame, like in Phoenix
    for i in _LEGS:
        pts[:, i, :2] = pts[:, L.LEFT_HIP if i % 2 else L.RIGHT_HIP, :2] + [0.0, 60.0]
    pts[..., 0] *= size[0] / REF_W
    pts[..., 1] *= size[1] / REF_H
    return pts.astype(np.float32)


def _hand_dropout(rng: np.random.Generator, points: np.ndarray, fraction: float) -> np.ndarray:
    """Give ``fraction`` of the hand points a low confidence (0.1..0.3), for realism (the
    figure is still drawn). (T, 133, 3) in place; returned."""
    if fraction > 0:
        hands = np.r_[L.LEFT_HAND.start : L.RIGHT_HAND.stop]
        mask = rng.uniform(size=(points.shape[0], hands.size)) < fraction
        scores = points[:, hands, 2]
        scores[mask] = rng.uniform(0.1, 0.3, size=int(mask.sum()))
        points[:, hands, 2] = scores
    return points


def sample_clip(
    rng: np.random.Generator,
    T: int,
    size: tuple[int, int] = (REF_W, REF_H),
    body: BodyShape | None = None,
    hand_dropout: float = 0.0,
) -> tuple[np.ndarray, Motion]:
    """:func:`sample_motion` that also returns the :class:`Motion` it drew."""
    motion = sample_signer_motion(rng, T, body)
    return _hand_dropout(rng, pose_from_motion(motion, body, size), hand_dropout), motion


def sample_motion(
    rng: np.random.Generator,
    T: int,
    size: tuple[int, int] = (REF_W, REF_H),
    body: BodyShape | None = None,
    hand_dropout: float = 0.0,
) -> np.ndarray:
    """T frames of smooth, signing-like motion as (T, 133, 3) float32 x, y, score in pixels.

    ``size`` is (width, height) of the frame. Legs and feet are outside the frame (score 0);
    every other point has score 1, except that ``hand_dropout`` > 0 sets that fraction
    of hand points to a low confidence (0.1..0.3) for realism (the figure is still drawn).
    The motion is drawn by :func:`sample_signer_motion` and performed by ``body`` with
    :func:`pose_from_motion`.
    """
    return sample_clip(rng, T, size, body, hand_dropout)[0]


# ---------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------
_SHIFT = 4  # cv2 sub-pixel bits: coordinates are drawn with 1/16 px precision
_ONE = 1 << _SHIFT


def _bgr(rgb: Sequence[int], scale: float = 1.0) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(c * scale, 0, 255)) for c in rgb)
    return (r, g, b)  # we draw on an RGB canvas, so the "BGR" tuple is RGB here


def _v(*xy: float) -> np.ndarray:
    return np.array(xy, dtype=np.float64)


def _fx(p: np.ndarray) -> np.ndarray:
    return (np.asarray(p, dtype=np.float64) * _ONE + 0.5).astype(np.int32)


def _line(img: np.ndarray, a: np.ndarray, b: np.ndarray, colour, thick: int) -> None:
    cv2.line(img, tuple(_fx(a)), tuple(_fx(b)), colour, max(1, thick), cv2.LINE_AA, _SHIFT)


def _poly(img: np.ndarray, p: np.ndarray, colour) -> None:
    cv2.fillPoly(img, [_fx(p).reshape(-1, 1, 2)], colour, cv2.LINE_AA, _SHIFT)


class _StaticLayers:
    """Per (appearance, size) images that do not change between frames: cached."""

    def __init__(self, app: SignerAppearance, size: tuple[int, int]) -> None:
        w, h = size
        t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        top = np.array(app.background_top, np.float32)
        bot = np.array(app.background_bottom, np.float32)
        self.background = np.broadcast_to((1 - t) * top + t * bot, (h, w, 3)).astype(np.uint8)
        period = max(2.0, app.pattern_period * h / REF_H)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.array(app.clothing, np.uint8)
        alt = np.array(app.pattern_colour, np.uint8)
        if app.pattern == "stripes":
            on = (yy % period) < period * 0.4
        elif app.pattern == "checks":
            on = ((xx // period) + (yy // period)) % 2 == 0
        else:
            on = np.zeros((h, w), bool)
        self.cloth = np.where(on[..., None], alt, base).astype(np.uint8)


_LAYER_CACHE: dict[tuple[SignerAppearance, tuple[int, int]], _StaticLayers] = {}


def _layers(app: SignerAppearance, size: tuple[int, int]) -> _StaticLayers:
    key = (app, size)
    if key not in _LAYER_CACHE:
        if len(_LAYER_CACHE) > 64:
            _LAYER_CACHE.clear()
        _LAYER_CACHE[key] = _StaticLayers(app, size)
    return _LAYER_CACHE[key]


class _Figure(NamedTuple):
    """The body geometry both the painter and the part labeller derive from a pose."""

    l_sh: np.ndarray
    r_sh: np.ndarray
    l_hip: np.ndarray
    r_hip: np.ndarray
    face: np.ndarray  # (68, 2)
    head_c: np.ndarray  # between the ears
    head_w: float
    chin: np.ndarray
    head_h: float
    tilt: float  # degrees


def _figure(p: np.ndarray) -> _Figure:
    """Shoulders, hips, face, head centre, size and tilt from the (133, 2) points."""
    face = p[23:91]
    head_c = (p[L.LEFT_EAR] + p[L.RIGHT_EAR]) / 2
    chin = face[8]
    return _Figure(
        p[L.LEFT_SHOULDER], p[L.RIGHT_SHOULDER], p[L.LEFT_HIP], p[L.RIGHT_HIP], face, head_c,
        np.linalg.norm(p[L.LEFT_EAR] - p[L.RIGHT_EAR]), chin,
        2 * np.linalg.norm(chin - head_c) / 1.04,
        math.degrees(math.atan2(*(p[L.LEFT_EAR] - p[L.RIGHT_EAR])[::-1])),
    )  # fmt: skip


def _long_hair(head_c: np.ndarray, head_w: float, head_h: float) -> np.ndarray:
    """(4, 2) polygon of long hair behind the head, falling to the shoulders."""
    return np.array(
        [head_c + _v(-0.62 * head_w, -0.1 * head_h), head_c + _v(0.62 * head_w, -0.1 * head_h),
         head_c + _v(0.7 * head_w, 0.75 * head_h), head_c + _v(-0.7 * head_w, 0.75 * head_h)]
    )  # fmt: skip


# Over 80 lines: the figure is painted back to front, one layer after another on one
# image (background, torso, arms, head, hands); the order is the drawing.
def render_signer(
    appearance: SignerAppearance, points: np.ndarray, size: tuple[int, int]
) -> np.ndarray:
    """Draw the signer in pose ``points`` (133, 3) on a ``size`` = (width, height) frame.

    Returns (H, W, 3) uint8 RGB. Deterministic: the image is a function of the arguments
    only. Points are read regardless of score (scores describe detector confidence, not
    visibility, in this world), so the frame is the exact render of its keypoints.
    """
    # Over 80 lines: the drawing order of the signer's layers (background, torso, arms,
    # hands, head, hair, face) is the function; each layer is a few drawing calls.
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (133, 3):
        raise InputError(f"points must have shape (133, 3), got {pts.shape}")
    w, h = int(size[0]), int(size[1])
    layers = _layers(appearance, (w, h))
    img = layers.background.copy()
    u = h / REF_H  # thickness unit
    p = pts[:, :2]
    skin = _bgr(appearance.skin)
    skin_dark = _bgr(appearance.skin, 0.72)
    cloth = _bgr(appearance.clothing)
    hair = _bgr(appearance.hair)

    l_sh, r_sh, l_hip, r_hip, face, head_c, head_w, chin, head_h, tilt = _figure(p)

    # Hair behind the head (long hair falls to the shoulders).
    if appearance.hair_style == "long":
        back = _long_hair(head_c, head_w, head_h)
        _poly(img, back, hair)
    # Neck, then the torso with its clothing pattern (masked copy of the pattern layer).
    neck_base = (l_sh + r_sh) / 2
    _line(img, chin - _v(0, 0.15 * head_h), neck_base, skin_dark, round(0.42 * head_w))
    _line(img, chin - _v(0, 0.15 * head_h), neck_base, skin, round(0.36 * head_w))
    mask = np.zeros((h, w), np.uint8)
    sh_w = np.linalg.norm(l_sh - r_sh)
    torso = np.array(
        [r_sh + _v(-0.04 * sh_w, 0.02 * sh_w), neck_base + _v(-0.12 * sh_w, -0.05 * sh_w),
         neck_base + _v(0.12 * sh_w, -0.05 * sh_w), l_sh + _v(0.04 * sh_w, 0.02 * sh_w),
         l_hip + _v(0.06 * sh_w, 0), r_hip + _v(-0.06 * sh_w, 0)]
    )  # fmt: skip
    _poly(mask, torso, 255)
    # The V-neck shows skin under the chin.
    _poly(mask, np.array([neck_base + _v(-0.1 * sh_w, -0.06 * sh_w),
                          neck_base + _v(0.1 * sh_w, -0.06 * sh_w),
                          neck_base + _v(0.0, 0.12 * sh_w)]), 0)  # fmt: skip
    # Sleeves: upper arms and forearms in clothing colour, drawn into the same mask so
    # that they carry the pattern too.
    arm_t = round(0.2 * sh_w)
    for a, b_ in ((l_sh, p[L.LEFT_ELBOW]), (r_sh, p[L.RIGHT_ELBOW])):
        _line(mask, a, b_, 255, arm_t)
    # Antialiased composite of the patterned cloth, only inside the mask's bounding box.
    x0, y0, bw, bh = cv2.boundingRect(mask)
    if bw and bh:
        m = mask[y0 : y0 + bh, x0 : x0 + bw, None].astype(np.uint16)
        roi = img[y0 : y0 + bh, x0 : x0 + bw]
        cl = layers.cloth[y0 : y0 + bh, x0 : x0 + bw]
        roi[:] = ((roi * (255 - m) + cl * m + 127) // 255).astype(np.uint8)
    for a in (l_sh, r_sh):
        cv2.circle(img, tuple(_fx(a)), int(arm_t / 2 * _ONE), cloth, -1, cv2.LINE_AA, _SHIFT)
    for e, wr in ((p[L.LEFT_ELBOW], p[L.LEFT_WRIST]), (p[L.RIGHT_ELBOW], p[L.RIGHT_WRIST])):
        _line(img, e, wr, _bgr(appearance.clothing, 0.8), round(0.17 * sh_w))

    # Head: skin ellipse, hair on top, face features from the 68 landmarks.
    axes = (int(head_w / 2 * _ONE), int(head_h / 2 * _ONE))
    centre = tuple(_fx(head_c + _v(0, 0.02 * head_h)))
    if appearance.hair_style == "bun":
        cv2.circle(img, tuple(_fx(head_c - _v(0, 0.55 * head_h))), int(0.18 * head_w * _ONE),
                   hair, -1, cv2.LINE_AA, _SHIFT)  # fmt: skip
    cv2.ellipse(img, centre, axes, tilt, 0, 360, skin, -1, cv2.LINE_AA, _SHIFT)
    if appearance.hair_style != "bald":
        hair_axes = (int(head_w * 0.54 * _ONE), int(head_h * 0.4 * _ONE))
        up = _rotate(np.array([0.0, -0.14 * head_h]), math.radians(tilt))
        cv2.ellipse(img, tuple(_fx(head_c + up)), hair_axes, tilt, 180, 360, hair, -1,
                    cv2.LINE_AA, _SHIFT)  # fmt: skip
    # Ears.
    for ear in (p[L.LEFT_EAR], p[L.RIGHT_EAR]):
        cv2.circle(img, tuple(_fx(ear)), int(0.09 * head_w * _ONE), skin_dark, -1, cv2.LINE_AA,
                   _SHIFT)  # fmt: skip
    ft = max(1, round(1.2 * u))
    dark = (30, 25, 25)
    for brow in (face[17:22], face[22:27]):
        cv2.polylines(img, [_fx(brow).reshape(-1, 1, 2)], False, hair, ft, cv2.LINE_AA, _SHIFT)
    for eye in (face[36:42], face[42:48]):
        _poly(img, eye, (245, 245, 245))
        cv2.circle(img, tuple(_fx(eye.mean(0))), int(1.6 * u * _ONE), dark, -1, cv2.LINE_AA,
                   _SHIFT)  # fmt: skip
    cv2.polylines(img, [_fx(face[27:31]).reshape(-1, 1, 2)], False, skin_dark, ft, cv2.LINE_AA,
                  _SHIFT)  # fmt: skip
    cv2.polylines(img, [_fx(face[31:36]).reshape(-1, 1, 2)], False, skin_dark, ft, cv2.LINE_AA,
                  _SHIFT)  # fmt: skip
    _poly(img, face[48:60], (170, 60, 70))
    _poly(img, face[60:68], (70, 20, 30))

    # Hands last (they pass in front of the body and the face).
    bone_t = max(1, round(2.4 * u))
    for start in (L.RIGHT_HAND.start, L.LEFT_HAND.start):
        hand = p[start : start + 21]
        palm = hand[[0, 1, 5, 9, 13, 17]]
        hull = cv2.convexHull(_fx(palm).reshape(-1, 1, 2))
        cv2.fillPoly(img, [hull], skin, cv2.LINE_AA, _SHIFT)
        cv2.polylines(img, [hull], True, skin_dark, 1, cv2.LINE_AA, _SHIFT)
        hf = [tuple(q) for q in _fx(hand).tolist()]  # fixed-point once per hand (speed)
        for colour, thick in ((skin_dark, bone_t + 2), (skin, bone_t)):
            for i, j in L.HAND_BONES:
                cv2.line(img, hf[i], hf[j], colour, thick, cv2.LINE_AA, _SHIFT)
    return img


# ---------------------------------------------------------------------------------
# Part labels: which body part each pixel of a rendered frame shows
# ---------------------------------------------------------------------------------
# Label values of :func:`render_part_labels` (uint8). Arms are the sleeves and forearms,
# the head is the face with its hair and ears, the torso includes the neck and the
# shoulders.
BACKGROUND, TORSO, LEFT_ARM, RIGHT_ARM, HEAD, LEFT_HAND, RIGHT_HAND = range(7)
PART_NAMES = ("background", "torso", "left_arm", "right_arm", "head", "left_hand", "right_hand")
LIMBS = (LEFT_ARM, RIGHT_ARM, LEFT_HAND, RIGHT_HAND)
MASKS_DIR = "masks"  # <world>/masks/<split>/<video>.npz


def _label_line(img: np.ndarray, a: np.ndarray, b: np.ndarray, value: int, thick: int) -> None:
    cv2.line(img, tuple(_fx(a)), tuple(_fx(b)), value, max(1, thick), cv2.LINE_8, _SHIFT)


def _label_poly(img: np.ndarray, p: np.ndarray, value: int) -> None:
    cv2.fillPoly(img, [_fx(p).reshape(-1, 1, 2)], value, cv2.LINE_8, _SHIFT)


def render_part_labels(
    appearance: SignerAppearance, points: np.ndarray, size: tuple[int, int]
) -> np.ndarray:
    """The body part each pixel of ``render_signer(appearance, points, size)`` shows.

    Returns (H, W) uint8 labels (BACKGROUND, TORSO, LEFT_ARM, ...). The shapes are those of
    :func:`render_signer`, drawn in its order without antialiasing, so a pixel gets the
    label of the last shape that covers its centre. Where the frame cannot tell parts
    apart, the label follows the frame: a sleeve over the torso shows the same patterned
    cloth (one static pattern layer), so it is torso there.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (133, 3):
        raise InputError(f"points must have shape (133, 3), got {pts.shape}")
    w, h = int(size[0]), int(size[1])
    lab = np.zeros((h, w), np.uint8)
    u = h / REF_H
    p = pts[:, :2]
    l_sh, r_sh, l_hip, r_hip, _face, head_c, head_w, chin, head_h, tilt = _figure(p)
    if appearance.hair_style == "long":
        back = _long_hair(head_c, head_w, head_h)
        _label_poly(lab, back, HEAD)
    neck_base = (l_sh + r_sh) / 2
    _label_line(lab, chin - _v(0, 0.15 * head_h), neck_base, TORSO, round(0.42 * head_w))
    sh_w = np.linalg.norm(l_sh - r_sh)
    arm_t = round(0.2 * sh_w)
    for a, b_, value in ((l_sh, p[L.LEFT_ELBOW], LEFT_ARM), (r_sh, p[L.RIGHT_ELBOW], RIGHT_ARM)):
        _label_line(lab, a, b_, value, arm_t)
    torso = np.zeros((h, w), np.uint8)
    _label_poly(torso, np.array(
        [r_sh + _v(-0.04 * sh_w, 0.02 * sh_w), neck_base + _v(-0.12 * sh_w, -0.05 * sh_w),
         neck_base + _v(0.12 * sh_w, -0.05 * sh_w), l_sh + _v(0.04 * sh_w, 0.02 * sh_w),
         l_hip + _v(0.06 * sh_w, 0), r_hip + _v(-0.06 * sh_w, 0)]), 1)  # fmt: skip
    _label_poly(torso, np.array([neck_base + _v(-0.1 * sh_w, -0.06 * sh_w),
                                 neck_base + _v(0.1 * sh_w, -0.06 * sh_w),
                                 neck_base + _v(0.0, 0.12 * sh_w)]), 0)  # fmt: skip
    lab[torso > 0] = TORSO
    for a in (l_sh, r_sh):
        cv2.circle(lab, tuple(_fx(a)), int(arm_t / 2 * _ONE), TORSO, -1, cv2.LINE_8, _SHIFT)
    for e, wr, value in ((p[L.LEFT_ELBOW], p[L.LEFT_WRIST], LEFT_ARM),
                         (p[L.RIGHT_ELBOW], p[L.RIGHT_WRIST], RIGHT_ARM)):  # fmt: skip
        _label_line(lab, e, wr, value, round(0.17 * sh_w))
    axes = (int(head_w / 2 * _ONE), int(head_h / 2 * _ONE))
    centre = tuple(_fx(head_c + _v(0, 0.02 * head_h)))
    if appearance.hair_style == "bun":
        cv2.circle(lab, tuple(_fx(head_c - _v(0, 0.55 * head_h))), int(0.18 * head_w * _ONE),
                   HEAD, -1, cv2.LINE_8, _SHIFT)  # fmt: skip
    cv2.ellipse(lab, centre, axes, tilt, 0, 360, HEAD, -1, cv2.LINE_8, _SHIFT)
    if appearance.hair_style != "bald":
        hair_axes = (int(head_w * 0.54 * _ONE), int(head_h * 0.4 * _ONE))
        up = _rotate(np.array([0.0, -0.14 * head_h]), math.radians(tilt))
        cv2.ellipse(lab, tuple(_fx(head_c + up)), hair_axes, tilt, 180, 360, HEAD, -1,
                    cv2.LINE_8, _SHIFT)  # fmt: skip
    for ear in (p[L.LEFT_EAR], p[L.RIGHT_EAR]):
        cv2.circle(lab, tuple(_fx(ear)), int(0.09 * head_w * _ONE), HEAD, -1, cv2.LINE_8, _SHIFT)
    # The face features lie inside the head ellipse; the hands come last, on top.
    bone_t = max(1, round(2.4 * u))
    for start, value in ((L.RIGHT_HAND.start, RIGHT_HAND), (L.LEFT_HAND.start, LEFT_HAND)):
        hand = p[start : start + 21]
        hull = cv2.convexHull(_fx(hand[[0, 1, 5, 9, 13, 17]]).reshape(-1, 1, 2))
        cv2.fillPoly(lab, [hull], value, cv2.LINE_8, _SHIFT)
        hf = [tuple(q) for q in _fx(hand).tolist()]
        for i, j in L.HAND_BONES:
            cv2.line(lab, hf[i], hf[j], value, bone_t + 2, cv2.LINE_8, _SHIFT)
    return lab


def part_masks_path(world: str | Path, split: str, video: str) -> Path:
    """Where :func:`write_dataset` puts a video's part labels: ``<world>/masks/<split>/<video>.npz``."""
    return Path(world) / MASKS_DIR / split / f"{video}.npz"


def write_part_masks(
    world: Path, split: str, video: str, appearance: SignerAppearance, points: np.ndarray,
    size: tuple[int, int],
) -> Path:  # fmt: skip
    """Write the part labels of every frame of one video (``labels``: (T, H, W) uint8, one
    compressed npz beside the frames; :func:`load_part_masks` reads it back)."""
    labels = np.stack([render_part_labels(appearance, p, size) for p in points])
    path = part_masks_path(world, split, video)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, labels=labels)
    return path


def load_part_masks(world: str | Path, split: str, video: str) -> np.ndarray:
    """(T, H, W) uint8 part labels of one video of a synthetic world (:func:`write_part_masks`)."""
    path = part_masks_path(world, split, video)
    if not path.is_file():
        raise InputError(
            f"no part masks at {path}: regenerate the world with `signgen prepare synthetic`"
        )
    with np.load(path, allow_pickle=False) as data:
        return data["labels"]


# ---------------------------------------------------------------------------------
# Dataset writer
# ---------------------------------------------------------------------------------
def split_signers(num_signers: int) -> dict[str, list[int]]:
    """Signer indices per split; dev and test signers are unseen in training when K >= 3.

    K >= 5: the last ceil(K/5) signers are test, the ceil(K/5) before them dev, the rest
    train. K = 3 or 4: one test signer, one dev signer. K < 3: every split uses all
    signers (there are too few to hold any out; a warning is logged).
    """
    if num_signers < 1:
        raise InputError(f"--signers must be >= 1, got {num_signers}")
    ids = list(range(num_signers))
    if num_signers < 3:
        log.warning("only %d signer(s): dev/test signers are also seen in training", num_signers)
        return {s: ids for s in SPLITS}
    k = max(1, math.ceil(num_signers / 5)) if num_signers >= 5 else 1
    return {"train": ids[: -2 * k], "dev": ids[-2 * k : -k], "test": ids[-k:]}


def _videos_per_split(n: int, fractions: Sequence[float]) -> dict[str, int]:
    if n < 3:
        raise InputError(f"--videos must be >= 3 (one per split), got {n}")
    fr = np.asarray(fractions, dtype=np.float64)
    counts = np.maximum(1, np.floor(fr / fr.sum() * n)).astype(int)
    counts[0] += n - counts.sum()
    if counts[0] < 1:
        raise InputError(f"--videos {n} is too few for the split fractions {list(fractions)}")
    return dict(zip(SPLITS, (int(c) for c in counts), strict=True))


@dataclass
class SyntheticConfig:
    """Options of ``signgen prepare synthetic``."""

    out: str
    signers: int = 8
    videos: int = 40
    frames: int = 48
    width: int = REF_W
    height: int = REF_H
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    train_pairs_per_video: int = 100
    hand_dropout: float = 0.0
    retarget_pairs: int = 0  # per dev/test video: other signers performing its motion


# Over 80 lines: one pass over the splits writes frames, keypoints, corpus and manifest
# together, so that every file of a video comes from the same sampled motion.
def write_dataset(cfg: SyntheticConfig, progress: bool = True) -> dict[str, int]:
    """Generate the synthetic world under ``cfg.out``; returns the number of videos per split
    (and under ``"retarget"`` the number of retargeting clips, when asked for).

    Layout (Phoenix-2014T, docs/datasets.md, plus signgen extras)::

        PHOENIX-2014-T/features/fullFrame-WxHpx/{split}/<name>/images0001.png ...
        PHOENIX-2014-T/annotations/manual/PHOENIX-2014-T.{split}.corpus.csv
        keypoints/Phoenix-2014T.{split}            MSKA-style pickle (dict by name; Phoenix 210x260 pixels)
        keypoints/json/{split}/<name>.json         signgen JSON per video
        prepared/manifest.csv, prepared/{split}_pairs.csv
        signers.json                               appearance and body of each signer
        masks/{split}/<name>.npz                   part labels of every frame (render_part_labels)

    With ``cfg.retarget_pairs`` = N > 0, also N clips per dev and test video in which
    another signer of that split performs the video's motion with their own body
    (:func:`write_retarget_pairs`): ``retarget/`` and ``prepared/retarget_pairs.csv``.

    (Over 80 lines: one pass writes every file of a video together, frames, pickle entry,
    JSON, manifest row and pairs, so that each video's random stream is drawn in one place.)
    """
    # Over 80 lines: the world is written split by split, video by video, with the corpus,
    # keypoints and prepared files that describe it; one pass keeps them consistent.
    import json

    import torch
    from tqdm import tqdm

    if cfg.frames < 2:
        raise InputError(f"--frames must be >= 2, got {cfg.frames}")
    if cfg.width < 16 or cfg.height < 16:
        raise InputError(f"--size must be at least 16x16, got {cfg.width}x{cfg.height}")
    if cfg.retarget_pairs < 0:
        raise InputError(f"--retarget-pairs must be >= 0, got {cfg.retarget_pairs}")
    out = Path(cfg.out)
    size = (cfg.width, cfg.height)
    rng = np.random.default_rng(cfg.seed)
    signers = [sample_signer(rng, f"Signer{i + 1:02d}") for i in range(cfg.signers)]
    by_split = split_signers(cfg.signers)
    counts = _videos_per_split(cfg.videos, cfg.split_fractions)
    root = out / PHOENIX_ROOT
    frames_root = root / "features" / f"fullFrame-{cfg.width}x{cfg.height}px"
    manifest_rows: list[dict[str, object]] = []
    pair_rows: dict[str, list[tuple[str, str, int, int]]] = {s: [] for s in SPLITS}
    held_out = sum(counts[s] for s in ("dev", "test"))
    total = (cfg.videos + cfg.retarget_pairs * held_out) * cfg.frames
    bar = tqdm(total=total, unit="frame", desc="synthetic", disable=not progress)
    clips: dict[str, list[_Clip]] = {s: [] for s in SPLITS}
    from signgen.keypoints.formats.mska import HEIGHT as MSKA_H
    from signgen.keypoints.formats.mska import WIDTH as MSKA_W

    mska_scale = np.array([MSKA_W / cfg.width, MSKA_H / cfg.height, 1.0], np.float32)
    for split in SPLITS:
        pool = by_split[split]
        corpus: list[list[str]] = []
        mska: dict[str, dict[str, object]] = {}
        for v in range(counts[split]):
            signer = signers[pool[v % len(pool)]]
            vid_rng = np.random.default_rng([cfg.seed, SPLITS.index(split), v])
            name = f"synth_{split}_{signer.name}_{v:04d}"
            points, motion = sample_clip(vid_rng, cfg.frames, size, signer.body, cfg.hand_dropout)
            clips[split].append(_Clip(name, signer, motion, points[..., 2].copy()))
            frame_dir = frames_root / split / name
            _write_frames(frame_dir, signer.appearance, points, size, bar)
            write_part_masks(out, split, name, signer.appearance, points, size)
            words = [str(w) for w in vid_rng.choice(_VOCAB, size=int(vid_rng.integers(3, 7)))]
            gloss, text = " ".join(words), " ".join(words).lower() + " ."
            corpus.append([name, f"{name}/1/*.png", "-1", "-1", signer.name, gloss, text])
            mska[name] = {
                "name": f"{split}/{name}",
                "gloss": gloss,
                "text": text,
                "num_frames": cfg.frames,
                # The MSKA format holds pixels of a Phoenix 210 x 260 frame, whatever the
                # world's own size (signgen.keypoints.formats.mska).
                "keypoint": torch.from_numpy(points * mska_scale),
            }
            json_path = out / "keypoints" / "json" / split / f"{name}.json"
            meta = {"signer": signer.name, "gloss": gloss, "text": text, "sample": name}
            KeypointSequence(points, cfg.width, cfg.height, FPS, meta=meta).save(json_path)
            manifest_rows.append(
                {"video": name, "split": split, "signer": signer.name, "frames": cfg.frames,
                 "fps": FPS, "width": cfg.width, "height": cfg.height,
                 "frames_dir": str(Path("..") / frame_dir.relative_to(out)),
                 "frame_pattern": "images{:04d}.png",
                 "keypoints_file": str(Path("..") / json_path.relative_to(out)),
                 "sample": name, "gloss": gloss, "text": text}
            )  # fmt: skip
            if split == "train":
                n = cfg.train_pairs_per_video
                src = vid_rng.integers(0, cfg.frames, size=n)
                tgt = vid_rng.integers(0, cfg.frames, size=n)
                pair_rows[split] += [
                    (name, signer.name, int(a), int(b)) for a, b in zip(src, tgt, strict=True)
                ]
            else:
                pair_rows[split] += [(name, signer.name, 0, t) for t in range(cfg.frames)]
        corpus_path = root / "annotations" / "manual" / f"PHOENIX-2014-T.{split}.corpus.csv"
        _write_csv(corpus_path, ["name", "video", "start", "end", "speaker", "orth", "translation"],
                   corpus, delimiter="|")  # fmt: skip
        kp_path = out / "keypoints" / f"Phoenix-2014T.{split}"
        kp_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(kp_path) as tmp, open(tmp, "wb") as fh:
            pickle.dump(mska, fh)
    if cfg.retarget_pairs:
        counts["retarget"] = write_retarget_pairs(cfg, clips, bar)
    bar.close()
    prepared = out / "prepared"
    cols = ["video", "split", "signer", "frames", "fps", "width", "height", "frames_dir",
            "frame_pattern", "keypoints_file", "sample", "gloss", "text"]  # fmt: skip
    _write_csv(prepared / "manifest.csv", cols, [[r[c] for c in cols] for r in manifest_rows])
    for split in SPLITS:
        _write_csv(prepared / f"{split}_pairs.csv",
                   ["video", "signer", "source_frame", "target_frame"], pair_rows[split])  # fmt: skip
    signer_info = [
        {"name": s.name, "split": [k for k, v in by_split.items() if i in v],
         "appearance": s.appearance.__dict__, "body": s.body.__dict__}
        for i, s in enumerate(signers)
    ]  # fmt: skip
    (out / "signers.json").write_text(json.dumps(signer_info, indent=1, default=list))
    return counts


@dataclass(frozen=True)
class _Clip:
    name: str
    signer: Signer
    motion: Motion
    scores: np.ndarray  # (T, 133)


def _write_frames(
    frame_dir: Path, appearance: SignerAppearance, points: np.ndarray, size: tuple[int, int], bar
) -> None:
    frame_dir.mkdir(parents=True, exist_ok=True)
    png = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    for t in range(points.shape[0]):
        img = render_signer(appearance, points[t], size)
        # RGB canvas -> cv2 writes BGR.
        if not cv2.imwrite(str(frame_dir / f"images{t + 1:04d}.png"), img[..., ::-1], png):
            raise OSError(f"could not write {frame_dir}")
        bar.update(1)


RETARGET_COLUMNS = ("video", "split", "signer", "frames", "fps", "width", "height", "frames_dir",
                    "frame_pattern", "keypoints_file", "driver_video", "driver_signer",
                    "appearance_video")  # fmt: skip


def write_retarget_pairs(cfg: SyntheticConfig, clips: dict[str, list[_Clip]], bar) -> int:
    """Ground truth for keypoint retargeting: signer B performing signer A's motion.

    For every dev and test video (driver A) and k = 1..``cfg.retarget_pairs``: the k-th
    next video of the same split (cyclically) by another signer B gives B and B's own clip
    (``appearance_video``: its first frame is B's reference frame). The target clip is
    A's :class:`Motion` on B's body (:func:`pose_from_motion`: A's joint angles and timing,
    B's bone lengths, proportions and place) drawn with B's appearance; its keypoints keep
    A's scores. Writes ``retarget/fullFrame-WxHpx/{split}/<name>/``,
    ``retarget/keypoints/{split}/<name>.json`` and ``prepared/retarget_pairs.csv``
    (:data:`RETARGET_COLUMNS`; paths relative to ``prepared/`` as in the manifest, read by
    :func:`read_retarget_pairs`). Returns the number of clips written.
    """
    out = Path(cfg.out)
    size = (cfg.width, cfg.height)
    rows = []
    for split in ("dev", "test"):
        videos = clips[split]
        for i, a in enumerate(videos):
            others = [j for j in (*range(i + 1, len(videos)), *range(i))
                      if videos[j].signer.name != a.signer.name][: cfg.retarget_pairs]  # fmt: skip
            for j in others:
                b = videos[j]
                name = f"{a.name}_by_{b.signer.name}_{j:04d}"
                points = pose_from_motion(a.motion, b.signer.body, size)
                points[..., 2] = a.scores
                frame_dir = (
                    out / "retarget" / f"fullFrame-{cfg.width}x{cfg.height}px" / split / name
                )
                _write_frames(frame_dir, b.signer.appearance, points, size, bar)
                json_path = out / "retarget" / "keypoints" / split / f"{name}.json"
                meta = {"signer": b.signer.name, "driver_signer": a.signer.name,
                        "driver_video": a.name, "appearance_video": b.name}  # fmt: skip
                KeypointSequence(points, cfg.width, cfg.height, FPS, meta=meta).save(json_path)
                rows.append([name, split, b.signer.name, len(a.motion), FPS, cfg.width, cfg.height,
                             str(Path("..") / frame_dir.relative_to(out)), "images{:04d}.png",
                             str(Path("..") / json_path.relative_to(out)), a.name, a.signer.name,
                             b.name])  # fmt: skip
    if not rows:
        log.warning("no retarget pairs written: the dev and test splits each hold videos of "
                    "a single signer (use more --videos or --signers)")  # fmt: skip
    _write_csv(out / "prepared" / "retarget_pairs.csv", RETARGET_COLUMNS, rows)
    return len(rows)


@dataclass(frozen=True)
class RetargetPair:
    """One row of ``prepared/retarget_pairs.csv``: ``target`` is signer B performing the motion
    of ``driver_video`` (signer A); ``appearance_video`` is B's own clip (manifest names)."""

    target: VideoEntry
    driver_video: str
    driver_signer: str
    appearance_video: str


def read_retarget_pairs(prepared_dir: str | Path) -> list[RetargetPair]:
    """The retargeting ground truth written by ``signgen prepare synthetic --retarget-pairs``."""
    from signgen.data.pairs import VideoEntry  # imports torch: only when needed

    root = Path(prepared_dir)
    path = root / "retarget_pairs.csv"
    if not path.is_file():
        raise InputError(
            f"{path} not found: generate the world with `signgen prepare synthetic "
            "--retarget-pairs N`"
        )
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in RETARGET_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = list(reader)

    def entry(r: dict[str, str]) -> VideoEntry:
        return VideoEntry(r["video"], r["split"], r["signer"], int(r["frames"]), float(r["fps"]),
                          int(r["width"]), int(r["height"]), (root / r["frames_dir"]).resolve(),
                          (root / r["keypoints_file"]).resolve(), r["frame_pattern"])  # fmt: skip

    return [RetargetPair(entry(r), r["driver_video"], r["driver_signer"], r["appearance_video"])
            for r in rows]  # fmt: skip


def _write_csv(path: Path, header: Sequence[str], rows, delimiter: str = ",") -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
