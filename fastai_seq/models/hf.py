"""Hugging Face video classification: any `AutoModelForVideoClassification` checkpoint (`'hf-hub:REPO_ID'` or a local
folder written by `save_pretrained`) as a classification arch, with the clip it expects (`hf_clip_spec`). transformers is
an optional extra, imported inside the functions."""
from __future__ import annotations
import functools, json, math, os, warnings
from pathlib import Path
from typing import NamedTuple
import torch
from torch import nn, Tensor
import torch.nn.functional as F
from fastai.torch_core import Module
from ..registry import ArchInfo, register_arch_family

__all__ = ['HF_PREFIX', 'HF_MODEL_TYPES', 'ClipSpec', 'is_hf_arch', 'parse_hf_name', 'hf_config', 'hf_processor_config',
           'hf_clip_spec', 'HFVideoModel', 'hf_video_model', 'hf_split', 'fit_hf_clip', 'hf_arch_info']

HF_PREFIX = 'hf-hub:'
# model type -> (first transformers release that maps it in AutoModelForVideoClassification, family name)
HF_MODEL_TYPES = {'videomae':('4.26.0', 'VideoMAE'), 'timesformer':('4.26.0', 'TimeSformer'), 'vivit':('4.30.0', 'ViViT'),
                  'vjepa2':('4.53.0', 'V-JEPA 2'), 'videoprism_vision_model':('5.0.0', 'VideoPrism')}
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# the input stats of each family when a checkpoint has no processor config (transformers' processor defaults)
_DEFAULT_STATS = {'videomae':_IMAGENET, 'timesformer':_IMAGENET, 'vjepa2':_IMAGENET,
                  'vivit':((0.5,)*3, (0.5,)*3), 'videoprism_vision_model':((0.,)*3, (1.,)*3)}
_INSTALL = 'pip install "fastai_seq[hf]"'

class ClipSpec(NamedTuple):
    "The clip a model expects: frames, frame size (an int for square frames, else (h, w)), input mean and std on [0,1] pixels"
    n_frames: int
    size: int|tuple
    mean: tuple
    std: tuple

def _transformers():
    "The transformers module, or an ImportError with the install line"
    try: import transformers
    except ImportError as e:
        raise ImportError(f"'hf-hub:' archs need Hugging Face transformers, which is not installed: {_INSTALL}") from e
    return transformers

def is_hf_arch(
    arch, # An arch: a registered name, a builder, or 'hf-hub:REPO_ID' / 'hf-hub:/a/local/folder'
) -> bool:
    "Whether `arch` names a Hugging Face checkpoint ('hf-hub:...')"
    return isinstance(arch, str) and arch.startswith(HF_PREFIX)

def parse_hf_name(
    name:str, # 'hf-hub:REPO_ID', 'hf-hub:/a/local/folder', or the bare repo id / folder
) -> str:
    "The repo id or local folder (as a str) that `name` points to"
    src = name[len(HF_PREFIX):] if is_hf_arch(name) else str(name)
    src = src.strip()
    if not src: raise ValueError(f"{name!r}: give a checkpoint after 'hf-hub:', e.g. 'hf-hub:MCG-NJU/videomae-base-finetuned-kinetics' "
                                 "or 'hf-hub:/path/to/folder' (written by save_pretrained).")
    p = Path(src).expanduser()
    if p.is_dir() or src.startswith(('/', './', '../', '~', '.\\')) or (os.sep=='\\' and p.drive):
        if not (p/'config.json').is_file():
            raise ValueError(f"{name!r}: {p} is not a folder written by save_pretrained (no config.json there). "
                             "Give such a folder, or a Hub repo id ('hf-hub:MCG-NJU/videomae-base').")
        return str(p)
    return src

def _check_type(model_type:str, name:str):
    "A clear error for a model type this transformers does not map to video classification"
    tr = _transformers()
    from transformers.models.auto.modeling_auto import MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES as names
    if model_type in names: return
    if model_type in HF_MODEL_TYPES:
        v,fam = HF_MODEL_TYPES[model_type]
        raise ImportError(f"{name}: {fam} ({model_type!r}) needs transformers>={v}; this is transformers {tr.__version__}: "
                          f"pip install -U 'transformers>={v}'")
    raise ValueError(f"{name}: model type {model_type!r} is not a video classification model for transformers "
                     f"{tr.__version__} (AutoModelForVideoClassification maps {sorted(names)}). A newer transformers may map it: "
                     "pip install -U transformers")

def hf_config(
    name:str, # 'hf-hub:REPO_ID' or 'hf-hub:/a/local/folder'
    **kwargs, # Passed to `AutoConfig.from_pretrained` (e.g. `revision`, `cache_dir`)
):
    "The transformers config of checkpoint `name` (only config.json is read or downloaded), its model type checked"
    tr = _transformers()
    cfg = tr.AutoConfig.from_pretrained(parse_hf_name(name), **kwargs)
    _check_type(cfg.model_type, name)
    return cfg

def _read_json(src:str, fn:str, **kwargs) -> dict|None:
    "File `fn` of the local folder or repo `src` as a dict, None when it has none"
    p = Path(src)
    if p.is_dir(): path = p/fn if (p/fn).is_file() else None
    else:
        from transformers.utils import cached_file
        kw = {k:v for k,v in kwargs.items() if k in ('revision', 'cache_dir', 'token', 'local_files_only', 'force_download')}
        path = cached_file(src, fn, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **kw)
    return json.loads(Path(path).read_text()) if path else None

def hf_processor_config(
    name:str, # 'hf-hub:REPO_ID' or 'hf-hub:/a/local/folder'
    **kwargs, # `revision`, `cache_dir`, `token`, `local_files_only`
) -> dict:
    "The (video) processor config of checkpoint `name` as a dict ({} when it has none)"
    src = parse_hf_name(name)
    _transformers()
    for fn in ('video_preprocessor_config.json', 'preprocessor_config.json'):
        d = _read_json(src, fn, **kwargs)
        if d: return d
    d = _read_json(src, 'processor_config.json', **kwargs) or {}
    return d.get('video_processor') or d.get('image_processor') or {}

def _as3(v, default) -> tuple:
    if v is None: return tuple(default)
    v = [float(o) for o in (v if isinstance(v, (list, tuple)) else [v])]
    return tuple(v*3 if len(v)==1 else v)

def _proc_stats(proc:dict, model_type:str) -> tuple:
    "(mean, std) on [0,1] pixels equivalent to the processor's rescale (+ ViViT's offset) and normalize"
    mean0,std0 = _DEFAULT_STATS.get(model_type, _IMAGENET)
    if not proc: return tuple(mean0),tuple(std0)
    rf = float(proc.get('rescale_factor', 1/255)) if proc.get('do_rescale', True) else 1.
    if model_type=='vivit' or proc.get('offset'):
        # ViViT's processor maps [0,255] to [-1,1] (x/127.5 - 1, the original's zero-centering): Normalize(0.5, 0.5) on
        # [0,1] pixels. transformers' processor then also applies image_mean/std 0.5 by default (4x-3); we follow the
        # original model's input, [-1, 1].
        return (0.5,)*3,(0.5,)*3
    if not proc.get('do_normalize', True): mean,std = (0.,)*3,(1.,)*3
    else: mean,std = _as3(proc.get('image_mean'), mean0),_as3(proc.get('image_std'), std0)
    s = rf*255   # pixels reach the model as (x01*255*rf - mean)/std = (x01 - mean/s)/(std/s)
    if abs(s-1)<1e-6: return mean,std
    return tuple(m/s for m in mean),tuple(d/s for d in std)

def _cfg_clip(cfg) -> tuple:
    "(n_frames, size) the config was built for; size an int when square"
    if cfg.model_type=='vjepa2': return cfg.frames_per_clip,cfg.crop_size
    s = cfg.image_size
    if isinstance(s, (list, tuple)): s = s[0] if s[0]==s[1] else tuple(s)
    return cfg.num_frames,s

def hf_clip_spec(
    name:str, # 'hf-hub:REPO_ID' or 'hf-hub:/a/local/folder'
    **kwargs, # `revision`, `cache_dir`, `token`, `local_files_only`
) -> ClipSpec:
    "The clip checkpoint `name` expects, `(n_frames, size, mean, std)`, from its config and (video) processor config"
    cfg = hf_config(name, **{k:v for k,v in kwargs.items() if k in ('revision', 'cache_dir', 'token', 'local_files_only')})
    n,size = _cfg_clip(cfg)
    mean,std = _proc_stats(hf_processor_config(name, **kwargs), cfg.model_type)
    return ClipSpec(int(n), size, mean, std)

def _pair(size) -> tuple:
    return (int(size),int(size)) if isinstance(size, (int, float)) else tuple(int(o) for o in size)

class HFVideoModel(Module):
    "A transformers video classifier taking our `(B,T,C,H,W)` clips on [0,1]-normalised pixels and returning plain logits"
    def __init__(self,
        model:nn.Module, # An `AutoModelForVideoClassification` model
        name:str='', # The arch name, for messages
        stats:tuple=None, # (mean, std) the checkpoint expects, for `Normalize` (`seq_learner` reads `input_stats`)
        interpolate:bool=False, # Pass `interpolate_pos_encoding=True` (VideoPrism on a clip other than its own)
    ):
        self.model,self.name,self.input_stats,self.interpolate = model,name,stats,interpolate
        self.input_name = model.main_input_name   # pixel_values, or pixel_values_videos (V-JEPA 2, VideoPrism)
        cfg = model.config
        self.channels = getattr(cfg, 'num_channels', getattr(cfg, 'in_chans', 3))

    @property
    def clip(self) -> ClipSpec:
        "The clip this model takes now (after any adaptation to the data)"
        n,size = _cfg_clip(self.model.config)
        mean,std = self.input_stats or (None, None)
        return ClipSpec(int(n), size, mean, std)

    @property
    def body(self) -> nn.Module: return getattr(self.model, self.model.base_model_prefix)

    def forward(self, x:Tensor) -> Tensor:
        if isinstance(x, Tensor) and type(x) is not Tensor: x = x.as_subclass(Tensor)   # fastai's TensorBase subclasses
        if x.ndim!=5:
            raise ValueError(f"{self.name}: expected clips of shape (B,T,C,H,W), got {tuple(x.shape)}. Use VideoBlock or SeqBlock inputs.")
        if x.shape[2]!=self.channels:
            if x.shape[2]==1: x = x.expand(-1, -1, self.channels, -1, -1)
            else: raise ValueError(f"{self.name}: the model takes {self.channels} channels, the clips have {x.shape[2]}.")
        if not self.interpolate:   # a clip other than the one the model was built or adapted for: say so here, not deep inside
            n,size = _cfg_clip(self.model.config)
            if (x.shape[1], *x.shape[-2:])!=(n, *_pair(size)):
                raise ValueError(f"{self.name}: the model takes clips of {n} frames at {'x'.join(map(str, _pair(size)))}, got "
                                 f"{x.shape[1]} at {x.shape[-2]}x{x.shape[-1]}: use {_fix_msg(n, size)} (and, for "
                                 f"evaluate_clips' crops, crop_size={_pair(size)[0]} on frames at least that large).")
        kw = {'interpolate_pos_encoding': True} if self.interpolate else {}
        out = self.model(**{self.input_name: x}, **kw).logits
        return out.flatten(1) if out.ndim==3 and out.shape[1]==1 else out   # VideoPrism's pooling head keeps a query axis

def hf_split(
    m:nn.Module, # An `HFVideoModel`
) -> list:
    "Param groups for `freeze`/`fine_tune`: the pretrained body (the transformers base model), then the head (pooler, norm, classifier)"
    body = list(m.body.parameters())
    ids = {id(p) for p in body}
    return [body, [p for p in m.parameters() if id(p) not in ids]]

def _resize_param(p:nn.Parameter, new:Tensor) -> nn.Parameter:
    return nn.Parameter(new.to(p.dtype).contiguous(), requires_grad=p.requires_grad)

def _interp_grid(pe:Tensor, old:tuple, new:tuple) -> Tensor:
    "Position embeddings `(1, prod(old), D)` on grid `old` resampled to grid `new` (1-3 dims)"
    D = pe.shape[-1]
    g = pe.reshape(1, *old, D).movedim(-1, 1).float()
    mode = {1:'linear', 2:'bicubic', 3:'trilinear'}[len(old)]
    g = F.interpolate(g, size=new, mode=mode, align_corners=False)
    return g.movedim(1, -1).reshape(1, -1, D)

def _fix_msg(n0, s0) -> str:
    sz = s0 if isinstance(s0, int) else tuple(s0)
    return f"VideoBlock(n_frames={n0}) and item_tfms=Resize({sz})"

def _tubelet(cfg) -> tuple:
    "(frames, height, width) of one patch of the model"
    t = cfg.model_type
    if t=='vjepa2': return cfg.tubelet_size,cfg.patch_size,cfg.patch_size
    if t in ('vivit', 'videoprism_vision_model'): return tuple(cfg.tubelet_size)
    ps = _pair(cfg.patch_size)
    return (cfg.tubelet_size if t=='videomae' else 1),ps[0],ps[1]

def _check_clip(name:str, cfg, n_frames:int, h:int, w:int):
    "Errors for a clip no weights could make work: patches that do not divide it, non-square frames where they must be"
    n0,s0 = _cfg_clip(cfg)
    tub,ph,pw = _tubelet(cfg)
    fix = _fix_msg(n0, s0)
    if n_frames%tub or h%ph or w%pw:
        raise ValueError(f"{name}: a clip of {n_frames} frames at {h}x{w} does not divide into its {tub}x{ph}x{pw} "
                         f"tubelets. Use {fix} (the checkpoint's own clip), or frames a multiple of {tub} and sizes of {ph}.")
    if cfg.model_type in ('timesformer', 'vjepa2') and h!=w:
        raise ValueError(f"{name}: {HF_MODEL_TYPES[cfg.model_type][1]} takes square frames, the data gives {h}x{w}. "
                         f"Use item_tfms=Resize({_pair(s0)[0]}) (or {fix}).")

def _set_cfg_clip(cfg, n_frames:int, h:int, w:int):
    "Write the clip into the config (what the layers of each family read)"
    if cfg.model_type=='vjepa2': cfg.frames_per_clip,cfg.crop_size = n_frames,h
    else: cfg.num_frames,cfg.image_size = n_frames,(h if h==w else [h, w])

def fit_hf_clip(
    m:HFVideoModel, # The model, its pretrained weights loaded
    n_frames:int, # Frames of the data's clips
    size, # Frame size of the data's clips: an int or (h, w)
) -> str|None:
    "Adapt `m` to the data's clip where the model can (saying so with a warning), raise a ValueError naming the fix where it cannot"
    mdl,cfg = m.model,m.model.config
    t = cfg.model_type
    n0,s0 = _cfg_clip(cfg)
    (h,w),(h0,w0) = _pair(size),_pair(s0)
    if n_frames==n0 and (h,w)==(h0,w0): return None
    _check_clip(m.name, cfg, n_frames, h, w)
    if t=='videomae':
        raise ValueError(f"{m.name}: VideoMAE takes exactly {n0} frames at {h0}x{w0} (its position table is fixed), "
                         f"the data gives {n_frames} frames at {h}x{w}. Build the DataBlock with {_fix_msg(n0, s0)}, "
                         "e.g. from `clip_spec(arch)`.")
    tub,ph,pw = _tubelet(cfg)
    with torch.no_grad():
        if t=='timesformer':
            e = mdl.timesformer.embeddings
            g0,g = (h0//ph, w0//pw),(h//ph, w//pw)
            if g!=g0:
                pe = e.position_embeddings
                e.position_embeddings = _resize_param(pe, torch.cat([pe[:, :1], _interp_grid(pe[:, 1:], g0, g)], 1))
            if n_frames!=n0 and getattr(e, 'time_embeddings', None) is not None:
                te = e.time_embeddings
                e.time_embeddings = _resize_param(te, _interp_grid(te, (n0,), (n_frames,)))
            e.patch_embeddings.image_size,e.patch_embeddings.num_patches = (h,w),g[0]*g[1]
            e.num_patches = g[0]*g[1]
        elif t=='vivit':   # transformers' own interpolate_pos_encoding resizes a square grid only: resample (T, h, w)
            e = mdl.vivit.embeddings
            g0,g = (n0//tub, h0//ph, w0//pw),(n_frames//tub, h//ph, w//pw)
            pe = e.position_embeddings
            e.position_embeddings = _resize_param(pe, torch.cat([pe[:, :1], _interp_grid(pe[:, 1:], g0, g)], 1))
            e.patch_embeddings.image_size = e.image_size = (h,w)
            e.patch_embeddings.num_patches = g[0]*g[1]*g[2]
        elif t=='vjepa2':   # rotary positions: only the grid its attention layers index tokens by changes
            for mod in mdl.modules():
                if hasattr(mod, 'grid_size') and hasattr(mod, 'grid_depth'):
                    mod.grid_size,mod.grid_depth = h//ph,n_frames//tub
        elif t=='videoprism_vision_model':   # interpolates its spatial and temporal tables itself, at every forward
            m.interpolate = True
        _set_cfg_clip(cfg, n_frames, h, w)
    msg = (f"{m.name}: adapted to the data's {n_frames}-frame {h}x{w} clips (the checkpoint's: {n0} frames at {h0}x{w0}); "
           f"its position/time embeddings are interpolated, so accuracy may differ from the checkpoint's. "
           f"For its own clip use {_fix_msg(n0, s0)}.")
    warnings.warn(msg, stacklevel=3)
    return msg

def _reset_linear(lin:nn.Linear, std:float):
    nn.init.trunc_normal_(lin.weight, std=std)
    if lin.bias is not None: nn.init.zeros_(lin.bias)

def hf_video_model(
    name:str, # 'hf-hub:REPO_ID' or 'hf-hub:/a/local/folder' (written by `save_pretrained`)
    n_classes:int, # Classes of the new head (`dls.c`)
    vocab=None, # Class names, into the config's `id2label`/`label2id`
    pretrained:bool=True, # Load the checkpoint's weights (False: build from its config alone, randomly initialised)
    n_frames:int=None, # Frames of the data's clips (default: the checkpoint's)
    size=None, # Frame size of the data's clips, an int or (h, w) (default: the checkpoint's)
    gradient_checkpointing:bool=False, # Trade compute for memory (transformers' `gradient_checkpointing_enable`)
    channels:int=3, # Channels of the data's clips (1: gray clips are repeated to the model's 3)
    **kwargs, # Passed to `from_pretrained` (`revision`, `cache_dir`, `attn_implementation`, `token`, ...)
) -> HFVideoModel:
    "A Hugging Face video classifier for `n_classes`, its body from checkpoint `name`, checked against (or adapted to) the data's clip"
    tr = _transformers()
    src = parse_hf_name(name)
    cfg_kw = {k:kwargs[k] for k in ('revision', 'cache_dir', 'token', 'local_files_only') if k in kwargs}
    cfg = hf_config(name, **cfg_kw)
    spec = hf_clip_spec(name, **cfg_kw)
    n0,s0 = _cfg_clip(cfg)
    n_frames,size = n_frames or n0,size or s0
    labels = [str(o) for o in vocab] if vocab is not None and len(vocab)==n_classes else [f'LABEL_{i}' for i in range(n_classes)]
    lab = dict(id2label=dict(enumerate(labels)), label2id={l:i for i,l in enumerate(labels)})   # num_labels follows
    if channels not in (1, getattr(cfg, 'num_channels', getattr(cfg, 'in_chans', 3))):
        raise ValueError(f"{name}: the model takes 3-channel (RGB) clips, the data has {channels} channels.")
    if pretrained:
        old_labels = getattr(cfg, 'id2label', None) or {}
        model = tr.AutoModelForVideoClassification.from_pretrained(src, ignore_mismatched_sizes=True, **lab, **kwargs)
        clf = getattr(model, 'classifier', None)
        if isinstance(clf, nn.Linear) and len(old_labels)==n_classes and [old_labels[i] for i in sorted(old_labels)]!=labels:
            with torch.no_grad(): _reset_linear(clf, getattr(model.config, 'initializer_range', 0.02))   # same size, other classes: a new head
    else:   # built for the data's clip from the start: nothing to adapt
        (h,w) = _pair(size)
        _check_clip(name, cfg, n_frames, h, w)
        _set_cfg_clip(cfg, n_frames, h, w)
        for k,v in lab.items(): setattr(cfg, k, v)
        model = tr.AutoModelForVideoClassification.from_config(cfg, **{k:v for k,v in kwargs.items() if k=='attn_implementation'})
    mean,std = spec.mean,spec.std
    if channels==1: mean,std = (sum(mean)/3,),(sum(std)/3,)
    m = HFVideoModel(model, name, stats=(tuple(mean), tuple(std)))
    if pretrained: fit_hf_clip(m, n_frames, size)
    if gradient_checkpointing:
        if not getattr(model, 'supports_gradient_checkpointing', False):
            raise ValueError(f"{name}: {type(model).__name__} does not support gradient checkpointing.")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False})
    return m

def hf_arch_info(
    name:str, # 'hf-hub:REPO_ID' or 'hf-hub:/a/local/folder'
) -> ArchInfo:
    "The registry entry of a Hugging Face checkpoint: a classification arch, pretrained by default, split body/head"
    parse_hf_name(name)   # a clear error for an empty name or a folder without config.json
    return ArchInfo(name, functools.partial(hf_video_model, name), 'classify', hf_split, None,
                    dict(pretrained_default=True, pretrained=dict(lr=1e-4)),
                    "A Hugging Face video classifier (VideoMAE, TimeSformer, ViViT, V-JEPA 2, VideoPrism)")

register_arch_family(HF_PREFIX, hf_arch_info, "'hf-hub:REPO_ID' (any Hugging Face video-classification checkpoint)")
