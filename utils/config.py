"""Every setting and its default, in one place: dataclasses.

    TrainConfig = Data + Model + Optim + System + Output     (train_hip_crop_keypoints.py)
    PredictConfig                                            (predict_hip_crop_keypoints.py)
    FullImagePredictConfig                                   (predict_full_image_keypoints.py)
    Preprocess                                               (what a checkpoint says about its crops)

Each field carries its help text and CLI details in ``metadata``:
``help``; ``type`` (int/float/str, for argparse and for coercing dict input); ``action``
("store_true", "store_false", "bool" for ``--x/--no-x``); ``flag`` (when the flag's name is not
``--<field>``); ``choices``; ``metavar``; ``resume`` (True: may differ from the checkpoint on
``--resume``; every other field is taken from the checkpoint); ``cli`` (False: no flag);
``manifest`` (True: a prediction setting a pipeline manifest records, utils/pipelines/manifest.py).

- ``add_arguments(parser, cls, choices=..., exclude=...)`` builds the argparse flags from a config
  class, one group per section (the CLI flag names are the field names, as they always were);
  ``given_flags(parser, argv)`` says which of them a command line actually gave (the ones that
  override a pipeline manifest's values).
- ``TrainConfig.from_flat(mapping)``: a config from flat keys (``{"epochs": 3, ...}``, an
  argparse Namespace or a checkpoint's ``train`` dict), unknown keys an error, types
  coerced and ranges checked. ``cfg.to_flat()`` is the plain dict saved in checkpoints
  (plain types only: checkpoints load with ``torch.load(weights_only=True)``).
- ``cfg["epochs"]`` reads a field by its flat name too (so dict-style callers keep working);
  ``cfg.optim.epochs`` is the same value.
- ``Preprocess.from_checkpoint(config)``: input size, crop margin, histogram equalisation,
  mean and std of a checkpoint, defaults from ``Data`` for keys an old checkpoint lacks.

This is a leaf: it imports only ``utils.errors`` and the gate's default from
``utils.hip_geometry``. Which heads / backbones / losses exist is
the model registry's business; ``add_arguments`` takes their names as ``choices``.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Dict, Iterator, Mapping, Optional, Tuple

from datasets.layouts import REFINE_STAGES
from utils.errors import UserError
from utils.hip_geometry import DEFAULT_MIN_CONF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPTIMIZERS = ("adamw", "muon")             # utils/pipelines/train_setup.py: make_optimizer
PIPELINES = ("hip_crop", "full_image")     # the training data: hip crops (two-stage) or whole films
# the settings only a hip_crop model uses; the full-image baseline ignores them (and hides their flags)
HIP_CROP_ONLY = ("side", "mirror", "crop_expand", "box_jitter", "stage", "roof_margin", "roof_jitter")
STAGES = ("hip", *REFINE_STAGES)          # a hip_crop model's points: the whole hip, or a refiner's
# an AI 95% interval wider than this (degrees; the AI's plausible range is 0-60) says nothing about
# the hip: a run whose mean width exceeds it reports its intervals as uninformative, not its coverage,
# and an overlay prints such an interval as "interval uninformative" (docs/outputs.md)
AI_INTERVAL_MAX_WIDTH_DEG = 30.0


def opt(default, help: str = "", type=None, action=None, resume: bool = False, cli: bool = True,
        choices=None, metavar=None, flag=None, nargs=None, manifest: bool = False):
    """A config field: its default and how it appears on the command line (``manifest``: a
    prediction setting that a pipeline manifest records, ``PredictConfig.manifest_settings``)."""
    meta = dict(help=help, type=type, action=action, resume=resume, cli=cli, choices=choices,
                metavar=metavar, flag=flag, nargs=nargs, manifest=manifest)
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


# ============================================================================ training sections
@dataclass
class Data:
    data_dir: str = opt("data", "folder with train/ and val/ splits (split.py output)", str, resume=True)
    train_dir: Optional[str] = opt(None, "training folder or .txt image list (overrides data_dir/train)", str,
                                   resume=True)
    val_dir: Optional[str] = opt(None, "validation folder or .txt image list (overrides data_dir/val)", str,
                                 resume=True)
    side: str = opt("left", "image side the model predicts (left = hip on the image-left)", str,
                    choices=("left", "right"))
    mirror: bool = opt(True, "also train on the other side mirrored, so one model serves both hips", action="bool")
    crop_expand: float = opt(0.10, "margin around the box on each side, as a fraction of its longer side", float)
    hist_eq: bool = opt(True, "histogram-equalise crops", action="bool")
    rot: float = opt(10.0, "random rotation range, +- degrees", float)
    shift: float = opt(20.0, "random shift range, +- pixels at input size", float)
    scale_jitter: float = opt(0.0, "random zoom range, 1 +- this", float)
    box_jitter: float = opt(0.0, "random box centre/size jitter, as a fraction of the crop", float)
    hflip: float = opt(0.0, "probability of mirroring a training crop horizontally, its points permuted by the "
                            "layout's mirror permutation, so the model learns both orientations (needed for "
                            "--flip_test at prediction; docs/accuracy.md); hip crops and the refiners only: "
                            "--pipeline full_image refuses it (a flipped film swaps the hips)", float)
    # photometric domain randomisation of training crops (datasets/augment.py); strengths 0-1, 0 = off
    aug_contrast: float = opt(0.0, "random contrast and gamma, strength 0-1", float)
    aug_equalize: float = opt(0.0, "random CLAHE or plain histogram equalisation, strength 0-1", float)
    aug_blur: float = opt(0.0, "random Gaussian blur, strength 0-1", float)
    aug_noise: float = opt(0.0, "random noise and grain, strength 0-1", float)
    aug_jpeg: float = opt(0.0, "random JPEG artefacts, strength 0-1", float)
    aug_erase: float = opt(0.0, "random erasing of one rectangle, strength 0-1", float)
    strict: bool = opt(False, "any unusable image is an error", action="store_true", resume=True)
    pipeline: str = opt("hip_crop", "what the model sees: hip_crop (one hip's square crop around its box; the "
                                    "two-stage model) or full_image (the whole film letterboxed to input_size, every "
                                    "keypoint of the layout; the single-stage baseline, which ignores side, mirror, "
                                    "crop_expand and box_jitter)", str)
    stage: str = opt("hip", "which points a hip_crop model learns: hip (every point of one hip, on the crop "
                            "around its box: the first stage), roof (the roof refiner: lateral edge, mid roof "
                            "where the layout has one, and triradiate point, on a tighter crop around the roof) or "
                            "femur (the femur refiner: ihdi12's three metaphysis points, mtddh8's head centre and "
                            "H-point, on a tighter crop around them); predict with --refine_path; docs/accuracy.md. "
                            "The refiners use roof_margin and roof_jitter in place of crop_expand, shift, "
                            "scale_jitter and box_jitter", str)
    roof_margin: float = opt(0.5, "stages roof and femur: margin around the box of the stage's points on each side, "
                                  "as a fraction of its longer side", float)
    roof_jitter: float = opt(0.1, "stages roof and femur: random jitter of the training crop, mimicking the first "
                                  "stage's error: "
                                  "its centre moves by up to this fraction of the crop side per axis and its size by "
                                  "a factor 1 +- this (rotation: --rot)", float)


@dataclass
class Model:
    model_name: str = opt("convnext_small_custom", "backbone", str)
    head_type: str = opt("simcc_2d", "keypoint head", str)
    loss: Optional[str] = opt(None, "loss (default: the codec's own)", str)
    input_size: int = opt(224, "square crop size the model sees, in pixels", int)
    split_ratio: float = opt(2.0, "SimCC bins per pixel", float)
    sigma: float = opt(6.0, "target std: SimCC in bins (6 bins = 3 px at split_ratio 2, as MMPose's SimCC "
                            "at 256x192); heatmap head in input pixels", float)
    decode: Optional[str] = opt(None, "how outputs become points (default: the head's own): SimCC softargmax "
                                      "(default), argmax or argmax_refine (argmax + parabola on the log-"
                                      "probabilities); heatmap dark (default: argmax + DARK Taylor step), argmax or "
                                      "softargmax (docs/accuracy.md)", str)
    ai_loss_weight: float = opt(0.0, "weight of the auxiliary roof-angle loss (degrees, on the soft-argmax "
                                     "triradiate -> lateral edge line; docs/accuracy.md); 0: off", float)
    pretrained: Optional[str] = opt(None, "backbone weights: a local file, or 'timm' (download)", str)
    attention: str = opt("none", "attention neck between the backbone and the head", str)


@dataclass
class Optim:
    epochs: int = opt(100, "training epochs", int, resume=True)
    batch_size: int = opt(32, "batch per process: under torchrun the effective batch is batch_size x processes",
                          int)
    learning_rate: float = opt(1e-4, "peak learning rate; never scaled with the number of processes "
                                     "(scale it yourself)", float)
    optimizer: str = opt("adamw", "adamw, or muon (torch.optim.Muon on the backbone's 2-D weight matrices, AdamW "
                                  "on the rest; both at --learning_rate)", str)
    weight_decay: float = opt(0.01, "weight decay (AdamW, and Muon's on its matrices)", float)
    grad_clip: float = opt(1.0, "max gradient norm (0: no clipping)", float)
    warmup: float = opt(0.1, "fraction of steps of linear warm-up", float)
    min_lr: float = opt(1e-6, "learning rate at the end of the cosine", float)
    max_steps: Optional[int] = opt(None, "stop after this many steps (tests, benchmarks)", int, resume=True)
    val_every: int = opt(1, "validate every N epochs (and the last)", int, resume=True)


@dataclass
class System:
    device: str = opt("auto", "auto (cuda if available), cpu, cuda, cuda:N", str, resume=True)
    amp: str = opt("auto", "mixed precision on CUDA (auto: bf16 where the GPU has it natively, else fp16 with "
                           "loss scaling); always off on CPU", str, choices=("auto", "bf16", "fp16", "off"),
                   resume=True)
    channels_last: bool = opt(False, "channels-last memory format", action="store_true")
    compile: bool = opt(False, "torch.compile the model (tried before the first step; falls back to eager with "
                               "a warning)", action="store_true", resume=True)
    sync_bn: bool = opt(False, "under torchrun on CUDA: BatchNorm statistics over all processes (SyncBatchNorm); "
                               "no effect on LayerNorm models such as ConvNeXt", action="store_true")
    workers: Optional[int] = opt(None, "data loader workers (default: 0 on CPU, 8 on CUDA)", int, resume=True)
    seed: int = opt(42, "random seed", int)
    deterministic: bool = opt(False, "deterministic kernels (slower)", action="store_true")


@dataclass
class Output:
    out: str = opt("weights", "checkpoint folder", str, resume=True)
    log_dir: str = opt("logs", "log / plot folder", str, resume=True)
    exp_name: Optional[str] = opt(None, "run name (default: built from the main settings)", str)
    resume: Optional[str] = opt(None, "continue from a *_last.pth checkpoint ('auto': this run's own, if any)", str,
                                metavar="PATH|auto", resume=True)
    progress: bool = opt(True, "progress: a tqdm bar in a terminal, plain lines in a log file (one per epoch)",
                         action="bool", resume=True)
    tensorboard: Optional[bool] = opt(None, "TensorBoard event files in {log_dir}/tb/{tb_name}: losses, validation "
                                            "px/NME, learning rate, epoch time and an image of validation "
                                            "predictions (default: on when the tensorboard package is installed; "
                                            "--tensorboard without it is an error)", action="bool", resume=True)
    tb_name: Optional[str] = opt(None, "TensorBoard run folder under {log_dir}/tb (default: the run name; k-fold: "
                                       "<exp_name>/fold<k>, so the folds overlay)", str, resume=True)
    tb_image_every: int = opt(5, "TensorBoard: an image of validation predictions every N epochs and after the last "
                                 "(0: none)", int, resume=True)


SECTIONS = {"data": Data, "model": Model, "optim": Optim, "system": System, "output": Output}
SECTION_TITLES = {"data": "data", "model": "model", "optim": "optimisation", "system": "system",
                  "output": "outputs"}


@dataclass
class TrainConfig:
    """The whole training configuration. ``cfg.data``, ``cfg.model``, ``cfg.optim``,
    ``cfg.system``, ``cfg.output``; ``cfg["name"]`` reads any field by its flat name."""
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    optim: Optim = field(default_factory=Optim)
    system: System = field(default_factory=System)
    output: Output = field(default_factory=Output)

    # ---- flat view
    @classmethod
    def fields(cls) -> Dict[str, Tuple[str, dataclasses.Field]]:
        """{flat name: (section name, field)}."""
        return {f.name: (s, f) for s, sec_cls in SECTIONS.items() for f in dataclasses.fields(sec_cls)}

    def _section(self, key: str):
        try:
            section, _ = self.fields()[key]
        except KeyError:
            raise KeyError(key) from None
        return getattr(self, section)

    def __getitem__(self, key: str):
        return getattr(self._section(key), key)

    def __setitem__(self, key: str, value) -> None:
        setattr(self._section(key), key, value)

    def get(self, key: str, default=None):
        return self[key] if key in self.fields() else default

    def keys(self) -> Iterator[str]:
        return iter(self.fields())

    def __iter__(self):
        return self.keys()

    def items(self):
        return ((k, self[k]) for k in self.fields())

    def to_flat(self) -> Dict[str, object]:
        """Every field by its flat name, plain values (what checkpoints store as ``train``)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.items()}

    def replace(self, **changes) -> "TrainConfig":
        return TrainConfig.from_flat({**self.to_flat(), **changes})

    @classmethod
    def defaults(cls) -> Dict[str, object]:
        return cls().to_flat()

    @classmethod
    def from_flat(cls, given=None, strict: bool = True) -> "TrainConfig":
        """From a dict / Namespace / TrainConfig of flat keys. Unknown keys raise ``UserError``
        (``strict=False``: ignored, for checkpoints of other versions)."""
        if isinstance(given, TrainConfig):
            given = given.to_flat()
        given = dict(vars(given)) if isinstance(given, argparse.Namespace) else dict(given or {})
        known = cls.fields()
        unknown = sorted(set(given) - set(known))
        if unknown and strict:
            raise UserError(f"unknown training option(s): {', '.join(unknown)}")
        cfg = cls()
        for k, v in given.items():
            if k in known:
                cfg[k] = _coerce(v, known[k][1])
        cfg.validate()
        return cfg

    def validate(self) -> None:
        o, m = self.optim, self.model
        if o.epochs < 1 or o.batch_size < 1 or m.input_size < 16 or o.val_every < 1:
            raise UserError("epochs, batch_size and val_every must be >= 1 and input_size >= 16")
        if self.output.tb_image_every < 0:
            raise UserError(f"--tb_image_every must be >= 0, got {self.output.tb_image_every}")
        if o.learning_rate <= 0 or m.sigma <= 0 or m.split_ratio <= 0:
            raise UserError("learning_rate, sigma and split_ratio must be positive")
        if o.max_steps is not None and o.max_steps < 1:
            raise UserError("max_steps must be >= 1")
        if m.ai_loss_weight < 0:
            raise UserError(f"ai_loss_weight must be >= 0, got {m.ai_loss_weight}")
        for flag, value, known in (("optimizer", o.optimizer, OPTIMIZERS), ("pipeline", self.data.pipeline, PIPELINES),
                                   ("stage", self.data.stage, STAGES)):
            if value not in known:
                raise UserError(f"--{flag}: unknown {flag} {value!r}; choose from {', '.join(known)}")
        d = self.data
        if d.stage != "hip" and d.pipeline != "hip_crop":
            raise UserError(f"--stage {d.stage} trains on hip crops: it needs --pipeline hip_crop")
        if d.stage == "femur" and m.ai_loss_weight > 0:
            raise UserError("--ai_loss_weight needs the roof's points: it is for --stage hip or roof, not femur")
        if not 0 <= d.hflip <= 1:
            raise UserError(f"--hflip is a probability in [0, 1], got {d.hflip}")
        if d.hflip > 0 and d.pipeline == "full_image":
            raise UserError(f"--hflip {d.hflip:g} refused with --pipeline full_image: mirroring a whole film swaps "
                            "the image-left and image-right hips; keep --hflip 0")
        if d.roof_margin < 0 or not 0 <= d.roof_jitter < 0.5:
            raise UserError(f"--roof_margin must be >= 0 and --roof_jitter in [0, 0.5); got {d.roof_margin}, "
                            f"{d.roof_jitter}")

    # ---- resume
    @classmethod
    def resume_may_change(cls) -> Tuple[str, ...]:
        return tuple(k for k, (_, f) in cls.fields().items() if f.metadata["resume"])

    def merged_with_checkpoint(self, saved: Mapping, warn=None) -> "TrainConfig":
        """This config with every field that may not change on resume taken from ``saved``
        (a checkpoint's flat ``train`` dict). ``warn(msg)`` hears about a given value that is
        overridden (one that differs from both the checkpoint and the default)."""
        merged, defaults, may_change = self.to_flat(), self.defaults(), set(self.resume_may_change())
        for k, v in saved.items():
            if k in defaults and k not in may_change:
                if merged[k] != v and merged[k] != defaults[k] and warn is not None:
                    warn(f"--resume: keeping the checkpoint's {k}={v!r} (ignoring {merged[k]!r})")
                merged[k] = v
        return TrainConfig.from_flat(merged)


def _coerce(value, f: dataclasses.Field):
    """A given value as the field's type (None stays None for optional fields)."""
    typ, action = f.metadata["type"], f.metadata["action"]
    if value is None:
        return None
    if action in ("bool", "store_true", "store_false") or isinstance(f.default, bool):
        return bool(value)
    if typ is not None:
        try:
            return typ(value)
        except (TypeError, ValueError):
            raise UserError(f"--{f.name}: expected {typ.__name__}, got {value!r}") from None
    return value


def _section_classes(cls):
    return list(SECTIONS.items()) if cls is TrainConfig else [(None, cls)]


# ============================================================================ prediction
@dataclass
class PredictConfig:
    """predict_hip_crop_keypoints.py's options (``run_prediction``'s keyword defaults)."""
    kp_left_path: Optional[str] = opt(None, "keypoint model for the image-left hip, .pth or .onnx (serves both "
                                            "sides if alone); several paths: an ensemble (their SimCC "
                                            "distributions are averaged)", str, nargs="+", metavar="PTH")
    kp_right_path: Optional[str] = opt(None, "keypoint model(s) for the image-right hip, .pth or .onnx", str,
                                       nargs="+", metavar="PTH")
    yolo_weights: Optional[str] = opt(None, "YOLO detector weights, .pt or .onnx; not needed with --use_gt_box", str)
    use_gt_box: bool = opt(False, "crop on the ground-truth boxes in detections/ instead of YOLO's",
                           action="store_true")
    device: str = opt("auto", "auto, cpu, cuda, cuda:1 or a GPU index", str)
    batch_size: int = opt(16, "images per batch (YOLO and keypoint model)", int)
    imgsz: Optional[int] = opt(None, "YOLO inference size (default: the size the detector was trained at, read "
                                     "from the .pt's training arguments or the .onnx metadata; 640 where the "
                                     "file does not say); a size that differs from the training size is warned "
                                     "about", int, manifest=True)
    conf: float = opt(0.25, "YOLO confidence threshold", float, manifest=True)
    model_name: Optional[str] = opt(None, "accepted for compatibility; checked against the checkpoint", str)
    overlays: bool = opt(True, "do not draw per-image overlays", action="store_false", flag="--no_overlays")
    max_overlays: Optional[int] = opt(None, "draw at most this many overlays", int)
    worst_n: int = opt(10, "copy the N worst overlays to worst_cases/", int)
    hip_sheet: int = opt(24, "hip_sheet.png: the hips of the first N films side by side, cut around their boxes "
                             "with the predicted points (0: none)", int)
    strict: bool = opt(False, "stop at the first unusable item instead of skipping it", action="store_true")
    min_conf: float = opt(DEFAULT_MIN_CONF, "plausibility gate: a hip whose detection confidence is below this is ungradable "
                                "(grade 0, reason in qc_left/qc_right)", float, manifest=True)
    ai_samples: int = opt(200, "keypoint sets sampled from a SimCC model's distributions for the AI's 95%% "
                               "interval (0: no interval)", int, manifest=True)
    ai_interval_scale: float = opt(0.75, "spread of those samples around the decoded point, times this "
                                        "(calibrated on a validation split: docs/outputs.md)", float,
                                  manifest=True)
    flip_test: bool = opt(False, "flip test: also run each crop mirrored and average the two predictions "
                                 "(docs/accuracy.md)", action="bool", manifest=True)
    refine_path: Optional[str] = opt(None, "refiner(s) (train_hip_crop_keypoints.py --stage roof or femur): a "
                                           "tighter crop around each hip's predicted roof (or femur points), whose "
                                           "refined points replace the keypoint model's; one model serves both sides "
                                           "by mirroring; give a roof and a femur refiner to refine both; several of "
                                           "one stage: an ensemble (docs/accuracy.md)",
                                     str, nargs="+", metavar="PTH")
    decode: Optional[str] = opt(None, "decode the keypoint model's outputs this way instead of as its checkpoint "
                                      "says (SimCC: softargmax, argmax, argmax_refine; heatmap: dark, argmax, "
                                      "softargmax)", str, manifest=True)

    @classmethod
    def manifest_settings(cls) -> Tuple[str, ...]:
        """The settings a pipeline manifest records beside its models (``manifest=True`` fields)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["manifest"])

    @classmethod
    def model_paths(cls) -> Tuple[str, ...]:
        """The fields that name model files (a manifest's members)."""
        return ("kp_left_path", "kp_right_path", "refine_path", "yolo_weights")


@dataclass
class FullImagePredictConfig:
    """predict_full_image_keypoints.py's options (``run_full_image_prediction``'s keyword defaults)."""
    kp_path: Optional[str] = opt(None, "full-image keypoint checkpoint (train_full_image_keypoints.py)", str)
    device: str = opt("auto", "auto, cpu, cuda, cuda:1 or a GPU index", str)
    batch_size: int = opt(16, "images per batch", int)
    overlays: bool = opt(True, "do not draw per-image overlays", action="store_false", flag="--no_overlays")
    max_overlays: Optional[int] = opt(None, "draw at most this many overlays", int)
    worst_n: int = opt(10, "copy the N worst overlays to worst_cases/", int)
    strict: bool = opt(False, "stop at the first unusable item instead of skipping it", action="store_true")


# ============================================================================ checkpoints -> crops
@dataclass(frozen=True)
class Preprocess:
    """How a checkpoint's model wants its crops: the training run's Data/Model settings."""
    input_size: int
    crop_expand: float = Data.crop_expand
    hist_eq: bool = Data.hist_eq
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_checkpoint(cls, config: Mapping) -> "Preprocess":
        d = cls.__dataclass_fields__
        return cls(input_size=int(config["input_size"]),
                   crop_expand=float(config.get("crop_expand", d["crop_expand"].default)),
                   hist_eq=bool(config.get("hist_eq", d["hist_eq"].default)),
                   mean=tuple(float(v) for v in config.get("mean", IMAGENET_MEAN)),
                   std=tuple(float(v) for v in config.get("std", IMAGENET_STD)))


# ============================================================================ argparse
class _BooleanFlag(argparse.BooleanOptionalAction):
    """``--x`` / ``--no-x``, and ``--no_x`` too (the original study's scripts spell their
    negative flags with an underscore, e.g. ``--no_val``)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.option_strings += ["--no_" + o[2:] for o in option_strings if o.startswith("--")]

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.option_strings:
            setattr(namespace, self.dest, not option_string.startswith(("--no-", "--no_")))


def add_arguments(parser: argparse.ArgumentParser, cls, choices: Optional[Mapping[str, Tuple[str, ...]]] = None,
                  helps: Optional[Mapping[str, str]] = None, exclude=(), group=None) -> argparse.ArgumentParser:
    """The flags of config class ``cls`` (TrainConfig: one group per section). ``choices``
    and ``helps`` add what a leaf cannot know (the registry's names); ``exclude``: fields
    that get no flag here (a caller that declares them its own way); ``group``: the title of
    an argument group for them (one-section classes)."""
    choices, helps, exclude = dict(choices or {}), dict(helps or {}), set(exclude)
    for section, sec_cls in _section_classes(cls):
        title = SECTION_TITLES[section] if section else group
        group_ = parser.add_argument_group(title) if title else parser
        for f in dataclasses.fields(sec_cls):
            meta = f.metadata
            if not meta.get("cli", True) or f.name in exclude:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            flag = meta["flag"] or f"--{f.name}"
            kw = dict(help=helps.get(f.name, meta["help"]), dest=f.name)
            if meta["action"] == "bool":
                kw.update(action=_BooleanFlag, default=default)
            elif meta["action"] in ("store_true", "store_false"):
                kw.update(action=meta["action"])
            else:
                kw.update(type=meta["type"], default=default)
                if meta["metavar"]:
                    kw["metavar"] = meta["metavar"]
                if meta.get("nargs"):
                    kw["nargs"] = meta["nargs"]
                if f.name in choices or meta["choices"]:
                    kw["choices"] = tuple(choices.get(f.name, meta["choices"]))
            group_.add_argument(flag, **kw)
    return parser


def given_flags(parser: argparse.ArgumentParser, argv=None) -> set:
    """The destinations that the command line ``argv`` (None: ``sys.argv[1:]``) sets, whatever
    their values: ``parser`` again with every default suppressed."""
    import copy

    quiet = copy.deepcopy(parser)
    for a in quiet._actions:
        a.default = argparse.SUPPRESS
    quiet._defaults = {}
    given, _ = quiet.parse_known_args(argv)
    return set(vars(given))
