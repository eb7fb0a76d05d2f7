"The moving_mnist package's seq2seq forecaster: a conv encoder per frame, a ConvGRU over the inputs, a ConvGRU decoder fed its own predictions"
from __future__ import annotations
import torch
from torch import nn, Tensor
from fastcore.basics import store_attr
from fastai.torch_core import Module, params
from fastai.layers import ConvLayer, NormType, defaults
from ..layers import TimeDistributed
from ..registry import register_arch
from .blocks import check_size, frames_last
from .convrnn import ConvGRUCell, ConvRNN, UpsampleBlock, SubPixelHead

__all__ = ['Seq2SeqNet', 'seq2seq_split']

class Seq2SeqNet(Module):
    "Seq2seq: frames encoded by stride-2 convs, a ConvGRU encoder; the decoder ConvGRU starts from its state and is fed each predicted frame"
    def __init__(self,
        channels:int=1, # Channels of the frames
        n_out:int=10, # Frames to predict
        nf:int=32, # Channels of the frame encoder
        hid:int=64, # Hidden channels of the ConvGRUs
        n_down:int=2, # Stride-2 convs of the frame encoder (the recurrence runs at 1/2**n_down of the frame size)
        ks:int=3, # Kernel size of the ConvGRU cells
        out_ch:int=None, # Channels of the output frames (default `channels`)
        act_cls=defaults.activation, # Activation of the convs
    ):
        store_attr('channels,n_out,nf,hid')
        self.stride = 2**n_down
        chs = [channels]+[nf]*n_down
        self.enc = nn.Sequential(*[ConvLayer(ni, no, stride=2, act_cls=act_cls, norm_type=NormType.Batch) for ni,no in zip(chs[:-1], chs[1:])])
        self.enc_rnn = ConvRNN(ConvGRUCell(nf, hid, ks))
        self.dec_cell = ConvGRUCell(nf, hid, ks)
        self.head = nn.Sequential(*[UpsampleBlock(hid if i==0 else nf, nf, act_cls=act_cls) for i in range(n_down-1)],
                                  SubPixelHead(hid if n_down==1 else nf, out_ch or channels))

    def forward(self, x:Tensor) -> Tensor:
        "Predict `(B,n_out,C,H,W)` from `(B,T,C,H,W)`, one frame at a time"
        check_size(self, x, self.stride)
        x = frames_last(x.as_subclass(Tensor))
        _,h = self.enc_rnn(TimeDistributed(self.enc)(x))
        prev,outs = x[:, -1],[]
        for _ in range(self.n_out):
            h = self.dec_cell(self.dec_cell.project(self.enc(prev)), h)
            y = self.head(h)
            outs.append(y)
            prev = y if y.shape[1]==x.shape[2] else x[:, -1]   # with class logits as output, the decoder sees the last input
        return torch.stack(outs, dim=1)

def seq2seq_split(m:nn.Module) -> list:
    "Param groups of a `Seq2SeqNet`: the encoder, then the decoder"
    return [params(nn.ModuleList([m.enc, m.enc_rnn])), params(nn.ModuleList([m.dec_cell, m.head]))]

@register_arch('seq2seq', task='forecast', splitter=seq2seq_split, lr=3e-3)
def seq2seq(n_in:int, n_out:int, channels:int, size:tuple=(64,64), **kwargs) -> Seq2SeqNet:
    "The moving_mnist package's seq2seq: conv frame encoder + ConvGRU encoder, ConvGRU decoder fed back its predictions (stride 4)"
    return Seq2SeqNet(channels=channels, n_out=n_out, **kwargs)
