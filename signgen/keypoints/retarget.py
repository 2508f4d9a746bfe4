"""Pose retargeting: drive a reference skeleton with another person's keypoints.

Rendering someone else's raw keypoints gives the target signer the driver's body: longer
arms, narrower shoulders, another place in the frame. Reference-image animation systems
align the driving pose to the reference first: MusePose ("pose_align") scales every bone
of the driving skeleton by the ratio of the reference's length to the first driving
frame's; MimicMotion and UniAnimate fit the driving body onto the reference from the
first frame. This module does the same on COCO-WholeBody 133 (``docs/retargeting.md``):

1. **Global fit** (:func:`fit_global`): a scale ``s`` and a translation ``u`` mapping the
   first usable driving frame ``t0`` onto the reference, from the torso points confident
   in both (nose, eyes, ears, shoulders, hips: signers are often cut at the waist):
   ``s = sqrt(sum |r_i - mean r|^2 / sum |d_i - mean d|^2)`` (the ratio of the RMS spreads),
   and ``u`` puts the driver's neck (shoulder midpoint) at ``t0`` on the reference's neck.
   ``G(p) = s p + u`` places the root of the kinematic tree in every frame.
2. **Bone ratios** (:func:`bone_ratios`): per bone ``b`` = (parent, child) of the tree,
   ``r_b = L_ref(b) / L_drive(b)``, both lengths measured once: on the reference frame and
   on driving frame ``t0`` (MusePose's rule; the driver's median length over the frames
   where the bone is seen when it is not seen at ``t0``). Body bones, each of the 20 hand
   bones finger by finger, and the head as one rigid patch (eyes, ears and the 68 face
   landmarks around the nose, one ratio of RMS spreads).
3. **Kinematic tree** (:func:`apply_fit`), root first, every frame at once:
   ``out[c](t) = out[p](t) + r_b (d[c](t) - d[p](t))``.
   The direction of every bone is the driver's in every frame (its angle to the image axes
   and its timing are kept, and so is its foreshortening: a bone the driver points at the
   camera stays short), and its length is the reference's whenever the driver's own length
   is that of ``t0``. Hands hang off the retargeted body wrists.

Confidence: points below ``min_score`` neither measure lengths nor anchor bones. A child
whose parent is not confident in a frame hangs off its nearest confident ancestor,
``out[c] = out[a] + s (d[c] - d[a])``, or off ``G`` when there is none. Missing points stay
missing: the output keeps the driver's scores, and a score of 0 gives x = y = 0. A bone the
reference lacks (an unconfident end, or zero length) keeps the driver's length scaled by
``s``, said once per call in a :class:`RetargetWarning`.

Why hand-written: no maintained library retargets 2D whole-body keypoints; the pose-
alignment scripts of MusePose and MimicMotion are not packaged, work one frame at a time on
the 18-point OpenPose body and scale each hand and the face as a whole.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from signgen.errors import InputError
from signgen.keypoints import layout as L
from signgen.keypoints.sequence import KeypointSequence

__all__ = [
    "DEFAULT_MIN_SCORE",
    "PARENT",
    "ROOT",
    "RetargetFit",
    "RetargetWarning",
    "apply_fit",
    "bone_ratios",
    "caught_retarget_warnings",
    "fit_global",
    "fit_retarget",
    "is_media",
    "load_reference",
    "retarget_points",
    "retarget_sequence",
]

DEFAULT_MIN_SCORE = 0.3  # the pose drawer's default threshold (signgen.pose.draw)
ROOT = -1  # the virtual neck: midpoint of the two shoulders
_EPS = 1e-6  # pixels: shorter bones and smaller spreads cannot be measured

# Torso points of the global fit (signers are often cut at the waist: hips only when seen).
TORSO = (L.NOSE, L.LEFT_EYE, L.RIGHT_EYE, L.LEFT_EAR, L.RIGHT_EAR,
         L.LEFT_SHOULDER, L.RIGHT_SHOULDER, L.LEFT_HIP, L.RIGHT_HIP)  # fmt: skip
# The head patch: moves rigidly with the nose, one scale for all of it.
HEAD_PATCH = (L.LEFT_EYE, L.RIGHT_EYE, L.LEFT_EAR, L.RIGHT_EAR, *L.FACE)
_FINGERS = ("thumb", "index finger", "middle finger", "ring finger", "little finger")


class RetargetWarning(UserWarning):
    """The reference lacks some bones; they keep the driver's (globally scaled) length."""


def _build_tree() -> tuple[np.ndarray, dict[int, str]]:
    """PARENT[k] for the 133 points (ROOT for the neck's children) and a limb name per child."""
    parent = np.full(L.NUM_POINTS, -2, dtype=np.int64)
    limb: dict[int, str] = {}

    def bone(p: int, c: int, name: str) -> None:
        parent[c] = p
        limb[c] = name

    bone(ROOT, L.LEFT_SHOULDER, "left shoulder")
    bone(ROOT, L.RIGHT_SHOULDER, "right shoulder")
    bone(ROOT, L.NOSE, "neck")
    for side, sh, el, wr, hip, knee, ankle, feet, hand in (
        ("left", L.LEFT_SHOULDER, L.LEFT_ELBOW, L.LEFT_WRIST, L.LEFT_HIP, L.LEFT_KNEE,
         L.LEFT_ANKLE, (17, 18, 19), L.LEFT_HAND),
        ("right", L.RIGHT_SHOULDER, L.RIGHT_ELBOW, L.RIGHT_WRIST, L.RIGHT_HIP, L.RIGHT_KNEE,
         L.RIGHT_ANKLE, (20, 21, 22), L.RIGHT_HAND),
    ):  # fmt: skip
        bone(sh, el, f"{side} upper arm")
        bone(el, wr, f"{side} forearm")
        bone(sh, hip, f"{side} side of the torso")
        bone(hip, knee, f"{side} thigh")
        bone(knee, ankle, f"{side} shin")
        for f in feet:
            bone(ankle, f, f"{side} foot")
        bone(wr, hand.start, f"{side} hand")  # body wrist -> hand wrist: an offset, scaled by s
        for a, b in L.HAND_BONES:
            bone(hand.start + a, hand.start + b, f"{side} {_FINGERS[(b - 1) // 4]}")
    for k in HEAD_PATCH:
        bone(L.NOSE, k, "head")
    assert (parent > -2).sum() == L.NUM_POINTS, "every point has a parent"
    return parent, limb


PARENT, _LIMB = _build_tree()


def _order() -> tuple[int, ...]:
    """Points in tree order: every parent before its children."""
    out: list[int] = []
    frontier = [ROOT]
    while frontier:
        nxt = [int(c) for p in frontier for c in np.flatnonzero(PARENT == p)]
        out += nxt
        frontier = nxt
    assert sorted(out) == list(range(L.NUM_POINTS))
    return tuple(out)


_ORDER = _order()
_HAND_ROOTS = (L.LEFT_HAND.start, L.RIGHT_HAND.start)


@dataclass(frozen=True)
class RetargetFit:
    """What :func:`fit_retarget` measured; :func:`apply_fit` applies it to every frame.

    ``scale`` s and ``translation`` u of the global fit ``G(p) = s p + u`` (driver pixels ->
    reference pixels), ``ratios`` (133,) the length ratio of the bone ending in each point,
    ``anchor_frame`` the driving frame t0 the fit was measured on, and ``lacking`` the limbs
    the reference lacks (they keep the driver's length times ``scale``).
    """

    scale: float
    translation: np.ndarray  # (2,)
    ratios: np.ndarray  # (133,)
    anchor_frame: int
    lacking: tuple[str, ...] = ()


def _confident(points: np.ndarray, min_score: float) -> np.ndarray:
    return points[..., 2] >= min_score


def _neck(points: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shoulder midpoint (..., 2) and whether both shoulders are confident (...)."""
    sh = points[..., [L.LEFT_SHOULDER, L.RIGHT_SHOULDER], :2]
    return sh.mean(axis=-2), ok[..., L.LEFT_SHOULDER] & ok[..., L.RIGHT_SHOULDER]


def _spread(xy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RMS distance of the masked points to their centroid: xy (..., K, 2), mask (..., K)."""
    w = mask[..., None].astype(np.float64)
    n = np.maximum(w.sum(axis=-2), 1.0)  # (..., 1)
    centre = (xy * w).sum(axis=-2) / n
    sq = (((xy - centre[..., None, :]) ** 2).sum(axis=-1) * mask).sum(axis=-1)
    return np.sqrt(sq / n[..., 0])


def fit_global(
    drive: np.ndarray, reference: np.ndarray, min_score: float = DEFAULT_MIN_SCORE
) -> tuple[float, np.ndarray, int]:
    """Scale s, translation u (2,) and anchor frame t0 of the fit ``G(p) = s p + u``.

    t0 is the first driving frame sharing at least two confident torso points (:data:`TORSO`)
    with the reference; over those shared points ``S``,
    ``s = sqrt(sum_S |r_i - mean_S r|^2 / sum_S |d_i - mean_S d|^2)``. The translation puts
    the driver's neck at t0 on the reference's neck, ``u = neck_ref - s neck_drive(t0)``
    (when both have two confident shoulders), else the centroids of ``S`` on each other.
    drive (T, 133, 3), reference (133, 3).
    """
    torso = list(TORSO)
    ok_d = _confident(drive, min_score)  # (T, 133)
    ok_r = _confident(reference, min_score)  # (133,)
    shared = ok_d[:, torso] & ok_r[torso]  # (T, |TORSO|)
    spread_d = _spread(drive[:, torso, :2], shared)  # (T,)
    spread_r = _spread(np.broadcast_to(reference[torso, :2], drive[:, torso, :2].shape), shared)
    usable = (shared.sum(axis=1) >= 2) & (spread_d > _EPS) & (spread_r > _EPS)
    if not usable.any():
        raise InputError(
            "cannot fit the driving keypoints onto the reference: no driving frame shares two "
            f"confident (score >= {min_score:g}) torso points (nose, eyes, ears, shoulders, "
            "hips) with the reference"
        )
    t0 = int(np.argmax(usable))
    s = float(spread_r[t0] / spread_d[t0])
    neck_d, ok_nd = _neck(drive[t0], ok_d[t0])
    neck_r, ok_nr = _neck(reference, ok_r)
    if ok_nd and ok_nr:
        u = neck_r - s * neck_d
    else:
        m = shared[t0]
        u = reference[torso, :2][m].mean(axis=0) - s * drive[t0, torso, :2][m].mean(axis=0)
    return s, np.asarray(u, dtype=np.float64), t0


def _bone_vectors(points: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectors parent -> point (..., 133, 2) of every tree bone, and whether both ends are
    confident (..., 133). The head patch points take the nose as their parent."""
    neck, ok_neck = _neck(points, ok)
    par = np.where(PARENT == ROOT, 0, PARENT)
    parent_xy = points[..., par, :2]
    parent_ok = ok[..., par]
    is_root = PARENT == ROOT
    parent_xy[..., is_root, :] = neck[..., None, :]
    parent_ok = np.where(is_root, ok_neck[..., None], parent_ok)
    return points[..., :2] - parent_xy, ok & parent_ok


def bone_ratios(
    drive: np.ndarray,
    reference: np.ndarray,
    scale: float,
    anchor_frame: int,
    min_score: float = DEFAULT_MIN_SCORE,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Length ratio reference / driver of the bone ending in each point (133,), and the
    limbs the reference lacks.

    ``r_b = |r_c - r_p| / |d_c(t0) - d_p(t0)|`` (MusePose's per-bone scale). The driver's
    length is its median over the frames where both ends are confident when they are not
    at t0. The head patch shares one ratio, that of the RMS spreads of the head points
    confident in both. A bone the reference lacks (unconfident end or zero length) but the
    driver has gets ``scale`` and its limb is named in the returned list; a bone the driver
    never shows gets ``scale`` silently. drive (T, 133, 3), reference (133, 3).
    """
    ok_d = _confident(drive, min_score)
    ok_r = _confident(reference, min_score)
    vec_d, seen_d = _bone_vectors(drive, ok_d)  # (T, 133, 2), (T, 133)
    vec_r, seen_r = _bone_vectors(reference, ok_r)  # (133, 2), (133,)
    len_d = np.linalg.norm(vec_d, axis=-1)
    len_r = np.linalg.norm(vec_r, axis=-1)
    seen_d &= len_d > _EPS
    at_t0 = seen_d[anchor_frame]
    masked = np.where(seen_d, len_d, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: never seen
        median = np.nanmedian(masked, axis=0)
    drive_len = np.where(at_t0, len_d[anchor_frame], median)  # (133,), NaN: never seen
    has_d = np.isfinite(drive_len)
    has_r = seen_r & (len_r > _EPS)
    ratios = np.full(L.NUM_POINTS, float(scale))
    both = has_d & has_r
    ratios[both] = len_r[both] / drive_len[both]
    for k in _HAND_ROOTS:  # the body wrist -> hand wrist offset: global scale
        ratios[k] = scale
    head = [*HEAD_PATCH, L.NOSE]
    head_ratio, head_ok = _head_ratio(drive[:, head], reference[head], ok_d[:, head],
                                      ok_r[head], anchor_frame)  # fmt: skip
    lacking: dict[str, None] = {}
    ratios[list(HEAD_PATCH)] = head_ratio if head_ok else scale
    if not head_ok and ok_r[head].sum() < 3 and ok_d[:, list(HEAD_PATCH)].any():
        lacking["head"] = None
    for k in np.flatnonzero(has_d & ~has_r):
        if int(k) not in _HAND_ROOTS and int(k) not in HEAD_PATCH:
            lacking[_LIMB[int(k)]] = None
    return ratios, _merge_hands(tuple(lacking))


def _head_ratio(
    drive: np.ndarray, reference: np.ndarray, ok_d: np.ndarray, ok_r: np.ndarray, t0: int
) -> tuple[float, bool]:
    """Ratio of RMS spreads of the head points confident in both (at t0, else the median
    over the frames with at least three shared points)."""
    shared = ok_d & ok_r  # (T, K)
    sd = _spread(drive[..., :2], shared)
    sr = _spread(np.broadcast_to(reference[:, :2], drive[..., :2].shape), shared)
    usable = (shared.sum(axis=1) >= 3) & (sd > _EPS) & (sr > _EPS)
    if not usable.any():
        return 1.0, False
    if usable[t0]:
        return float(sr[t0] / sd[t0]), True
    return float(np.median(sr[usable] / sd[usable])), True


def _merge_hands(limbs: tuple[str, ...]) -> tuple[str, ...]:
    """'left thumb', ..., 'left little finger' (all five) -> 'left hand'."""
    out = list(limbs)
    for side in ("left", "right"):
        fingers = [f"{side} {f}" for f in _FINGERS]
        if all(f in out for f in fingers):
            out = [x for x in out if x not in fingers] + [f"{side} hand"]
    return tuple(out)


@contextlib.contextmanager
def caught_retarget_warnings() -> Iterator[list[str]]:
    """Collect the :class:`RetargetWarning` messages raised inside the block, every one of
    them (the list is filled when the block ends); other warnings are shown as usual. The
    commands print each as one ``signgen: warning:`` line, the Ray jobs record them."""
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RetargetWarning)
        yield messages
    for w in caught:
        if issubclass(w.category, RetargetWarning):
            messages.append(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def fit_retarget(
    drive: np.ndarray, reference: np.ndarray, min_score: float = DEFAULT_MIN_SCORE
) -> RetargetFit:
    """Measure the global fit and the bone ratios of ``drive`` (T, 133, 3) onto
    ``reference`` (133, 3); see :func:`fit_global` and :func:`bone_ratios`."""
    drive = np.asarray(drive, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if drive.ndim != 3 or drive.shape[1:] != (L.NUM_POINTS, 3):
        raise InputError(f"driving keypoints must be (T, 133, 3), got {drive.shape}")
    if reference.shape != (L.NUM_POINTS, 3):
        raise InputError(f"reference keypoints must be (133, 3), got {reference.shape}")
    s, u, t0 = fit_global(drive, reference, min_score)
    ratios, lacking = bone_ratios(drive, reference, s, t0, min_score)
    return RetargetFit(s, u, ratios, t0, lacking)


def apply_fit(
    drive: np.ndarray, fit: RetargetFit, min_score: float = DEFAULT_MIN_SCORE
) -> np.ndarray:
    """Walk the kinematic tree over all frames at once: (T, 133, 3) -> (T, 133, 3).

    Root: ``out_neck(t) = G(d_neck(t))``. Then, parents first, for each point c with parent
    p: ``out[c] = out[a] + k (d[c] - d[a])`` where a is p when p is confident in that frame
    (``k`` = the bone's ratio) and otherwise p's nearest confident ancestor (``k = s``); with
    no confident ancestor, ``out[c] = G(d[c])``. Scores are the driver's; points with score 0
    get x = y = 0.
    """
    d = np.asarray(drive, dtype=np.float64)
    xy = d[..., :2]  # (T, 133, 2)
    ok = _confident(d, min_score)  # (T, 133)
    s, u = fit.scale, fit.translation

    def glob(p: np.ndarray) -> np.ndarray:
        return s * p + u

    out = np.zeros_like(xy)
    # Per point: the position of its nearest confident ancestor-or-self, in the output and
    # in the driver, and whether there is one (per frame). Keyed by point; ROOT = the neck.
    neck, ok_neck = _neck(d, ok)
    anchor: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
        ROOT: (glob(neck), neck, ok_neck)
    }
    for c in _ORDER:
        p = int(PARENT[c])
        a_out, a_drv, a_ok = anchor[p]
        direct = ok_neck if p == ROOT else ok[:, p]  # (T,)
        k = np.where(direct, fit.ratios[c], s)[:, None]  # (T, 1)
        pos = np.where(a_ok[:, None], a_out + k * (xy[:, c] - a_drv), glob(xy[:, c]))
        out[:, c] = pos
        here = ok[:, c][:, None]
        anchor[c] = (np.where(here, pos, a_out), np.where(here, xy[:, c], a_drv),
                     ok[:, c] | a_ok)  # fmt: skip
    result = np.concatenate([out, d[..., 2:3]], axis=-1)
    result[d[..., 2] <= 0] = 0.0
    return result.astype(np.float32)


def retarget_points(
    drive: np.ndarray, reference: np.ndarray, min_score: float = DEFAULT_MIN_SCORE
) -> tuple[np.ndarray, RetargetFit]:
    """Retarget driving keypoints (T, 133, 3) onto a reference skeleton (133, 3), both in
    pixels (of their own frames). Returns the retargeted (T, 133, 3) in reference pixels and
    the fit. Warns (:class:`RetargetWarning`, once) when the reference lacks limbs that the
    driver has."""
    fit = fit_retarget(drive, reference, min_score)
    if fit.lacking:
        warnings.warn(
            f"the reference keypoints lack {', '.join(fit.lacking)} (score below "
            f"{min_score:g}): kept the driving sequence's length(s) there, scaled by the "
            f"global fit (x{fit.scale:.3f})",
            RetargetWarning,
            stacklevel=2,
        )
    return apply_fit(drive, fit, min_score), fit


def retarget_sequence(
    drive: KeypointSequence,
    reference_points: np.ndarray,
    reference_size: tuple[int, int] | None = None,
    *,
    min_score: float = DEFAULT_MIN_SCORE,
) -> KeypointSequence:
    """``drive`` performed by the skeleton of ``reference_points`` (133, 3): the reference's
    bone lengths, position and size in its frame; the driver's joint angles and timing.

    ``reference_size`` (width, height) is the frame the reference points are measured in
    (default: the driver's); the result is in pixels of that frame, at the driver's fps.
    The fit is recorded in ``meta["retarget"]``.
    """
    ref = np.asarray(reference_points, dtype=np.float32)
    if ref.shape != (L.NUM_POINTS, 3) or not np.isfinite(ref).all():
        raise InputError(
            f"reference keypoints must be finite numbers of shape (133, 3), got {ref.shape}"
        )
    width, height = reference_size if reference_size is not None else drive.size
    points, fit = retarget_points(drive.points, ref, min_score)
    meta = dict(drive.meta)
    meta["retarget"] = {
        "scale": round(fit.scale, 6),
        "anchor_frame": fit.anchor_frame,
        "reference_size": [int(width), int(height)],
        "lacking": list(fit.lacking),
    }
    return KeypointSequence(points, width, height, drive.fps, drive.layout, meta)


# ---- reading a reference -----------------------------------------------------------------

_VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")


def is_media(path: str | Path) -> bool:
    """True when ``path`` is an image, a video (by suffix) or a folder of frame images."""
    from signgen.video import is_image_file

    p = Path(path)
    if p.is_dir():
        return any(is_image_file(f) for f in p.iterdir()) and not any(p.glob("*.json"))
    return is_image_file(p) or p.suffix.lower() in _VIDEO_SUFFIXES


def load_reference(
    path: str | Path,
    *,
    sample: str | None = None,
    size: tuple[int, int] | None = None,
    extractor: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """The reference skeleton: (133, 3) keypoints and the (width, height) of their frame.

    ``path`` is a keypoint file in any format signgen reads (its first frame; ``sample``
    and ``size`` as for :func:`signgen.keypoints.load_keypoints`) or an image, video or
    frame folder, whose first frame's keypoints come from ``extractor`` (frame (H, W, 3)
    uint8 RGB -> (133, 3); default: the ``auto`` pose model of
    :func:`signgen.keypoints.first_frame.first_frame_keypoints`).
    """
    from signgen.keypoints.first_frame import first_frame_keypoints
    from signgen.keypoints.io import load_keypoints

    p = Path(path)
    if not p.exists():
        raise InputError(f"reference not found: {p}")
    if not is_media(p):
        seq = load_keypoints(p, sample=sample, size=size)
        return seq.points[0].copy(), seq.size
    fix = (
        f"extract them where a pose model sees the signer (`signgen keypoints extract --video "
        f"{p} -o ref.json`) and pass the keypoint file"
    )
    return first_frame_keypoints(p, extractor, fix=fix)
