"The model registry: a decorator and a dict, timm-style. No model code and no data code live here: the archs register when `fastai_seq.models` is imported (`fastai_seq.all` and `fastai_seq.learner` import it)."
from __future__ import annotations
import fnmatch, warnings
from dataclasses import dataclass, field
from typing import Callable

__all__ = ['TASKS', 'ArchInfo', 'register_arch', 'register_arch_family', 'list_archs', 'arch_families', 'arch_info']

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
_families: dict[str, tuple] = {}   # name prefix -> (resolver `name -> ArchInfo`, the form users write)

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

def register_arch_family(
    prefix:str, # Names starting with this (e.g. 'hf-hub:') belong to the family
    resolve:Callable, # `name -> ArchInfo`, called for each name asked for
    form:str, # How users write such a name, for messages (e.g. "'hf-hub:REPO_ID'")
):
    "Register a family of archs named by a prefix (as timm's `hf-hub:`), resolved when a name of it is asked for"
    _families[prefix] = (resolve, form)

def list_archs(filter:str='', task:str=None) -> list[str]:
    "Sorted names of registered archs, optionally fnmatch-`filter`ed and restricted to `task`; arch families (`'hf-hub:REPO_ID'`) are named by `arch_families()`"
    names = [n for n,a in _archs.items() if task is None or a.task==task]
    if filter: names = fnmatch.filter(names, filter)
    return sorted(names)

def arch_info(name:str) -> ArchInfo:
    "The registry entry of `name`, with an error listing the known names when it is unknown"
    if name in _archs: return _archs[name]
    for prefix,(resolve,_) in _families.items():
        if isinstance(name, str) and name.startswith(prefix): return resolve(name)
    fams = ''.join(f", {form}" for _,form in _families.values())
    raise ValueError(f"Unknown arch {name!r}. Known archs: forecasting {list_archs(task='forecast')}, "
                     f"classification {list_archs(task='classify')}{fams}. Register your own with `@register_arch`.")

def arch_families() -> list[str]:
    "How the names of each registered arch family are written (e.g. `'hf-hub:REPO_ID'`: any Hugging Face video classifier)"
    return [form for _,form in _families.values()]

_MOVED = {'infer_task', 'model_kwargs_from_dls', 'create_seq_model'}  # to the learner factory (learner.py)

def __getattr__(name):
    "The names that moved to `learner.py`, importable from here as before"
    if name in _MOVED:
        from . import learner
        return getattr(learner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
