"Losses for sequences: `PixelLevelsLoss`, per-pixel cross-entropy on frames (fastai's own losses work on sequences as they are)"
from __future__ import annotations
import torch
import torch.nn.functional as F
from torch import Tensor
from .core import ImageSeq
from .metrics import SeqDice, as_seq, pixel_levels

__all__ = ['PixelLevelsLoss']

class PixelLevelsLoss:
    "The moving_mnist package's cross-entropy recipe: each pixel of the `[0,1]` target frames is a class (on/off at `th`, or `n_levels` gray levels)"
    # The model predicts `n_levels` logits a pixel, `(B,T,n_levels,H,W)`; `decodes` turns them back into frames (the
    # level of the argmax, in [0,1]), so `show_results`, `predict` and `get_preds(with_decoded=True)` show decoded frames.
    def __init__(self,
        n_levels:int=2, # 2: binarised frames (the package's recipe); K > 2: K evenly spaced gray levels, nearest one
        th:float=0.7, # With `n_levels=2`: a pixel is on above this (the package's `th`)
        weight=None, # Class weights for `F.cross_entropy` (e.g. to weigh the rare "on" pixels more)
    ):
        if n_levels<2: raise ValueError(f"n_levels must be >= 2, got {n_levels}")
        self.n_levels,self.th,self.weight = n_levels,th,weight
        self.out_ch = n_levels
    @property
    def metrics(self) -> list: return [SeqDice(self)]
    def encode(self, y:Tensor) -> Tensor:
        "Class indices `(B,T,H,W)` of `[0,1]` frames `(B,T,1,H,W)`"
        return pixel_levels(y, self.n_levels, self.th)
    def __call__(self, pred, targ) -> Tensor:
        p = as_seq(pred, 'pred')
        if p.shape[2]!=self.n_levels: raise ValueError(f"PixelLevelsLoss({self.n_levels}) needs {self.n_levels} logits a pixel "
                                                       f"(B,T,{self.n_levels},H,W), got {tuple(p.shape)}: build the model with out_ch={self.n_levels}")
        w = None if self.weight is None else torch.as_tensor(self.weight, dtype=p.dtype, device=p.device)
        return F.cross_entropy(p.flatten(0, 1), self.encode(targ).to(p.device).flatten(0, 1), weight=w)
    def activation(self, x): return x
    def decodes(self, x) -> Tensor:
        "Logits `(B,T,K,H,W)` -> frames `(B,T,1,H,W)`: the level of the most likely class, in [0,1]"
        return ImageSeq(as_seq(x, 'pred').argmax(2, keepdim=True).float()/(self.n_levels-1))
    def __repr__(self): return f'PixelLevelsLoss(n_levels={self.n_levels}, th={self.th})'
