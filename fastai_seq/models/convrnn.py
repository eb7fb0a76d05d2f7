"Convolutional recurrent forecasters: the ConvGRU encoder/decoder and the ConvLSTM encoder-forecaster of Shi et al."
from __future__ import annotations
import torch
from torch import nn, Tensor
import torch.nn.functional as F
from fastcore.basics import store_attr
from fastai.torch_core import Module, params
from fastai.layers import ConvLayer, NormType, PixelShuffle_ICNR, SelfAttention, defaults, icnr_init
from ..layers import TimeDistributed
from ..registry import register_arch
from .blocks import group_norm, check_size, frames_last, ChannelsLast

__all__ = ['ConvCell', 'ConvGRUCell', 'ConvLSTMCell', 'ConvRNN', 'UpsampleBlock', 'SubPixelHead', 'ConvGRUNet',
           'ConvLSTMNet', 'convrnn_split']

def _zeros(b:int, c:int, h:int, w:int, ref:Tensor) -> Tensor:
    "A channels-last zero state like `ref`"
    return ref.new_zeros(b, h, w, c).permute(0, 3, 1, 2)

class ConvCell(Module):
    "What the convolutional recurrent cells share: the input-to-state convolution, run by `ConvRNN` over all steps at once"
    def project(self, x:Tensor) -> Tensor|None:
        "The input-to-state part of the pre-activations for frames `x` `(N,in_ch,H,W)`"
        return None if self.conv_x is None else self.conv_x(x)

    def __repr__(self): return f'{type(self).__name__}(in={self.in_ch}, hid={self.hid_ch}, ks={self.ks}, norm={self.norm})'

class ConvGRUCell(ConvCell):
    "A convolutional GRU cell: one time step `(projected input, h) -> h`"
    def __init__(self,
        in_ch:int, # Input channels; 0 for a cell that runs on its state alone
        hid_ch:int, # Hidden channels
        ks:int=3, # Kernel size of the input-to-state and state-to-state convolutions
        norm:bool=True, # `GroupNorm` the gate and candidate pre-activations
    ):
        store_attr()
        # input convs are split from the state convs so `ConvRNN` can run them over all time steps at once
        self.conv_x = nn.Conv2d(in_ch, 3*hid_ch, ks, padding=ks//2, bias=False) if in_ch else None
        self.conv_h = nn.Conv2d(hid_ch, 2*hid_ch, ks, padding=ks//2)
        self.conv_c = nn.Conv2d(hid_ch, hid_ch, ks, padding=ks//2)
        self.norm_g = group_norm(2*hid_ch) if norm else nn.Identity()
        self.norm_c = group_norm(hid_ch) if norm else nn.Identity()

    def init_state(self, b:int, h:int, w:int, ref:Tensor) -> Tensor:
        "The zero state for a batch of `b` maps of size `h`x`w`"
        return _zeros(b, self.hid_ch, h, w, ref)

    def output(self, state:Tensor) -> Tensor: return state

    def forward(self, xp:Tensor|None, h:Tensor) -> Tensor:
        "One step from the projected input `xp` (or None) and the state `h`"
        g = self.conv_h(h)
        if xp is not None: g = g + xp[:, :2*self.hid_ch]
        z,r = torch.sigmoid(self.norm_g(g)).chunk(2, dim=1)
        c = self.conv_c(r*h)
        if xp is not None: c = c + xp[:, 2*self.hid_ch:]
        return h + z*(torch.tanh(self.norm_c(c)) - h)

class ConvLSTMCell(ConvCell):
    "A convolutional LSTM cell (Shi et al. 2015, without peepholes): one step `(projected input, (h,c)) -> (h,c)`"
    def __init__(self,
        in_ch:int, # Input channels; 0 for a cell that runs on its state alone
        hid_ch:int, # Hidden channels
        ks:int=3, # Kernel size of the input-to-state and state-to-state convolutions
        norm:bool=False, # `GroupNorm` the gate pre-activations
        forget_bias:float=1., # Initial bias of the forget gate
    ):
        store_attr()
        self.conv_x = nn.Conv2d(in_ch, 4*hid_ch, ks, padding=ks//2, bias=False) if in_ch else None
        self.conv_h = nn.Conv2d(hid_ch, 4*hid_ch, ks, padding=ks//2)
        with torch.no_grad(): self.conv_h.bias[hid_ch:2*hid_ch].fill_(forget_bias)
        self.norm_g = group_norm(4*hid_ch) if norm else nn.Identity()

    def init_state(self, b:int, h:int, w:int, ref:Tensor) -> tuple:
        "The zero state `(h,c)` for a batch of `b` maps of size `h`x`w`"
        z = _zeros(b, self.hid_ch, h, w, ref)
        return (z, z)

    def output(self, state:tuple) -> Tensor: return state[0]

    def forward(self, xp:Tensor|None, state:tuple) -> tuple:
        "One step from the projected input `xp` (or None) and the state `(h,c)`"
        h,c = state
        g = self.conv_h(h)
        if xp is not None: g = g + xp
        i,f,o,u = self.norm_g(g).chunk(4, dim=1)
        c = torch.sigmoid(f)*c + torch.sigmoid(i)*torch.tanh(u)
        return torch.sigmoid(o)*torch.tanh(c), c

class ConvRNN(Module):
    "Run a `ConvGRUCell`/`ConvLSTMCell` over the time axis of `(B,T,C,H,W)` inputs"
    def __init__(self, cell:nn.Module): self.cell = cell

    def forward(self,
        x:Tensor|None, # Inputs `(B,T,C,H,W)`, or None for a cell without input (then `state` and `n_steps` are needed)
        state=None, # The initial state (zeros when None)
        n_steps:int=None, # Number of steps when `x` is None
    ) -> tuple:
        "The outputs `(B,T,hid,H,W)` and the last state"
        if x is None:
            if state is None or n_steps is None: raise ValueError("ConvRNN without input needs `state` and `n_steps`")
            xp = [None]*n_steps
        else:
            b,t,_,h,w = x.shape
            xp = self.cell.project(frames_last(x).flatten(0, 1)).unflatten(0, (b, t)).unbind(1)
            if state is None: state = self.cell.init_state(b, h, w, x)
        outs = []
        for p in xp:
            state = self.cell(p, state)
            outs.append(self.cell.output(state))
        return torch.stack(outs, dim=1), state

    def __repr__(self): return f'ConvRNN({self.cell})'

class UpsampleBlock(Module):
    "Double the resolution: `PixelShuffle_ICNR` (optionally blurred), then a conv (optionally with self-attention)"
    def __init__(self,
        ni:int, # Input channels
        nf:int, # Output channels
        blur:bool=False, # Blur after the pixel shuffle to avoid checkerboard artefacts
        attn:bool=False, # Add fastai's `SelfAttention` after the conv
        act_cls=defaults.activation, # Activation
        norm_type=NormType.Batch, # Norm of the conv
    ):
        self.shuf = PixelShuffle_ICNR(ni, nf, blur=blur, act_cls=act_cls, norm_type=None)
        self.conv = ConvLayer(nf, nf, act_cls=act_cls, norm_type=norm_type, xtra=SelfAttention(nf) if attn else None)

    def forward(self, x): return self.conv(self.shuf(x))

class SubPixelHead(nn.Sequential):
    "A 3x3 conv to `nf*scale**2` channels and a pixel shuffle: features to frames `scale` times larger"
    def __init__(self,
        ni:int, # Input channels
        nf:int, # Output channels (the frames' channels)
        scale:int=2, # Upsampling factor
        ks:int=3, # Kernel size
        zero:bool=True, # Zero init, so training starts from blank predictions (much faster early on); else ICNR init
    ):
        conv = nn.Conv2d(ni, nf*scale**2, ks, padding=ks//2)
        with torch.no_grad():
            if zero: conv.weight.zero_()
            else: conv.weight.copy_(icnr_init(conv.weight, scale=scale))
            conv.bias.zero_()
        super().__init__(conv, nn.PixelShuffle(scale))

class ConvGRUNet(Module):
    "ConvGRU encoder/decoder: downsampling convs + ConvGRUs over the inputs, ConvGRUs unrolled `n_out` steps + upsampling"
    def __init__(self,
        channels:int=1, # Channels of the frames
        n_out:int=10, # Number of frames to predict
        szs:tuple=(32,64), # Channels of the recurrent stages; each one halves the resolution first
        stem:tuple=(16,), # Channels of stride-2 convs before the first recurrent stage (mirrored by upsampling blocks)
        ks:int=3, # Kernel size of the encoder convs
        rnn_ks:int=3, # Kernel size of the ConvGRU cells
        attn:bool=False, # fastai `SelfAttention` in the first (lowest resolution) upsampling block
        blur:bool=False, # Blur in the `PixelShuffle_ICNR` upsampling
        act_cls=defaults.activation, # Activation of the convs
        norm_type=NormType.Batch, # Norm of the convs (the cells use `GroupNorm`)
        rnn_norm:bool=True, # `GroupNorm` inside the ConvGRU cells
        out_ch:int=None, # Channels of the output frames (default `channels`; K logits a pixel for `PixelLevelsLoss(K)`)
    ):
        store_attr('channels,n_out,szs,stem')
        self.stride = 2**(len(stem)+len(szs))
        szs,stem = list(szs),list(stem)
        conv = lambda ni,nf: ConvLayer(ni, nf, ks, stride=2, act_cls=act_cls, norm_type=norm_type)
        up = lambda ni,nf,a=False: UpsampleBlock(ni, nf, blur=blur, attn=a, act_cls=act_cls, norm_type=norm_type)
        chs = [channels]+stem
        self.stem_convs = TimeDistributed(nn.Sequential(*[conv(ni, nf) for ni,nf in zip(chs[:-1], chs[1:])]))
        self.convs = nn.ModuleList([TimeDistributed(conv(ni, nf)) for ni,nf in zip(chs[-1:]+szs[:-1], szs)])
        self.enc_rnns = nn.ModuleList([ConvRNN(ConvGRUCell(nf, nf, rnn_ks, rnn_norm)) for nf in szs])
        # decoder, top (lowest resolution) stage first: the top cell runs on its state alone
        rev = szs[::-1]
        self.dec_rnns = nn.ModuleList([ConvRNN(ConvGRUCell(0 if i==0 else nf, nf, rnn_ks, rnn_norm)) for i,nf in enumerate(rev)])
        self.ups = nn.ModuleList([TimeDistributed(up(ni, nf, attn and i==0)) for i,(ni,nf) in enumerate(zip(rev[:-1], rev[1:]))])
        # then the stem mirrored, its last doubling a sub-pixel conv straight to the frames (a full-resolution conv costs a lot)
        tail = szs[:1]+stem[::-1]
        self.head = TimeDistributed(nn.Sequential(*[up(ni, nf) for ni,nf in zip(tail[:-1], tail[1:])],
                                                  SubPixelHead(tail[-1], out_ch or channels)))

    def encode(self, x:Tensor) -> list:
        "The last state of each recurrent encoder stage"
        x,states = self.stem_convs(x),[]
        for conv,rnn in zip(self.convs, self.enc_rnns):
            x,h = rnn(conv(x))
            states.append(h)
        return states

    def forward(self, x:Tensor) -> Tensor:
        "Predict `(B,n_out,C,H,W)` from `(B,T,C,H,W)`"
        check_size(self, x, self.stride)
        x = frames_last(x.as_subclass(Tensor))
        states = self.encode(x)
        y = None
        for i,(rnn,h) in enumerate(zip(self.dec_rnns, states[::-1])):
            if i: y = self.ups[i-1](y)
            y,_ = rnn(y, h, n_steps=self.n_out)
        return self.head(y)

class ConvLSTMNet(Module):
    "The ConvLSTM encoder-forecaster of Shi et al. 2015: frames cut in patches, stacked ConvLSTMs, 1x1 conv over all forecaster states"
    def __init__(self,
        channels:int=1, # Channels of the frames
        n_out:int=10, # Number of frames to predict
        hidden:tuple=(64,64), # Hidden channels of the stacked layers (the paper's best Moving MNIST model: (128,64,64), ks=5)
        ks:int=3, # Kernel size of the cells
        patch:int=4, # Frames are reshaped into `patch`x`patch` patches (space to depth), as in the paper
        norm:bool=False, # `GroupNorm` inside the cells (not in the paper)
    ):
        store_attr('channels,n_out,hidden,patch')
        self.stride = patch
        pc = channels*patch*patch
        ins = [pc]+list(hidden[:-1])
        self.enc_rnns = nn.ModuleList([ConvRNN(ConvLSTMCell(ni, nh, ks, norm)) for ni,nh in zip(ins, hidden)])
        # the forecaster's first layer has no input: it unrolls from the copied encoder states
        self.dec_rnns = nn.ModuleList([ConvRNN(ConvLSTMCell(0 if i==0 else ni, nh, ks, norm))
                                       for i,(ni,nh) in enumerate(zip(ins, hidden))])
        self.head = TimeDistributed(nn.Conv2d(sum(hidden), pc, 1))
        # zero init: training starts from blank predictions, much faster early on
        nn.init.zeros_(self.head.module.weight); nn.init.zeros_(self.head.module.bias)

    def forward(self, x:Tensor) -> Tensor:
        "Predict `(B,n_out,C,H,W)` from `(B,T,C,H,W)`"
        check_size(self, x, self.stride)
        x = frames_last(x.as_subclass(Tensor))
        b,t,c,h,w = x.shape
        y = F.pixel_unshuffle(x.flatten(0, 1), self.patch).unflatten(0, (b, t))
        states = []
        for rnn in self.enc_rnns:
            y,s = rnn(y)
            states.append(s)
        y,outs = None,[]
        for rnn,s in zip(self.dec_rnns, states):
            y,_ = rnn(y, s, n_steps=self.n_out)
            outs.append(y)
        y = self.head(torch.cat(outs, dim=2))
        return F.pixel_shuffle(y.flatten(0, 1), self.patch).unflatten(0, (b, self.n_out))

def convrnn_split(m:nn.Module) -> list:
    "Param groups of a `ConvGRUNet`/`ConvLSTMNet`: the encoder, then the decoder/forecaster"
    enc = [m.stem_convs, m.convs, m.enc_rnns] if hasattr(m, 'convs') else [m.enc_rnns]
    dec = [m.dec_rnns, m.ups, m.head] if hasattr(m, 'ups') else [m.dec_rnns, m.head]
    return [params(nn.ModuleList(enc)), params(nn.ModuleList(dec))]

@register_arch('convgru', task='forecast', splitter=convrnn_split, lr=3e-3)
def convgru(n_in:int, n_out:int, channels:int, size:tuple=(64,64), **kwargs) -> ConvGRUNet:
    "ConvGRU encoder/decoder (stride 8: a stride-2 conv stem, ConvGRUs at 1/4 and 1/8); `attn=True` adds self-attention, `blur=True` blurred pixel-shuffle upsampling"
    return ConvGRUNet(channels=channels, n_out=n_out, **kwargs)

@register_arch('convlstm', task='forecast', splitter=convrnn_split, lr=1e-3)
def convlstm(n_in:int, n_out:int, channels:int, size:tuple=(64,64), **kwargs) -> ConvLSTMNet:
    "ConvLSTM encoder-forecaster of Shi et al. 2015 on 4x4 patches (stride 4)"
    return ConvLSTMNet(channels=channels, n_out=n_out, **kwargs)
