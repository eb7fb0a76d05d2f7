"Sequence classification models: frames_mean, frames_lstm, timesformer (torchvision's video models: `kinetics.py`)"
from __future__ import annotations
import importlib
import torch
from torch import nn, Tensor
from fastcore.basics import store_attr
from fastcore.meta import delegates
from fastai.layers import AdaptiveConcatPool2d
from fastai.torch_core import Module
from fastai.vision.core import imagenet_stats
from ..layers import TimeDistributed
from ..registry import register_arch
from .pretrained import small_body, frame_body, classifier_head, body_split, head_split

__all__ = ['SpatialSoftArgmax', 'FramePool', 'FrameEncoder', 'FramesMean', 'FramesLSTM', 'FRAMES_PRETRAINED', 'VideoTransformer',
           'frames_split', 'timesformer_split']

class SpatialSoftArgmax(Module):
    "Expected (x,y) position of each channel's activation over the map, in [-1,1]: a differentiable 'where' feature"
    def __init__(self, temp:float=1.): self.temp = nn.Parameter(torch.tensor(float(temp)))
    def forward(self, x:Tensor) -> Tensor:
        n,c,h,w = x.shape
        p = (x.flatten(2)/self.temp).softmax(-1).view(n,c,h,w)
        ys,xs = torch.linspace(-1, 1, h, device=x.device),torch.linspace(-1, 1, w, device=x.device)
        return torch.cat([(p.sum(2)*xs).sum(-1), (p.sum(3)*ys).sum(-1)], 1)

_POOLS = ('keypoints', 'both', 'concat', 'avg', 'grid')

class FramePool(Module):
    "Pool a feature map `(N,ni,h,w)` into a vector: where things are ('keypoints'), what they are ('concat', 'avg'), or both"
    def __init__(self,
        ni:int, # Channels of the feature map
        pool:str='keypoints', # 'keypoints' (x,y of `n_kp` learned keypoints), 'concat' (avg+max), 'avg', 'both' (keypoints+concat), 'grid'
        n_kp:int=8, # Learned keypoints (a 1x1 conv to `n_kp` maps, each reduced to its soft-argmax x,y)
        grid:int=4, # Cells per side for pool='grid' (average pooled to `grid`x`grid`, flattened)
    ):
        store_attr('ni,pool,n_kp,grid')
        if pool not in _POOLS: raise ValueError(f"pool must be one of {_POOLS}, got {pool!r}")
        if pool in ('keypoints','both'): self.kp = nn.Sequential(nn.Conv2d(ni, n_kp, 1), SpatialSoftArgmax())
        if pool in ('concat','both'): self.cat = AdaptiveConcatPool2d()
        if pool in ('avg','grid'): self.avg = nn.AdaptiveAvgPool2d(grid if pool=='grid' else 1)

    @property
    def n_out(self) -> int:
        "Length of the pooled vector"
        return dict(keypoints=2*self.n_kp, both=2*self.n_kp+2*self.ni, concat=2*self.ni, avg=self.ni,
                    grid=self.ni*self.grid**2)[self.pool]

    def forward(self, x:Tensor) -> Tensor:
        if self.pool in ('avg','grid'): return self.avg(x).flatten(1)
        if self.pool=='concat': return self.cat(x).flatten(1)
        if self.pool=='keypoints': return self.kp(x)
        return torch.cat([self.kp(x), self.cat(x).flatten(1)], 1)

class FrameEncoder(Module):
    "A per-frame body, `FramePool` and a BatchNorm putting all pooled features on one scale: `(N,C,H,W) -> (N,nf)`"
    def __init__(self, body:nn.Module, pool:FramePool, bn:bool=True):
        self.body,self.pool,self.bn = body,pool,(nn.BatchNorm1d(pool.n_out) if bn else nn.Identity())
    def forward(self, x): return self.bn(self.pool(self.body(x)))

def _blank_output(body:nn.Module, channels:int, size:tuple) -> Tensor:
    "What `body` gives, in eval mode, on one blank `channels`x`size` frame (its training mode kept)"
    tr = body.training
    try:
        with torch.no_grad(): return body.eval()(torch.zeros(1, channels, *size))
    finally: body.train(tr)

def _n_features(body:nn.Module, channels:int, size:tuple) -> int:
    "Channels of the feature map `body` gives on a `size` frame"
    out = _blank_output(body, channels, size)
    if out.ndim!=4: raise ValueError(f"The frame body gives {tuple(out.shape)} outputs for {size[0]}x{size[1]} frames; a "
                                     "body must give (N,C,h,w) feature maps (CNNs such as resnet/convnext/efficientnet).")
    return out.shape[1]

def _prev_diff(x:Tensor) -> Tensor:
    "Append to each frame of `(B,T,C,...)` its change from the previous frame (zero for the first): `(B,T,2C,...)`"
    return torch.cat([x, x-torch.cat([x[:,:1], x[:,:-1]], 1)], 2)

class FramesMean(Module):
    "Encode every frame, average the frame features over time, classify: a bag of frames, blind to their order"
    def __init__(self, encoder:FrameEncoder, n_classes:int, lin_ftrs:int=256, ps:float=0.25):
        self.encoder,self.head = TimeDistributed(encoder),classifier_head(encoder.pool.n_out, n_classes, lin_ftrs, ps)
    def forward(self, x:Tensor) -> Tensor: return self.head(self.encoder(x).mean(1))

class FramesLSTM(Module):
    "Encode every frame (optionally with its change from the previous frame), run an LSTM over time, classify its last state"
    def __init__(self, encoder:FrameEncoder, n_classes:int, hidden:int=128, n_layers:int=1, bidir:bool=False,
                 diff:bool=True, frame_diff:bool=True, lin_ftrs:int=None, ps:float=0.25):
        self.encoder,self.diff,self.frame_diff = TimeDistributed(encoder),diff,frame_diff
        self.lstm = nn.LSTM(encoder.pool.n_out*(2 if diff else 1), hidden, n_layers, batch_first=True, bidirectional=bidir)
        self.head = classifier_head(hidden*(2 if bidir else 1), n_classes, lin_ftrs, ps)

    def forward(self, x:Tensor) -> Tensor:
        f = self.encoder(_prev_diff(x) if self.frame_diff else x)
        if self.diff: f = _prev_diff(f)
        _,(h,_) = self.lstm(f)
        return self.head(torch.cat([h[-2],h[-1]], 1) if self.lstm.bidirectional else h[-1])

def frames_split(m:nn.Module) -> list:
    "Param groups for `fine_tune`: the per-frame CNN body, then everything else (pooling, LSTM, head)"
    return body_split(m, m.encoder.module.body)

def frame_encoder(
    channels:int=3, # Channels of a frame
    size:tuple=(64,64), # (H,W) of a frame
    pretrained:bool=False, # ImageNet weights for a torchvision/timm `body`, downloaded into their cache on first use
    body:str|callable|nn.Module='small', # 'small' (fast on CPU; pretrained=True: 'resnet34'), a torchvision name/builder ('resnet18'), a timm name ('convnext_tiny'), or a module
    pool:str='concat', # How a frame's feature map becomes a vector: 'concat' (avg+max), 'avg', 'keypoints' (where things are), 'both' (keypoints + concat), 'grid'
    n_kp:int=8, # Learned keypoints for pool='keypoints'/'both'
    grid:int=4, # Cells per side for pool='grid'
    cut:int|callable=None, # Where to cut a torchvision `body` (fastai's `create_body`)
    bn:bool=True, # BatchNorm on the pooled frame features
) -> FrameEncoder:
    "The per-frame encoder of the frames_* archs: a CNN body and its pooling, applied to each frame"
    if min(size)<8: raise ValueError(f"Frames of {size[0]}x{size[1]} are too small for a CNN body; Resize them to at least 32.")
    b = frame_body(body, channels, pretrained, cut)
    return FrameEncoder(b, FramePool(_n_features(b, channels, size), pool, n_kp, grid), bn)

# What `pretrained=True` fills in (`pretrained_defaults`): an ImageNet ResNet-34 per frame (as fastai's tutorials), avg+max
# pooling, fastai's fine_tune recipe (1 frozen epoch, then all layers at base lr 2e-3), 224 px frames, 8 frames a clip (TSN-style)
FRAMES_PRETRAINED = dict(body='resnet34', pool='concat', lr=2e-3, freeze_epochs=1, epochs=5, frame_size=224, clip_frames=8)

@register_arch('frames_mean', task='classify', splitter=frames_split, stats=imagenet_stats, lr=3e-3, pretrained=FRAMES_PRETRAINED)
@delegates(frame_encoder)
def frames_mean(
    n_frames:int, # Frames per clip (unused: any clip length works)
    n_classes:int, # Number of classes
    lin_ftrs:int=256, # Hidden width of the head (None: one linear layer)
    ps:float=0.25, # Dropout of the head
    **kwargs, # `frame_encoder` arguments: channels, size, pretrained, body, pool, ...
) -> FramesMean:
    "A CNN per frame, frame features averaged over time: the order-blind baseline"
    return FramesMean(frame_encoder(**kwargs), n_classes, lin_ftrs, ps)

@register_arch('frames_lstm', task='classify', splitter=frames_split, stats=imagenet_stats, lr=3e-3, pretrained=FRAMES_PRETRAINED)
@delegates(frame_encoder)
def frames_lstm(
    n_frames:int, # Frames per clip (unused: any clip length works)
    n_classes:int, # Number of classes
    pool:str='both', # 'both' (keypoints + concat), 'keypoints' (where things are), 'concat' (what they are: avg+max), 'avg', 'grid'
    hidden:int=128, # LSTM hidden size
    n_layers:int=1, # LSTM layers
    bidir:bool=False, # Bidirectional LSTM
    diff:bool=True, # Also feed the LSTM each frame's feature change from the previous frame (motion)
    frame_diff:bool=True, # Give the body each frame's pixel change from the previous frame as extra channels (motion)
    lin_ftrs:int=None, # Hidden width of the head (None: one linear layer)
    ps:float=0.25, # Dropout of the head
    **kwargs, # `frame_encoder` arguments: channels, size, pretrained, body, n_kp, ...
) -> FramesLSTM:
    "A CNN per frame, then an LSTM over time, classified from its last hidden state"
    kwargs['channels'] = kwargs.get('channels', 3)*(2 if frame_diff else 1)
    return FramesLSTM(frame_encoder(pool=pool, **kwargs), n_classes, hidden, n_layers, bidir, diff, frame_diff, lin_ftrs, ps)

def _coords(x:Tensor) -> Tensor:
    "Three channels holding each pixel's x, y and t in [-1,1], shaped like one channel of `x` `(B,T,1,H,W)`"
    b,t,_,h,w = x.shape
    lin = lambda n: torch.linspace(-1, 1, n, device=x.device, dtype=x.dtype)
    g = torch.stack(torch.meshgrid(lin(t), lin(h), lin(w), indexing='ij'))  # (3,T,H,W): t, y, x
    return g.flip(0).transpose(0, 1)[None].expand(b, -1, -1, -1, -1)

def _size_error(h:int, w:int, patch_size:int) -> ValueError:
    "The error for frames whose sides `patch_size` does not divide"
    fix = max(patch_size, round(h/patch_size)*patch_size)
    return ValueError(f"timesformer: frames of {h}x{w} are not divisible by patch_size={patch_size}. Resize them to a "
                      f"multiple of {patch_size} (e.g. item_tfms=Resize({fix})) or pass a patch_size that divides both.")

class VideoTransformer(Module):
    "A TimeSformer over `(B,T,C,H,W)` clips, after optional frame-difference channels, a per-frame conv stem and x,y,t channels"
    def __init__(self,
        model:nn.Module, # A `timesformer_pytorch.TimeSformer` over the (stem's) feature maps
        patch_size:int, # Patch side in input pixels
        stem:nn.Module=None, # Per-frame conv stem (applied with `TimeDistributed`), or None for pixel patches
        diff:bool=True, # Append each frame's change from the previous one before the stem
        coords:bool=True, # Append x,y,t coordinate channels after the stem
    ):
        store_attr('model,patch_size,diff,coords')
        self.stem = None if stem is None else TimeDistributed(stem)

    def forward(self, x:Tensor) -> Tensor:
        h,w = x.shape[-2:]
        if h%self.patch_size or w%self.patch_size: raise _size_error(h, w, self.patch_size)
        if self.diff: x = _prev_diff(x)
        if self.stem is not None: x = self.stem(x)
        if self.coords: x = torch.cat([x, _coords(x)], 2)
        return self.model(x)

def timesformer_split(m:nn.Module) -> list:
    "Param groups: the stem, patch embedding and transformer blocks, then the output head"
    return head_split(m, m.model.to_out)

@register_arch('timesformer', task='classify', splitter=timesformer_split, stats=imagenet_stats, lr=2e-3)
def timesformer(
    n_frames:int, # Frames per clip (the rotary time embedding also takes other lengths)
    n_classes:int, # Number of classes
    channels:int=3, # Channels of a frame
    size:tuple=(64,64), # (H,W) of a frame: both must be multiples of `patch_size`; they need not be equal
    pretrained:bool=False, # Not available: there are no pretrained TimeSformer weights to load
    patch_size:int=None, # Patch side in input pixels; default 8 for frames under 128 px, else 16
    stem:str|nn.Module|None='small', # 'small' conv stem (a hybrid TimeSformer, 4x downsampling), None (pixel patches), or a module
    dim:int=64, # Token width
    depth:int=2, # Number of (time attention, space attention, feed-forward) blocks
    heads:int=4, # Attention heads
    dim_head:int=16, # Width of an attention head
    attn_dropout:float=0., # Attention dropout
    ff_dropout:float=0., # Feed-forward dropout
    diff:bool=True, # Give the stem each frame's change from the previous frame (motion) as extra channels
    coords:bool=True, # Append x,y,t coordinate channels: absolute space-time position for the patch embedding
    cls_init:float=0.02, # Scale of the random class token (the package's N(0,1) drowns out the patches at first)
    **kwargs, # Passed to `timesformer_pytorch.TimeSformer` (e.g. rotary_emb, shift_tokens)
) -> VideoTransformer:
    "Divided space-time attention (TimeSformer, from timesformer-pytorch) on a small conv stem, sized to train on a CPU"
    try: from timesformer_pytorch import TimeSformer
    except ImportError as e:
        raise ImportError("The 'timesformer' arch needs timesformer-pytorch: pip install timesformer-pytorch") from e
    if pretrained: raise ValueError("There are no pretrained weights for 'timesformer'; pass pretrained=False.")
    h,w = size
    if patch_size is None: patch_size = 16 if min(h,w)>=128 else 8
    if h%patch_size or w%patch_size: raise _size_error(h, w, patch_size)
    c_in = channels*(2 if diff else 1)
    if isinstance(stem, str):
        if stem!='small': raise ValueError(f"stem must be 'small', None or an nn.Module, got {stem!r}")
        stem = small_body(c_in)
    nf,stride = c_in,1
    if stem is not None:
        fmap = _blank_output(stem, c_in, (h,w))
        nf,stride = fmap.shape[1],h//fmap.shape[2]
        if patch_size%stride or fmap.shape[2]*stride!=h or fmap.shape[3]*stride!=w:
            raise ValueError(f"timesformer: patch_size={patch_size} must be a multiple of the stem's downsampling "
                             f"({stride}, giving {tuple(fmap.shape[2:])} maps for {h}x{w} frames).")
    # `image_size` only sizes the learned position table (rotary_emb=False); the tokens come from the actual h, w
    model = TimeSformer(dim=dim, num_frames=n_frames, num_classes=n_classes, image_size=max(h,w)//stride,
                        patch_size=patch_size//stride, channels=nf+(3 if coords else 0), depth=depth, heads=heads,
                        dim_head=dim_head, attn_dropout=attn_dropout, ff_dropout=ff_dropout, **kwargs)
    with torch.no_grad(): model.cls_token.mul_(cls_init)
    return VideoTransformer(model, patch_size, stem, diff, coords)

# Moved out (PEP 562): old imports, and learners exported while `r2plus1d` lived here, still find them
_MOVED = dict(local_weights=('pretrained', 'local_weights'), R2Plus1D=('kinetics', 'R2Plus1D'),
              r2plus1d=('kinetics', 'r2plus1d'), r2plus1d_split=('kinetics', 'kinetics_split'))

def __getattr__(name:str):
    "A name that moved to another models module, imported from there on first use"
    if name not in _MOVED: raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    mod,attr = _MOVED[name]
    return getattr(importlib.import_module(f'{__package__}.{mod}'), attr)
