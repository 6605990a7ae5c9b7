"""ELAN reference network, named configs and checkpoint loading."""

from elan_deploy.model.checkpoint import LoadedCheckpoint, load_bundled, load_checkpoint, load_model
from elan_deploy.model.config import MODEL_NAMES, ELANConfig, get_config
from elan_deploy.model.elan import ELAN

__all__ = ["ELAN", "ELANConfig", "LoadedCheckpoint", "MODEL_NAMES", "get_config", "load_bundled", "load_checkpoint", "load_model"]
