"""nst-fast: fast feed-forward neural style transfer (Johnson et al. 2016) with Lightning and Hydra."""

__version__ = "0.1.0"
