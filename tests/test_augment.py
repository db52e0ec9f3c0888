"""datasets.augment: photometric operations keep shape and dtype, are the identity at strength 0,
are deterministic for a seeded rng, change the image at strength > 0 and do not move structures."""
import numpy as np
import pytest

from datasets.augment import DOMAIN_RANDOMISATION, OPERATIONS, PhotometricAug


def crop_u8(size=96, disc=True):
    """A gray crop with a smooth gradient and (optionally) a bright disc off centre at (60, 35)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = 60 + 80 * xx / size + 100 * disc * (((xx - 60) ** 2 + (yy - 35) ** 2) < 12 ** 2)
    return np.clip(img, 0, 255).astype(np.uint8)


def weighted_centroid(diff):
    w = np.abs(diff.astype(np.float64))
    yy, xx = np.mgrid[0:w.shape[0], 0:w.shape[1]]
    return np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()


@pytest.mark.parametrize("name", sorted(OPERATIONS))
@pytest.mark.parametrize("kind", ["uint8", "float32"])
def test_shape_dtype_identity_determinism(name, kind):
    op = OPERATIONS[name]
    img = crop_u8()
    if kind == "float32":
        img = img.astype(np.float32) / 255.0
    out0 = op(img, np.random.default_rng(0), 0.0)
    assert out0.dtype == img.dtype and out0.shape == img.shape
    assert np.array_equal(out0, img) and out0 is not img                   # strength 0: identity
    a = op(img, np.random.default_rng(5), 1.0)
    b = op(img, np.random.default_rng(5), 1.0)
    assert a.dtype == img.dtype and a.shape == img.shape
    assert np.array_equal(a, b)                                             # seeded: deterministic
    if kind == "float32":
        assert a.min() >= 0.0 and a.max() <= 1.0
    # at full strength each operation changes the image for most seeds
    changed = [not np.array_equal(op(img, np.random.default_rng(s), 1.0), img) for s in range(10)]
    assert sum(changed) >= 5, (name, changed)


def test_strength_zero_draws_nothing():
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    for op in OPERATIONS.values():
        op(crop_u8(), rng, 0.0)
    assert rng.bit_generator.state == state


def test_larger_strength_larger_change():
    img = crop_u8()
    for name in ("contrast_gamma", "gaussian_blur", "noise", "jpeg"):
        diffs = []
        for s in (0.1, 1.0):
            d = [np.abs(OPERATIONS[name](img, np.random.default_rng(i), s).astype(float) - img).mean()
                 for i in range(20)]
            diffs.append(np.mean(d))
        assert diffs[1] > diffs[0], (name, diffs)


def test_photometric_aug_chain():
    img = crop_u8()
    assert np.array_equal(PhotometricAug()(img, np.random.default_rng(0)), img)
    assert not PhotometricAug().enabled and DOMAIN_RANDOMISATION.enabled
    aug = PhotometricAug(contrast_gamma=0.5, equalize=0.5, gaussian_blur=0.5, noise=0.5, jpeg=0.5)
    outs = [aug(img, np.random.default_rng(3)) for _ in range(2)]
    assert np.array_equal(outs[0], outs[1]) and outs[0].dtype == np.uint8 and outs[0].shape == img.shape
    assert not np.array_equal(outs[0], aug(img, np.random.default_rng(4)))
    # pixels change, structures stay put: with the same draws, the augmented image with the disc
    # minus the one without it is centred on the disc (60, 35) to within half a pixel (equalisation
    # is left out here: it remaps the two images' gray levels differently)
    plain = crop_u8(disc=False)
    local = PhotometricAug(contrast_gamma=0.5, gaussian_blur=1.0, noise=0.5, jpeg=0.5)
    for i in range(10):
        diff = local(img, np.random.default_rng(i)).astype(float) - local(plain, np.random.default_rng(i))
        assert np.linalg.norm(weighted_centroid(diff) - [60, 35]) < 0.5, i
    with pytest.raises(ValueError):
        PhotometricAug(noise=-0.1)
    with pytest.raises(ValueError):
        OPERATIONS["noise"](np.zeros((4, 4, 3), np.uint8), np.random.default_rng(0), 0.5)
