"""Every change importing fastai_seq makes to fastai (and to `pathlib.Path`), in one place and one idiom

Each change replaces (`replace`) or adds (`add`) one attribute, says which fastai behaviour it fixes or extends and for
which inputs (`CHANGES`, README's table "What importing fastai_seq changes in fastai"), and is applied once however
often this module is imported or reloaded: a replacement always wraps fastai's own function, never an earlier one of ours.
A plain fastai learner (tabular, image, text; one process or several; float32 or mixed precision) behaves exactly as
without the import: the changes act on sequence learners (`is_seq_learner`) and sequence tensors (`ImageSeq`) only, or
where fastai fails outright (a crash, or autocast left on after an exception), never changing a value fastai computes.
`fastai_seq.all` applies this module; nothing else in fastai_seq changes fastai.
"""
from __future__ import annotations
import functools, importlib.util, inspect, os, sys, warnings
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple
import torch
import torch.distributed as dist
from torch.amp import GradScaler, autocast
from fastcore.foundation import L
from fastai.torch_core import TensorImage, find_bs, apply
from fastai.learner import Learner, AvgMetric, AvgLoss
from fastai.callback.core import CancelTrainException, CancelValidException, CancelEpochException
from fastai.callback.fp16 import MixedPrecision, AMPMode
from ._utils import fastai_original
from .core import ImageSeq, ls_sorted
from .data import SeqDL, apply_per_step
from .precision import cpu_amp_enabled, float32_modules, hook_float32, model_device
from .distributed import comm_device, fastai_distributed, real_items, setup_cpu_distrib, sync_buffers
from .registry import TASKS
from .datasets import MovingMNISTDL
from .evaluate import evaluate_clips, forecast_report, forecast, seq_predict

__all__ = ['Change', 'CHANGES', 'is_seq_learner']

class Change(NamedTuple):
    "One change to fastai: the dotted name of what it replaces or adds, and which behaviour it fixes or extends for which inputs"
    target: str # e.g. 'fastai.callback.fp16.MixedPrecision.before_fit'
    kind: str   # 'replaced' or 'added'
    why: str

CHANGES: list[Change] = []

def _name(owner, name:str) -> str:
    return f'{owner.__module__}.{owner.__qualname__}.{name}' if isinstance(owner, type) else f'{owner.__name__}.{name}'

def replace(owner, name:str, why:str):
    "Decorator: `f(orig, *args, **kwargs)` becomes `owner.name`, `orig` being fastai's own function (never a replacement of ours)"
    def _inner(f):
        orig = fastai_original(getattr(owner, name))
        def new(*args, **kwargs): return f(orig, *args, **kwargs)
        functools.update_wrapper(new, orig)   # fastai's name and `__wrapped__`; our docstring and signature
        new.__doc__ = f.__doc__ or orig.__doc__
        sig = inspect.signature(f)
        new.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])
        new._fastai_seq_orig = orig
        setattr(owner, name, new)
        CHANGES.append(Change(_name(owner, name), 'replaced', why))
        return new
    return _inner

def add(owner, name:str, why:str):
    "Decorator: `f` becomes the new attribute `owner.name`"
    def _inner(f):
        setattr(owner, name, f)
        CHANGES.append(Change(_name(owner, name), 'added', why))
        return f
    return _inner

def is_seq_learner(learn) -> bool:
    "Whether `learn` is a sequence learner: built by `seq_learner`, or training on `SeqDL`/`MovingMNISTDL` data"
    if getattr(learn, 'task', None) in TASKS: return True
    dl = getattr(getattr(learn, 'dls', None), 'train', None)
    return isinstance(getattr(dl, 'dl', dl), (SeqDL, MovingMNISTDL))

# --------------------------------------------------------------------------------------------------------- Learner
add(Learner, 'evaluate_clips', "new: multi-clip, multi-crop evaluation of a video classifier")(evaluate_clips)
add(Learner, 'forecast_report', "new: per-horizon scores of a forecasting learner beside the baselines")(forecast_report)
add(Learner, 'forecast', "new: roll a forecasting model forward `n_steps` frames")(forecast)

@replace(Learner, 'predict', "sequence learners only: a `str` path is matched to the data's `Path` items; `n_out` rolls a "
                             "forecasting model forward. Other learners: fastai's `predict`, unchanged")
def _predict(orig, self, item, rm_type_tfms=None, with_input=False,
    n_out:int=None, # Forecasting: the number of frames to predict, rolling the model forward past the horizon it was trained for
):
    "fastai's `Learner.predict`; for a sequence learner also a video or frame folder as a `str`, and `n_out` to forecast further"
    if not is_seq_learner(self):
        if n_out is not None: raise ValueError("predict(n_out=...) is for forecasting learners built with seq_learner.")
        return orig(self, item, rm_type_tfms=rm_type_tfms, with_input=with_input)
    return seq_predict(self, item, rm_type_tfms=rm_type_tfms, with_input=with_input, n_out=n_out, fastai_predict=orig)

# ------------------------------------------------------------------------------------------ batch augmentation
# `LightingTfm`/`HSVTfm` keep a reference to `TensorImage.lighting`/`.hsv` taken when they are built, so an `ImageSeq`
# method would be bypassed: these make fastai's functions give one parameter set per sequence, others as they were
for _nm in ('lighting', 'hsv'):
    @replace(TensorImage, _nm, "`ImageSeq` batches `(B,T,C,H,W)` only: applied frame by frame with one random parameter "
                               "set per sequence (fastai's functions take `(B,C,H,W)` images); other tensors unchanged")
    def _seq_aware(orig, x, func):
        return apply_per_step(x, lambda o: orig(o, func)) if isinstance(x, ImageSeq) else orig(x, func)

# --------------------------------------------------------------------------------------------------- pathlib
@add(Path, 'ls_sorted', "new: the files of a folder in natural order (`2.jpg` before `10.jpg`), as `core.ls_sorted`")
def _path_ls_sorted(self:Path, extensions:set|list=None, hidden:bool=False) -> L:
    "The files of this folder in natural order (`2.jpg` before `10.jpg`), optionally only those with `extensions`"
    return ls_sorted(self, extensions, hidden)

# ------------------------------------------------------------------------------------------- mixed precision
# fastai's `MixedPrecision` always enters CUDA autocast: on a CPU that warns and trains in float32. For sequence learners
# on a CPU that computes bf16/fp16 natively (`precision.cpu_amp_enabled`) it autocasts on the CPU instead, with the modules
# oneDNN cannot run in low precision kept in float32. For every learner, autocast is exited wherever a batch ends or an
# exception leaves it (fastai enters it in `before_batch` and exits it only in `after_loss`: a batch that raises or is
# cancelled in between leaves `torch.is_autocast_enabled()` on for everything the process computes afterwards).
def _close_autocast(self):
    "Exit the autocast region this callback entered for the current batch, if it is still open"
    if self.__dict__.pop('_amp_open', False) and self.autocast is not None: self.autocast.__exit__(None, None, None)

def _close_all(self):
    "Exit the batch's autocast region and remove the float32 hooks (the end of a fit, or an exception)"
    _close_autocast(self)
    for h in self.__dict__.pop('_amp_hooks', []): h.remove()

@replace(MixedPrecision, 'before_fit', "sequence learners on a CPU: autocast on the CPU where it computes bf16/fp16 natively "
         "(else fastai's warning and float32), RNNs/Conv3d in float32 where oneDNN fails; GPU and other learners: fastai's")
def _mp_before_fit(orig, self):
    _close_all(self)   # whatever a fit interrupted before left behind
    dev = model_device(self.learn)
    if dev.type=='cuda' or not is_seq_learner(self.learn): return orig(self)
    precision = 'bf16' if self.amp_mode==AMPMode.BF16 else 'fp16'
    dtype = torch.bfloat16 if precision=='bf16' else torch.float16
    self.kwargs['enabled'] = dtype==torch.float16   # bfloat16 has float32's range: no loss scaling
    if dev.type=='cpu' and not cpu_amp_enabled(precision):
        isa = os.environ.get('ONEDNN_MAX_CPU_ISA')
        need = 'AVX512-BF16 or AMX' if precision=='bf16' else 'AMX-FP16'
        warnings.warn(f"to_{precision}(): this CPU{f' (ONEDNN_MAX_CPU_ISA={isa})' if isa else ''} has no native "
                      f"{dtype} ({need}), where autocast runs several times slower than float32: training in float32, "
                      "as fastai does on a CPU. Set FASTAI_SEQ_CPU_AMP=1 to autocast anyway.")
        self.autocast,self.learn.scaler,self.scales = nullcontext(),GradScaler(dev.type, enabled=False),L()
        return
    self.autocast,self.learn.scaler,self.scales = autocast(dev.type, dtype=dtype),GradScaler(dev.type, **self.kwargs),L()
    if dev.type=='cpu': self._amp_hooks = hook_float32(self.learn.model, float32_modules(self.learn.model, dtype))

@replace(MixedPrecision, 'before_batch', "every learner: remembers that the batch entered autocast, so that it can be exited")
def _mp_before_batch(orig, self):
    _close_autocast(self)
    orig(self)
    self._amp_open = True

@replace(MixedPrecision, 'after_loss', "every learner: exits autocast as fastai does, once")
def _mp_after_loss(orig, self): _close_autocast(self)

add(MixedPrecision, 'after_cancel_batch', "every learner: a batch cancelled before its loss leaves no autocast on")(_close_autocast)
add(MixedPrecision, 'after_batch', "every learner: no autocast survives its batch")(_close_autocast)

@replace(MixedPrecision, 'after_fit', "every learner: also removes the float32 hooks of a sequence learner on a CPU")
def _mp_after_fit(orig, self):
    _close_all(self)
    orig(self)

add(MixedPrecision, 'after_cancel_fit', "every learner: a cancelled fit leaves no autocast on")(_close_all)

@replace(Learner, 'one_batch', "every learner: an exception leaving a batch exits the autocast region it entered, then propagates")
def _one_batch(orig, self, i, b):
    try: return orig(self, i, b)
    except BaseException as e:
        goes_on = isinstance(e, (CancelTrainException, CancelValidException, CancelEpochException))
        for cb in self.cbs:
            if isinstance(cb, MixedPrecision): (_close_autocast if goes_on else _close_all)(cb)
        raise

# --------------------------------------------------------------------------------------------------- several processes
# fastai.distributed assumes CUDA and NCCL: on a machine without CUDA it crashes (`DistributedDL` broadcasts a CUDA
# tensor, `setup_distrib` calls `torch.cuda.set_device`) or trains one model per process (its `Accelerator` forms no
# group without `cpu=True`). These changes act only without CUDA, where fastai cannot run, and the exact averages also for
# sequence learners on GPUs: a plain fastai learner on GPUs gets fastai's behaviour.
def _first_k(b, k:int): return apply(lambda x: x[:k] if getattr(x, 'ndim', 0)>0 else x, b)

def _all_reduce_sum(total:float, count:float) -> tuple:
    t = torch.tensor([total, count], dtype=torch.float64, device=comm_device())
    dist.all_reduce(t)
    return t[0].item(), t[1].item()

def _exact_average(orig, self, learn, real_sum):
    "fastai's `accumulate` where no sample is repeated (or a plain learner on GPUs), else sums over the real samples all-reduced"
    k = real_items(learn) if is_seq_learner(learn) or not torch.cuda.is_available() else None
    if k is None: return orig(self, learn)
    tot,cnt = _all_reduce_sum(real_sum(self, learn, k) if k else 0., k)
    self.total += tot; self.count += cnt

def _metric_sum(self, learn, k:int) -> float:
    "`AvgMetric`'s metric summed over the first `k` samples of the batch"
    return float(self.func(_first_k(learn.pred, k), *_first_k(learn.yb, k)))*k

def _loss_sum(self, learn, k:int) -> float:
    "The loss summed over the first `k` samples of the batch (scored again when the batch ends with repeats)"
    if k==find_bs(learn.yb): return float(learn.loss.mean())*k
    with torch.no_grad(): return float(learn.loss_func(_first_k(learn.pred, k), *_first_k(learn.yb, k)).mean())*k

@replace(AvgMetric, 'accumulate', "under `distrib_ctx`, sequence learners, and every learner without CUDA (where fastai cannot "
         "run distributed): the average over the real samples, all-reduced (fastai averages per-rank means, counting the samples "
         "`DistributedDL` repeats); plain learners on GPUs and one process: fastai's")
def _avg_metric_accumulate(orig, self, learn): _exact_average(orig, self, learn, _metric_sum)

@replace(AvgLoss, 'accumulate', "as `AvgMetric.accumulate`: the validation loss over the real samples, all-reduced")
def _avg_loss_accumulate(orig, self, learn): _exact_average(orig, self, learn, _loss_sum)

def _patch_distributed(fd):
    "The changes to `fastai.distributed` (imported only when accelerate is installed)"
    @replace(fd.DistributedDL, '_broadcast', "without CUDA: the shared sample order is broadcast on the CPU (gloo); "
             "fastai's always used a CUDA tensor and crashed")
    def _broadcast(orig, self, t, rank):
        if torch.cuda.is_available(): return orig(self, t, rank)
        t = torch.tensor(t, dtype=torch.long, device=comm_device())
        dist.broadcast(t, rank)
        return t.cpu().tolist()

    @replace(fd.DistributedTrainer, '__init__', "without CUDA: `Accelerator(cpu=True)` (else accelerate forms no group and "
             "each process trains its own model) and no `SyncBatchNorm` (GPU-only)")
    def _dt_init(orig, self, sync_bn=True, **kwargs):
        if not torch.cuda.is_available(): kwargs.setdefault('cpu', True)
        orig(self, sync_bn, **kwargs)
        if self.sync_bn and self.accelerator.device.type!='cuda': self.sync_bn = False

    @replace(fd.DistributedTrainer, 'before_validate', "without CUDA (no `SyncBatchNorm`): BatchNorm statistics are "
             "broadcast from rank 0 before validating, so every rank scores the model rank 0 exports")
    def _dt_before_validate(orig, self):
        orig(self)
        if not torch.cuda.is_available(): sync_buffers(self.learn.model)

    @replace(fd, 'setup_distrib', "without CUDA: joins a gloo group (fastai's calls `torch.cuda.set_device` and NCCL)")
    def _setup_distrib(orig, gpu=None):
        if torch.cuda.is_available(): return orig(gpu)
        setup_cpu_distrib()

if (_fd := fastai_distributed()) is not None: _patch_distributed(_fd)

# ------------------------------------------------------------------------------------------------------- wandb
def _patch_wandb(fwb):
    "fastai#4173: `WandbCallback.before_fit` formats the config with `init_args`, which raises on ints/strs/bools: every fit fails"
    try: fastai_original(fwb._format_config_value)(1); return  # fastai without the bug: leave it alone
    except TypeError: pass
    def _format_dict(d:dict) -> dict:   # what fastai's `_format_config` does, with the fixed values
        return {k: _format_dict(v) if isinstance(v, dict) else fwb._format_config_value(v) for k,v in d.items()}
    from fastcore.basics import init_args
    @replace(fwb, '_format_config_value', "only where fastai#4173 is present (every `fit` with `WandbCallback` raised): plain "
             "values logged as they are, objects as their constructor arguments, anything else by name")
    def _format_config_value(orig, v):
        if isinstance(v, (list, tuple)): return [fwb._format_config_value(o) for o in v]
        if v is None or isinstance(v, (bool, int, float, str)): return v
        if isinstance(v, Path): return str(v)
        named = getattr(v, '__qualname__', None) if isinstance(getattr(v, '__qualname__', None), str) else None
        if named or isinstance(v, (torch.nn.Module, torch.Tensor)): return named or type(v).__name__
        try: args = init_args(v)
        except (TypeError, ValueError): args = None
        return {**_format_dict(args), '_name': type(v).__name__} if args else str(v)

if importlib.util.find_spec('wandb') is not None:  # without wandb there is no `fastai.callback.wandb` to fix
    import fastai.callback.wandb as _fwb
    _patch_wandb(_fwb)
