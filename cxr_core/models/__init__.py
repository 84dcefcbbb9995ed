"""Model cards, networks and the shipped model directory."""

from cxr_core.models.card import ModelCard, default_models_dir, load_model
from cxr_core.models.networks import build_network

__all__ = ["ModelCard", "build_network", "default_models_dir", "load_model"]
