"""Model blocks shared by the forecasting families: frame-size checks, channels-last layouts, `GroupNorm` sizing

Each model file imports its shared pieces from here and registers its archs with `..registry`; nothing here is exported by
`fastai_seq.all` (`ChannelsLast` would shadow fastai's callback of that name)."""
from __future__ import annotations
import torch
from torch import nn, Tensor
from fastai.torch_core import Module

__all__ = ['group_norm', 'check_size', 'frames_last', 'ChannelsLast']

def group_norm(ch:int, per:int=8) -> nn.GroupNorm:
    "A `GroupNorm` over `ch` channels with about `per` channels per group"
    g = max(1, ch//per)
    while ch % g: g -= 1
    return nn.GroupNorm(g, ch)

def check_size(model:nn.Module, x:Tensor, stride:int):
    "Raise a clear error when the frames of `x` `(B,T,C,H,W)` do not suit `model`"
    if x.ndim!=5: raise ValueError(f"{type(model).__name__} expects (B,T,C,H,W) inputs, got shape {tuple(x.shape)}")
    h,w = x.shape[-2:]
    if h % stride or w % stride:
        raise ValueError(f"{type(model).__name__} needs frame sizes divisible by {stride}, got {h}x{w}: "
                         f"resize the frames (e.g. `item_tfms=Resize({max(stride, h//stride*stride)})`)")

def frames_last(x:Tensor) -> Tensor:
    "`x` `(B,T,C,H,W)` laid out so that each frame is channels-last (much faster convs with few channels on CPU)"
    return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)

class ChannelsLast(Module):
    "Lay `(N,C,H,W)` maps out channels-last (a conv on a 1-channel input cannot tell, and picks the slower layout)"
    def forward(self, x:Tensor) -> Tensor: return x.contiguous(memory_format=torch.channels_last)
