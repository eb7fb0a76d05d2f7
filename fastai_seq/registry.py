"The model registry: a decorator and a dict, timm-style. No model code lives here."
from __future__ import annotations
import fnmatch, warnings
from dataclasses import dataclass, field
from typing import Callable
from fastcore.basics import store_attr
from fastai.torch_core import params
from fastai.data.core import DataLoaders
from .core import ImageSeq

__all__ = ['TASKS', 'ArchInfo', 'register_arch', 'list_archs', 'arch_info', 'infer_task', 'model_kwargs_from_dls',
           'create_seq_model']

TASKS = ('forecast', 'classify')

@dataclass
class ArchInfo:
    "What the registry knows of one arch: its builder, task, splitter and defaults"
    name: str
    builder: Callable
    task: str
    splitter: Callable|None = None  # `model -> param groups` for discriminative lrs / `fine_tune`
    stats: tuple|None = None        # input normalisation stats the arch expects (e.g. imagenet_stats)
    defaults: dict = field(default_factory=dict)  # learner defaults such as `lr`
    doc: str = ''

_archs: dict[str, ArchInfo] = {}

def register_arch(name:str=None, task:str='forecast', splitter:Callable=None, stats:tuple=None, **defaults):
    "Decorator registering a model builder under `name` for `task` ('forecast' or 'classify')"
    if task not in TASKS: raise ValueError(f"`task` must be one of {TASKS}, got {task!r}")
    def _inner(fn):
        nm = name or fn.__name__
        if nm in _archs: warnings.warn(f"register_arch: overwriting the existing arch {nm!r}")
        doc = (fn.__doc__ or '').strip().split('\n')[0]
        _archs[nm] = ArchInfo(nm, fn, task, splitter, stats, defaults, doc)
        return fn
    return _inner

def _ensure_models():
    "Import the bundled model families so that they register themselves"
    from . import models  # noqa: F401

def list_archs(filter:str='', task:str=None) -> list[str]:
    "Sorted names of registered archs, optionally fnmatch-`filter`ed and restricted to `task`"
    _ensure_models()
    names = [n for n,a in _archs.items() if task is None or a.task==task]
    if filter: names = fnmatch.filter(names, filter)
    return sorted(names)

def arch_info(name:str) -> ArchInfo:
    "The registry entry of `name`, with an error listing the known names when it is unknown"
    _ensure_models()
    if name not in _archs:
        raise KeyError(f"Unknown arch {name!r}. Known archs: forecasting {list_archs(task='forecast')}, "
                       f"classification {list_archs(task='classify')}. Register your own with `@register_arch`.")
    return _archs[name]

def infer_task(dls:DataLoaders) -> str:
    "'forecast' when the targets are `ImageSeq`, 'classify' when they are categories"
    if getattr(dls, 'task', None) in TASKS: return dls.task
    b = dls.one_batch()
    if len(b)<2: raise ValueError("The DataLoaders yield no target: seq_learner needs (input, target) batches.")
    return 'forecast' if isinstance(b[1], ImageSeq) else 'classify'

def model_kwargs_from_dls(dls:DataLoaders, task:str=None) -> dict:
    "The shape arguments a builder of `task` gets, read off one batch of `dls`"
    task = task or infer_task(dls)
    x,y = dls.one_batch()[:2]
    if x.ndim!=5: raise ValueError(f"Expected input batches of shape (B,T,C,H,W), got {tuple(x.shape)}. "
                                   "Use SeqBlock or VideoBlock for the input.")
    _,t,c,h,w = x.shape
    res = dict(channels=c, size=(h,w))
    if task=='forecast': res.update(n_in=t, n_out=y.shape[1])
    else:
        from fastai.learner import get_c
        res.update(n_frames=t, n_classes=get_c(dls))
    return res

def create_seq_model(arch:str|Callable, dls:DataLoaders, **kwargs):
    "Build `arch` (a registered name or a builder) with its shape arguments inferred from `dls`"
    if callable(arch): return arch(**{**model_kwargs_from_dls(dls), **kwargs})
    info, task = arch_info(arch), infer_task(dls)
    if info.task!=task:
        raise ValueError(f"Arch {arch!r} is for the {info.task!r} task but these DataLoaders are for {task!r} "
                         f"({'ImageSeq' if task=='forecast' else 'category'} targets). "
                         f"Archs for {task!r}: {list_archs(task=task)}")
    return info.builder(**{**model_kwargs_from_dls(dls, task), **kwargs})
