"torchvision's Kinetics-400 video models as classification archs: r3d_18, mc3_18, s3d, mvit_v2_s, swin3d_t"
from __future__ import annotations
import torch, torchvision
from torch import nn, Tensor
from fastai.torch_core import Module, params
from ..registry import register_arch
from .classify import local_weights

__all__ = ['weights_stats', 'first_conv_for', 'KineticsVideo', 'kinetics_split', 'KINETICS_ARCHS', 'r3d_18', 'mc3_18', 's3d',
           'mvit_v2_s', 'swin3d_t']

def weights_stats(
    weights, # A torchvision weights enum value, e.g. `R3D_18_Weights.KINETICS400_V1`
) -> tuple:
    "The (mean, std) input normalisation of torchvision `weights`, read from their transforms"
    t = weights.transforms()
    return tuple(t.mean),tuple(t.std)

def _attr(m:nn.Module, path:str) -> nn.Module:
    for a in path.split('.'): m = getattr(m, a)
    return m

def _set_attr(m:nn.Module, path:str, new:nn.Module):
    *parents,last = path.split('.')
    setattr(_attr(m, '.'.join(parents)) if parents else m, last, new)

def first_conv_for(
    model:nn.Module, # A torchvision video model
    channels:int, # Input channels wanted
    pretrained:bool=False, # Adapt the pretrained 3-channel kernel (sum for 1 channel, mean scaled for others) instead of a fresh one
) -> nn.Module:
    "Rebuild the first `Conv3d` of `model` for `channels` inputs (a no-op for 3)"
    name,old = next((n,m) for n,m in model.named_modules() if isinstance(m, nn.Conv3d))
    if channels==old.in_channels: return model
    new = nn.Conv3d(channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=old.bias is not None)
    if pretrained:
        with torch.no_grad():
            w = old.weight
            new.weight.copy_(w.sum(1, keepdim=True) if channels==1 else w.mean(1, keepdim=True).repeat(1,channels,1,1,1)*3/channels)
            if old.bias is not None: new.bias.copy_(old.bias)
    _set_attr(model, name, new)
    return model

class KineticsVideo(Module):
    "A torchvision video model taking `(B,T,C,H,W)` clips (it wants `(B,C,T,H,W)`), with a check of the clip shape"
    def __init__(self,
        model:nn.Module, # The torchvision model, its classifier already replaced
        head:str, # Attribute path of its new classifier layer (for the splitter)
        arch:str, # Arch name, for error messages
        channels:int=3, # Channels it takes
        min_size:int=16, # Smallest frame side it takes: its total spatial downsampling
    ):
        self.model,self.head_name,self.arch,self.channels,self.min_size = model,head,arch,channels,min_size

    @property
    def head(self) -> nn.Module:
        "The new classifier layer"
        return _attr(self.model, self.head_name)

    def forward(self, x:Tensor) -> Tensor:
        if x.ndim!=5 or x.shape[2]!=self.channels:
            raise ValueError(f"{self.arch}: expected clips of shape (B,T,C,H,W) with C={self.channels}, got {tuple(x.shape)}. "
                             "Use VideoBlock or SeqBlock inputs (with the channel count the model was built for).")
        h,w = x.shape[-2:]
        if min(h,w)<self.min_size:
            raise ValueError(f"{self.arch}: frames of {h}x{w} are smaller than its total downsampling ({self.min_size}). "
                             f"Resize them to at least {self.min_size} (e.g. item_tfms=Resize({max(self.min_size, 112)})).")
        x = x.transpose(1, 2)
        pe = getattr(self.model, 'pos_encoding', None)
        if pe is not None:  # MViT reads its token grid from the position encoder: set it to this clip's (rel. positions interpolate)
            c = self.model.conv_proj
            t,h,w = [(s+2*p-k)//st+1 for s,p,k,st in zip(x.shape[2:], c.padding, c.kernel_size, c.stride)]
            pe.temporal_size,pe.spatial_size = t,(h,w)
        return self.model(x)

def kinetics_split(m:nn.Module) -> list:
    "Param groups for `fine_tune`: the pretrained video body, then the new classifier"
    head = params(m.head)
    ids = {id(p) for p in head}
    return [[p for p in m.parameters() if id(p) not in ids], head]

def _s3d_any_size(model):
    "S3D pools a fixed (2,7,7) window (16x224 clips only): pool adaptively, and let its last temporal pool take short clips"
    model.avgpool = nn.AdaptiveAvgPool3d(1)
    for l in model.features:
        if isinstance(l, nn.MaxPool3d): l.ceil_mode = True
    return model

def _new_head(model, path:str, n_classes:int):
    old = _attr(model, path)
    new = (nn.Conv3d(old.in_channels, n_classes, 1) if isinstance(old, nn.Conv3d) else nn.Linear(old.in_features, n_classes))
    _set_attr(model, path, new)

# name: (weights enum name, classifier path, total spatial downsampling, extra model fix)
KINETICS_ARCHS = {
    'r3d_18':    ('R3D_18_Weights',    'fc',           16, None),
    'mc3_18':    ('MC3_18_Weights',    'fc',           16, None),
    's3d':       ('S3D_Weights',       'classifier.1', 32, _s3d_any_size),
    'mvit_v2_s': ('MViT_V2_S_Weights', 'head.1',       32, None),
    'swin3d_t':  ('Swin3D_T_Weights',  'head',         32, None),
}

def _build(name:str, n_classes:int, channels:int, pretrained:bool) -> KineticsVideo:
    wname,head,min_size,fix = KINETICS_ARCHS[name]
    weights = getattr(torchvision.models.video, wname).DEFAULT
    model = getattr(torchvision.models.video, name)(weights=None)
    if pretrained: model.load_state_dict(local_weights(weights, f"Kinetics-400 weights of {name}"))
    if fix is not None: model = fix(model)
    first_conv_for(model, channels, pretrained)
    _new_head(model, head, n_classes)
    return KineticsVideo(model, head, name, channels, min_size)

def _meta(name:str) -> dict:
    "Registry defaults from torchvision's weights metadata: the clip size and length the Kinetics weights were trained on"
    w = getattr(torchvision.models.video, KINETICS_ARCHS[name][0]).DEFAULT
    crop = tuple(w.transforms().crop_size)
    frames = w.meta.get('min_temporal_size', 16) if w.meta.get('min_temporal_size', 1)>1 else 16
    return dict(stats=weights_stats(w), lr=1e-3, input_size=crop, resize_size=tuple(w.transforms().resize_size),
                clip_frames=frames, weights=str(w), min_size=KINETICS_ARCHS[name][2],
                pretrained=dict(lr=1e-3, freeze_epochs=1, epochs=5, frame_size=crop[0], clip_frames=frames))

def _register(name:str, doc:str):
    kw = _meta(name)
    def builder(
        n_frames:int, # Frames per clip (any length works; the Kinetics weights were trained on `arch_info(name).defaults['clip_frames']`)
        n_classes:int, # Number of classes
        channels:int=3, # Channels of a frame; the first conv is rebuilt when not 3
        size:tuple=None, # (H,W) of a frame (any size of at least the model's downsampling works)
        pretrained:bool=False, # Kinetics-400 weights, downloaded into the torch hub cache on first use
    ) -> KineticsVideo:
        return _build(name, n_classes, channels, pretrained)
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    return register_arch(name, task='classify', splitter=kinetics_split, stats=kw.pop('stats'), **kw)(builder)

r3d_18 = _register('r3d_18', "torchvision's R3D-18 (3D ResNet) with a new classifier for `n_classes`")
mc3_18 = _register('mc3_18', "torchvision's MC3-18 (mixed 3D/2D convolution ResNet) with a new classifier")
s3d = _register('s3d', "torchvision's S3D (separable 3D inception) with a new classifier; pools adaptively, so any clip size works")
mvit_v2_s = _register('mvit_v2_s', "torchvision's MViT-v2-S (multiscale vision transformer) with a new classifier; any clip size")
swin3d_t = _register('swin3d_t', "torchvision's Video Swin-T with a new classifier")
