"""Model cards: the JSON beside each set of weights that says what they are and how made.

A model lives in a folder as ``model.json`` (the card), the weights file it names (an
fp16 ``state_dict``, whose sha256 the card records and the loader checks) and, after
training, ``history.json`` (the per-epoch curves).

A card keeps apart what the engine *runs* (:class:`RuntimeSettings`: post-processing,
the pneumothorax decision rule, calibration and thresholds) and what *describes* the
model (:class:`Provenance`, the evaluation figures, :class:`Description`). Its JSON
Schema is ``resources/models/model-card.schema.json``; :meth:`ModelCard.from_dict`
checks the same rules and names the offending field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch

from cxr_core.models.locate import default_models_dir
from cxr_core.models.networks import build_inference_network, build_network

CARD_NAME = "model.json"
HISTORY_NAME = "history.json"
SCHEMA_VERSION = 2
POSTPROCESS_METHODS = ("largest_component", "min_component")
CLASSIFIER_INPUTS = ("whole_image", "lung_masked")
TASKS = ("segmentation", "classification")

PostProcessMethod = Literal["largest_component", "min_component"]
ClassifierInput = Literal["whole_image", "lung_masked"]


class CardError(ValueError):
    """A model card is missing a field or has one of the wrong type; names the field."""


# ---------------------------------------------------------------------- network


@dataclass(frozen=True, kw_only=True)
class Normalization:
    """Intensity scaling before the network: ``low``..``high`` percentiles to 0..1, then
    (``equalize``) each value's rank in the image (:class:`cxr_core.preprocess.ToModelInput`)."""

    method: Literal["percentile", "equalize"] = "percentile"
    low: float = 0.5
    high: float = 99.5

    @property
    def percentiles(self) -> tuple[float, float]:
        return (self.low, self.high)


@dataclass(kw_only=True)
class NetworkSpec:
    """Which MONAI network, built how, fed what."""

    architecture: str
    kwargs: dict[str, Any]
    input_size: tuple[int, int]
    normalization: Normalization = field(default_factory=Normalization)


# ---------------------------------------------------------------------- runtime


@dataclass(frozen=True, kw_only=True)
class PostProcess:
    """Segmentation post-processing: ``largest_component`` keeps one connected component
    per structure (organs), ``min_component`` drops components smaller than
    ``min_component_fraction`` of the image (lesions)."""

    method: PostProcessMethod = "largest_component"
    min_component_fraction: float = 0.0


@dataclass(frozen=True, kw_only=True)
class LesionRule:
    """When a segmented lesion counts as present: a minimum area (mm² with trusted
    spacing, else a fraction of the image) after dropping regions mostly outside the
    lungs grown by ``thorax_margin_fraction`` of the width."""

    min_area_mm2: float
    min_area_fraction: float
    thorax_margin_fraction: float
    thorax_min_inside: float


@dataclass(frozen=True, kw_only=True)
class Platt:
    """Calibrated probability ``sigmoid(scale * logit + bias)``."""

    scale: float = 1.0
    bias: float = 0.0


@dataclass(kw_only=True)
class ClassifierRules:
    """How a classifier is run and read: input, calibration, operating thresholds."""

    input: ClassifierInput = "whole_image"
    lung_mask_dilation: float = 0.03
    calibration: dict[str, Platt] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    heatmap_layer: str = "class_layers.relu"


@dataclass(frozen=True, kw_only=True)
class GateRules:
    """When the chest gate lets an image through, and how it reads its orientation."""

    frontal_min: float
    """Refuse unless the probability of a frontal chest radiograph reaches this."""
    rotation_min: float
    """Refuse a quarter or half turn the gate is at least this sure of."""
    mirrored_min: float
    """Take the image as mirrored (patient's right on the image's right) from this
    probability on."""


@dataclass(kw_only=True)
class RuntimeSettings:
    """What the engine reads to run the model; kept across retraining unless replaced."""

    postprocess: PostProcess | None = None
    lesion: LesionRule | None = None
    classifier: ClassifierRules | None = None
    gate: GateRules | None = None

    def over(self, base: RuntimeSettings) -> RuntimeSettings:
        """These settings, with every part left unset taken from ``base``."""
        return RuntimeSettings(**{f.name: getattr(self, f.name) or getattr(base, f.name)
                                  for f in dataclasses.fields(self)})


# ------------------------------------------------------------------- description


@dataclass(kw_only=True)
class Provenance:
    """How the weights were made: exact command, code, data, splits."""

    command: str
    commit: str
    datasets: list[str]
    counts: dict[str, Any]
    """Images per split (and per source where the task has sources)."""
    parent_model: str | None = None
    """``name@version`` the training started from, if any."""
    selection: str = ""
    """Which images and labels, and how the splits were made."""
    seed: int | None = None
    minutes: float | None = None
    epochs_run: int | None = None
    libraries: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    """Task-specific training choices (loss, sampler, augmentation, model selection...)."""


@dataclass(kw_only=True)
class Description:
    """What people need to know before using the model; written by people, carried
    from the parent card when retraining."""

    intended_use: str
    limitations: list[str] = field(default_factory=list)
    licence: str = "Research use only; not a medical device."
    changelog: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class ModelCard:
    """What a set of weights is: network, labels, runtime settings, provenance, figures."""

    name: str
    version: str
    task: Literal["segmentation", "classification"]
    network: NetworkSpec
    labels: list[str]
    provenance: Provenance
    description: Description
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    evaluation: dict[str, Any] = field(default_factory=dict)
    """Figures measured by ``cxr evaluate`` (with ``evaluated_by``)."""
    weights_file: str = "weights.pt"
    weights_sha256: str = ""

    @property
    def identifier(self) -> str:
        """``name@version``, the string written into SEG/SR algorithm identification."""
        return f"{self.name}@{self.version}"

    @property
    def input_size(self) -> tuple[int, int]:
        return self.network.input_size

    def build(self, *, inference: bool = False) -> torch.nn.Module:
        """The card's network, untrained; ``inference``: its plain-PyTorch twin where
        there is one (:func:`~cxr_core.models.networks.build_inference_network`)."""
        if inference:
            return build_inference_network(self.network.architecture, self.network.kwargs)
        return build_network(self.network.architecture, self.network.kwargs)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        data = {"schema_version": SCHEMA_VERSION} | dataclasses.asdict(self)
        data["network"]["input_size"] = list(self.network.input_size)
        cleaned: dict[str, Any] = _without_none(data)
        return cleaned

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Parse a card, checking every field.

        Raises
        ------
        CardError
            Naming the first missing or wrong field (``runtime.classifier.thresholds``...).
        """
        if "extra" in data and "schema_version" not in data:
            data = upgrade_legacy(data)
        return _parse_card(data)

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise CardError(f"{path}: not JSON ({error})") from error
        return cls.from_dict(data)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


# -------------------------------------------------------------------- parsing


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise CardError(f"{where}{key}: missing")
    return _typed(data[key], kind, f"{where}{key}")


def _optional(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str,
              default: Any = None) -> Any:
    if data.get(key) is None:
        return default
    return _typed(data[key], kind, f"{where}{key}")


def _typed(value: Any, kind: type | tuple[type, ...], name: str) -> Any:
    # bool is an int in Python; a card saying `true` for a number is still wrong
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise CardError(f"{name}: expected {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise CardError(f"{name}: expected {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _choice(value: str, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise CardError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return value


NUMBER = (int, float)


def _parse_card(data: dict[str, Any]) -> ModelCard:
    _typed(data, dict, "card")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CardError(f"schema_version: expected {SCHEMA_VERSION}, got {version!r}")
    labels = _require(data, "labels", list, "")
    for index, label in enumerate(labels):
        _typed(label, str, f"labels[{index}]")
    return ModelCard(
        name=_require(data, "name", str, ""),
        version=_require(data, "version", str, ""),
        task=cast(Any, _choice(_require(data, "task", str, ""), TASKS, "task")),
        network=_parse_network(_require(data, "network", dict, "")),
        labels=list(labels),
        provenance=_parse_provenance(_require(data, "provenance", dict, "")),
        description=_parse_description(_require(data, "description", dict, "")),
        runtime=_parse_runtime(_optional(data, "runtime", dict, "", {})),
        evaluation=dict(_optional(data, "evaluation", dict, "", {})),
        weights_file=_optional(data, "weights_file", str, "", "weights.pt"),
        weights_sha256=_optional(data, "weights_sha256", str, "", ""),
    )


def _parse_network(data: dict[str, Any]) -> NetworkSpec:
    where = "network."
    size = _require(data, "input_size", list, where)
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise CardError(f"network.input_size: expected two positive integers, got {size}")
    normalization = _optional(data, "normalization", dict, where, {})
    return NetworkSpec(
        architecture=_require(data, "architecture", str, where),
        kwargs=dict(_require(data, "kwargs", dict, where)),
        input_size=(size[0], size[1]),
        normalization=Normalization(
            method=cast(Any, _choice(_optional(normalization, "method", str,
                                               "network.normalization.", "percentile"),
                                     ("percentile", "equalize"),
                                     "network.normalization.method")),
            low=float(_optional(normalization, "low", NUMBER, "network.normalization.", 0.5)),
            high=float(_optional(normalization, "high", NUMBER, "network.normalization.",
                                 99.5))),
    )


def _parse_runtime(data: dict[str, Any]) -> RuntimeSettings:
    where = "runtime."
    post = _optional(data, "postprocess", dict, where)
    lesion = _optional(data, "lesion", dict, where)
    classifier = _optional(data, "classifier", dict, where)
    gate = _optional(data, "gate", dict, where)
    return RuntimeSettings(
        postprocess=None if post is None else PostProcess(
            method=cast(Any, _choice(_require(post, "method", str, f"{where}postprocess."),
                                     POSTPROCESS_METHODS, f"{where}postprocess.method")),
            min_component_fraction=float(_optional(post, "min_component_fraction", NUMBER,
                                                   f"{where}postprocess.", 0.0))),
        lesion=None if lesion is None else LesionRule(**{
            name: float(_require(lesion, name, NUMBER, f"{where}lesion."))
            for name in ("min_area_mm2", "min_area_fraction", "thorax_margin_fraction",
                         "thorax_min_inside")}),
        classifier=None if classifier is None else _parse_classifier(classifier),
        gate=None if gate is None else GateRules(**{
            name: float(_require(gate, name, NUMBER, f"{where}gate."))
            for name in ("frontal_min", "rotation_min", "mirrored_min")}),
    )


def _parse_classifier(data: dict[str, Any]) -> ClassifierRules:
    where = "runtime.classifier."
    calibration = _optional(data, "calibration", dict, where, {})
    thresholds = _optional(data, "thresholds", dict, where, {})
    return ClassifierRules(
        input=cast(Any, _choice(_optional(data, "input", str, where, "whole_image"),
                                CLASSIFIER_INPUTS, f"{where}input")),
        lung_mask_dilation=float(_optional(data, "lung_mask_dilation", NUMBER, where, 0.03)),
        calibration={
            label: Platt(**{k: float(_require(_typed(v, dict, f"{where}calibration.{label}"),
                                              k, NUMBER, f"{where}calibration.{label}."))
                            for k in ("scale", "bias")})
            for label, v in calibration.items()},
        thresholds={label: float(_typed(v, NUMBER, f"{where}thresholds.{label}"))
                    for label, v in thresholds.items()},
        heatmap_layer=_optional(data, "heatmap_layer", str, where, "class_layers.relu"),
    )


def _parse_provenance(data: dict[str, Any]) -> Provenance:
    where = "provenance."
    datasets = _require(data, "datasets", list, where)
    for index, item in enumerate(datasets):
        _typed(item, str, f"{where}datasets[{index}]")
    return Provenance(
        command=_require(data, "command", str, where),
        commit=_require(data, "commit", str, where),
        datasets=list(datasets),
        counts=dict(_require(data, "counts", dict, where)),
        parent_model=_optional(data, "parent_model", str, where),
        selection=_optional(data, "selection", str, where, ""),
        seed=_optional(data, "seed", int, where),
        minutes=_optional(data, "minutes", NUMBER, where),
        epochs_run=_optional(data, "epochs_run", int, where),
        libraries=dict(_optional(data, "libraries", dict, where, {})),
        details=dict(_optional(data, "details", dict, where, {})),
    )


def _parse_description(data: dict[str, Any]) -> Description:
    where = "description."
    limitations = _optional(data, "limitations", list, where, [])
    for index, item in enumerate(limitations):
        _typed(item, str, f"{where}limitations[{index}]")
    changelog = _optional(data, "changelog", list, where, [])
    for index, item in enumerate(changelog):
        _typed(item, dict, f"{where}changelog[{index}]")
    return Description(
        intended_use=_require(data, "intended_use", str, where),
        limitations=list(limitations),
        licence=_optional(data, "licence", str, where, "Research use only; not a medical device."),
        changelog=list(changelog),
    )


def upgrade_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """A card in the first layout (runtime rules and prose mixed in ``extra``, provenance
    in ``training``) in today's layout, so models trained before stay loadable."""
    extra, training = dict(data.get("extra", {})), dict(data.get("training", {}))
    runtime: dict[str, Any] = {}
    if "postprocess" in extra:
        runtime["postprocess"] = {"method": extra["postprocess"],
                                  "min_component_fraction": extra.get(
                                      "min_component_fraction", 0.0)}
    if "min_area_mm2" in extra:
        runtime["lesion"] = {key: extra[key] for key in (
            "min_area_mm2", "min_area_fraction", "thorax_margin_fraction",
            "thorax_min_inside") if key in extra}
        runtime["lesion"].setdefault("thorax_margin_fraction", 0.02)
        runtime["lesion"].setdefault("thorax_min_inside", 0.5)
    if data.get("task") == "classification":
        runtime["classifier"] = {key: extra[key] for key in (
            "input", "lung_mask_dilation", "calibration", "thresholds", "heatmap_layer")
            if key in extra}
    known = {"command", "commit", "datasets", "counts", "parent_model", "selection", "seed",
             "minutes", "epochs_run", "history"}
    limitations = extra.get("limitations", [])
    return {
        "schema_version": SCHEMA_VERSION,
        "name": data["name"], "version": data["version"], "task": data["task"],
        "network": {"architecture": data["architecture"], "kwargs": data["network_kwargs"],
                    "input_size": list(data["input_size"])},
        "labels": data["labels"],
        "weights_file": data.get("weights_file", "weights.pt"),
        "weights_sha256": data.get("weights_sha256", ""),
        "runtime": runtime,
        "provenance": {
            "command": training.get("command", "unknown"),
            "commit": training.get("commit", "unknown"),
            "datasets": [d if isinstance(d, str) else f"{d.get('source_md', '')} "
                         f"({d.get('citation', '')})".strip() for d in training.get(
                             "datasets", [])],
            "counts": training.get("counts", {}),
            **{k: training[k] for k in ("parent_model", "selection", "seed", "minutes",
                                        "epochs_run") if k in training},
            "details": {k: v for k, v in training.items() if k not in known},
        },
        "evaluation": dict(data.get("metrics", {}))
        | ({"limits": extra["limits"]} if "limits" in extra else {}),
        "description": {
            "intended_use": extra.get("intended_use", "Research use only."),
            "limitations": limitations if isinstance(limitations, list) else [limitations],
        },
    }


# ------------------------------------------------------------------- weights


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(network: torch.nn.Module, card: ModelCard, directory: Path, *,
               history: list[dict[str, float]] | None = None) -> Path:
    """Write fp16 weights, the card (with their sha256) and the training history.

    The network's own weights are rounded to the saved fp16 values, so figures computed
    with it afterwards (the card's test metrics) describe exactly the shipped model.
    """
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / card.weights_file
    state = {key: value.detach().to("cpu").half() if value.is_floating_point() else value
             for key, value in network.state_dict().items()}
    torch.save(state, weights_path)
    network.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    card.weights_sha256 = file_sha256(weights_path)
    card.save(directory / CARD_NAME)
    if history is not None:
        (directory / HISTORY_NAME).write_text(json.dumps(history) + "\n")
    return directory


def model_folder(name_or_dir: str | Path, models_dir: Path | None = None) -> Path:
    """The folder of a model given by name (in the models folder) or by path.

    Raises
    ------
    FileNotFoundError
        When neither holds a card.
    """
    directory = Path(name_or_dir)
    if not (directory / CARD_NAME).is_file():
        directory = (models_dir or default_models_dir()) / str(name_or_dir)
    if not (directory / CARD_NAME).is_file():
        raise FileNotFoundError(f"model: no {CARD_NAME} in {directory}")
    return directory


def load_history(folder: Path) -> list[dict[str, float]]:
    """The per-epoch training history saved beside a model (empty if there is none)."""
    path = Path(folder) / HISTORY_NAME
    return list(json.loads(path.read_text())) if path.is_file() else []


def load_model(
    name_or_dir: str | Path, *, models_dir: Path | None = None, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ModelCard]:
    """Load a model by name (from the models folder) or from a folder, in eval mode and
    fp32, on ``device``.

    Raises
    ------
    ValueError
        When the weights do not match the card's sha256 (or the card is malformed).
    """
    directory = model_folder(name_or_dir, models_dir)
    card = ModelCard.load(directory / CARD_NAME)
    weights_path = directory / card.weights_file
    if card.weights_sha256 and file_sha256(weights_path) != card.weights_sha256:
        raise ValueError(f"model {card.name}: {weights_path.name} does not match its card's sha256")
    network = _network_to_load(card)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    # the network takes the loaded tensors as its own (in the layout its own would have)
    # rather than copying them into freshly initialised ones
    network.load_state_dict(
        {k: v.to(torch.float32, memory_format=torch.contiguous_format)
         if v.is_floating_point() else v for k, v in state.items()}, assign=True)
    return network.to(device).eval(), card


def _network_to_load(card: ModelCard) -> torch.nn.Module:
    """The card's inference network, to be given all its weights: a plain-PyTorch twin is
    built on the meta device (no memory, no random initialisation: ~0.1 s of start-up for
    the four shipped models); MONAI's classes, which may hold tensors outside their
    state, are built as they are."""
    from cxr_core.models.plain_nets import plain_network

    with torch.device("meta"):
        network = plain_network(card.network.architecture, card.network.kwargs)
    return network if network is not None else card.build(inference=True)
