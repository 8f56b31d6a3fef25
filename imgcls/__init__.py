"""imgcls: a fast, practical PyTorch image-classification library (the PaddlePaddle model zoo, re-created)."""

__version__ = "0.1.0"
