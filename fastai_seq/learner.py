"`seq_learner`: task inference, defaults, `show_results`, `plot_top_losses` and multi-clip evaluation for sequences"
from __future__ import annotations
import inspect
from typing import NamedTuple
import numpy as np, torch
from torch import Tensor
from fastcore.basics import store_attr, patch, ifnone, noop
from fastcore.meta import delegates
from fastcore.foundation import L
from fastai.imports import dispatch, plt
from fastai.torch_core import TensorBase, TensorCategory, trainable_params
from fastai.losses import MSELossFlat, CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.learner import Learner, Metric
from fastai.callback.core import Callback
from fastai.data.transforms import Normalize
from fastai.callback.core import CancelFitException
from fastai.callback.core import CancelTrainException
import fastai.callback.progress  # noqa: F401 (`Learner.no_bar`, used by `forecast_report`)
from fastai.torch_core import find_bs
from fastai.torch_core import Module
from torch import nn
import torch.nn.functional as F
from pathlib import Path
from .core import ImageSeq, ImageTuple
from .distributed import plain_dl
from .data import LoadFrames, show_batch, show_strip_rows, _seq_grid
from .metrics import MSE, MAE, SSIM, PSNR, TopKAccuracy
from .metrics import frame_ssim, get_norm_stats, _as_seq, _stat, _targ_normalised
from .registry import arch_info, infer_task, create_seq_model, model_kwargs_from_dls, list_archs

__all__ = ['seq_learner', 'pretrained_defaults', 'ReleaseLossGrad', 'default_metrics', 'ClipEvaluation', 'aggregate_clips', 'show_results',
           'plot_top_losses', 'ForecastReport', 'Rollout', 'TimeBudget', 'PixelLevelsLoss', 'SeqDice']

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
    if task=='forecast' and getattr(loss_func, 'out_ch', None) and isinstance(arch, str):
        kwargs.setdefault('out_ch', loss_func.out_ch)   # a per-pixel classification loss: K logits a pixel
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
    if ctxs is None: ctxs = _seq_grid(n, 1, max_frames, figsize, title='Actual / Predicted', strips=[s[0] for s in list(samples)[:n]])
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
    axs = _seq_grid(len(samples), 1, max_frames, figsize, title='Prediction / Actual / Loss / Probability',
                    strips=[s[0] for s in samples])
    for ax,s,o,r,l in zip(axs, samples, outs, raws, losses):
        s[0].show(ctx=ax, max_frames=max_frames, **kwargs)
        ax.set_title(f'{o[0]} / {s[1]} / {l.item():.2f} / {r.max().item():.2f}')
    return axs

@dispatch
def plot_top_losses(x:ImageSeq, y:ImageSeq, samples, outs, raws, losses, nrows=None, ncols=None, figsize=None,
                    max_frames:int=10, **kwargs):
    "Each sample as a row: input, target and predicted frames, with its loss"
    axs = _seq_grid(len(samples), 3, max_frames, figsize, title='Input / Target / Prediction',
                    strips=[o for s in samples for o in s[:2]])
    for i,(s,o,l) in enumerate(zip(samples, outs, losses)):
        for j,(im,t) in enumerate(zip((s[0], s[1], o[0]), ('input', 'target', f'prediction; loss {l.item():.4f}'))):
            im.show(ctx=axs[3*i+j], max_frames=max_frames, **kwargs)
            axs[3*i+j].set_title(t)
    return axs

class ClipEvaluation(NamedTuple):
    "Multi-clip evaluation: accuracy of single views (clip x crop), accuracy of videos (view probabilities averaged), raw numbers"
    clip_accuracy: float
    video_accuracy: float
    probs: Tensor       # `(n_videos, n_classes)` averaged probabilities
    clip_probs: Tensor  # `(n_views, n_videos, n_classes)`: one row per clip and crop (clip-major)
    targets: Tensor     # `(n_videos,)`
    def __repr__(self): return (f'ClipEvaluation(clip_accuracy={self.clip_accuracy:.4f}, video_accuracy={self.video_accuracy:.4f}, '
                                f'n_views={len(self.clip_probs)}, n_videos={len(self.targets)})')

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

# ------------------------------------------------------------------------------------------------------ forecasting
_REPORT_COLS = ('mse', 'mae', 'ssim', 'psnr')

def _frame_scores(p:Tensor, t:Tensor) -> Tensor:
    "`(B,T,4)` scores of each frame: MSE and MAE summed over its pixels (unclipped), SSIM and PSNR of the prediction clipped to [0,1]"
    pc = p.clamp(0, 1)
    d = p-t
    mse,mae = d.pow(2).flatten(2).sum(2),d.abs().flatten(2).sum(2)
    psnr = -10*torch.log10((pc-t).pow(2).flatten(2).mean(2).clamp_min(1e-10))
    ss = frame_ssim(pc.flatten(0, 1), t.flatten(0, 1)).view(p.shape[:2])
    return torch.stack([mse, mae, ss, psnr], -1)

class _ReportCallback(Callback):
    "Sum the per-frame scores of the predictions (and of the blank and copy-last baselines) over the sequences of a `validate`"
    order = 90
    def __init__(self, baselines:bool): self.do_base,self.sums,self.n = baselines,{},0
    def after_batch(self):
        if self.training: return
        dl = self.learn.dl
        dl = plain_dl(dl)
        mean,std = get_norm_stats(dl)
        undo = lambda o: o if mean is None else o*_stat(std, o) + _stat(mean, o)
        p = _as_seq(self.learn.pred, 'pred')
        t = _as_seq(self.learn.y, 'targ').to(p.device)
        if p.shape!=t.shape: raise ValueError(f"forecast_report: predictions {tuple(p.shape)} and targets {tuple(t.shape)} differ in shape")
        if _targ_normalised(dl): p,t = undo(p),undo(t)
        preds = {'model': p}
        if self.do_base:
            x = undo(_as_seq(self.learn.xb[0], 'input').to(p.device))
            preds['copy last'] = x[:, -1:].expand_as(t)
            preds['blank'] = torch.zeros_like(t)
        with torch.no_grad():
            for k,v in preds.items():
                s = _frame_scores(v.float(), t.float()).sum(0).double().cpu()
                self.sums[k] = s if k not in self.sums else self.sums[k]+s
        self.n += len(t)

class ForecastReport:
    "Forecasting scores as the literature reports them: overall and per horizon step, with the blank and copy-last baselines"
    # `mse`/`mae`: the error summed over the C*H*W values of a frame on the [0,1] scale (OpenSTL's MSE/MAE, the numbers of
    # the Moving MNIST tables), `ssim` (Gaussian window 11, sigma 1.5, data range 1) and `psnr` (peak 1) of each frame,
    # each averaged over the sequences; `overall` is the mean over the horizon steps.
    def __init__(self, sums:dict, n:int):
        import pandas as pd
        self.n = n
        idx = pd.RangeIndex(1, len(sums['model'])+1, name='step')
        self.steps = {k: pd.DataFrame((v/n).numpy(), index=idx, columns=list(_REPORT_COLS)) for k,v in sums.items()}
    @property
    def per_step(self):
        "The model's scores at each horizon step (a `DataFrame`, steps from 1)"
        return self.steps['model']
    @property
    def overall(self) -> dict:
        "The model's scores averaged over the horizon"
        return self.per_step.mean().to_dict()
    @property
    def baselines(self) -> dict:
        "`{'copy last': DataFrame, 'blank': DataFrame}` per step (empty without `baselines=True`)"
        return {k:v for k,v in self.steps.items() if k!='model'}
    def table(self):
        "Overall scores of the model and the baselines as rows, with the MSE as a fraction of the blank frames'"
        import pandas as pd
        t = pd.DataFrame({k: v.mean() for k,v in self.steps.items()}).T
        if 'blank' in self.steps: t['mse x blank'] = t['mse']/t.loc['blank', 'mse']
        return t
    def plot(self,
        fn:str|Path=None, # Save the figure there
        title:str='Error against horizon',
    ):
        "MSE per frame and SSIM against the horizon step, the baselines dashed; the figure"
        fig,axs = plt.subplots(1, 2, figsize=(10, 3.6))
        for k,v in self.steps.items():
            for ax,c in zip(axs, ('mse', 'ssim')):
                ax.plot(v.index, v[c], 'o-' if k=='model' else '--', label=k, ms=3)
        for ax,c in zip(axs, ('MSE per frame (sum over pixels, [0,1])', 'SSIM (data range 1)')):
            ax.set_xlabel('horizon step (frames ahead)'); ax.set_ylabel(c); ax.grid(alpha=.3)
        axs[0].legend(); fig.suptitle(f'{title} ({self.n} sequences)'); fig.tight_layout()
        if fn is not None: fig.savefig(fn, dpi=100, bbox_inches='tight')
        return fig
    def __repr__(self):
        import pandas as pd
        with pd.option_context('display.float_format', '{:.4g}'.format, 'display.width', 120):
            return (f"ForecastReport: {self.n} sequences, {len(self.per_step)} steps\n{self.table()}\n\n"
                    f"per step (model):\n{self.per_step.T}")

@patch
def forecast_report(self:Learner,
    dl=None, # A `DataLoader` with targets (e.g. `moving_mnist_test_dl(fn)`, `dls[2]`); default the validation set
    baselines:bool=True, # Also score predicting blank frames and copying the last input frame
    plot:str|Path=None, # Write the plot of error against horizon there
) -> ForecastReport:
    "MSE/MAE per frame, SSIM and PSNR of the forecasts of `dl`, overall and per horizon step (as OpenSTL reports them)"
    dl = self.dls.valid if dl is None else dl
    cb = _ReportCallback(baselines)
    old = self.metrics
    self.metrics = []   # the report computes its own numbers
    try:
        with self.no_bar(), self.no_logging(): self.validate(dl=dl, cbs=[cb])
    finally: self.metrics = old
    if not cb.n: raise ValueError("forecast_report: the DataLoader gave no batches.")
    rep = ForecastReport(cb.sums, cb.n)
    if plot is not None: plt.close(rep.plot(plot))
    return rep

def _to_seq5(o) -> tuple:
    "`(tensor (B,T,...), was_list)` from a 5-D tensor or a list/tuple of frame batches"
    if isinstance(o, (list, tuple)): return torch.stack(list(o), dim=1), True
    return o, False

class Rollout(Module):
    "Roll `model` (trained to predict `k` frames from `n_in`) forward autoregressively to `n_out` frames, feeding its predictions back"
    def __init__(self,
        model:nn.Module, # A forecasting model `(B,n_in,C,H,W) -> (B,k,C,H,W)` (or lists of frames)
        n_out:int, # Frames to predict in all
    ):
        if n_out<1: raise ValueError(f"n_out must be >= 1, got {n_out}")
        self.model,self.n_out = model,n_out
    def forward(self, x, *args, **kwargs):
        x5,as_list = _to_seq5(x)
        n_in,outs,got = x5.shape[1],[],0
        inp = x   # the first call sees exactly what a plain call sees
        while got<self.n_out:
            y,_ = _to_seq5(self.model(inp, *args, **kwargs) if not outs else self.model(inp))
            if y.shape[1]<1: raise ValueError("Rollout: the model predicted no frames.")
            outs.append(y); got += y.shape[1]
            if got>=self.n_out: break
            hist = torch.cat([x5.as_subclass(Tensor), *[o.as_subclass(Tensor) for o in outs]], dim=1)[:, -n_in:]
            inp = list(hist.unbind(1)) if as_list else hist
        y = torch.cat([o.as_subclass(Tensor) for o in outs], dim=1)[:, :self.n_out]
        return list(y.unbind(1)) if as_list else y

_fastai_predict = Learner.predict

def _path_item(dls, item):
    "`item` as fastai's `test_dl` takes it: a `str` becomes a `Path` when the data's items were paths (its type is matched against theirs)"
    if not isinstance(item, str): return item
    tls = getattr(getattr(dls, 'valid_ds', None), 'tls', None)
    types = getattr(tls[0], 'types', None) if tls else None
    if not types: return item
    # the first type is the training items' (`infer_idx` skips the transforms before the first type that matches: a
    # `str` matching a later one would skip `get_x`), so a `str` is turned into a `Path` only where the items were paths
    return Path(item) if not isinstance(item, types[0]) and isinstance(Path(item), types[0]) else item

@patch
def predict(self:Learner, item, rm_type_tfms=None, with_input=False,
    n_out:int=None, # Forecasting: the number of frames to predict, rolling the model forward past the horizon it was trained for
):
    "fastai's `Learner.predict` (a video file or frame folder given as a `str` or a `Path`); with `n_out` a forecasting model is rolled forward autoregressively to `n_out` frames"
    item = _path_item(self.dls, item)
    if n_out is None: return _fastai_predict(self, item, rm_type_tfms=rm_type_tfms, with_input=with_input)
    if getattr(self, 'task', 'forecast')!='forecast': raise ValueError("predict(n_out=...) is for forecasting learners.")
    model = self.model
    self.model = Rollout(model, n_out)
    try: return _fastai_predict(self, item, rm_type_tfms=rm_type_tfms, with_input=with_input)
    finally: self.model = model

@patch
def forecast(self:Learner,
    x:Tensor, # Input frames `(B,n_in,C,H,W)` or one sequence `(n_in,C,H,W)`, as the model takes them (normalised if the data is)
    n_steps:int, # Frames to predict; more than the model was trained for rolls it forward on its own predictions
) -> Tensor:
    "The model's forecast of `n_steps` frames after `x`: `(B,n_steps,C,H,W)` (or `(n_steps,C,H,W)` for one sequence)"
    one = isinstance(x, Tensor) and x.ndim==4
    xb = x[None] if one else x
    dev = next(self.model.parameters()).device
    xb = xb.to(dev) if isinstance(xb, Tensor) else [o.to(dev) for o in xb]
    was = self.model.training
    self.model.eval()
    try:
        with torch.no_grad(): y,_ = _to_seq5(Rollout(self.model, n_steps)(xb))
    finally: self.model.train(was)
    return y[0] if one else y

class TimeBudget(Callback):
    "Train for `budget` seconds at most: the one-cycle schedule's progress is the time spent (or the epochs done, if they end first)"
    # The epoch in which the budget runs out stops training there and is still validated (and logged: a row of the epoch
    # table even when the budget ends the first epoch); the fit stops after it. That validation comes on top of the budget.
    order = 55  # before `ParamScheduler` (60) reads `pct_train`
    def __init__(self,
        budget:float, # Training seconds (the validation of the epochs before the last included)
    ): self.budget,self.spent,self.cut = budget,False,None
    def before_fit(self):
        import time
        self.t0,self.n,self._clock = time.perf_counter(),0,time.perf_counter
        self.spent,self.cut = False,None
    def before_epoch(self):
        if self.spent: raise CancelFitException()
    def before_batch(self):
        # the time spent, or the share of the epochs done when they end first: the schedule anneals on either
        if self.training:
            done = self.learn.train_iter/max(1, self.learn.n_epoch*self.learn.n_iter)
            self.learn.pct_train = min(max((self._clock()-self.t0)/self.budget, done), 1.)
    def after_batch(self):
        if not self.training: return
        self.n += find_bs(self.learn.yb)
        if self._clock()-self.t0 > self.budget:
            self.spent = True
            # `(epoch, batches trained, batches an epoch)` where the time ran out, unless that was the epoch's last batch
            if self.learn.iter+1 < self.learn.n_iter: self.cut = (self.learn.epoch, self.learn.iter+1, self.learn.n_iter)
            raise CancelTrainException()   # validate this epoch, log its row, then stop (`before_epoch`)
    def after_cancel_train(self):
        # the `Recorder` (order 50, before this) drops the training loss of a cancelled epoch: keep it, the epoch ran
        rec = getattr(self.learn, 'recorder', None)
        if self.spent and rec is not None: rec.cancel_train = False

class PixelLevelsLoss:
    "The moving_mnist package's cross-entropy recipe: each pixel of the `[0,1]` target frames is a class (on/off at `th`, or `n_levels` gray levels)"
    # The model predicts `n_levels` logits a pixel, `(B,T,n_levels,H,W)`; `decodes` turns them back into frames (the
    # level of the argmax, in [0,1]), so `show_results`, `predict` and `get_preds(with_decoded=True)` show decoded frames.
    def __init__(self,
        n_levels:int=2, # 2: binarised frames (the package's recipe); K > 2: K evenly spaced gray levels, nearest one
        th:float=0.7, # With `n_levels=2`: a pixel is on above this (the package's `th`)
        weight=None, # Class weights for `F.cross_entropy` (e.g. to weigh the rare "on" pixels more)
    ):
        if n_levels<2: raise ValueError(f"n_levels must be >= 2, got {n_levels}")
        self.n_levels,self.th,self.weight = n_levels,th,weight
        self.out_ch = n_levels
    @property
    def metrics(self) -> list: return [SeqDice(self)]
    def encode(self, y:Tensor) -> Tensor:
        "Class indices `(B,T,H,W)` of `[0,1]` frames `(B,T,1,H,W)`"
        y = _as_seq(y, 'targ')
        if y.shape[2]!=1: raise ValueError(f"PixelLevelsLoss takes 1-channel target frames, got {y.shape[2]} channels")
        y = y[:, :, 0]
        if self.n_levels==2: return (y>self.th).long()
        return (y.clamp(0, 1)*(self.n_levels-1)).round().long()
    def __call__(self, pred, targ) -> Tensor:
        p = _as_seq(pred, 'pred')
        if p.shape[2]!=self.n_levels: raise ValueError(f"PixelLevelsLoss({self.n_levels}) needs {self.n_levels} logits a pixel "
                                                       f"(B,T,{self.n_levels},H,W), got {tuple(p.shape)}: build the model with out_ch={self.n_levels}")
        w = None if self.weight is None else torch.as_tensor(self.weight, dtype=p.dtype, device=p.device)
        return F.cross_entropy(p.flatten(0, 1), self.encode(targ).to(p.device).flatten(0, 1), weight=w)
    def activation(self, x): return x
    def decodes(self, x) -> Tensor:
        "Logits `(B,T,K,H,W)` -> frames `(B,T,1,H,W)`: the level of the most likely class, in [0,1]"
        return ImageSeq(_as_seq(x, 'pred').argmax(2, keepdim=True).float()/(self.n_levels-1))
    def __repr__(self): return f'PixelLevelsLoss(n_levels={self.n_levels}, th={self.th})'

class SeqDice(Metric):
    "Dice overlap of the predicted and target foreground pixels (level > 0) of each sequence, averaged over sequences (fastai's `Dice` is for masks)"
    def __init__(self,
        loss:PixelLevelsLoss=None, # Its encoding of the targets; default `PixelLevelsLoss()` (on above 0.7)
        eps:float=1., # Smoothing: a sequence with no foreground at all scores 1
    ):
        self.loss,self.eps = (loss or PixelLevelsLoss()),eps
        self.reset()
    def reset(self): self.total,self.count = 0.,0
    def per_sample(self, pred, targ) -> Tensor:
        "The Dice of each sequence of the batch"
        p = _as_seq(pred, 'pred').argmax(2)>0
        t = (self.loss.encode(targ)>0).to(p.device)
        inter = (p&t).flatten(1).sum(1).float()
        return (2*inter+self.eps)/(p.flatten(1).sum(1)+t.flatten(1).sum(1)+self.eps)
    def accumulate(self, learn):
        with torch.no_grad(): v = self.per_sample(learn.pred, learn.y)
        self.total += v.sum().item(); self.count += v.numel()
    @property
    def value(self): return self.total/self.count if self.count else None
    @property
    def name(self): return 'dice'
