"The per-frame U-Net forecasting baseline: a fastai `DynamicUnet` on each frame, no temporal modelling"
from __future__ import annotations
from torch import nn, Tensor
from fastcore.basics import store_attr
from fastai.torch_core import Module, params
from fastai.layers import ConvLayer, ResBlock
from fastai.vision.models.unet import DynamicUnet
from ..layers import TimeDistributed
from ..registry import register_arch
from .blocks import ChannelsLast, check_size, frames_last

__all__ = ['unet_body', 'UnetForecaster', 'unet_split']

def unet_body(
    channels:int, # Channels of the frames
    szs:tuple=(16,32,64,128), # Channels at strides 2, 4, 8, 16...
) -> nn.Sequential:
    "A small resnet-style encoder for `DynamicUnet`: a stride-2 stem conv, then a stride-2 `ResBlock` per further halving"
    return nn.Sequential(nn.Sequential(ConvLayer(channels, szs[0], stride=2), ChannelsLast()),
                         *[ResBlock(1, ni, nf, stride=2) for ni,nf in zip(szs[:-1], szs[1:])])

class UnetForecaster(Module):
    "A `DynamicUnet` applied to single frames with `TimeDistributed`: each output frame comes from ONE input frame"
    def __init__(self,
        channels:int, # Channels of the frames
        n_in:int, # Number of input frames
        n_out:int, # Number of frames to predict
        size:tuple=(64,64), # Frame size `(H,W)` the U-Net is built for (others are interpolated to the skip sizes)
        szs:tuple=(16,32,64,128), # Channels of the encoder body (see `unet_body`)
        last_cross:bool=False, # `DynamicUnet`'s full-resolution `ResBlock` on the input: sharper but slow on CPU
        **kwargs # Passed to `DynamicUnet` (`blur`, `self_attention`, `y_range`, ...)
    ):
        store_attr('channels,n_in,n_out')
        # with n_out <= n_in, output frame j is predicted from input frame n_in-n_out+j (a fixed horizon of n_out steps);
        # with more outputs than inputs each of the last `n_use` inputs gives `k` consecutive output frames
        self.k = -(-n_out//n_in)
        self.n_use = -(-n_out//self.k)
        self.stride = 2**len(szs)
        self.unet = TimeDistributed(DynamicUnet(unet_body(channels, szs), channels*self.k, tuple(size),
                                                last_cross=last_cross, **kwargs))

    def forward(self, x:Tensor) -> Tensor:
        "Predict `(B,n_out,C,H,W)` from `(B,T,C,H,W)` frame by frame"
        check_size(self, x, 1)
        if x.shape[1] < self.n_use:
            raise ValueError(f"UnetForecaster needs at least {self.n_use} input frames, got {x.shape[1]}")
        b,_,c,h,w = x.shape
        y = self.unet(frames_last(x[:, -self.n_use:].as_subclass(Tensor))).as_subclass(Tensor)
        return y.reshape(b, self.n_use*self.k, c, h, w)[:, :self.n_out]

def unet_split(m:UnetForecaster) -> list:
    "Param groups of a `UnetForecaster`: the encoder body, then the decoder"
    u = m.unet.module
    return [params(u[0]), params(nn.ModuleList(list(u.layers)[1:]))]

@register_arch('unet', task='forecast', splitter=unet_split, lr=3e-3)
def unet(n_in:int, n_out:int, channels:int, size:tuple=(64,64), **kwargs) -> UnetForecaster:
    "Per-frame `DynamicUnet` baseline (small resnet body, no pretraining, no temporal modelling)"
    return UnetForecaster(channels, n_in, n_out, size, **kwargs)
