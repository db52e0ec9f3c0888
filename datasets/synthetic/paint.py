"""Attenuation map of the phantom's anatomy (pelvis frame, unit D; x right, y down, origin
between the triradiate points). Soft tissue and bone are summed; ``photometry`` turns the
sum into film density."""
from __future__ import annotations

import cv2
import numpy as np

from datasets.layouts import SIDES
from datasets.synthetic.photometry import smooth_noise, uniform
from datasets.synthetic.shapes import chaikin, ellipse


def _body_outline(anat, rng) -> np.ndarray:
    """Skin outline: abdomen and flanks, hips, two thighs separated below the perineum."""
    bw = anat.body_w
    thigh = uniform(rng, 1.2, 1.45) * bw
    half = np.array([[-1.45 * bw, -3.5], [-1.45 * bw, -1.2], [-1.55 * bw, -0.3], [-1.6 * bw, 0.35],
                     [-thigh, 1.2], [-0.92 * thigh, 3.5], [-0.22, 3.5], [-0.12, 1.9],
                     [-0.05, uniform(rng, 1.15, 1.45)], [0.0, 1.2]])
    return chaikin(np.concatenate([half, (half * [-1, 1])[::-1][1:]]), 2, closed=True)


def soft_tissue(rng, P, anat) -> np.ndarray:
    W, H = P.W, P.H
    body = _body_outline(anat, rng)
    m_body = P.mask([body])
    dist = cv2.distanceTransform((m_body > 0.5).astype(np.uint8), cv2.DIST_L2, 3) / P.scale
    soft = np.sqrt(np.minimum(dist / 0.5, 1.0)).astype(np.float32)           # thicker away from the skin
    fat = np.clip(1.0 - np.abs(dist - 0.1) / 0.07, 0, 1).astype(np.float32)   # subcutaneous fat layer
    soft = P.blur(soft * m_body, 0.02) - np.float32(uniform(rng, 0.03, 0.1)) * P.blur(fat, 0.02)
    glutes = [ellipse((sx * uniform(rng, 0.5, 0.65), uniform(rng, 0.75, 1.0)), uniform(rng, 0.55, 0.7),
                      uniform(rng, 0.4, 0.5), sx * uniform(rng, 10, 25), 40) for sx in (-1, 1)]
    soft += np.float32(uniform(rng, 0.15, 0.3)) * P.blur(P.mask(glutes), 0.012)   # buttock folds: arcs
    thighs = [ellipse((sx * uniform(rng, 0.85, 1.0), 1.8), 0.5, 1.3, -sx * 4, 32) for sx in (-1, 1)]
    soft += 0.1 * P.blur(P.mask(thighs), 0.1)
    soft += 0.12 * P.blur(P.mask([ellipse((0, 0.25), 0.3, 0.22, 0, 24)]), 0.06)    # bladder
    soft *= 1.0 + 0.06 * smooth_noise(rng, H, W, 6)
    soft *= np.float32(uniform(rng, 0.35, 0.5))
    n_gas = int(rng.integers(4, 16))                 # bowel gas in the abdomen and over the sacrum
    gas = [ellipse((uniform(rng, -1.0, 1.0), uniform(rng, -2.2, -0.4)), uniform(rng, 0.03, 0.13),
                   uniform(rng, 0.03, 0.09), uniform(rng, 0, 180), 20) for _ in range(n_gas)]
    soft -= np.float32(uniform(rng, 0.05, 0.16)) * P.blur(P.mask(gas), 0.012)
    belly = P.blur(P.mask([ellipse((0, -1.3), 1.1, 1.0, 0, 32)]), 0.15)
    mottle = np.clip(smooth_noise(rng, H, W, int(rng.integers(30, 60))) - 0.5, 0, None)
    soft -= np.float32(uniform(rng, 0.06, 0.16)) * belly * mottle
    return soft


def spine(rng, P, anat) -> np.ndarray:
    """Sacrum (segments, foramina) between the wings and the lumbar vertebrae above it."""
    sw = anat.sacrum_w
    s_half = np.array([[-0.3, -1.0], [-0.33, -0.88], [-0.29, -0.72], [-0.21, -0.6], [-0.13, -0.5],
                       [-0.07, -0.44], [-0.03, -0.4]]) * [sw, 1]     # ends above the pelvic inlet
    sacrum = chaikin(np.concatenate([s_half, (s_half * [-1, 1])[::-1]]), 2, closed=True)
    seg_lines = [np.array([[-0.4 * sw * f, y], [0.4 * sw * f, y]])
                 for y, f in ((-0.8, 0.9), (-0.7, 0.75), (-0.6, 0.55), (-0.51, 0.4))]
    foramina = [ellipse((sx * 0.16 * sw * f, y), 0.03 * f, 0.026, 0, 14)
                for y, f in ((-0.84, 1.0), (-0.74, 0.85), (-0.65, 0.65)) for sx in (-1, 1)]
    out = 0.34 * P.blur(P.mask([sacrum], holes=foramina), 0.02) * (1.0 - 0.45 * P.mask(lines=seg_lines,
                                                                                       line_w=0.025))
    bodies, pedicles, procs, spinous = [], [], [], []
    y = -1.02
    k = 0
    while y > -4.0:
        hgt, half = 0.19 - 0.005 * k, 0.22 - 0.004 * k
        bodies.append(chaikin(np.array([[-half, y], [half, y], [half + 0.01, y - hgt],
                                        [-half - 0.01, y - hgt]]), 2, True))
        pedicles += [ellipse((sx * 0.14, y - hgt / 2), 0.035, 0.055, 0, 16) for sx in (-1, 1)]
        reach = 0.46 if k == 0 else 0.38
        procs += [np.array([[sx * 0.2, y - hgt * 0.45], [sx * reach, y - hgt * 0.65],
                            [sx * reach, y - hgt * 0.35], [sx * 0.2, y - hgt * 0.2]]) for sx in (-1, 1)]
        spinous.append(ellipse((0, y - hgt * 0.3), 0.035, 0.07, 0, 14))
        y -= hgt + 0.08
        k += 1
    out += 0.34 * P.mask(bodies) + 0.14 * P.mask(procs) + 0.2 * P.mask(lines=pedicles, line_w=0.02,
                                                                      closed_lines=True)
    out += 0.1 * P.mask(spinous)
    return 0.6 * P.blur(out, 0.015)


def hips(rng, P, shapes, maps) -> np.ndarray:
    """Ilia (wing, crest, body, roof and sourcil), ischia, pubes and femora of both sides."""
    W, H = P.W, P.H

    def both(attr):
        return [maps[s](getattr(shapes[s], attr)) for s in SIDES]

    bone = np.zeros((H, W), np.float32)
    ilium = P.blur(P.mask(both("ilium")), 0.006)
    dist = cv2.distanceTransform((ilium > 0.5).astype(np.uint8), cv2.DIST_L2, 3) / P.scale
    rim = np.exp(-dist / 0.05).astype(np.float32)                # thin wing: denser towards its rim
    bone += (0.2 + 0.24 * rim) * ilium * (1.0 + 0.25 * smooth_noise(rng, H, W, 14))
    bone += 0.24 * P.blur(P.mask(both("ilium_body")), 0.035) * ilium
    bone += 0.1 * P.mask(lines=both("ilium"), line_w=0.012, closed_lines=True) * ilium
    bone += roof_lines(rng, P, shapes, maps)
    bone += P.blur(0.42 * P.mask(both("ischium")) + 0.34 * P.mask(both("pubis"), holes=both("foramen")
                                                                   + both("ischium")), 0.008)
    femur = P.blur(P.mask(both("femur")), 0.004)
    fdist = cv2.distanceTransform((femur > 0.5).astype(np.uint8), cv2.DIST_L2, 3) / P.scale
    wall = np.exp(-fdist / 0.035).astype(np.float32)              # tubular bone: bright cortical walls
    medulla = P.blur(P.mask(both("medulla")), 0.02)
    bone += (0.5 + 0.3 * wall) * femur - 0.22 * medulla * femur
    bone += 0.32 * P.mask(both("meta_band"))
    soft = 0.08 * P.blur(P.mask(both("head")), 0.01)           # cartilaginous heads: barely denser
    nuclei = [maps[s](shapes[s].nucleus) for s in SIDES if shapes[s].nucleus is not None]
    if nuclei:
        bone += 0.6 * P.blur(P.mask(nuclei), 0.006)
    return bone + soft


def roof_fade(rng, parts: int) -> np.ndarray:
    """Weights of the roof strips from T to E. On most films the sourcil fades towards the
    lateral edge (by a random amount and profile), or is faint as a whole, so that a model must
    find the edge at the corner of the bone outline, not at the end of the bright line."""
    x = np.linspace(0.0, 1.0, parts)
    level = uniform(rng, 0.5, 1.2)
    if rng.random() < 0.7:
        return level * (1.0 - uniform(rng, 0.4, 1.0) * x ** uniform(rng, 0.7, 2.5))
    return np.full(parts, level)


def roof_lines(rng, P, shapes, maps) -> np.ndarray:
    """The sclerotic band along each roof and its thin dense cortical line (the sourcil)."""
    out = np.zeros((P.H, P.W), np.float32)
    for s in SIDES:
        sh = shapes[s]
        w = roof_fade(rng, len(sh.sourcil_parts))
        for wi, band, line in zip(w, sh.roof_band_parts, sh.sourcil_parts):
            out += np.float32(0.25 * (0.5 + 0.5 * wi)) * P.mask([maps[s](band)])
            out += np.float32(0.25 * wi) * P.mask([maps[s](line)])
    return out


def _shield(rng, P) -> np.ndarray:
    """A lead gonad shield over the symphysis (heart / triangle / rounded), most attenuating."""
    cx, cy = uniform(rng, -0.08, 0.08), uniform(rng, 0.45, 0.75)
    w = uniform(rng, 0.18, 0.3)
    kind = int(rng.integers(3))
    if kind == 0:                                                    # triangle, apex down
        poly = np.array([[cx - w, cy - 0.6 * w], [cx + w, cy - 0.6 * w], [cx, cy + 1.2 * w]])
    elif kind == 1:                                                  # heart
        poly = np.concatenate([ellipse((cx - 0.45 * w, cy - 0.2 * w), 0.55 * w, 0.5 * w, 0, 24),
                               ellipse((cx + 0.45 * w, cy - 0.2 * w), 0.55 * w, 0.5 * w, 0, 24)])
        poly = cv2.convexHull(np.concatenate([poly, [[cx, cy + 1.1 * w]]]).astype(np.float32))[:, 0]
    else:
        poly = ellipse((cx, cy), w, 0.8 * w, uniform(rng, -15, 15), 28)
    return uniform(rng, 1.5, 3.0) * P.mask([poly])


def _snaps(rng, P) -> np.ndarray:
    """Metal clothing snaps (rings), away from the hips."""
    out = np.zeros((P.H, P.W), np.float32)
    x0, y0 = uniform(rng, -0.9, 0.9), uniform(rng, -2.0, -0.8)
    rings = [ellipse((x0 + i * uniform(rng, 0.15, 0.3), y0), 0.06, 0.06, 0, 24) for i in range(int(rng.integers(1, 4)))]
    out += 2.0 * P.mask(lines=rings, line_w=0.025, closed_lines=True)
    return out


def draw_anatomy(rng, P, anat, shapes, maps) -> np.ndarray:
    soft = soft_tissue(rng, P, anat)
    bone = spine(rng, P, anat) + hips(rng, P, shapes, maps)
    bone *= 1.0 + 0.12 * smooth_noise(rng, P.H, P.W, 50) + 0.06 * smooth_noise(rng, P.H, P.W, 150)
    att = np.maximum(soft, 0) + bone
    if rng.random() < 0.3:
        att += _shield(rng, P)
    if rng.random() < 0.1:
        att += _snaps(rng, P)
    return P.blur(att, 0.003)

