"""elan-deploy: ELAN super-resolution from a PyTorch checkpoint to verified inference engines."""

__version__ = "0.1.0"
