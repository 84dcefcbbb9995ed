"""Model cards, networks and where the shipped models are."""

from cxr_core.models.card import (
    CardError,
    ClassifierRules,
    Description,
    GateRules,
    LesionRule,
    ModelCard,
    NetworkSpec,
    Normalization,
    Platt,
    PostProcess,
    Provenance,
    RuntimeSettings,
    load_history,
    load_model,
    model_folder,
    save_model,
)
from cxr_core.models.locate import default_models_dir
from cxr_core.models.networks import build_network

__all__ = ["CardError", "ClassifierRules", "Description", "GateRules", "LesionRule",
           "ModelCard",
           "NetworkSpec", "Normalization", "Platt", "PostProcess", "Provenance",
           "RuntimeSettings", "build_network", "default_models_dir", "load_history",
           "load_model", "model_folder", "save_model"]
