"Pretrained bodies and what goes around them, for every classification family: weights, bodies, first convs, heads, splits"
from __future__ import annotations
import torch, torchvision
from pathlib import Path
from urllib.parse import urlparse
from torch import nn
from fastai.torch_core import params
from fastai.layers import ConvLayer
from fastai.vision.learner import create_body, TimmBody

__all__ = ['local_weights', 'weights_stats', 'first_conv_for', 'small_body', 'frame_body', 'body_split', 'head_split']

# ------------------------------------------------------------------------------------------- weights
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

def weights_stats(
    weights, # A torchvision weights enum value, e.g. `R3D_18_Weights.KINETICS400_V1`
) -> tuple:
    "The (mean, std) input normalisation of torchvision `weights`, read from their transforms"
    t = weights.transforms()
    return tuple(t.mean),tuple(t.std)

# ------------------------------------------------------------------------------------------- first conv and classifier
def _set_submodule(model:nn.Module, path:str, new:nn.Module):
    "Put `new` at attribute path `path` ('a.b.1') of `model` (`nn.Module.set_submodule` needs torch 2.3)"
    parent,_,last = path.rpartition('.')
    setattr(model.get_submodule(parent), last, new)

def first_conv_for(
    model:nn.Module, # A torchvision video model, or a timm/torchvision image model
    channels:int, # Input channels wanted
    pretrained:bool=False, # Build the new kernel from the pretrained 3-channel one instead of a fresh one
) -> nn.Module:
    "Rebuild the first `Conv2d`/`Conv3d` of `model` for `channels` inputs (a no-op when it has them); returns `model`"
    # Pretrained kernels: a Conv2d as fastai's `create_body` does, so torchvision and timm bodies agree (sum for 1 channel,
    # the first two x1.5 for 2, the 3 kernels and zeros for more; a fresh bias); a Conv3d as the video models always did
    # (sum for 1 channel, the mean scaled by 3/channels for others; the bias kept)
    name,old = next(((n,m) for n,m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), ('',None))
    if old is None: raise ValueError(f"{type(model).__name__} has no Conv2d/Conv3d layer to rebuild for {channels} channels.")
    if channels==old.in_channels: return model
    cls = nn.Conv3d if isinstance(old, nn.Conv3d) else nn.Conv2d
    new = cls(channels, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation, old.groups,
              bias=old.bias is not None, padding_mode=old.padding_mode)
    if pretrained:
        with torch.no_grad():
            w = old.weight
            if channels==1: new.weight.copy_(w.sum(1, keepdim=True))
            elif cls is nn.Conv3d: new.weight.copy_(w.mean(1, keepdim=True).repeat(1,channels,1,1,1)*3/channels)
            elif channels==2: new.weight.copy_(w[:,:2]*1.5)
            else: new.weight[:,:3] = w; new.weight[:,3:] = 0
            if cls is nn.Conv3d and old.bias is not None: new.bias.copy_(old.bias)
    _set_submodule(model, name, new)
    return model

def replace_classifier(
    model:nn.Module, # A pretrained classification model
    path:str, # Attribute path of its classifier layer ('fc', 'head.1'), a `Linear` or a 1x1 `Conv3d`
    n_classes:int, # Outputs of the new layer
) -> nn.Module:
    "Put a fresh classifier layer for `n_classes` at `path` of `model`; returns the new layer"
    old = model.get_submodule(path)
    new = nn.Conv3d(old.in_channels, n_classes, 1) if isinstance(old, nn.Conv3d) else nn.Linear(old.in_features, n_classes)
    _set_submodule(model, path, new)
    return new

def classifier_head(
    ni:int, # Features in
    n_out:int, # Classes out
    lin_ftrs:int|None, # Hidden width (None or 0: one linear layer)
    ps:float, # Dropout
) -> nn.Sequential:
    "Dropout-linear(-ReLU-dropout-linear) head on pooled features; no BatchNorm, so a batch of one trains too"
    if not lin_ftrs: return nn.Sequential(nn.Dropout(ps), nn.Linear(ni, n_out))
    return nn.Sequential(nn.Dropout(ps/2), nn.Linear(ni, lin_ftrs), nn.ReLU(inplace=True), nn.Dropout(ps),
                         nn.Linear(lin_ftrs, n_out))

# ------------------------------------------------------------------------------------------- splits
def body_split(
    model:nn.Module, # The whole model
    body:nn.Module, # Its pretrained body
) -> list:
    "Param groups for `fine_tune`: `body`, then everything else of `model` (in `model`'s order)"
    ps = params(body)
    ids = {id(p) for p in ps}
    return [ps, [p for p in model.parameters() if id(p) not in ids]]

def head_split(
    model:nn.Module, # The whole model
    head:nn.Module, # Its new classifier
) -> list:
    "Param groups for `fine_tune`: everything of `model` but `head`, then `head`"
    return body_split(model, head)[::-1]

# ------------------------------------------------------------------------------------------- per-frame bodies
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
    try: model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except OSError as e:  # no network and nothing in the Hugging Face cache
        from huggingface_hub import constants
        raise FileNotFoundError(f"pretrained=True could not download the timm weights of {name!r} ({e}). timm keeps them in "
                                f"the Hugging Face cache ({constants.HF_HUB_CACHE}): run `python -c \"import timm; "
                                f"timm.create_model('{name}', pretrained=True)\"` once on a machine with internet and copy that "
                                "cache folder here (or set HF_HOME to it) — or pass pretrained=False.") from e
    first_conv_for(model, channels, pretrained)
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
    if pretrained: res.input_stats = weights_stats(w)
    return res
