"""datasets.dicom.read_dicom and its dispatch from datasets.image_io.read_image."""
import io
import logging

import cv2
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, RLELossless, generate_uid

from datasets.dicom import read_dicom
from datasets.image_io import read_image
from utils.errors import ItemError

DX = "1.2.840.10008.5.1.4.1.1.1.1"


def make_ds(arr, photometric, bits_stored, **tags):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DX
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.set_pixel_data(arr, photometric, bits_stored)
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


def save(ds, path):
    ds.save_as(path, enforce_file_format=True)
    return path


def test_monochrome1_16bit_inverted_orientation_spacing(tmp_path):
    a = np.full((40, 60), 60000, np.uint16)        # MONOCHROME1: high values are dark
    a[:4, :4] = 1000                               # low value -> bright, top-left
    a[-4:, 30:34] = 30000                          # mid gray, bottom middle
    a += np.arange(60, dtype=np.uint16)[None, :]   # a little texture
    p = save(make_ds(a, "MONOCHROME1", 16, PixelSpacing=[0.143, 0.143]), tmp_path / "m1.dcm")
    g, info = read_image(p)
    assert g.dtype == np.uint8 and g.shape == (40, 60)
    assert g[:4, :4].min() > 240 and np.median(g) < 15          # inverted: bright top-left, dark film
    assert 90 < g[-2, 31] < 170
    assert info["source"] == "dicom" and info["photometric"] == "MONOCHROME1" and info["bits_stored"] == 16
    assert info["pixel_spacing_mm"] == pytest.approx(0.143) and info["spacing_source"] == "PixelSpacing"


def test_monochrome2_8bit_imager_spacing_magnification(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(20, 200, (32, 48), dtype=np.uint8)
    a[0, 0] = 255
    ds = make_ds(a, "MONOCHROME2", 8, ImagerPixelSpacing=[0.2, 0.2], EstimatedRadiographicMagnificationFactor=1.25)
    g, info = read_dicom(save(ds, tmp_path / "m2.dcm"))
    assert np.array_equal(g, a)                     # 8-bit without VOI/rescale is kept as is
    assert info["pixel_spacing_mm"] == pytest.approx(0.16) and info["spacing_source"] == "ImagerPixelSpacing"
    assert "Magnification" in info["spacing_note"]
    # unequal spacings -> their mean, with a note; PixelSpacing wins over ImagerPixelSpacing
    ds.PixelSpacing = [0.1, 0.3]
    g, info = read_dicom(save(ds, tmp_path / "m2b.dcm"))
    assert info["pixel_spacing_mm"] == pytest.approx(0.2) and info["spacing_source"] == "PixelSpacing"
    assert "mean" in info["spacing_note"]
    del ds.PixelSpacing, ds.ImagerPixelSpacing
    assert read_dicom(save(ds, tmp_path / "m2c.dcm"))[1]["pixel_spacing_mm"] is None


def test_rgb_to_gray(tmp_path):
    a = np.zeros((20, 30, 3), np.uint8)
    a[0, 0] = (255, 0, 0)       # red, top-left
    a[-1, -1] = (0, 0, 255)     # blue, bottom-right
    a[5:10, 5:10] = 200
    g, info = read_dicom(save(make_ds(a, "RGB", 8), tmp_path / "rgb.dcm"))
    assert g.shape == (20, 30) and info["photometric"] == "RGB"
    assert np.array_equal(g, cv2.cvtColor(a, cv2.COLOR_RGB2GRAY))
    assert g[0, 0] == 76 and g[-1, -1] == 29 and g[7, 7] == 200      # channels read as R, G, B


def test_rescale_then_voi_window(tmp_path):
    a = np.full((32, 32), 1000, np.uint16)        # -> 1000 after rescale (2 * 1000 - 1000)
    a[:, 16:] = 1100                              # -> 1200
    a[0, 0], a[0, 1] = 0, 4095                    # extremes that a min-max stretch would keep
    a[2, 5] = 1050                                # -> 1100, the window centre
    ds = make_ds(a, "MONOCHROME2", 12, RescaleSlope=2, RescaleIntercept=-1000, RescaleType="US",
                 WindowCenter=1100, WindowWidth=200)
    g, info = read_dicom(save(ds, tmp_path / "w.dcm"))
    assert info["window"] == "voi"
    assert g[5:, :16].max() <= 3 and g[5:, 16:].min() >= 252           # the window spans the full range
    assert 110 < g[2, 5] < 145
    # without the window a percentile stretch is used: the two tissue levels stay apart but not saturated
    del ds.WindowCenter, ds.WindowWidth
    g2, info2 = read_dicom(save(ds, tmp_path / "nw.dcm"))
    assert info2["window"] == "percentile" and g2[5:, 16:].mean() - g2[5:, :16].mean() > 200


def test_signed_16bit_and_multiframe(tmp_path, caplog):
    a = np.zeros((3, 16, 24), np.int16)
    a[:, :2, :2] = 2000
    a[:, 8:, :] = -1000
    a[1] += 500                                   # frames differ
    p = save(make_ds(a, "MONOCHROME2", 16), tmp_path / "mf.dcm")
    with caplog.at_level(logging.WARNING, logger="hipkp"):
        g, info = read_dicom(p)
    assert "3 frames, using the first" in caplog.text and info["frames"] == 3
    assert g.shape == (16, 24) and g[0, 0] == 255 and g[-1, -1] == 0 and 60 < g[4, 10] < 120


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGBaseline8Bit])
def test_compressed_transfer_syntaxes(tmp_path, syntax):
    yy, xx = np.mgrid[:48, :64]
    a = ((xx * 3 + yy) % 256).astype(np.uint8)
    a[:6, :6] = 255
    ds = make_ds(a, "MONOCHROME2", 8)
    if syntax == JPEGBaseline8Bit:     # pydicom has no JPEG encoder: encapsulate an OpenCV JPEG
        ok, buf = cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 95])
        ds.PixelData = encapsulate([buf.tobytes()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    else:
        ds.compress(syntax)
    g, info = read_dicom(save(ds, tmp_path / "c.dcm"))
    assert info["transfer_syntax"] == str(syntax) and g.shape == a.shape
    assert np.abs(g.astype(int) - a).mean() < (3 if syntax == JPEGBaseline8Bit else 1e-9)
    assert g[:4, :4].min() > 240


def test_no_pixel_data_and_undecodable_raise_item_error(tmp_path):
    ds = make_ds(np.zeros((4, 4), np.uint8), "MONOCHROME2", 8)
    del ds.PixelData
    p = save(ds, tmp_path / "nopix.dcm")
    with pytest.raises(ItemError, match="nopix.dcm: DICOM has no pixel data"):
        read_dicom(p)
    ds = make_ds(np.zeros((16, 16), np.uint8), "MONOCHROME2", 8)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 not a codestream" * 4])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    p = save(ds, tmp_path / "broken.dcm")
    with pytest.raises(ItemError, match="broken.dcm: cannot decode DICOM pixel data"):
        read_image(p)
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 10)
    with pytest.raises(ItemError, match="junk.dcm"):
        read_image(tmp_path / "junk.dcm")


def test_dispatch_extensionless_and_preamble_only(tmp_path):
    a = np.zeros((10, 12), np.uint8)
    a[0, 0] = 250
    ds = make_ds(a, "MONOCHROME2", 8)
    p = tmp_path / "IM0001"                                # no extension, standard file with DICM
    save(ds, p)
    g, info = read_image(p)
    assert info["source"] == "dicom" and np.array_equal(g, a)
    # preamble + DICM but no file meta group (implicit VR body): the transfer syntax is inferred
    fp = DicomFileLike(io.BytesIO())
    fp.is_little_endian, fp.is_implicit_VR = True, True
    fp.write(b"\x00" * 128 + b"DICM")
    write_dataset(fp, Dataset({k: ds[k] for k in ds.keys()}))
    buf = fp.parent
    q = tmp_path / "bare"
    q.write_bytes(buf.getvalue())
    g, info = read_image(q)
    assert info["source"] == "dicom" and np.array_equal(g, a)


def test_real_jpeg2000_dicoms_match_jpegs(shared_dir):
    dcms = sorted((shared_dir / "real_xray" / "dicom").glob("*.dcm"))
    jpgs = {p.stem: read_image(p)[0] for p in (shared_dir / "real_xray" / "jpg").glob("*.jpg")}
    assert len(dcms) == 10
    namesake_best = 0
    for d in dcms:
        g, info = read_image(d)
        assert info["transfer_syntax"] == "1.2.840.10008.1.2.4.91" and info["photometric"] == "RGB"
        j = jpgs[d.stem]
        assert g.shape == j.shape and g.dtype == np.uint8
        corr = {s: np.corrcoef(g.ravel().astype(float), cv2.resize(im, g.shape[::-1]).ravel().astype(float))[0, 1]
                for s, im in jpgs.items()}
        best = max(corr, key=corr.get)
        assert corr[best] > 0.9, (d.name, corr[best])      # each DICOM is one of the JPEGs
        namesake_best += best == d.stem
    # the shared copy of 331_DDH_1.dcm holds the image of 331_DDH_12.jpg; the other 9 match their names
    assert namesake_best >= 9
