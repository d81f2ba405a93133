"""structalign_ros: multimodal robot perception with Gromov-Wasserstein structural alignment."""

__version__ = "0.1.0"
