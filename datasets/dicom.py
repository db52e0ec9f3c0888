"""Read a DICOM radiograph as an 8-bit grayscale image (called by ``datasets.image_io.read_image``).

``read_dicom(path) -> (gray uint8 (H, W), info)``.

Decoding uses pydicom 3's ``pydicom.pixels`` with whatever plugins are installed:
native and RLE data decode with pydicom itself, JPEG baseline/extended and JPEG 2000
with Pillow or pylibjpeg-openjpeg. JPEG-LS and JPEG lossless need pylibjpeg-libjpeg,
pyjpegls or GDCM; without them such a file is reported as undecodable (the message
names the missing packages).

Display pipeline for grayscale data, in DICOM order:
1. Modality LUT or RescaleSlope/Intercept (``apply_modality_lut``).
2. VOI LUT or WindowCenter/WindowWidth (``apply_voi_lut``, first window), mapped from
   the VOI output range to 0..255. Without a VOI: 8-bit data without a rescale is
   kept as is; anything else is stretched between the 0.5 and 99.5 percentiles.
3. MONOCHROME1 is inverted so that bone is bright, as in MONOCHROME2.

Colour data (RGB, YBR_* converted to RGB by pydicom, PALETTE COLOR through its LUT)
becomes gray with OpenCV's luma weights. A multi-frame file gives its first frame
with a warning.

``info``: ``pixel_spacing_mm`` (float or None), ``spacing_source`` ("PixelSpacing",
"ImagerPixelSpacing" or None), ``spacing_note`` (when the two spacings differ or the
magnification factor was applied), ``photometric``, ``bits_stored``, ``frames``,
``transfer_syntax``, ``window`` ("voi", "none" or "percentile"), ``source`` = "dicom".
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from utils.errors import ItemError
from utils.fileio import one_line

log = logging.getLogger("hipkp")

ROBUST_PERCENTILES = (0.5, 99.5)


def _floats(value):
    """Positive finite floats of a DS/IS element value (single or multi-valued), else None."""
    if value is None:
        return None
    seq = [value] if isinstance(value, (str, bytes, int, float)) else value
    try:
        vals = [float(v) for v in seq]
    except (TypeError, ValueError):
        return None
    return vals if vals and all(np.isfinite(v) and v > 0 for v in vals) else None


def pixel_spacing(ds) -> Tuple[Optional[float], Optional[str], Optional[str]]:
    """``(spacing_mm, source, note)`` from PixelSpacing, else ImagerPixelSpacing divided by
    EstimatedRadiographicMagnificationFactor (when given). Unequal row/column spacings
    give their mean and a note."""
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        vals = _floats(ds.get(tag)) if tag in ds else None
        if not vals:
            continue
        row, col = vals[0], vals[1] if len(vals) > 1 else vals[0]
        notes = []
        spacing = row
        if not np.isclose(row, col, rtol=1e-6):
            spacing = (row + col) / 2
            notes.append(f"{tag} row {row:g} mm != column {col:g} mm: using their mean {spacing:g} mm")
        if tag == "ImagerPixelSpacing":
            mag = _floats(ds.get("EstimatedRadiographicMagnificationFactor"))
            if mag:
                spacing /= mag[0]
                notes.append(f"ImagerPixelSpacing divided by EstimatedRadiographicMagnificationFactor {mag[0]:g}")
        return float(spacing), tag, "; ".join(notes) or None
    return None, None, None


def _ensure_transfer_syntax(ds) -> None:
    """Files without file meta (just a preamble, or none, read with force=True) get the
    transfer syntax their dataset was actually encoded with, so pixel decoding works."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _window_range(ds, arr) -> Tuple[float, float]:
    """Output range of the dataset's VOI transform (what 0 and 255 stand for)."""
    from pydicom.pixels import apply_voi_lut

    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        # evaluate the LUT over every input it maps (LUTData may be stored as US values or OW bytes)
        n_entries, first = [int(v) for v in ds.VOILUTSequence[0].LUTDescriptor[:2]]
        out = apply_voi_lut(np.arange(first, first + (n_entries or 65536)), ds)
        return float(np.min(out)), float(np.max(out))
    ends = apply_voi_lut(np.array([-1e12, 1e12]), ds)   # the window clamps to its y_min / y_max
    return float(np.min(ends)), float(np.max(ends))


def _to_uint8_gray(arr, ds, path) -> Tuple[np.ndarray, str]:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    has_rescale = ("ModalityLUTSequence" in ds
                   or float(ds.get("RescaleSlope", 1) or 1) != 1 or float(ds.get("RescaleIntercept", 0) or 0) != 0)
    has_voi = ("VOILUTSequence" in ds) or ("WindowCenter" in ds and "WindowWidth" in ds)
    data = apply_modality_lut(arr, ds).astype(np.float64)
    if has_voi:
        try:
            out = apply_voi_lut(data, ds).astype(np.float64)
            lo, hi = _window_range(ds, data)
            if hi > lo:
                return np.clip((out - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8), "voi"
        except (ValueError, TypeError, IndexError, AttributeError) as e:
            log.warning("%s: ignoring unusable VOI LUT/window (%s); using a percentile window", path, e)
    if not has_rescale and arr.dtype.kind in "ui" and arr.min() >= 0 and arr.max() <= 255 \
            and int(ds.get("BitsStored", 8) or 8) <= 8:
        return arr.astype(np.uint8), "none"
    lo, hi = np.percentile(data, ROBUST_PERCENTILES)
    if hi <= lo:
        lo, hi = float(data.min()), float(data.max())
    if hi <= lo:
        return np.zeros(data.shape, np.uint8), "percentile"
    return np.clip((data - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8), "percentile"


def read_dicom(path) -> Tuple[np.ndarray, Dict]:
    """Decode a DICOM file to ``(gray uint8 (H, W), info)``; ``ItemError`` naming the file
    when it is unreadable, has no pixel data or cannot be decoded."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut, pixel_array

    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path), force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as e:
        raise ItemError(f"{path}: unreadable DICOM ({type(e).__name__}: {e})") from None
    if not any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ItemError(f"{path}: DICOM has no pixel data")
    _ensure_transfer_syntax(ds)
    tsyntax = str(ds.file_meta.TransferSyntaxUID)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            arr = pixel_array(ds, index=0) if frames > 1 else ds.pixel_array
    except Exception as e:   # decoders raise many types (RuntimeError, ValueError, NotImplementedError, ...)
        msg = one_line(e, limit=None, with_type=False)
        missing = ""
        try:
            from pydicom.pixels import get_decoder
            dec = get_decoder(ds.file_meta.TransferSyntaxUID)
            if not dec.is_available:
                missing = f"; install one of: {', '.join(dec.missing_dependencies)}"
        except Exception:
            pass
        raise ItemError(f"{path}: cannot decode DICOM pixel data ({tsyntax}: {msg}{missing})") from None
    if frames > 1:
        log.warning("%s: %d frames, using the first", path, frames)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper().strip()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        samples = 3
    if samples > 1 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
        rgb = arr[..., :3]
        if rgb.dtype != np.uint8:
            top = float(2 ** int(ds.get("BitsStored", 16) or 16) - 1)
            if photometric == "PALETTE COLOR":
                top = float(rgb.max()) if rgb.max() > 255 else 255.0
            rgb = np.clip(rgb.astype(np.float64) * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
        gray, window = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY), "none"
    else:
        if arr.ndim != 2:
            raise ItemError(f"{path}: unexpected pixel array shape {arr.shape}")
        gray, window = _to_uint8_gray(arr, ds, path)
        if photometric == "MONOCHROME1":
            gray = 255 - gray
    spacing, source, note = pixel_spacing(ds)
    info = {
        "pixel_spacing_mm": spacing,
        "spacing_source": source,
        "photometric": photometric,
        "bits_stored": int(ds.get("BitsStored", 0) or 0) or None,
        "frames": frames,
        "transfer_syntax": tsyntax,
        "window": window,
        "source": "dicom",
    }
    if note:
        info["spacing_note"] = note
    return np.ascontiguousarray(gray), info
