"""Data sources, one file each: MNIST digits (`mnist.py`), Moving MNIST (`moving_mnist.py`), generated motion videos
(`motion_videos.py`). `from fastai_seq.datasets import ...` reaches all their public names."""
from .mnist import *
from .moving_mnist import *
from .motion_videos import *
from . import mnist, moving_mnist, motion_videos

__all__ = mnist.__all__ + moving_mnist.__all__ + motion_videos.__all__
