"""Forecasting metrics on `[0,1]` frames (`seq_mse`, `seq_mae`, `ssim`, `psnr`, `mse_frame`, `mae_frame`), the per-frame scores
they and `forecast_report` share, `SeqDice` and a capped top-k accuracy

Names: fastai's own `mse`, `mae` and `top_k_accuracy` keep their meaning after `from fastai_seq.all import *` (a plugin
leaves its host intact): ours are `seq_mse`/`seq_mae` (shown as `mse`/`mae` in the results table) and `TopKAccuracy(k)`.
fastai's `mse`/`mae` also work on sequences (they flatten), but on `[0,1]` frames only when the data is not normalised.

Design
------
Each forecasting metric is a `SeqMetric`: a fastai `Metric` that turns predictions and targets `(B,T,C,H,W)` (or
tuples of `(B,C,H,W)` frames, or `(B,C,H,W)` single frames) into one value per sequence, sums these values over the
batches and divides by the number of sequences, so `Learner.validate()` gives the exact mean over the whole
validation set whatever the batch sizes (an uneven last batch included).

Before computing, predictions and targets are brought back to `[0,1]` by `x*std + mean`, with:
* the `mean`/`std` given to the factory (`MSE(mean=..., std=...)`): one value or one per channel (`imagenet_stats`
  works), or tensors shaped like `Normalize.mean`; or else
* when `denorm=True` (the default) and the metric runs inside a `Learner`, the stats of the first `Normalize` in the
  batch transforms of the `DataLoader` being evaluated (`learn.dl`). `Normalize` only touches `TensorImage`s
  (`ImageSeq` is one) and fastai's `CastToTensor` strips batch types before metrics see them, so the target type is
  read from the types the `DataLoader` recorded (`dl._types`): a non-image target is left alone (when no types are
  recorded the target is assumed normalised). `Learner(dls, model, metrics=[seq_mse, ssim])` thus reports `[0,1]`
  numbers on normalised data with nothing to pass, and undoes nothing on data without `Normalize`.
A learner factory can also pass the stats explicitly, e.g. `MSE(*get_norm_stats(dls))`.
Then `clamp=True` clips the predictions to `[0,1]`: the default for `ssim` and `psnr`, which assume a data range of 1;
`mse`/`mae` are computed unclipped by default (as OpenSTL does).

Definitions (per sequence, then averaged over sequences):
* `seq_mse`/`seq_mae` (named `mse`/`mae`): mean over all pixels of all frames (per-pixel scale).
* `mse_frame`/`mae_frame`: the sum over the `C*H*W` values of each frame, averaged over frames: the numbers of
  the forecasting literature (OpenSTL's `MSE`/`MAE`, e.g. Moving MNIST tables), equal to `mse*C*H*W`.
* `ssim`: Gaussian-window SSIM (window 11, sigma 1.5, K1=0.01, K2=0.03, data range 1, valid region only) of each
  frame, averaged over channels, pixels and frames; frames smaller than 11 pixels use the largest odd window that fits.
* `psnr`: `10*log10(1/mse)` of each frame, averaged over frames; a perfect frame counts as 100 dB (mse floored at 1e-10).

The plain names are ready-made instances with the defaults; the capitalised factories build configured ones.
Called directly, a metric returns the mean over the batch: `ssim(pred, targ)`.
"""
from __future__ import annotations
import torch
import torch.nn.functional as F
from torch import Tensor
from fastcore.basics import store_attr
from fastai.learner import Metric
from fastai.torch_core import TensorImage
from fastai.data.transforms import Normalize
from fastai.data.core import DataLoaders
from fastai.metrics import top_k_accuracy as _fastai_top_k
from .distributed import plain_dl

__all__ = ['SeqMetric', 'get_norm_stats', 'frame_ssim', 'MSE', 'MAE', 'SSIM', 'PSNR', 'MSEFrame', 'MAEFrame',
           'seq_mse', 'seq_mae', 'ssim', 'psnr', 'mse_frame', 'mae_frame', 'TopKAccuracy', 'SeqDice']

_PSNR_EPS = 1e-10  # mse floor: a perfect frame scores 100 dB instead of inf

def get_norm_stats(dls):
    "`(mean, std)` of the first `Normalize` in the batch transforms of `dls` (a `DataLoaders` or `DataLoader`), else `(None, None)`"
    dl = dls.valid if isinstance(dls, DataLoaders) else dls  # a `DataLoader` would delegate `.valid` to its dataset
    for f in getattr(getattr(dl, 'after_batch', None), 'fs', []):
        if isinstance(f, Normalize) and f.mean is not None and f.std is not None: return f.mean, f.std
    return None, None

def targ_normalised(dl) -> bool:
    "Whether a `Normalize` in `dl` reached its targets: it only touches `TensorImage`s (True when fastai recorded no types)"
    typs,n_inp = getattr(dl, '_types', None),getattr(dl, '_n_inp', None)
    if not isinstance(typs, dict) or n_inp is None: return True
    ts = next(iter(typs.values()))
    if len(ts)<=n_inp: return True
    t = ts[n_inp]
    while isinstance(t, dict): t = next(iter(t.values()), [None])[0]  # a tuple of frames: look at the first one
    return not isinstance(t, type) or issubclass(t, TensorImage)

def as_seq(x, what:str) -> Tensor:
    "A plain float tensor `(B,T,C,H,W)` from a 5-D tensor, a `(B,C,H,W)` frame batch, or a tuple/list of frame batches"
    if isinstance(x, (tuple, list)): x = torch.stack([torch.as_tensor(o) for o in x], dim=1)
    if not isinstance(x, Tensor): raise TypeError(f"Sequence metrics need tensors for `{what}`, got {type(x).__name__}")
    x = x.as_subclass(Tensor)
    if x.ndim==4: x = x[:, None]
    if x.ndim!=5: raise ValueError(f"Sequence metrics need `{what}` shaped (B,T,C,H,W) or (B,C,H,W), got {tuple(x.shape)}")
    return x.float()

def norm_stat(s, x:Tensor) -> Tensor:
    "Normalisation stat `s` as a tensor broadcasting against the `(B,T,C,H,W)` tensor `x`"
    s = torch.as_tensor(s).to(device=x.device, dtype=x.dtype)
    if s.ndim>1: return s  # shaped like `Normalize.mean`: broadcast exactly as `Normalize` did
    s = s.flatten()
    if s.numel() not in (1, x.shape[2]):
        raise ValueError(f"Normalisation stats have {s.numel()} values but the frames have {x.shape[2]} channels: "
                         "pass one value or one per channel as `mean`/`std`")
    return s.view(-1, 1, 1)

def _gauss_win(size:int, sigma:float, device=None, dtype=None) -> Tensor:
    "Normalised 1-D Gaussian window"
    g = torch.exp(-(torch.arange(size, device=device, dtype=dtype) - (size-1)/2)**2 / (2*sigma**2))
    return g/g.sum()

def frame_ssim(pred:Tensor, targ:Tensor, win_size:int=11, sigma:float=1.5, data_range:float=1., k1:float=0.01, k2:float=0.03) -> Tensor:
    "SSIM of each image of `(N,C,H,W)` `pred` vs `targ` (Gaussian window, valid region, channels averaged): a tensor `(N,)`"
    if pred.shape!=targ.shape: raise ValueError(f"frame_ssim: pred {tuple(pred.shape)} and targ {tuple(targ.shape)} differ")
    n,c,h,w = pred.shape
    win = min(win_size, h, w)
    if win%2==0: win -= 1
    g = _gauss_win(win, sigma, pred.device, pred.dtype)
    x = torch.cat([pred, targ, pred*pred, targ*targ, pred*targ], dim=1)  # (N,5C,H,W): one grouped conv filters all five
    x = F.conv2d(x, g.view(1,1,1,-1).expand(5*c,1,1,win), groups=5*c)
    x = F.conv2d(x, g.view(1,1,-1,1).expand(5*c,1,win,1), groups=5*c)
    mu1,mu2,s11,s22,s12 = x.split(c, dim=1)
    s11,s22,s12 = s11-mu1*mu1, s22-mu2*mu2, s12-mu1*mu2
    c1,c2 = (k1*data_range)**2, (k2*data_range)**2
    smap = ((2*mu1*mu2 + c1)*(2*s12 + c2)) / ((mu1*mu1 + mu2*mu2 + c1)*(s11 + s22 + c2))
    return smap.flatten(1).mean(1)

# The per-frame scores of `(B,T,C,H,W)` predictions `p` and targets `t`, each a `(B,T)` tensor: the metrics below average
# them over the frames of a sequence, `forecast_report` over the sequences at each horizon step
def per_frame_mse(p:Tensor, t:Tensor) -> Tensor:
    "Squared error of each frame, summed over its `C*H*W` values: `(B,T)`"
    return (p-t).pow(2).flatten(2).sum(2)

def per_frame_mae(p:Tensor, t:Tensor) -> Tensor:
    "Absolute error of each frame, summed over its `C*H*W` values: `(B,T)`"
    return (p-t).abs().flatten(2).sum(2)

def per_frame_psnr(p:Tensor, t:Tensor) -> Tensor:
    "PSNR `10*log10(1/mse)` of each frame (peak 1, mse floored at 1e-10): `(B,T)`"
    return -10*torch.log10((p-t).pow(2).flatten(2).mean(2).clamp_min(_PSNR_EPS))

def per_frame_ssim(p:Tensor, t:Tensor) -> Tensor:
    "`frame_ssim` of each frame: `(B,T)`"
    return frame_ssim(p.flatten(0,1), t.flatten(0,1)).view(p.shape[:2])

def _mse(p, t): return (p-t).pow(2).flatten(1).mean(1)
def _mae(p, t): return (p-t).abs().flatten(1).mean(1)
def _mse_frame(p, t): return per_frame_mse(p, t).mean(1)
def _mae_frame(p, t): return per_frame_mae(p, t).mean(1)
def _psnr(p, t): return per_frame_psnr(p, t).mean(1)
def _ssim(p, t): return per_frame_ssim(p, t).mean(1)

class SeqMetric(Metric):
    "A forecasting metric: `func` gives one value per sequence of de-normalised `(B,T,C,H,W)` frames, averaged over all sequences"
    def __init__(self,
        func, # Takes `pred, targ` `(B,T,C,H,W)` and returns a `(B,)` tensor
        name:str, # The metric's name in the `Recorder`
        mean=None, # Normalisation mean to undo (one value, one per channel, or shaped like `Normalize.mean`)
        std=None, # Normalisation std to undo
        clamp:bool=False, # Clip de-normalised predictions to [0,1]
        denorm:bool=True, # Without `mean`/`std`, undo the `Normalize` of the learner's `DataLoader`
    ):
        store_attr('func,mean,std,clamp,denorm')
        self._name = name
        self.reset()

    @property
    def name(self): return self._name
    def reset(self): self.total,self.count = 0.,0

    def _stats(self, learn):
        if self.mean is not None or self.std is not None: return self.mean, self.std
        if not self.denorm or learn is None: return None, None
        dl = getattr(learn, '__dict__', {}).get('dl', None)
        if dl is None: dl = learn.dls.valid
        dl = plain_dl(dl)  # under `distrib_ctx`: the wrapped loader holds the transforms
        return get_norm_stats(dl) if targ_normalised(dl) else (None, None)

    def per_sample(self, pred, targ, learn=None) -> Tensor:
        "The metric for each sequence of the batch, after de-normalisation and clamping"
        mean,std = self._stats(learn)
        p,t = as_seq(pred, 'pred'),as_seq(targ, 'targ')
        if p.shape!=t.shape: raise ValueError(f"{self.name}: predictions {tuple(p.shape)} and targets {tuple(t.shape)} differ in shape")
        t = t.to(p.device)
        if mean is not None or std is not None:
            m = norm_stat(0. if mean is None else mean, p)
            s = norm_stat(1. if std is None else std, p)
            p,t = p*s + m, t*s + m
        if self.clamp: p = p.clamp(0, 1)
        return self.func(p, t)

    def accumulate(self, learn):
        with torch.no_grad(): v = learn.to_detach(self.per_sample(learn.pred, learn.y, learn))
        self.total += v.sum().item()
        self.count += v.numel()

    @property
    def value(self): return self.total/self.count if self.count else None

    def __call__(self, pred, targ):
        "The mean of the metric over the batch `pred`, `targ` (de-normalised only with explicit `mean`/`std`)"
        with torch.no_grad(): return self.per_sample(pred, targ).mean()

    def __repr__(self): return f'{self.__class__.__name__}({self.name}, mean={self.mean}, std={self.std}, clamp={self.clamp})'

def _metric_factory(func, name:str, clamp:bool, doc:str):
    "A factory of `SeqMetric`s computing `func`, with this module's defaults for `name` and `clamp`"
    def _factory(
        mean=None, # Normalisation mean to undo (None: that of the learner's `Normalize`, if any)
        std=None, # Normalisation std to undo
        clamp:bool=clamp, # Clip predictions to [0,1]
        denorm:bool=True, # Without `mean`/`std`, undo the learner's `Normalize`
        name:str=name, # The metric's name in the results table
    ) -> SeqMetric: return SeqMetric(func, name, mean, std, clamp, denorm)
    _factory.__doc__ = doc
    _factory.__name__ = _factory.__qualname__ = {'mse':'MSE', 'mae':'MAE', 'mse_frame':'MSEFrame', 'mae_frame':'MAEFrame',
                                                  'ssim':'SSIM', 'psnr':'PSNR'}[name]
    return _factory

MSE = _metric_factory(_mse, 'mse', False, "Mean squared error per pixel on [0,1] frames")
MAE = _metric_factory(_mae, 'mae', False, "Mean absolute error per pixel on [0,1] frames")
MSEFrame = _metric_factory(_mse_frame, 'mse_frame', False,
    "Squared error summed over the `C*H*W` values of each frame, averaged over frames (the literature's MSE)")
MAEFrame = _metric_factory(_mae_frame, 'mae_frame', False,
    "Absolute error summed over the `C*H*W` values of each frame, averaged over frames (the literature's MAE)")
SSIM = _metric_factory(_ssim, 'ssim', True, "Structural similarity (Gaussian window 11, sigma 1.5, data range 1) of each frame, averaged")
PSNR = _metric_factory(_psnr, 'psnr', True, "Peak signal-to-noise ratio `10*log10(1/mse)` of each frame (peak 1), averaged")

seq_mse,seq_mae,ssim,psnr,mse_frame,mae_frame = MSE(),MAE(),SSIM(),PSNR(),MSEFrame(),MAEFrame()

class TopKAccuracy:
    "fastai's `top_k_accuracy` with `k` capped at the number of classes, named `top_{k}_accuracy`"
    def __init__(self,
        k:int=5, # How many of the top predictions may hold the target
        axis:int=-1, # The class axis of the predictions
    ):
        store_attr()
        self.__name__ = f'top_{k}_accuracy'

    def __call__(self, inp, targ, k:int|None=None, axis:int|None=None):
        "Fraction of samples whose target is among the top `min(k, n_classes)` predictions"
        axis = self.axis if axis is None else axis
        k = self.k if k is None else k
        return _fastai_top_k(inp, targ, k=min(k, inp.shape[axis]), axis=axis)

    def __repr__(self): return f'TopKAccuracy(k={self.k})'

def pixel_levels(
    y:Tensor, # `[0,1]` target frames `(B,T,1,H,W)` (or a tuple of `(B,1,H,W)` frames)
    n_levels:int=2, # 2: on/off at `th`; K > 2: the nearest of K evenly spaced gray levels
    th:float=0.7, # With `n_levels=2`: a pixel is on above this
) -> Tensor:
    "Class indices `(B,T,H,W)` of one-channel `[0,1]` frames: the encoding of `PixelLevelsLoss` and `SeqDice`"
    y = as_seq(y, 'targ')
    if y.shape[2]!=1: raise ValueError(f"PixelLevelsLoss takes 1-channel target frames, got {y.shape[2]} channels")
    y = y[:, :, 0]
    if n_levels==2: return (y>th).long()
    return (y.clamp(0, 1)*(n_levels-1)).round().long()

class SeqDice(Metric):
    "Dice overlap of the predicted and target foreground pixels (level > 0) of each sequence, averaged over sequences (fastai's `Dice` is for masks)"
    def __init__(self,
        loss=None, # A `PixelLevelsLoss`: its encoding of the targets; default `pixel_levels` (on above 0.7, as `PixelLevelsLoss()`)
        eps:float=1., # Smoothing: a sequence with no foreground at all scores 1
    ):
        self.loss,self.eps = loss,eps
        self.reset()
    def reset(self): self.total,self.count = 0.,0
    def per_sample(self, pred, targ) -> Tensor:
        "The Dice of each sequence of the batch"
        p = as_seq(pred, 'pred').argmax(2)>0
        t = (pixel_levels(targ) if self.loss is None else self.loss.encode(targ))>0
        t = t.to(p.device)
        inter = (p&t).flatten(1).sum(1).float()
        return (2*inter+self.eps)/(p.flatten(1).sum(1)+t.flatten(1).sum(1)+self.eps)
    def accumulate(self, learn):
        with torch.no_grad(): v = self.per_sample(learn.pred, learn.y)
        self.total += v.sum().item(); self.count += v.numel()
    @property
    def value(self): return self.total/self.count if self.count else None
    @property
    def name(self): return 'dice'
