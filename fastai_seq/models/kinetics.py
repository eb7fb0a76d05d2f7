"torchvision's Kinetics-400 video models as classification archs: r2plus1d, r3d_18, mc3_18, s3d, mvit_v2_s, swin3d_t"
from __future__ import annotations
import torchvision
from torch import nn, Tensor
from fastai.torch_core import Module
from ..registry import register_arch
from .pretrained import local_weights, weights_stats, first_conv_for, replace_classifier, head_split

__all__ = ['KineticsVideo', 'kinetics_split', 'KINETICS_ARCHS']

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
        return self.model.get_submodule(self.head_name)

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
    return head_split(m, m.head)

def _s3d_any_size(model):
    "S3D pools a fixed (2,7,7) window (16x224 clips only): pool adaptively, and let its last temporal pool take short clips"
    model.avgpool = nn.AdaptiveAvgPool3d(1)
    for l in model.features:
        if isinstance(l, nn.MaxPool3d): l.ceil_mode = True
    return model

# arch name: (torchvision builder, classifier path, total spatial downsampling, extra model fix)
KINETICS_ARCHS = {
    'r2plus1d':  ('r2plus1d_18', 'fc',           16, None),
    'r3d_18':    ('r3d_18',      'fc',           16, None),
    'mc3_18':    ('mc3_18',      'fc',           16, None),
    's3d':       ('s3d',         'classifier.1', 32, _s3d_any_size),
    'mvit_v2_s': ('mvit_v2_s',   'head.1',       32, None),
    'swin3d_t':  ('swin3d_t',    'head',         32, None),
}

def _weights(name:str):
    "The Kinetics-400 weights of arch `name`"
    return torchvision.models.get_model_weights(KINETICS_ARCHS[name][0]).DEFAULT

def _build(name:str, n_classes:int, channels:int, pretrained:bool) -> KineticsVideo:
    "The torchvision model of arch `name`, its first conv for `channels` and a new classifier for `n_classes`"
    tv,head,min_size,fix = KINETICS_ARCHS[name]
    model = torchvision.models.get_model_builder(tv)(weights=None)
    if pretrained: model.load_state_dict(local_weights(_weights(name), f"Kinetics-400 weights of {tv}"))
    if fix is not None: model = fix(model)
    first_conv_for(model, channels, pretrained)
    replace_classifier(model, head, n_classes)
    return KineticsVideo(model, head, name, channels, min_size)

def _meta(name:str) -> dict:
    "Registry defaults from torchvision's weights metadata: the clip size and length the Kinetics weights were trained on"
    w = _weights(name)
    crop = tuple(w.transforms().crop_size)
    frames = w.meta.get('min_temporal_size', 16) if w.meta.get('min_temporal_size', 1)>1 else 16
    return dict(stats=weights_stats(w), lr=1e-3, input_size=crop, resize_size=tuple(w.transforms().resize_size),
                clip_frames=frames, weights=str(w), min_size=KINETICS_ARCHS[name][2],
                pretrained=dict(lr=1e-3, freeze_epochs=1, epochs=5, frame_size=crop[0], clip_frames=frames))

def _register(name:str, doc:str):
    "Register torchvision's video model for arch `name` as a classification arch; its builder"
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

r2plus1d = _register('r2plus1d', "torchvision's R(2+1)D-18 (3D convolutions split into 2D spatial and 1D temporal ones) "
                     "with a new classifier for `n_classes`")
r3d_18 = _register('r3d_18', "torchvision's R3D-18 (3D ResNet) with a new classifier for `n_classes`")
mc3_18 = _register('mc3_18', "torchvision's MC3-18 (mixed 3D/2D convolution ResNet) with a new classifier")
s3d = _register('s3d', "torchvision's S3D (separable 3D inception) with a new classifier; pools adaptively, so any clip size works")
mvit_v2_s = _register('mvit_v2_s', "torchvision's MViT-v2-S (multiscale vision transformer) with a new classifier; any clip size")
swin3d_t = _register('swin3d_t', "torchvision's Video Swin-T with a new classifier")

class R2Plus1D(Module):
    "The wrapper `r2plus1d` models had before they were `KineticsVideo`s, kept so that learners exported then still load"
    def __init__(self, model:nn.Module): self.model = model
    @property
    def head(self) -> nn.Module:
        "The classifier layer (for `kinetics_split`)"
        return self.model.fc
    def forward(self, x:Tensor) -> Tensor: return self.model(x.transpose(1, 2))
