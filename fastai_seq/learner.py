"`seq_learner`, the learner factory: reads one batch, infers task and shapes, builds the model, normalises, stores its choices"
from __future__ import annotations
import inspect
from typing import Callable
from fastcore.basics import ifnone, noop
from fastcore.meta import delegates
from fastcore.foundation import L
from fastai.imports import dispatch
from fastai.torch_core import TensorCategory
from fastai.losses import MSELossFlat, CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.learner import Learner, get_c
from fastai.data.core import DataLoaders
from fastai.data.transforms import Normalize
from fastai.vision.core import imagenet_stats
from .core import ImageSeq, ImageTuple
from .data import show_strip_rows, seq_grid
from .metrics import MSE, MAE, SSIM, PSNR, TopKAccuracy, get_norm_stats
from .callbacks import ReleaseLossGrad
from .registry import TASKS, arch_info, list_archs
from .models.hf import ClipSpec, is_hf_arch, hf_clip_spec

__all__ = ['seq_learner', 'clip_spec', 'ClipSpec', 'pretrained_defaults', 'default_metrics', 'infer_task', 'model_kwargs_from_dls', 'create_seq_model',
           'show_results', 'plot_top_losses']

_learner_args = set(inspect.signature(Learner.__init__).parameters) - {'self', 'dls', 'model'}

def infer_task(
    dls:DataLoaders, # The `DataLoaders`; a `dls.task` attribute ('forecast' or 'classify') overrides
    b:tuple=None, # A batch already read from `dls` (default: read one)
) -> str:
    "'forecast' when the targets are `ImageSeq`, 'classify' when they are categories"
    if getattr(dls, 'task', None) in TASKS: return dls.task
    if b is None: b = dls.one_batch()
    if len(b)<2: raise ValueError("The DataLoaders yield no target: seq_learner needs (input, target) batches.")
    return 'forecast' if isinstance(b[1], ImageSeq) else 'classify'

def model_kwargs_from_dls(
    dls:DataLoaders, # The `DataLoaders` the model will train on
    task:str=None, # 'forecast' or 'classify' (default: `infer_task`)
    b:tuple=None, # A batch already read from `dls` (default: read one)
) -> dict:
    "The shape arguments a builder of `task` gets, read off one batch of `dls`"
    if b is None: b = dls.one_batch()
    task = task or infer_task(dls, b)
    x,y = b[:2]
    if x.ndim!=5: raise ValueError(f"Expected input batches of shape (B,T,C,H,W), got {tuple(x.shape)}. "
                                   "Use SeqBlock or VideoBlock for the input.")
    _,t,c,h,w = x.shape
    res = dict(channels=c, size=(h,w))
    if task=='forecast': res.update(n_in=t, n_out=y.shape[1])
    else: res.update(n_frames=t, n_classes=get_c(dls))
    return res

def create_seq_model(
    arch:str|Callable, # A registered arch name (see `list_archs()`) or a builder taking the shape kwargs
    dls:DataLoaders, # The `DataLoaders` the shapes are read from
    b:tuple=None, # A batch already read from `dls` (default: read one)
    **kwargs # Builder arguments, over the inferred shape ones
):
    "Build `arch` (a registered name or a builder) with its shape arguments inferred from `dls`"
    if b is None: b = dls.one_batch()
    if callable(arch): return arch(**{**model_kwargs_from_dls(dls, b=b), **kwargs})
    info, task = arch_info(arch), infer_task(dls, b)
    if info.task!=task:
        raise ValueError(f"Arch {arch!r} is for the {info.task!r} task but these DataLoaders are for {task!r} "
                         f"({'ImageSeq' if task=='forecast' else 'category'} targets). "
                         f"Archs for {task!r}: {list_archs(task=task)}")
    return info.builder(**{**model_kwargs_from_dls(dls, task, b), **kwargs})

def clip_spec(
    arch:str, # A registered classification arch or 'hf-hub:REPO_ID' / 'hf-hub:/a/local/folder'
) -> ClipSpec:
    "The clip `arch` expects when pretrained, `(n_frames, size, mean, std)`: build the `DataBlock` from it (None: any)"
    if is_hf_arch(arch): return hf_clip_spec(arch)
    info = arch_info(arch)
    pre = info.defaults.get('pretrained', {})
    # a registry entry's stats (Kinetics video models), else the ImageNet stats of the frame bodies of the recipe
    mean,std = info.stats or (imagenet_stats if pre.get('body') else (None, None))
    return ClipSpec(pre.get('clip_frames'), pre.get('frame_size'), mean, std)

def default_metrics(task:str, n_classes:int=None) -> list:
    "Forecasting: mse, mae, ssim, psnr; classification: accuracy and top-k accuracy (k=5, capped at the class count)"
    if task=='forecast': return [MSE(), MAE(), SSIM(), PSNR()]
    return [accuracy, TopKAccuracy(k=min(5, n_classes or 5))]

def pretrained_defaults(
    arch:str, # A registered classification arch
) -> dict:
    "The fine-tuning recipe `seq_learner(..., pretrained=True)` and the command line use for `arch`: body, pooling, lr, epochs"
    return dict(arch_info(arch).defaults.get('pretrained', {}))

@delegates(Learner.__init__)
def seq_learner(
    dls, # `DataLoaders` of `ImageSeq` inputs and `ImageSeq` (forecasting) or category (classification) targets
    arch='convgru', # A registered arch name (see `list_archs()`) or a builder taking the shape kwargs
    loss_func=None, # Default: `MSELossFlat` (forecasting), `CrossEntropyLossFlat` (classification)
    metrics=None, # Default: `default_metrics(task)`
    pretrained:bool=None, # ImageNet (frame bodies), Kinetics (video models) or the checkpoint's weights, downloaded into the torch/timm/Hugging Face cache on first use; fills in `pretrained_defaults(arch)`. None: True for `hf-hub:` checkpoints, else False
    normalize:bool=True, # With `pretrained`, add `Normalize` with the weights' stats when the data has none
    **kwargs # `Learner` arguments (`lr`, `cbs`, `opt_func`, `path`, ...) and model arguments for the builder
) -> Learner:
    "Build a `Learner` for a sequence task, the task inferred from the targets of `dls`"
    b = dls.one_batch()   # the one batch read: task, shapes and model all come from it
    task = infer_task(dls, b)
    lrn_kw = {k:kwargs.pop(k) for k in list(kwargs) if k in _learner_args}
    info = arch_info(arch) if isinstance(arch, str) else None
    if pretrained is None: pretrained = bool(task=='classify' and info is not None and info.defaults.get('pretrained_default'))
    if task=='classify': kwargs['pretrained'] = pretrained
    elif pretrained: raise ValueError("pretrained=True is for the classification archs: forecasting archs train from scratch.")
    pre = pretrained_defaults(arch) if pretrained and info is not None else {}
    builder_args = inspect.signature(info.builder).parameters if info is not None else {}
    for k,v in pre.items():  # the arch's fine-tuning recipe (body, pooling, lr) fills what the caller left out
        if k in builder_args: kwargs.setdefault(k, v)
        elif k=='lr': lrn_kw.setdefault('lr', v)
    if 'vocab' in builder_args and task=='classify': kwargs.setdefault('vocab', getattr(dls, 'vocab', None))  # class names into the model
    if task=='forecast' and getattr(loss_func, 'out_ch', None) and isinstance(arch, str):
        kwargs.setdefault('out_ch', loss_func.out_ch)   # a per-pixel classification loss: K logits a pixel
    model = create_seq_model(arch, dls, b, **kwargs)
    shape = model_kwargs_from_dls(dls, task, b)
    if info is not None:
        if info.splitter is not None: lrn_kw.setdefault('splitter', info.splitter)
        for k,v in info.defaults.items():
            if k=='cbs': lrn_kw['cbs'] = L(v) + L(lrn_kw.get('cbs'))  # the arch's callbacks (e.g. PhyDNet's constraint) stay
            elif k in _learner_args: lrn_kw.setdefault(k, v)   # (`pretrained`, `pretrained_default`: the recipe, read above)
    # the stats of the pretrained weights: a timm/torchvision body's own (`input_stats`), else the registry entry's
    stats = next((m.input_stats for m in model.modules() if getattr(m, 'input_stats', None) is not None),
                 getattr(info, 'stats', None))
    if normalize and stats is not None and pretrained and get_norm_stats(dls)[0] is None and len(stats[0])==shape['channels']:
        dls.add_tfms([Normalize.from_stats(*stats)], 'after_batch')
    if loss_func is None: loss_func = MSELossFlat() if task=='forecast' else CrossEntropyLossFlat()
    if metrics is None: metrics = getattr(loss_func, 'metrics', None) or default_metrics(task, shape.get('n_classes'))
    lrn_kw['cbs'] = L(lrn_kw.get('cbs')) + [ReleaseLossGrad()]
    learn = Learner(dls, model, loss_func=loss_func, metrics=metrics, **lrn_kw)
    learn.arch, learn.task, learn.seq_shape = ifnone(getattr(info, 'name', None), arch), task, shape
    if info is not None and task=='classify' and pretrained: learn.freeze()
    return learn

@dispatch
def show_results(x:ImageSeq, y:ImageSeq, samples, outs, ctxs=None, max_n:int=4, nrows=None, ncols=None, figsize=None,
                 max_frames:int=10, **kwargs):
    "Each sample as a row: input frames, target frames, predicted frames"
    n = min(len(samples), max_n)
    return show_strip_rows((samples.itemgot(0), samples.itemgot(1), outs.itemgot(0)), n, ctxs, figsize, max_frames,
                           'Input / Target / Prediction', **kwargs)

def _show_clips(samples, outs, ctxs, max_n, figsize, max_frames, wrap=noop, **kwargs):
    "Each clip as a strip titled 'actual / predicted', green when right and red when wrong"
    n = min(len(samples), max_n)
    if ctxs is None: ctxs = seq_grid(n, 1, max_frames, figsize, title='Actual / Predicted', strips=[s[0] for s in list(samples)[:n]])
    for (s,o,c) in zip(list(samples)[:n], list(outs)[:n], ctxs):
        wrap(s[0]).show(ctx=c, max_frames=max_frames, **kwargs)
        c.set_title(f'{s[1]} / {o[0]}', color='green' if str(s[1])==str(o[0]) else 'red')
    return ctxs

@dispatch
def show_results(x:ImageSeq, y:TensorCategory, samples, outs, ctxs=None, max_n:int=6, nrows=None, ncols=None, figsize=None,
                 max_frames:int=8, **kwargs):
    "Each clip as a strip titled 'actual / predicted', green when right and red when wrong"
    return _show_clips(samples, outs, ctxs, max_n, figsize, max_frames, **kwargs)

@dispatch
def show_results(x:ImageTuple, y:TensorCategory, samples, outs, ctxs=None, max_n:int=6, nrows=None, ncols=None, figsize=None,
                 max_frames:int=8, **kwargs):
    "`ImageTuple` batches (the UCF101 tutorial's): one figure, each clip a strip titled 'actual / predicted', green when right, red when wrong"
    return _show_clips(samples, outs, ctxs, max_n, figsize, max_frames, ImageTuple, **kwargs)

@dispatch
def show_results(x:ImageTuple, y:ImageTuple, samples, outs, ctxs=None, max_n:int=4, nrows=None, ncols=None, figsize=None,
                 max_frames:int=10, **kwargs):
    "Forecasting `ImageTuple` batches (the moving_mnist package's): each sample as a row of input, target and predicted frames"
    n = min(len(samples), max_n)
    # a model returning a list of frames gives each sample its predicted frames as separate outputs
    preds = [o[0] if len(o)==1 and isinstance(o[0], tuple) else tuple(o) for o in list(outs)[:n]]
    return show_strip_rows((samples.itemgot(0), samples.itemgot(1), preds), n, ctxs, figsize, max_frames,
                           'Input / Target / Prediction', ImageTuple, **kwargs)

@dispatch
def plot_top_losses(x:ImageSeq, y:TensorCategory, samples, outs, raws, losses, nrows=None, ncols=None, figsize=None,
                    max_frames:int=8, **kwargs):
    "Each clip as a strip titled 'prediction / actual / loss / probability'"
    axs = seq_grid(len(samples), 1, max_frames, figsize, title='Prediction / Actual / Loss / Probability',
                    strips=[s[0] for s in samples])
    for ax,s,o,r,l in zip(axs, samples, outs, raws, losses):
        s[0].show(ctx=ax, max_frames=max_frames, **kwargs)
        ax.set_title(f'{o[0]} / {s[1]} / {l.item():.2f} / {r.max().item():.2f}')
    return axs

@dispatch
def plot_top_losses(x:ImageSeq, y:ImageSeq, samples, outs, raws, losses, nrows=None, ncols=None, figsize=None,
                    max_frames:int=10, **kwargs):
    "Each sample as a row: input, target and predicted frames, with its loss"
    axs = seq_grid(len(samples), 3, max_frames, figsize, title='Input / Target / Prediction',
                    strips=[o for s in samples for o in s[:2]])
    for i,(s,o,l) in enumerate(zip(samples, outs, losses)):
        for j,(im,t) in enumerate(zip((s[0], s[1], o[0]), ('input', 'target', f'prediction; loss {l.item():.4f}'))):
            im.show(ctx=axs[3*i+j], max_frames=max_frames, **kwargs)
            axs[3*i+j].set_title(t)
    return axs

_MOVED = {'ReleaseLossGrad': 'callbacks', 'TimeBudget': 'callbacks', 'PixelLevelsLoss': 'losses', 'SeqDice': 'metrics',
          'ClipEvaluation': 'evaluate', 'aggregate_clips': 'evaluate', 'ForecastReport': 'evaluate', 'Rollout': 'evaluate'}

def __getattr__(name):
    "The names that moved out of this module, importable from here as before"
    if name in _MOVED:
        import importlib
        return getattr(importlib.import_module(f'{__package__}.{_MOVED[name]}'), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
