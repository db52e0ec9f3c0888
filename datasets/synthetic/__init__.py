"""Synthetic pediatric AP pelvis films ("phantoms") with exact hip keypoints.

A phantom is drawn from a small anatomical model of a child's pelvis (3 months to 4 years):
iliac wings fanning out to the crests, the acetabular roof and the triradiate (Y) cartilage,
ischium and pubis around the obturator foramina, sacrum and lower lumbar spine, femora with
the flared metaphysis, greater trochanter, calcar and tapering shaft, the cartilaginous heads
with an ossific nucleus (absent in the youngest), the soft-tissue envelope of abdomen,
buttocks and thighs, bowel gas, and often a gonad shield, side markers and collimation. The
film's photometry (exposure, gamma, scatter haze, blur, noise and grain, JPEG artefacts) is
randomised. The pose (scale, position, H-line tilt) and the hip geometry (AI, roof length,
H-point and head-centre offsets) are sampled from distributions fitted to real labels
(``datasets/phantom_stats.json``, see ``stats.py``); the IHDI grade of each hip follows the
requested grade mix, and the keypoints are computed from the geometry, never from pixels.

Modules: ``anatomy`` (sampled patient), ``shapes`` (outlines and keypoints), ``render``
(pose, painting, films), ``paint`` (attenuation of each structure), ``photometry``,
``writer`` (dataset folders, contact sheets), ``stats`` (real statistics and their fit).

Public API:

- ``render_phantom(rng, size, layout) -> (image uint8 (H, W), keypoints (N, 2), boxes)``
- ``plan_film(rng, size, layout) -> (Film without image, context)``: geometry only (fast)
- ``generate_dataset(out, n, seed=0, size=512, layout="ihdi12", ...) -> Path``
- ``contact_sheet(dataset_dir, out_png, n=16, draw_keypoints=True) -> Path``
- ``fit_stats(label_dir)``, ``load_stats(path=None)``

``python -m datasets.synthetic --contact_sheet out.png DATASET`` writes a contact sheet;
``python -m datasets.synthetic --fit_stats LABEL_DIR --out datasets/phantom_stats.json`` fits
the statistics.
"""
from datasets.synthetic.anatomy import (AI_RANGE, DEFAULT_GRADE_MIX, GRADE_MARGIN, HipAnatomy, PelvisAnatomy,
                                        clip_to_grade, jitter_anatomy, parse_grade_mix, sample_anatomy,
                                        sample_hpoint)
from datasets.synthetic.render import Film, Painter, plan_film, render_film, render_phantom
from datasets.synthetic.shapes import HipShapes, hip_box, hip_shapes, layout_keypoints
from datasets.synthetic.stats import (QUANTITIES, fit_stats, load_stats, quantities_from_keypoints,
                                      read_real_labels, write_stats)
from datasets.synthetic.writer import METADATA_COLUMNS, contact_sheet, draw_annotations, generate_dataset


__all__ = ["AI_RANGE", "DEFAULT_GRADE_MIX", "GRADE_MARGIN", "HipAnatomy", "PelvisAnatomy", "clip_to_grade",
           "jitter_anatomy", "parse_grade_mix", "sample_anatomy", "sample_hpoint", "Film", "Painter",
           "plan_film", "render_film", "render_phantom", "HipShapes", "hip_box", "hip_shapes",
           "layout_keypoints", "QUANTITIES", "fit_stats", "load_stats", "quantities_from_keypoints",
           "read_real_labels", "write_stats", "METADATA_COLUMNS", "contact_sheet", "draw_annotations",
           "generate_dataset"]
