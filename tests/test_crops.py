"""The training crop dataset: exact mappings, augmentation that moves keypoints with the
image content, mirrored right hips that look like left hips, reproducible epochs."""
import cv2
import numpy as np
import torch
import pytest

from datasets.crops import (Augment, EpochSampler, HipCropDataset, crop_to_image_points, preprocess_crop)
from datasets.formats import HipRecord, load_dataset
from datasets.layouts import get_layout, mirror_image_keypoints
from utils.cropping import apply_matrix, crop_points_to_side, side_crop_matrix, warp
from tests.helpers import make_tiny_dataset


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
    root = make_tiny_dataset(tmp_path_factory.mktemp("crops") / "ds", n=6, size=160, seed=3)
    return load_dataset(root, require_annotations=True, require_boxes=True)


def _dot_image(tmp_path, kps, size=256, radius=3, name="dots"):
    """Black image with a bright disc at every keypoint; returns its path."""
    img = np.zeros((size, size), np.uint8)
    for x, y in kps:
        cv2.circle(img, (int(round(x)), int(round(y))), radius, 255, -1)
    path = tmp_path / f"{name}.png"
    cv2.imwrite(str(path), img)
    return path


def _record_from_points(tmp_path, kps, size=256, margin=14, name="dots", image=None):
    lay = get_layout("ihdi12")
    boxes = {}
    for side in ("left", "right"):
        p = kps[lay.side_slice(side)]
        boxes[side] = np.array([*(p.min(0) - margin), *(p.max(0) + margin)])
    if image is None:
        path = _dot_image(tmp_path, kps, size, name=name)
    else:
        path = tmp_path / f"{name}.png"
        cv2.imwrite(str(path), image)
    return HipRecord(stem=name, image_path=path, keypoints=np.asarray(kps, float), boxes=boxes)


def _left_points(rng, size=256):
    """Six left-hip points (layout order) in the image-left half, well apart."""
    base = np.array([[60, 100], [80, 92], [104, 104], [66, 140], [80, 134], [94, 140]], float)
    return base + rng.uniform(-4, 4, base.shape)


def test_validation_sample_maps_back_exactly(tiny_records):
    ds = HipCropDataset(tiny_records, input_size=64, side="left", mirror=True, crop_expand=0.1)
    lay = ds.layout
    assert len(ds) == 2 * len(tiny_records)
    by_stem = {r.stem: r for r in tiny_records}
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        s = ds.samples[i]
        gt = by_stem[s.stem].keypoints[lay.side_slice(s.side)]
        back = crop_points_to_side(item["keypoints"].numpy().astype(float), item["matrix"].numpy(),
                                   bool(item["mirrored"]), lay)
        np.testing.assert_allclose(back, gt, atol=1e-3)
        np.testing.assert_array_equal(item["image_kps"].numpy(), gt)
        # the crop is exactly what prediction computes from the same box
        M = side_crop_matrix(by_stem[s.stem].boxes[s.side], 64, 0.1, s.mirrored)
        np.testing.assert_allclose(item["matrix"].numpy(), M)
        from datasets.image_io import read_image
        expect = preprocess_crop(warp(read_image(by_stem[s.stem].image_path)[0], M, 64))
        np.testing.assert_array_equal(item["image"].numpy(), expect)
        assert item["image"].shape == (3, 64, 64)
        seen.add((s.side, s.mirrored))
    assert seen == {("left", False), ("right", True)}


def test_augmented_keypoints_follow_the_image_content(tmp_path):
    rng = np.random.default_rng(0)
    left = _left_points(rng)
    kps = np.concatenate([left, mirror_image_keypoints(np.concatenate([left, left]), 256)[6:]])
    rec = _record_from_points(tmp_path, kps)
    aug = Augment(rot=30, shift=8, scale=0.15, box_jitter=0.08)
    ds = HipCropDataset([rec], input_size=96, side="left", mirror=True, augment=aug, seed=5)
    hits, total, draws = 0, 0, set()
    for epoch in range(12):
        for i in range(len(ds)):
            crop, M = ds.crop(epoch * len(ds) + i)
            item = ds[epoch * len(ds) + i]
            np.testing.assert_allclose(item["matrix"].numpy(), M)
            draws.add(round(float(M[0, 0]), 6))
            pts = item["keypoints"].numpy()
            # the mapping is exact: back through the augmented matrix lands on the annotation
            back = crop_points_to_side(pts.astype(float), M, ds.samples[i].mirrored, ds.layout)
            np.testing.assert_allclose(back, ds.samples[i].image_kps, atol=1e-3)
            for x, y in pts:
                xi, yi = int(round(x)), int(round(y))
                if 1 <= xi < 95 and 1 <= yi < 95:
                    total += 1
                    hits += crop[yi, xi] > 150
            # and the bright pixels are the dots: a pixel far from every dot (either side) is dark
            dots = apply_matrix(M, kps)
            yy, xx = np.mgrid[0:96, 0:96]
            far = np.min(np.hypot(xx[..., None] - dots[:, 0], yy[..., None] - dots[:, 1]), axis=-1) > 6
            assert crop[far].max() < 40
    assert total > 100 and hits == total
    assert len(draws) > 10  # a fresh draw per sample per epoch


def test_augmentation_is_a_function_of_seed_epoch_and_index(tiny_records):
    mk = lambda seed: HipCropDataset(tiny_records, 64, augment=Augment(), seed=seed)  # noqa: E731
    a, b, c = mk(1), mk(1), mk(2)
    n = len(a)
    np.testing.assert_array_equal(a.crop(n + 3)[0], b.crop(n + 3)[0])
    assert not np.allclose(a.crop(n + 3)[1], a.crop(2 * n + 3)[1])  # another epoch, another draw
    assert not np.allclose(a.crop(n + 3)[1], c.crop(n + 3)[1])      # another seed, another draw
    # the cached base is large enough: a maximal draw shows no black corner of the crop
    assert a.samples[0].pixels.shape[0] >= Augment().context(64) > 64


def test_mirrored_right_hip_is_a_left_hip(tmp_path):
    """A left-right symmetric image: the mirrored right crop equals the left crop, and its
    targets equal the left targets only because the mirror permutation is applied."""
    rng = np.random.default_rng(1)
    W = 256
    left = _left_points(rng)
    kps = mirror_image_keypoints(np.concatenate([left, left]), W)   # right block = mirrored left
    kps[:6] = left
    img = rng.integers(0, 255, (W, W), dtype=np.uint8)
    img[:, W // 2:] = img[:, :W // 2][:, ::-1]                       # x -> W - 1 - x symmetric
    rec = _record_from_points(tmp_path, kps, image=img, name="sym")
    lay = get_layout("ihdi12")
    # boxes symmetric too
    b = rec.boxes["left"]
    rec.boxes["right"] = np.array([W - 1 - b[2], b[1], W - 1 - b[0], b[3]])
    ds = HipCropDataset([rec], input_size=64, side="left", mirror=True)
    (left_s, right_s) = ds.samples
    assert (left_s.side, left_s.mirrored, right_s.side, right_s.mirrored) == ("left", False, "right", True)
    li, ri = ds[0], ds[1]
    np.testing.assert_allclose(ri["keypoints"].numpy(), li["keypoints"].numpy(), atol=1e-3)
    assert np.abs(li["image"].numpy() - ri["image"].numpy()).max() < 0.1
    # without the permutation the right points would not line up (points 0 and 2 swap)
    raw = ri["matrix"].numpy()
    unpermuted = (kps[lay.side_slice("right")] @ raw[:2, :2].T + raw[:2, 2])
    assert np.abs(unpermuted - li["keypoints"].numpy()).max() > 10
    # a right-side model: the right hip as is, the left hip mirrored
    dr = HipCropDataset([rec], input_size=64, side="right", mirror=True)
    assert [(s.side, s.mirrored) for s in dr.samples] == [("right", False), ("left", True)]
    np.testing.assert_allclose(dr[1]["keypoints"].numpy(), dr[0]["keypoints"].numpy(), atol=1e-3)
    # no mirror: one side only
    assert len(HipCropDataset([rec], input_size=64, side="left", mirror=False)) == 1


def test_batched_map_back(tiny_records):
    ds = HipCropDataset(tiny_records, input_size=64)
    items = [ds[i] for i in range(4)]
    pts = crop_to_image_points(np.stack([it["keypoints"].numpy() for it in items]),
                               np.stack([it["matrix"].numpy() for it in items]),
                               [bool(it["mirrored"]) for it in items], ds.layout)
    np.testing.assert_allclose(pts, np.stack([it["image_kps"].numpy() for it in items]), atol=1e-3)


def test_epoch_sampler_order():
    s = EpochSampler(7, shuffle=True, seed=3)
    s.set_epoch(2)
    e2 = list(s)
    assert sorted(e2) == list(range(14, 21))
    s.set_epoch(3)
    assert sorted(list(s)) == list(range(21, 28))
    s2 = EpochSampler(7, shuffle=True, seed=3)
    s2.set_epoch(2)
    assert list(s2) == e2
    plain = EpochSampler(5, shuffle=False)
    assert list(plain) == [0, 1, 2, 3, 4]


def test_unusable_records_are_skipped(tiny_records, tmp_path):
    from utils.errors import ProblemLog, UserError
    bad = HipRecord(stem="gone", image_path=tmp_path / "gone.png", keypoints=tiny_records[0].keypoints,
                    boxes=tiny_records[0].boxes)
    nolabel = HipRecord(stem="nolabel", image_path=tiny_records[0].image_path)
    problems = ProblemLog()
    ds = HipCropDataset([bad, nolabel, *tiny_records[:2]], input_size=64, problems=problems)
    assert len(ds) == 4 and len(problems) == 2
    assert any("gone.png" in item for item, _ in problems.items)
    with pytest.raises(UserError):
        HipCropDataset([bad], input_size=64, layout="ihdi12")


def test_cached_base_covers_every_draw(tmp_path):
    """On a uniform image much larger than the crop's context, no augmented crop shows a
    black (outside-the-base) pixel, even at the extreme draws."""
    kps = np.concatenate([_left_points(np.random.default_rng(2)) + 200, _left_points(np.random.default_rng(3)) + 300])
    img = np.full((700, 700), 200, np.uint8)
    rec = _record_from_points(tmp_path, kps, image=img, name="flat")
    aug = Augment(rot=10, shift=20, scale=0.1, box_jitter=0.05)
    ds = HipCropDataset([rec], input_size=64, side="left", mirror=False, augment=aug)
    assert ds.samples[0].pixels.shape == (aug.context(64),) * 2
    lows = [ds.crop(e)[0].min() for e in range(300)]
    assert min(lows) > 150


def test_photometric_augmentation_changes_pixels_not_keypoints(tiny_records):
    """Domain randomisation alters the crop's gray levels, never its geometry: with the same
    seed, the keypoints and matrices equal those of the purely geometric augmentation."""
    from datasets.augment import PhotometricAug
    geo = Augment(rot=10, shift=5)
    pho = Augment(rot=10, shift=5, photometric=PhotometricAug(contrast_gamma=1.0, noise=1.0, gaussian_blur=1.0))
    a = HipCropDataset(tiny_records, 64, augment=geo, seed=3)
    b = HipCropDataset(tiny_records, 64, augment=pho, seed=3)
    sa, sb = a[0], b[0]
    assert torch.equal(sa["keypoints"], sb["keypoints"])
    assert torch.equal(sa["matrix"], sb["matrix"])
    assert not torch.equal(sa["image"], sb["image"])
    # deterministic per (seed, epoch, index)
    assert torch.equal(b[0]["image"], HipCropDataset(tiny_records, 64, augment=pho, seed=3)[0]["image"])


# ------------------------------------------------------------------ the training flip (--hflip)
def _flip_pairs(ds_plain, ds_flip, epochs=4):
    """(plain item, item of the hflip dataset) for every sample of ``epochs`` epochs."""
    n = len(ds_plain)
    return [(ds_plain[e * n + i], ds_flip[e * n + i]) for e in range(epochs) for i in range(n)]


@pytest.mark.parametrize("stage", ["hip", "roof"])
def test_hflip_mirrors_the_crop_and_permutes_its_points_as_the_flip_test_undoes(tiny_records, stage):
    """A flipped sample is the same draw's crop mirrored (x -> S - 1 - x), its points mirrored and
    permuted by the mirror permutation; the codec's flip_outputs (what --flip_test applies) maps
    its targets back to the unflipped sample's exactly, keypoint weights included; and the
    flipped points still map back to the annotation through the item's matrix."""
    from datasets.crops import roof_crop_dataset
    from models.codecs import build_codec

    size, geo = 64, dict(rot=10.0, shift=5.0, scale=0.1)

    def make(hflip):
        aug = Augment(**geo, hflip=hflip)
        if stage == "roof":
            return roof_crop_dataset(tiny_records, "ihdi12", size, 0.5, augment=aug, seed=7, threads=1)
        return HipCropDataset(tiny_records, size, augment=aug, seed=7, threads=1)

    plain, half = make(0.0), make(0.5)
    lay = plain.layout
    perm = list(lay.mirror_perm)
    codec = build_codec("direct_regression", size)
    n_flipped = 0
    for a, b in _flip_pairs(plain, half):
        # the affine draw comes first, so hflip 0.5 keeps the unflipped samples exactly as hflip 0 serves them
        np.testing.assert_array_equal(b["image_kps"].numpy(), a["image_kps"].numpy())
        if not b["flipped"]:
            np.testing.assert_array_equal(b["image"].numpy(), a["image"].numpy())
            np.testing.assert_array_equal(b["keypoints"].numpy(), a["keypoints"].numpy())
            assert bool(b["mirrored"]) == bool(a["mirrored"])
            continue
        n_flipped += 1
        assert bool(b["mirrored"]) != bool(a["mirrored"])
        # the pixels: the unflipped crop mirrored (the same warp, up to cv2's fixed-point interpolation)
        assert np.abs(b["image"].numpy() - a["image"].numpy()[..., ::-1]).mean() < 0.02
        # the labels: point k = the unflipped crop's point perm[k], mirrored
        want = a["keypoints"].numpy()[perm].astype(float)
        want[:, 0] = (size - 1) - want[:, 0]
        np.testing.assert_allclose(b["keypoints"].numpy(), want, atol=1e-4)
        # the flip test's mapping undoes it: targets and keypoint weights back to the plain sample's
        t_flip, w_flip = codec.encode(b["keypoints"][None])
        t_plain, w_plain = codec.encode(a["keypoints"][None])
        back = codec.decode(codec.flip_outputs(t_flip, perm))[0]
        torch.testing.assert_close(back, a["keypoints"][None], atol=1e-4, rtol=0)
        torch.testing.assert_close(w_flip[:, perm], w_plain)
        # and the matrix (mirror composed in) maps the flipped points back to the annotation
        img = crop_to_image_points(b["keypoints"].numpy()[None].astype(float), b["matrix"].numpy()[None],
                                   [bool(b["mirrored"])], lay)[0]
        np.testing.assert_allclose(img, b["image_kps"].numpy(), atol=1e-3)
    assert 0.25 * 4 * len(plain) < n_flipped < 0.75 * 4 * len(plain)


def test_hflip_is_off_by_default_and_a_full_image_model_refuses_it():
    from utils.config import TrainConfig
    from utils.errors import UserError

    assert Augment().hflip == 0.0 and TrainConfig().data.hflip == 0.0
    assert Augment(rot=0, shift=0, hflip=0.5).enabled and not Augment(rot=0, shift=0).enabled
    assert TrainConfig.from_flat({"hflip": 0.5}).to_flat()["hflip"] == 0.5
    with pytest.raises(UserError, match="full_image"):
        TrainConfig.from_flat({"hflip": 0.5, "pipeline": "full_image"})
    with pytest.raises(UserError, match="probability"):
        TrainConfig.from_flat({"hflip": 1.5})
