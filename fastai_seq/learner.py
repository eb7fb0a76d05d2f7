"`seq_learner`: task inference, defaults, `show_results`, `plot_top_losses` and multi-clip evaluation for sequences"
from __future__ import annotations
import inspect
from typing import NamedTuple
import numpy as np, torch
from torch import Tensor
from fastcore.basics import store_attr, patch, ifnone
from fastcore.meta import delegates
from fastcore.foundation import L
from fastai.imports import dispatch, plt
from fastai.torch_core import TensorBase, TensorCategory, trainable_params
from fastai.losses import MSELossFlat, CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.learner import Learner
from fastai.callback.core import Callback
from fastai.data.transforms import Normalize
from fastai.vision.data import get_grid
from .core import ImageSeq, ImageTuple
from .data import LoadFrames, show_batch
from .metrics import MSE, MAE, SSIM, PSNR, TopKAccuracy
from .registry import arch_info, infer_task, create_seq_model, model_kwargs_from_dls, list_archs

__all__ = ['seq_learner', 'pretrained_defaults', 'ReleaseLossGrad', 'default_metrics', 'ClipEvaluation', 'aggregate_clips', 'show_results',
           'plot_top_losses']

_learner_args = set(inspect.signature(Learner.__init__).parameters) - {'self', 'dls', 'model'}

def default_metrics(task:str, n_classes:int=None) -> list:
    "Forecasting: mse, mae, ssim, psnr; classification: accuracy and top-k accuracy (k=5, capped at the class count)"
    if task=='forecast': return [MSE(), MAE(), SSIM(), PSNR()]
    return [accuracy, TopKAccuracy(k=min(5, n_classes or 5))]

def _find_normalize(dls):
    return next((t for t in dls.after_batch.fs if isinstance(t, Normalize)), None)

class ReleaseLossGrad(Callback):
    "Drop `learn.loss_grad` after each batch: it can share storage with the element-wise loss, which `export` would pickle"
    order = 100
    def after_batch(self): self.learn.loss_grad = None

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
    pretrained:bool=False, # ImageNet (frame bodies) or Kinetics (video models) weights, downloaded into the torch/timm cache on first use; fills in `pretrained_defaults(arch)`
    normalize:bool=True, # With `pretrained`, add `Normalize` with the weights' stats when the data has none
    **kwargs # `Learner` arguments (`lr`, `cbs`, `opt_func`, `path`, ...) and model arguments for the builder
) -> Learner:
    "Build a `Learner` for a sequence task, the task inferred from the targets of `dls`"
    task = infer_task(dls)
    lrn_kw = {k:kwargs.pop(k) for k in list(kwargs) if k in _learner_args}
    info = arch_info(arch) if isinstance(arch, str) else None
    if task=='classify': kwargs['pretrained'] = pretrained
    elif pretrained: raise ValueError("pretrained=True is for the classification archs: forecasting archs train from scratch.")
    pre = pretrained_defaults(arch) if pretrained and info is not None else {}
    builder_args = inspect.signature(info.builder).parameters if info is not None else {}
    for k,v in pre.items():  # the arch's fine-tuning recipe (body, pooling, lr) fills what the caller left out
        if k in builder_args: kwargs.setdefault(k, v)
        elif k=='lr': lrn_kw.setdefault('lr', v)
    model = create_seq_model(arch, dls, **kwargs)
    shape = model_kwargs_from_dls(dls, task)
    if info is not None:
        if info.splitter is not None: lrn_kw.setdefault('splitter', info.splitter)
        for k,v in info.defaults.items():
            if k=='cbs': lrn_kw['cbs'] = L(v) + L(lrn_kw.get('cbs'))  # the arch's callbacks (e.g. PhyDNet's constraint) stay
            elif k in _learner_args: lrn_kw.setdefault(k, v)
    # the stats of the pretrained weights: a timm/torchvision body's own (`input_stats`), else the registry entry's
    stats = next((m.input_stats for m in model.modules() if getattr(m, 'input_stats', None) is not None),
                 getattr(info, 'stats', None))
    if normalize and stats is not None and pretrained and _find_normalize(dls) is None and len(stats[0])==shape['channels']:
        dls.add_tfms([Normalize.from_stats(*stats)], 'after_batch')
    if loss_func is None: loss_func = MSELossFlat() if task=='forecast' else CrossEntropyLossFlat()
    if metrics is None: metrics = default_metrics(task, shape.get('n_classes'))
    lrn_kw['cbs'] = L(lrn_kw.get('cbs')) + [ReleaseLossGrad()]
    learn = Learner(dls, model, loss_func=loss_func, metrics=metrics, **lrn_kw)
    learn.arch, learn.task, learn.seq_shape = ifnone(getattr(info, 'name', None), arch), task, shape
    if info is not None and task=='classify' and pretrained: learn.freeze()
    return learn

def _strip_grid(n:int, ncols:int, max_frames:int, figsize=None, title=None):
    figsize = figsize or (min(1.6*max_frames*ncols, 24), 2*n)
    return get_grid(n*ncols, nrows=n, ncols=ncols, figsize=figsize, title=title)

@dispatch
def show_results(x:ImageSeq, y:ImageSeq, samples, outs, ctxs=None, max_n:int=4, nrows=None, ncols=None, figsize=None,
                 max_frames:int=10, **kwargs):
    "Each sample as a row: input frames, target frames, predicted frames"
    n = min(len(samples), max_n)
    if ctxs is None: ctxs = _strip_grid(n, 3, max_frames, figsize, title='Input / Target / Prediction')
    for i,src in enumerate((samples.itemgot(0), samples.itemgot(1), outs.itemgot(0))):
        ctxs[i::3] = [o.show(ctx=c, max_frames=max_frames, **kwargs) for o,c in zip(list(src)[:n], ctxs[i::3])]
    return ctxs

@dispatch
def show_results(x:ImageSeq, y:TensorCategory, samples, outs, ctxs=None, max_n:int=6, nrows=None, ncols=None, figsize=None,
                 max_frames:int=8, **kwargs):
    "Each clip as a strip titled 'actual / predicted', green when right and red when wrong"
    n = min(len(samples), max_n)
    if ctxs is None: ctxs = _strip_grid(n, 1, max_frames, figsize, title='Actual / Predicted')
    for (s,o,c) in zip(list(samples)[:n], list(outs)[:n], ctxs):
        s[0].show(ctx=c, max_frames=max_frames, **kwargs)
        c.set_title(f'{s[1]} / {o[0]}', color='green' if str(s[1])==str(o[0]) else 'red')
    return ctxs

@dispatch
def show_results(x:ImageTuple, y:TensorCategory, samples, outs, ctxs=None, max_n:int=6, nrows=None, ncols=None, figsize=None,
                 max_frames:int=8, **kwargs):
    "`ImageTuple` batches (the UCF101 tutorial's): one figure, each clip a strip titled 'actual / predicted', green when right, red when wrong"
    n = min(len(samples), max_n)
    if ctxs is None: ctxs = _strip_grid(n, 1, max_frames, figsize, title='Actual / Predicted')
    for (s,o,c) in zip(list(samples)[:n], list(outs)[:n], ctxs):
        ImageTuple(s[0]).show(ctx=c, max_frames=max_frames, **kwargs)
        c.set_title(f'{s[1]} / {o[0]}', color='green' if str(s[1])==str(o[0]) else 'red')
    return ctxs

@dispatch
def show_results(x:ImageTuple, y:ImageTuple, samples, outs, ctxs=None, max_n:int=4, nrows=None, ncols=None, figsize=None,
                 max_frames:int=10, **kwargs):
    "Forecasting `ImageTuple` batches (the moving_mnist package's): each sample as a row of input, target and predicted frames"
    n = min(len(samples), max_n)
    if ctxs is None: ctxs = _strip_grid(n, 3, max_frames, figsize, title='Input / Target / Prediction')
    # a model returning a list of frames gives each sample its predicted frames as separate outputs
    preds = [o[0] if len(o)==1 and isinstance(o[0], tuple) else tuple(o) for o in list(outs)[:n]]
    for i,src in enumerate((samples.itemgot(0), samples.itemgot(1), preds)):
        ctxs[i::3] = [ImageTuple(o).show(ctx=c, max_frames=max_frames, **kwargs) for o,c in zip(list(src)[:n], ctxs[i::3])]
    return ctxs

@dispatch
def plot_top_losses(x:ImageSeq, y:TensorCategory, samples, outs, raws, losses, nrows=None, ncols=None, figsize=None,
                    max_frames:int=8, **kwargs):
    "Each clip as a strip titled 'prediction / actual / loss / probability'"
    axs = _strip_grid(len(samples), 1, max_frames, figsize, title='Prediction / Actual / Loss / Probability')
    for ax,s,o,r,l in zip(axs, samples, outs, raws, losses):
        s[0].show(ctx=ax, max_frames=max_frames, **kwargs)
        ax.set_title(f'{o[0]} / {s[1]} / {l.item():.2f} / {r.max().item():.2f}')
    return axs

@dispatch
def plot_top_losses(x:ImageSeq, y:ImageSeq, samples, outs, raws, losses, nrows=None, ncols=None, figsize=None,
                    max_frames:int=10, **kwargs):
    "Each sample as a row: input, target and predicted frames, with its loss"
    axs = _strip_grid(len(samples), 3, max_frames, figsize, title='Input / Target / Prediction')
    for i,(s,o,l) in enumerate(zip(samples, outs, losses)):
        for j,(im,t) in enumerate(zip((s[0], s[1], o[0]), ('input', 'target', f'prediction; loss {l.item():.4f}'))):
            im.show(ctx=axs[3*i+j], max_frames=max_frames, **kwargs)
            axs[3*i+j].set_title(t)
    return axs

class ClipEvaluation(NamedTuple):
    "Multi-clip evaluation: accuracy of single clips, accuracy of videos (clip probabilities averaged), and the raw numbers"
    clip_accuracy: float
    video_accuracy: float
    probs: Tensor       # `(n_videos, n_classes)` averaged probabilities
    clip_probs: Tensor  # `(n_clips, n_videos, n_classes)`
    targets: Tensor     # `(n_videos,)`
    def __repr__(self): return (f'ClipEvaluation(clip_accuracy={self.clip_accuracy:.4f}, video_accuracy={self.video_accuracy:.4f}, '
                                f'n_clips={len(self.clip_probs)}, n_videos={len(self.targets)})')

def aggregate_clips(clip_probs:Tensor, targets:Tensor) -> ClipEvaluation:
    "Average `(n_clips,n_videos,n_classes)` probabilities over clips; score clips and videos against `targets`"
    clip_probs, targets = torch.as_tensor(clip_probs).float(), torch.as_tensor(targets).long()
    clip_acc = (clip_probs.argmax(-1)==targets[None]).float().mean().item()
    probs = clip_probs.mean(0)
    return ClipEvaluation(clip_acc, (probs.argmax(-1)==targets).float().mean().item(), probs, clip_probs, targets)

def _loader_tfm(dl) -> LoadFrames:
    tfm = next((t for tl in getattr(dl.dataset, 'tls', [dl.dataset]) for t in getattr(getattr(tl, 'tfms', None), 'fs', [])
                if isinstance(t, LoadFrames)), None)
    if tfm is None: raise ValueError("evaluate_clips needs DataLoaders built with VideoBlock or SeqBlock inputs.")
    return tfm

def _crop_boxes(h:int, w:int, n_crops:int, size:int=None) -> list:
    "`(top, left, size)` of mmaction2's ThreeCrop (n_crops=3: start/centre/end of the long side) or CenterCrop (n_crops=1)"
    s = ifnone(size, min(h, w))
    if not 0 < s <= min(h, w): raise ValueError(f"crop_size {s} does not fit frames of {h}x{w}: use at most {min(h, w)}.")
    if n_crops==1: return [((h-s)//2, (w-s)//2, s)]
    if w >= h: return [((h-s)//2, x, s) for x in (0, (w-s)//2, w-s)]  # left, centre, right
    return [(y, (w-s)//2, s) for y in (0, (h-s)//2, h-s)]             # top, centre, bottom

class _SpatialCrops(Callback):
    "Run the model on each spatial crop of the batch's sequences; keep the raw outputs of every crop"
    def __init__(self, n_crops:int, size:int=None): self.n_crops,self.size,self.outs = n_crops,size,[]
    def before_batch(self):
        x = self.xb[0]
        self.crops = [x[..., t:t+s, l:l+s] for t,l,s in _crop_boxes(*x.shape[-2:], self.n_crops, self.size)]
        self.learn.xb = (self.crops[0], *self.xb[1:])
    def after_pred(self):
        outs = [self.pred] + [self.model(c, *self.xb[1:]) for c in self.crops[1:]]
        self.outs.append(torch.stack([o.detach().as_subclass(Tensor).float().cpu() for o in outs]))

@patch
def evaluate_clips(self:Learner,
    n_clips:int=5, # Clips per video, spread evenly over its length
    ds_idx:int=1, # Which dataset to score (1: validation)
    dl=None, # Or score this `DataLoader` (with labels)
    n_crops:int=1, # 1: the whole frames (or a centre crop with `crop_size`); 3: mmaction2's `ThreeCrop` along the long side
    crop_size:int=None, # Side of the square crops; default the frames' short side (as `ThreeCrop` after a short-side resize)
) -> ClipEvaluation:
    "Score each video on `n_clips` evenly spread clips x `n_crops` spatial crops and average their probabilities (as mmaction2 does)"
    if n_crops not in (1, 3): raise ValueError(f"n_crops must be 1 or 3 (mmaction2's CenterCrop or ThreeCrop), got {n_crops}")
    dl = ifnone(dl, self.dls[ds_idx]).new(shuffle=False, drop_last=False)
    tfm = _loader_tfm(dl)
    act = getattr(self.loss_func, 'activation', lambda o: o)
    old, all_probs, targs = tfm.clip, [], None
    try:
        for k in range(n_clips):
            tfm.clip = (k, n_clips)
            if n_crops==1 and crop_size is None:  # the frames as they are
                probs, targs = self.get_preds(dl=dl)
                all_probs.append(probs); continue
            cb = _SpatialCrops(n_crops, crop_size)  # one decode per clip, one forward pass per crop
            _, targs = self.get_preds(dl=dl, cbs=[cb])
            all_probs += list(act(torch.cat(cb.outs, 1)))
    finally: tfm.clip = old
    # `clip_probs` holds every view, clip-major: clip k, crop c is row k*n_crops+c
    return aggregate_clips(torch.stack(all_probs), targs)
