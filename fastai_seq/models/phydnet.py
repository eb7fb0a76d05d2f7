"PhyDNet (Le Guen & Thome 2020): a PhyCell for PDE-like dynamics beside a ConvLSTM, with the moment-matrix constraint"
from __future__ import annotations
import math, random
import torch
from torch import nn, Tensor
import torch.nn.functional as F
from fastcore.basics import store_attr
from fastai.torch_core import Module, params
from fastai.callback.core import Callback
from ..registry import register_arch
from .blocks import ChannelsLast, check_size, frames_last, group_norm
from .convrnn import ConvLSTMCell

__all__ = ['moment_matrix', 'kernel_moments', 'PhyCellCell', 'PhyCell', 'ConvLSTMStack', 'PhyDNet', 'phydnet_split',
           'PhyDNetConstraintCallback', 'TeacherForcingCallback']

def moment_matrix(ks:int) -> Tensor:
    "`M[i,j] = (j-(ks-1)//2)**i / i!`: maps a 1-D kernel of size `ks` to its moments (K2M of the paper)"
    return torch.tensor([[(j - (ks-1)//2)**i / math.factorial(i) for j in range(ks)] for i in range(ks)])

def kernel_moments(w:Tensor, M:Tensor) -> Tensor:
    "The moment matrices `M @ k @ M.T` of the 2-D kernels in the last two axes of `w`"
    return torch.einsum('ai,...ij,bj->...ab', M.to(w), w, M.to(w))

def _gn(n:int): return nn.GroupNorm(math.gcd(16, n), n)

def _conv(ni:int, nf:int, stride:int=1) -> nn.Sequential:
    "PhyDNet's `dcgan_conv`: 3x3 conv, `GroupNorm`, LeakyReLU"
    return nn.Sequential(nn.Conv2d(ni, nf, 3, stride, 1), _gn(nf), nn.LeakyReLU(0.2))

def _upconv(ni:int, nf:int, stride:int=1, last:bool=False) -> nn.Module:
    "PhyDNet's `dcgan_upconv`: 3x3 transposed conv (doubling the size when `stride==2`), `GroupNorm`, LeakyReLU"
    conv = nn.ConvTranspose2d(ni, nf, 3, stride, 1, output_padding=stride-1)
    return conv if last else nn.Sequential(conv, _gn(nf), nn.LeakyReLU(0.2))

class PhyCellCell(Module):
    "One PhyCell layer: the physical prediction `h + F(h)`, corrected towards the input `x` by a learned gain"
    def __init__(self,
        dim:int, # Channels of the input and of the state
        F_hidden:int=49, # Filters of `F` (`ks*ks` for the moment constraint to make sense)
        ks:int=7, # Kernel size of `F`'s filters
    ):
        self.F = nn.Sequential(nn.Conv2d(dim, F_hidden, ks, padding=ks//2), group_norm(F_hidden, 7),
                               nn.Conv2d(F_hidden, dim, 1))
        self.convgate = nn.Conv2d(2*dim, dim, 3, padding=1)

    def forward(self, x:Tensor, h:Tensor) -> Tensor:
        k = torch.sigmoid(self.convgate(torch.cat([x, h], dim=1)))
        h_tilde = h + self.F(h)
        return h_tilde + k*(x - h_tilde)

class PhyCell(Module):
    "Stacked `PhyCellCell`s; the state is the list of the layers' maps"
    def __init__(self, dim:int, F_hidden:tuple=(49,), ks:int=7):
        self.cells = nn.ModuleList([PhyCellCell(dim, fh, ks) for fh in F_hidden])

    def forward(self, x:Tensor, H:list|None) -> list:
        if H is None: H = [torch.zeros_like(x) for _ in self.cells]
        res = []
        for cell,h in zip(self.cells, H):
            x = cell(x, h)
            res.append(x)
        return res

class ConvLSTMStack(Module):
    "Stacked `ConvLSTMCell`s run one step at a time; the state is the list of the layers' `(h,c)`"
    def __init__(self, dim:int, hidden:tuple=(128,128,64), ks:int=3):
        self.cells = nn.ModuleList([ConvLSTMCell(ni, nh, ks) for ni,nh in zip([dim]+list(hidden[:-1]), hidden)])

    def forward(self, x:Tensor, S:list|None) -> list:
        if S is None: S = [c.init_state(x.shape[0], *x.shape[-2:], x) for c in self.cells]
        res = []
        for cell,s in zip(self.cells, S):
            s = cell(cell.project(x), s)
            x = s[0]
            res.append(s)
        return res

class PhyDNet(Module):
    "PhyDNet: shared encoder, a PhyCell branch and a ConvLSTM branch added before a shared decoder, rolled out frame by frame"
    def __init__(self,
        channels:int=1, # Channels of the frames
        n_out:int=10, # Number of frames to predict
        nf:int=32, # Width of the shared encoder; the latent maps have `2*nf` channels
        phy_hidden:tuple=(49,), # Filters of each PhyCell layer (`phy_ks**2`)
        phy_ks:int=7, # Kernel size of the PhyCell filters
        lstm_hidden:tuple=(64,64), # Hidden channels of the ConvLSTM layers (the paper: (128,128,64))
        lstm_ks:int=3, # Kernel size of the ConvLSTM cells
        patch:int=4, # Downsampling of the shared encoder: 2 or 4
        y_range:tuple=None, # `(lo,hi)` squashes the outputs with a sigmoid (the paper: (0,1)); None: linear outputs
    ):
        if patch not in (2, 4): raise ValueError(f"PhyDNet: `patch` must be 2 or 4, got {patch}")
        store_attr('channels,n_out,y_range')
        self.stride, s2, d = patch, patch//2, 2*nf
        self.enc = nn.Sequential(_conv(channels, nf, 2), ChannelsLast(), _conv(nf, nf), _conv(nf, d, s2))
        self.enc_p, self.enc_r = [nn.Sequential(_conv(d, d), _conv(d, d)) for _ in range(2)]
        self.phycell = PhyCell(d, phy_hidden, phy_ks)
        self.convlstm = ConvLSTMStack(d, lstm_hidden, lstm_ks)
        self.dec_p = nn.Sequential(_upconv(d, d), _upconv(d, d))
        self.dec_r = nn.Sequential(_upconv(lstm_hidden[-1], d), _upconv(d, d))
        self.dec = nn.Sequential(_upconv(d, nf, s2), _upconv(nf, nf), _upconv(nf, channels, 2, last=True))
        self.register_buffer('moments', moment_matrix(phy_ks), persistent=False)
        self.teacher_forcing_ratio, self.keep_recon, self.recon = 0., False, None

    def step(self, x:Tensor, hp:list|None, hc:list|None, decode:bool=True) -> tuple:
        "Encode frame `x`, update both branches and (if `decode`) decode the prediction of the next frame"
        e = self.enc(x)
        hp = self.phycell(self.enc_p(e), hp)
        hc = self.convlstm(self.enc_r(e), hc)
        if not decode: return None, hp, hc
        y = self.dec(self.dec_p(hp[-1]) + self.dec_r(hc[-1][0]))
        if self.y_range is not None: y = torch.sigmoid(y)*(self.y_range[1]-self.y_range[0]) + self.y_range[0]
        return y, hp, hc

    def forward(self,
        x:Tensor, # Input frames `(B,T,C,H,W)`
        targ:Tensor=None, # Target frames, only used for teacher forcing (see `TeacherForcingCallback`)
    ) -> Tensor:
        "Predict `(B,n_out,C,H,W)`: run through the inputs, then feed each prediction back"
        check_size(self, x, self.stride)
        x = frames_last(x.as_subclass(Tensor))
        recon = self.keep_recon and self.training
        hp = hc = None
        outs = []
        for i in range(x.shape[1]-1):
            y,hp,hc = self.step(x[:, i], hp, hc, decode=recon)
            outs.append(y)
        self.recon = torch.stack(outs, dim=1) if recon and outs else None
        tf = (targ is not None and self.training and self.teacher_forcing_ratio > 0
              and random.random() < self.teacher_forcing_ratio)
        inp, preds = x[:, -1], []
        for i in range(self.n_out):
            y,hp,hc = self.step(inp, hp, hc)
            preds.append(y)
            inp = targ[:, i].as_subclass(Tensor) if tf else y
        return torch.stack(preds, dim=1)

    def constraint_loss(self) -> Tensor:
        "The paper's moment loss: the moments of the first PhyCell's filters should approximate each partial derivative once"
        w = self.phycell.cells[0].F[0].weight
        nh,_,k,_ = w.shape
        if nh != k*k: raise ValueError(f"The moment constraint needs {k*k} PhyCell filters of size {k}, got {nh}")
        targ = torch.eye(nh, dtype=w.dtype, device=w.device).view(nh, 1, k, k)
        # MSE over (filter, moment) for each input channel, summed over the channels, as in the reference code
        return ((kernel_moments(w, self.moments) - targ)**2).mean((0, 2, 3)).sum()

    def __getstate__(self): return {**super().__getstate__(), 'recon': None}

def phydnet_split(m:PhyDNet) -> list:
    "Param groups of a `PhyDNet`: the frame encoder/decoder, then the recurrent branches"
    io = nn.ModuleList([m.enc, m.enc_p, m.enc_r, m.dec_p, m.dec_r, m.dec])
    return [params(io), params(nn.ModuleList([m.phycell, m.convlstm]))]

def _find(model:nn.Module, cls:type, cb:str):
    ms = [o for o in model.modules() if isinstance(o, cls)]
    if not ms: raise TypeError(f"{cb} needs a model containing a {cls.__name__} (e.g. `seq_learner(dls, arch='phydnet')`)")
    return ms[0]

class PhyDNetConstraintCallback(Callback):
    "Add PhyDNet's moment constraint (and its next-frame loss on the input frames) to the training loss"
    order = 60
    def __init__(self,
        weight:float=1., # Weight of the moment-matrix constraint of the PhyCell filters
        recon_weight:float=1., # Weight of the MSE of the predictions of input frames 2..T made while encoding (0: off)
    ): store_attr()

    def before_fit(self):
        self.phy = _find(self.learn.model, PhyDNet, type(self).__name__)
        self.phy.keep_recon = self.recon_weight > 0

    def after_loss(self):
        if not self.training: return
        extra = self.weight*self.phy.constraint_loss() if self.weight else 0.
        if self.phy.recon is not None:
            x = self.xb[0].as_subclass(Tensor)
            extra = extra + self.recon_weight*F.mse_loss(self.phy.recon, x[:, 1:])
            self.phy.recon = None
        self.learn.loss_grad = self.loss_grad + extra

    def after_fit(self): self.phy.keep_recon,self.phy.recon = False,None

class TeacherForcingCallback(Callback):
    "Give a model with a `teacher_forcing_ratio` the targets while training, the ratio going linearly from `start` to `end`"
    order = 5
    def __init__(self,
        start:float=1., # Probability of teacher forcing a batch at the start of training
        end:float=0., # Probability at the end of training
    ): store_attr()

    def before_fit(self):
        ms = [o for o in self.learn.model.modules() if hasattr(o, 'teacher_forcing_ratio')]
        if not ms: raise TypeError("TeacherForcingCallback needs a model with a `teacher_forcing_ratio` "
                                   "whose forward takes the targets (e.g. arch='phydnet')")
        self.m = ms[0]

    def before_batch(self):
        if not self.training: return
        self.m.teacher_forcing_ratio = self.start + (self.end-self.start)*self.pct_train
        self.learn.xb = (*self.xb, *self.yb)

    def after_fit(self): self.m.teacher_forcing_ratio = 0.

@register_arch('phydnet', task='forecast', splitter=phydnet_split, lr=1e-3, cbs=(PhyDNetConstraintCallback,))
def phydnet(n_in:int, n_out:int, channels:int, size:tuple=(64,64), **kwargs) -> PhyDNet:
    "PhyDNet (stride 4); train it with `PhyDNetConstraintCallback` (and optionally `TeacherForcingCallback`)"
    return PhyDNet(channels=channels, n_out=n_out, **kwargs)
