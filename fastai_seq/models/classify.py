"Sequence classification models: frames_mean, frames_lstm, timesformer, r2plus1d"
from __future__ import annotations
import torch, torchvision
from pathlib import Path
from urllib.parse import urlparse
from torch import nn, Tensor
from fastcore.basics import store_attr
from fastai.torch_core import Module, params
from fastai.layers import ConvLayer, AdaptiveConcatPool2d
from fastai.vision.core import imagenet_stats
from fastai.vision.learner import create_body
from ..layers import TimeDistributed
from ..registry import register_arch

__all__ = ['local_weights', 'small_body', 'frame_body', 'SpatialSoftArgmax', 'FramePool', 'FrameEncoder', 'FramesMean',
           'FramesLSTM', 'FRAMES_PRETRAINED', 'VideoTransformer', 'R2Plus1D', 'frames_split', 'timesformer_split', 'r2plus1d_split',
           'frames_mean', 'frames_lstm', 'timesformer', 'r2plus1d']

def local_weights(
    weights, # A torchvision weights enum value, e.g. `ResNet34_Weights.DEFAULT`
    what:str='', # What they are, for messages
    download:bool=True, # Download into the torch hub cache when missing (as `vision_learner` does); False: cache only
) -> dict:
    "The state dict of torchvision `weights`, through torchvision's own cached download (`$TORCH_HOME/hub/checkpoints`)"
    fn = Path(torch.hub.get_dir())/'checkpoints'/Path(urlparse(weights.url).path).name
    fetch = (f"Fetch it once on a machine with internet, e.g. `python -c \"import torchvision; "
             f"torchvision.models.get_weight('{weights}').get_state_dict()\"`, or download {weights.url} into "
             f"{fn.parent} (the TORCH_HOME cache) — or pass pretrained=False.")
    if not fn.exists() and not download:
        raise FileNotFoundError(f"pretrained=True needs the weights file {fn} ({what or weights}), which is not there. {fetch}")
    try: return weights.get_state_dict(progress=True, check_hash=True)
    except OSError as e:  # no network (URLError), HTTP errors, a full disk
        if fn.exists(): raise
        raise FileNotFoundError(f"pretrained=True could not download {weights.url} ({what or weights}): {e}. Offline, place "
                                f"the file at {fn}. {fetch}") from e
    except Exception as e:
        if not fn.exists(): raise
        raise RuntimeError(f"The cached weights file {fn} ({what or weights}) does not load ({e}): delete it so that it is "
                           "downloaded again, or replace it.") from e

def small_body(
    channels:int=3, # Input channels
    widths:tuple=(16,32,64,64), # Output channels of each conv-BN-ReLU block
    strides:tuple=(2,2,1,1), # Stride of each block: the map keeps 1/4 of the resolution, so positions stay sharp
) -> nn.Sequential:
    "A small CNN per-frame body (conv-BN-ReLU blocks), fast enough to train on a CPU"
    layers,ni = [],channels
    for nf,s in zip(widths, strides): layers.append(ConvLayer(ni, nf, ks=3, stride=s)); ni = nf
    return nn.Sequential(*layers)

# torchvision's ResNets keep going to torchvision by name (fastai's own examples pass these as torchvision builders)
_TV_FIRST = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')

def _tv_builder(body):
    "The torchvision model builder for `body` (a name, 'torchvision/NAME', or a builder), or None"
    if isinstance(body, str):
        if body.startswith('timm/'): return None
        try: return torchvision.models.get_model_builder(body.removeprefix('torchvision/'))
        except ValueError: return None
    return body if callable(body) and not isinstance(body, nn.Module) else None

def _timm_name(body) -> str|None:
    "The timm model name for `body`: 'timm/NAME', or any name timm knows other than torchvision's ResNets; else None"
    if not isinstance(body, str) or body.startswith('torchvision/') or body in _TV_FIRST: return None
    name = body.removeprefix('timm/')
    try: import timm
    except ImportError as e:
        if body.startswith('timm/'): raise ImportError(f"body={body!r} needs timm: pip install 'fastai_seq[timm]'") from e
        return None
    return name if timm.is_model(name) else None

def _timm_body(name:str, channels:int, pretrained:bool) -> nn.Module:
    "A timm model as a per-frame body giving feature maps, as fastai's `TimmBody`; first conv adapted as `create_body` does"
    import timm
    from fastai.vision.learner import TimmBody, _update_first_layer
    try: model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except OSError as e:  # no network and nothing in the Hugging Face cache
        from huggingface_hub import constants
        raise FileNotFoundError(f"pretrained=True could not download the timm weights of {name!r} ({e}). timm keeps them in "
                                f"the Hugging Face cache ({constants.HF_HUB_CACHE}): run `python -c \"import timm; "
                                f"timm.create_model('{name}', pretrained=True)\"` once on a machine with internet and copy that "
                                "cache folder here (or set HF_HOME to it) — or pass pretrained=False.") from e
    _update_first_layer(model, channels, pretrained)
    body = TimmBody(model, pretrained)
    if pretrained:
        cfg = model.pretrained_cfg
        body.input_stats = tuple(cfg['mean']),tuple(cfg['std'])
    return body

def frame_body(
    body:str|callable|nn.Module='small', # 'small'; torchvision's resnet18-152 by name or any builder; a timm name ('convnext_tiny', 'timm/resnet50'); or a module
    channels:int=3, # Input channels
    pretrained:bool=False, # ImageNet weights, downloaded on first use into the torch hub (torchvision) or Hugging Face (timm) cache
    cut:int|callable=None, # Where to cut the torchvision model (fastai's `create_body`); default: before the pooling
) -> nn.Module:
    "A per-frame CNN body mapping `(N,channels,H,W)` to a feature map; pretrained ones carry their `input_stats` (mean, std)"
    if isinstance(body, nn.Module):
        if pretrained: raise ValueError("pretrained=True needs `body` as a torchvision/timm model name or builder, not a module.")
        return body
    if body=='small':
        if pretrained: raise ValueError("There are no pretrained weights for body='small'; pass body='resnet18' (or another "
                                        "torchvision or timm model) with pretrained=True, or pretrained=False.")
        return small_body(channels)
    name = _timm_name(body)
    if name is not None: return _timm_body(name, channels, pretrained)
    fn = _tv_builder(body)
    if fn is None:
        raise ValueError(f"Unknown body {body!r}: use 'small', a torchvision model name such as 'resnet18'/'resnet34', a timm "
                         "model name such as 'convnext_tiny' (pip install 'fastai_seq[timm]'), a torchvision model builder, "
                         "or an `nn.Module` mapping (N,C,H,W) to a feature map.")
    model = fn(weights=None)
    if pretrained:
        w = torchvision.models.get_model_weights(fn).DEFAULT
        model.load_state_dict(local_weights(w, f"ImageNet weights of {fn.__name__}"))
    res = create_body(model, n_in=channels, pretrained=pretrained, cut=cut)
    if pretrained:
        t = w.transforms()
        res.input_stats = tuple(t.mean),tuple(t.std)
    return res

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

def _n_features(body:nn.Module, channels:int, size:tuple) -> int:
    "Channels of the feature map `body` gives on a `size` frame"
    tr = body.training
    try:
        with torch.no_grad(): out = body.eval()(torch.zeros(1, channels, *size))
    finally: body.train(tr)
    if out.ndim!=4: raise ValueError(f"The frame body gives {tuple(out.shape)} outputs for {size[0]}x{size[1]} frames; a "
                                     "body must give (N,C,h,w) feature maps (CNNs such as resnet/convnext/efficientnet).")
    return out.shape[1]

def _head(ni:int, n_out:int, lin_ftrs:int|None, ps:float) -> nn.Sequential:
    "Dropout-linear(-ReLU-dropout-linear) head; no BatchNorm, so a batch of one trains too"
    if not lin_ftrs: return nn.Sequential(nn.Dropout(ps), nn.Linear(ni, n_out))
    return nn.Sequential(nn.Dropout(ps/2), nn.Linear(ni, lin_ftrs), nn.ReLU(inplace=True), nn.Dropout(ps),
                         nn.Linear(lin_ftrs, n_out))

def _prev_diff(x:Tensor) -> Tensor:
    "Append to each frame of `(B,T,C,...)` its change from the previous frame (zero for the first): `(B,T,2C,...)`"
    return torch.cat([x, x-torch.cat([x[:,:1], x[:,:-1]], 1)], 2)

class FramesMean(Module):
    "Encode every frame, average the frame features over time, classify: a bag of frames, blind to their order"
    def __init__(self, encoder:FrameEncoder, n_classes:int, lin_ftrs:int=256, ps:float=0.25):
        self.encoder,self.head = TimeDistributed(encoder),_head(encoder.pool.n_out, n_classes, lin_ftrs, ps)
    def forward(self, x:Tensor) -> Tensor: return self.head(self.encoder(x).mean(1))

class FramesLSTM(Module):
    "Encode every frame (optionally with its change from the previous frame), run an LSTM over time, classify its last state"
    def __init__(self, encoder:FrameEncoder, n_classes:int, hidden:int=128, n_layers:int=1, bidir:bool=False,
                 diff:bool=True, frame_diff:bool=True, lin_ftrs:int=None, ps:float=0.25):
        self.encoder,self.diff,self.frame_diff = TimeDistributed(encoder),diff,frame_diff
        self.lstm = nn.LSTM(encoder.pool.n_out*(2 if diff else 1), hidden, n_layers, batch_first=True, bidirectional=bidir)
        self.head = _head(hidden*(2 if bidir else 1), n_classes, lin_ftrs, ps)

    def forward(self, x:Tensor) -> Tensor:
        f = self.encoder(_prev_diff(x) if self.frame_diff else x)
        if self.diff: f = _prev_diff(f)
        _,(h,_) = self.lstm(f)
        return self.head(torch.cat([h[-2],h[-1]], 1) if self.lstm.bidirectional else h[-1])

def frames_split(m:nn.Module) -> list:
    "Param groups for `fine_tune`: the per-frame CNN body, then everything else (pooling, LSTM, head)"
    body = params(m.encoder.module.body)
    ids = {id(p) for p in body}
    return [body, [p for p in m.parameters() if id(p) not in ids]]

def _frames_encoder(channels, size, pretrained, body, pool, n_kp, grid, cut, bn) -> FrameEncoder:
    "The per-frame encoder of the frames_* archs"
    if min(size)<8: raise ValueError(f"Frames of {size[0]}x{size[1]} are too small for a CNN body; Resize them to at least 32.")
    b = frame_body(body, channels, pretrained, cut)
    return FrameEncoder(b, FramePool(_n_features(b, channels, size), pool, n_kp, grid), bn)

# What `pretrained=True` fills in (`pretrained_defaults`): an ImageNet ResNet-34 per frame (as fastai's tutorials), avg+max
# pooling, fastai's fine_tune recipe (1 frozen epoch, then all layers at base lr 2e-3), 224 px frames, 8 frames a clip (TSN-style)
FRAMES_PRETRAINED = dict(body='resnet34', pool='concat', lr=2e-3, freeze_epochs=1, epochs=5, frame_size=224, clip_frames=8)

@register_arch('frames_mean', task='classify', splitter=frames_split, stats=imagenet_stats, lr=3e-3, pretrained=FRAMES_PRETRAINED)
def frames_mean(
    n_frames:int, # Frames per clip (unused: any clip length works)
    n_classes:int, # Number of classes
    channels:int=3, # Channels of a frame
    size:tuple=(64,64), # (H,W) of a frame
    pretrained:bool=False, # ImageNet weights for a torchvision/timm `body`, downloaded into their cache on first use
    body:str|callable|nn.Module='small', # 'small' (fast on CPU; pretrained=True: 'resnet34'), a torchvision name/builder ('resnet18'), a timm name ('convnext_tiny'), or a module
    pool:str='concat', # How a frame's feature map becomes a vector: 'concat' (avg+max), 'avg', 'keypoints', 'both', 'grid'
    n_kp:int=8, # Learned keypoints for pool='keypoints'/'both'
    grid:int=4, # Cells per side for pool='grid'
    cut:int|callable=None, # Where to cut a torchvision `body` (fastai's `create_body`)
    bn:bool=True, # BatchNorm on the pooled frame features
    lin_ftrs:int=256, # Hidden width of the head (None: one linear layer)
    ps:float=0.25, # Dropout of the head
) -> FramesMean:
    "A CNN per frame, frame features averaged over time: the order-blind baseline"
    return FramesMean(_frames_encoder(channels, size, pretrained, body, pool, n_kp, grid, cut, bn), n_classes, lin_ftrs, ps)

@register_arch('frames_lstm', task='classify', splitter=frames_split, stats=imagenet_stats, lr=3e-3, pretrained=FRAMES_PRETRAINED)
def frames_lstm(
    n_frames:int, # Frames per clip (unused: any clip length works)
    n_classes:int, # Number of classes
    channels:int=3, # Channels of a frame
    size:tuple=(64,64), # (H,W) of a frame
    pretrained:bool=False, # ImageNet weights for a torchvision/timm `body`, downloaded into their cache on first use
    body:str|callable|nn.Module='small', # 'small' (fast on CPU; pretrained=True: 'resnet34'), a torchvision name/builder ('resnet18'), a timm name ('convnext_tiny'), or a module
    pool:str='both', # 'both' (keypoints + concat), 'keypoints' (where things are), 'concat' (what they are: avg+max), 'avg', 'grid'
    n_kp:int=8, # Learned keypoints for pool='keypoints'/'both'
    grid:int=4, # Cells per side for pool='grid'
    cut:int|callable=None, # Where to cut a torchvision `body` (fastai's `create_body`)
    bn:bool=True, # BatchNorm on the pooled frame features
    hidden:int=128, # LSTM hidden size
    n_layers:int=1, # LSTM layers
    bidir:bool=False, # Bidirectional LSTM
    diff:bool=True, # Also feed the LSTM each frame's feature change from the previous frame (motion)
    frame_diff:bool=True, # Give the body each frame's pixel change from the previous frame as extra channels (motion)
    lin_ftrs:int=None, # Hidden width of the head (None: one linear layer)
    ps:float=0.25, # Dropout of the head
) -> FramesLSTM:
    "A CNN per frame, then an LSTM over time, classified from its last hidden state"
    enc = _frames_encoder(channels*(2 if frame_diff else 1), size, pretrained, body, pool, n_kp, grid, cut, bn)
    return FramesLSTM(enc, n_classes, hidden, n_layers, bidir, diff, frame_diff, lin_ftrs, ps)

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
    head = params(m.model.to_out)
    ids = {id(p) for p in head}
    return [[p for p in m.parameters() if id(p) not in ids], head]

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
        tr = stem.training
        try:
            with torch.no_grad(): fmap = stem.eval()(torch.zeros(1, c_in, h, w))
        finally: stem.train(tr)
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

class R2Plus1D(Module):
    "torchvision's video resnet taking `(B,T,C,H,W)` clips (it wants `(B,C,T,H,W)`)"
    def __init__(self, model:nn.Module): self.model = model
    def forward(self, x:Tensor) -> Tensor: return self.model(x.transpose(1, 2))

def r2plus1d_split(m:nn.Module) -> list:
    "Param groups: the stem and residual layers, then the new fc"
    fc = params(m.model.fc)
    ids = {id(p) for p in fc}
    return [[p for p in m.parameters() if id(p) not in ids], fc]

@register_arch('r2plus1d', task='classify', splitter=r2plus1d_split, stats=((0.43216,0.394666,0.37645),(0.22803,0.22145,0.216989)),
               lr=1e-3, pretrained=dict(lr=1e-3, freeze_epochs=1, epochs=5, frame_size=112, clip_frames=16))
def r2plus1d(
    n_frames:int, # Frames per clip (unused: any clip length works)
    n_classes:int, # Number of classes
    channels:int=3, # Channels of a frame; the stem's first conv is rebuilt when not 3
    size:tuple=(112,112), # (H,W) of a frame (unused)
    pretrained:bool=False, # Kinetics-400 weights, downloaded into the torch hub cache on first use
) -> R2Plus1D:
    "torchvision's R(2+1)D-18 with a new fc for `n_classes` and a stem for `channels`"
    from torchvision.models.video import r2plus1d_18, R2Plus1D_18_Weights
    model = r2plus1d_18(weights=None)
    if pretrained: model.load_state_dict(local_weights(R2Plus1D_18_Weights.DEFAULT, "Kinetics-400 weights of r2plus1d_18"))
    if channels!=3:
        old = model.stem[0]
        new = nn.Conv3d(channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
        if pretrained:
            with torch.no_grad():
                w = old.weight
                new.weight.copy_(w.sum(1, keepdim=True) if channels==1 else w.mean(1, keepdim=True).repeat(1,channels,1,1,1)*3/channels)
        model.stem[0] = new
    model.fc = nn.Linear(model.fc.in_features, n_classes)
    return R2Plus1D(model)
