"SimVP (Gao et al. 2022, and the gSTA translator of SimVPv2): an all-convolutional forecaster, encoder -> translator -> decoder"
from __future__ import annotations
import math
import torch
from torch import nn, Tensor
from fastcore.basics import store_attr
from fastai.torch_core import Module, params
from torchvision.ops import StochasticDepth
from ..registry import register_arch
from .blocks import check_size, frames_last

__all__ = ['ConvSC', 'SimVPEncoder', 'SimVPDecoder', 'GroupConv2d', 'GInceptionST', 'MidIncepNet', 'LargeKernelAttention',
           'SpatialAttention', 'MixMlp', 'GASubBlock', 'MetaBlock', 'MidMetaNet', 'SimVP', 'simvp_split', 'SIMVP_CPU']

def _samplings(n:int) -> list:
    "Which of `n` stages change the resolution: every second one, starting with the second"
    return [i%2==1 for i in range(n)]

class ConvSC(Module):
    "Conv (strided when `downsampling`, pixel-shuffled when `upsampling`), `GroupNorm`, SiLU"
    def __init__(self, ni:int, nf:int, ks:int=3, downsampling:bool=False, upsampling:bool=False, act_norm:bool=True):
        stride = 2 if downsampling else 1
        pad = (ks - stride + 1)//2
        conv = nn.Conv2d(ni, nf*4 if upsampling else nf, ks, stride=1 if upsampling else stride, padding=pad)
        nn.init.trunc_normal_(conv.weight, std=.02)
        nn.init.zeros_(conv.bias)
        self.conv = nn.Sequential(conv, nn.PixelShuffle(2)) if upsampling else conv
        self.norm = nn.Sequential(nn.GroupNorm(2, nf), nn.SiLU()) if act_norm else nn.Identity()

    def forward(self, x): return self.norm(self.conv(x))

class SimVPEncoder(Module):
    "The spatial encoder: `n_layers` `ConvSC`s, every second one halving the resolution"
    def __init__(self, ni:int, nh:int, n_layers:int, ks:int=3):
        self.enc = nn.ModuleList([ConvSC(ni if i==0 else nh, nh, ks, downsampling=s) for i,s in enumerate(_samplings(n_layers))])

    def forward(self, x:Tensor) -> tuple:
        "The latent maps and the first layer's maps (the skip connection)"
        x = skip = self.enc[0](x).contiguous(memory_format=torch.channels_last)
        for l in self.enc[1:]: x = l(x)
        return x, skip

class SimVPDecoder(Module):
    "The spatial decoder: `ConvSC`s mirroring the encoder, the skip added before the last one, then a 1x1 readout"
    def __init__(self, nh:int, nf:int, n_layers:int, ks:int=3):
        self.dec = nn.ModuleList([ConvSC(nh, nh, ks, upsampling=s) for s in _samplings(n_layers)[::-1]])
        self.readout = nn.Conv2d(nh, nf, 1)

    def forward(self, x:Tensor, skip:Tensor) -> Tensor:
        for l in self.dec[:-1]: x = l(x)
        return self.readout(self.dec[-1](x + skip))

class GroupConv2d(Module):
    "Grouped conv, `GroupNorm` and LeakyReLU (one group when the channels do not divide)"
    def __init__(self, ni:int, nf:int, ks:int=3, groups:int=8):
        if ni % groups or nf % groups: groups = 1
        self.conv = nn.Conv2d(ni, nf, ks, padding=ks//2, groups=groups)
        self.norm = nn.GroupNorm(groups, nf)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x): return self.act(self.norm(self.conv(x)))

class GInceptionST(Module):
    "SimVP's inception block: a 1x1 conv then parallel grouped convs with kernel sizes `incep_ker`, summed"
    def __init__(self, ni:int, nh:int, nf:int, incep_ker:tuple=(3,5,7,11), groups:int=8):
        self.conv1 = nn.Conv2d(ni, nh, 1)
        self.layers = nn.ModuleList([GroupConv2d(nh, nf, k, groups) for k in incep_ker])

    def forward(self, x):
        x = self.conv1(x)
        return sum(l(x) for l in self.layers)

class MidIncepNet(Module):
    "SimVP's (v1) inception U-Net translator over the frames stacked on channels"
    def __init__(self, ni:int, nh:int, nf:int, n_layers:int=8, incep_ker:tuple=(3,5,7,11), groups:int=8):
        if n_layers < 2: raise ValueError(f"MidIncepNet needs at least 2 layers, got {n_layers}")
        g = lambda i,o: GInceptionST(i, nh//2, o, incep_ker, groups)
        self.enc = nn.ModuleList([g(ni, nh)] + [g(nh, nh) for _ in range(n_layers-1)])
        self.dec = nn.ModuleList([g(nh, nh)] + [g(2*nh, nh) for _ in range(n_layers-2)] + [g(2*nh, nf)])

    def forward(self, x:Tensor) -> Tensor:
        skips = []
        for i,l in enumerate(self.enc):
            x = l(x)
            if i < len(self.enc)-1: skips.append(x)
        x = self.dec[0](x)
        for l,s in zip(self.dec[1:], skips[::-1]): x = l(torch.cat([x, s], dim=1))
        return x

def _init_conv(m:nn.Module):
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0]*m.kernel_size[1]*m.out_channels//m.groups
        nn.init.normal_(m.weight, 0, math.sqrt(2./fan_out))
        if m.bias is not None: nn.init.zeros_(m.bias)

class LargeKernelAttention(Module):
    "A `ks`x`ks` receptive field from a depthwise conv and a dilated depthwise conv, gating a 1x1 conv"
    def __init__(self, dim:int, ks:int=21, dilation:int=3):
        dk = 2*dilation - 1
        ddk = ks//dilation + ((ks//dilation) % 2 - 1)
        self.conv0 = nn.Conv2d(dim, dim, dk, padding=(dk-1)//2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, ddk, padding=dilation*(ddk-1)//2, groups=dim, dilation=dilation)
        self.conv1 = nn.Conv2d(dim, 2*dim, 1)

    def forward(self, x):
        f,g = self.conv1(self.conv_spatial(self.conv0(x))).chunk(2, dim=1)
        return torch.sigmoid(g)*f

class SpatialAttention(Module):
    "1x1 conv, GELU, `LargeKernelAttention`, 1x1 conv, plus a shortcut"
    def __init__(self, dim:int, ks:int=21):
        self.proj_1,self.act = nn.Conv2d(dim, dim, 1),nn.GELU()
        self.spatial_gating_unit = LargeKernelAttention(dim, ks)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x): return self.proj_2(self.spatial_gating_unit(self.act(self.proj_1(x)))) + x

class MixMlp(Module):
    "1x1 conv, depthwise 3x3 conv, GELU, 1x1 conv"
    def __init__(self, dim:int, hidden:int, drop:float=0.):
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act,self.drop = nn.GELU(),nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x): return self.drop(self.fc2(self.drop(self.act(self.dwconv(self.fc1(x))))))

class GASubBlock(Module):
    "The gated spatiotemporal attention (gSTA) block of SimVPv2: attention and MLP branches with layer scales"
    def __init__(self, dim:int, ks:int=21, mlp_ratio:float=4., drop:float=0., drop_path:float=0., init_value:float=1e-2):
        self.norm1,self.attn = nn.BatchNorm2d(dim),SpatialAttention(dim, ks)
        self.norm2,self.mlp = nn.BatchNorm2d(dim),MixMlp(dim, int(dim*mlp_ratio), drop)
        self.drop_path = StochasticDepth(drop_path, 'row') if drop_path > 0 else nn.Identity()
        self.layer_scale_1 = nn.Parameter(init_value*torch.ones(dim, 1, 1))
        self.layer_scale_2 = nn.Parameter(init_value*torch.ones(dim, 1, 1))
        self.apply(_init_conv)

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1*self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2*self.mlp(self.norm2(x)))

class MetaBlock(Module):
    "A `GASubBlock` followed by a 1x1 conv when the channels change"
    def __init__(self, ni:int, nf:int, mlp_ratio:float=8., drop:float=0., drop_path:float=0.):
        self.block = GASubBlock(ni, 21, mlp_ratio, drop, drop_path)
        self.reduction = nn.Conv2d(ni, nf, 1) if ni != nf else nn.Identity()

    def forward(self, x): return self.reduction(self.block(x))

class MidMetaNet(Module):
    "The gSTA translator: `n_layers` `MetaBlock`s from `ni` to `nh` channels and back out to `nf`"
    def __init__(self, ni:int, nh:int, nf:int, n_layers:int=4, mlp_ratio:float=8., drop:float=0., drop_path:float=0.):
        if n_layers < 2: raise ValueError(f"MidMetaNet needs at least 2 layers, got {n_layers}")
        dpr = torch.linspace(0, drop_path, n_layers).tolist()
        chs = [ni] + [nh]*(n_layers-1) + [nf]
        self.enc = nn.Sequential(*[MetaBlock(i, o, mlp_ratio, drop, d) for i,o,d in zip(chs[:-1], chs[1:], dpr)])

    def forward(self, x): return self.enc(x)

class SimVP(Module):
    "SimVP: frames encoded one by one, a translator over all the frames stacked on channels, frames decoded one by one"
    def __init__(self,
        channels:int=1, # Channels of the frames
        n_in:int=10, # Number of input frames
        n_out:int=10, # Number of frames to predict (the translator's output channels give them)
        hid_S:int=16, # Channels of the spatial encoder/decoder
        hid_T:int=256, # Channels of the translator
        N_S:int=4, # Layers of the spatial encoder/decoder; every second one halves the resolution (stride `2**(N_S//2)`)
        N_T:int=4, # Layers of the translator
        model_type:str='gsta', # Translator: 'gsta' (SimVPv2 / OpenSTL default) or 'incepu' (the original SimVP)
        mlp_ratio:float=8., # MLP expansion of the gSTA blocks
        drop:float=0., # Dropout in the gSTA MLPs
        drop_path:float=0., # Stochastic depth of the gSTA blocks (linearly up to this value)
        ks_enc:int=3, # Kernel size of the spatial encoder
        ks_dec:int=3, # Kernel size of the spatial decoder
    ):
        model_type = model_type.lower()
        if model_type not in ('gsta', 'incepu'): raise ValueError(f"SimVP: `model_type` must be 'gsta' or 'incepu', got {model_type!r}")
        store_attr('channels,n_in,n_out,hid_S')
        self.stride = 2**(N_S//2)
        self.enc = SimVPEncoder(channels, hid_S, N_S, ks_enc)
        self.dec = SimVPDecoder(hid_S, channels, N_S, ks_dec)
        ni,nf = n_in*hid_S, n_out*hid_S
        if model_type=='incepu': self.hid = MidIncepNet(ni, hid_T, nf, N_T)
        else: self.hid = MidMetaNet(ni, hid_T, nf, N_T, mlp_ratio, drop, drop_path)
        # with as many outputs as inputs output frame t gets the skip of input frame t, as in SimVP; else a 1x1 conv maps them
        self.skip = nn.Identity() if n_in==n_out else nn.Conv2d(ni, nf, 1)

    def forward(self, x:Tensor) -> Tensor:
        "Predict `(B,n_out,C,H,W)` from `(B,n_in,C,H,W)`"
        check_size(self, x, self.stride)
        b,t,c,h,w = x.shape
        if t != self.n_in: raise ValueError(f"This SimVP was built for {self.n_in} input frames, got {t}")
        z,skip = self.enc(frames_last(x.as_subclass(Tensor)).flatten(0, 1))
        z = self.hid(z.reshape(b, t*self.hid_S, *z.shape[-2:]))
        skip = self.skip(skip.reshape(b, t*self.hid_S, h, w))
        y = self.dec(z.reshape(b*self.n_out, self.hid_S, *z.shape[-2:]), skip.reshape(b*self.n_out, self.hid_S, h, w))
        return y.reshape(b, self.n_out, c, h, w)

def simvp_split(m:SimVP) -> list:
    "Param groups of a `SimVP`: the spatial encoder/decoder, then the translator"
    return [params(nn.ModuleList([m.enc, m.dec, m.skip])), params(m.hid)]

@register_arch('simvp', task='forecast', splitter=simvp_split, lr=1e-3)
def simvp(n_in:int, n_out:int, channels:int, size:tuple=(64,64), **kwargs) -> SimVP:
    "SimVP with the gSTA translator (stride 4), OpenSTL's default sizes; `model_type='incepu'`: the original inception translator"
    # OpenSTL's Moving MNIST config (configs/mmnist/simvp/SimVP_gSTA.py, a GPU model): hid_S=64, hid_T=512, N_T=8
    return SimVP(channels=channels, n_in=n_in, n_out=n_out, **kwargs)

SIMVP_CPU = dict(hid_S=8, hid_T=128, mlp_ratio=4.)  # 0.76M parameters: 3.5x the training samples/s of `simvp` on one CPU thread

@register_arch('simvp_cpu', task='forecast', splitter=simvp_split, lr=3e-3)
def simvp_cpu(n_in:int, n_out:int, channels:int, size:tuple=(64,64), **kwargs) -> SimVP:
    "SimVP (gSTA) sized for a CPU: 8 spatial channels, a translator of 128, MLP ratio 4 (`simvp`: 16, 256 and 8, OpenSTL's defaults)"
    return SimVP(channels=channels, n_in=n_in, n_out=n_out, **{**SIMVP_CPU, **kwargs})
