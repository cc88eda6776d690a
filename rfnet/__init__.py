"""RF-Net: joint optic disc and cup segmentation (Li et al., AAAI 2020).

Importing the package imports nothing heavy: ``rfnet.config`` and ``rfnet.common`` are
torch-free and shared with the deployment runtime; ``rfnet.model``, ``rfnet.train`` and
``rfnet.evaluate`` need PyTorch.
"""
__version__ = "0.1.0"
