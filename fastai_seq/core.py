"Sequence types: ImageTuple, ImageSeq, Path.ls_sorted, show helpers, GIF writing (being written)"
from fastai.vision.all import *
__all__ = ['ImageSeq']
class ImageSeq(TensorImage):
    "A sequence of frames `(T,C,H,W)`; a batch is `(B,T,C,H,W)`"
