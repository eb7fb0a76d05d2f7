"What is called on a trained sequence learner: `evaluate_clips`, `forecast_report`, `Rollout`/`forecast`, `predict` with `n_out`"
from __future__ import annotations
from pathlib import Path
from typing import NamedTuple
import torch
from torch import nn, Tensor
from fastcore.basics import ifnone
from fastai.imports import plt
from fastai.torch_core import Module
from fastai.learner import Learner
from fastai.callback.core import Callback
import fastai.callback.progress  # noqa: F401 (`Learner.no_bar`, used by `forecast_report`)
from .distributed import plain_dl
from .data import LoadFrames, find_load_frames
from .metrics import get_norm_stats, as_seq, norm_stat, targ_normalised, per_frame_mse, per_frame_mae, per_frame_ssim, per_frame_psnr
from ._utils import fastai_original

__all__ = ['ClipEvaluation', 'aggregate_clips', 'ForecastReport', 'Rollout']

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
    "The `LoadFrames` of the inputs of `dl` (the one whose clip `evaluate_clips` moves)"
    tfms = find_load_frames(plain_dl(dl))
    if not tfms: raise ValueError("evaluate_clips needs DataLoaders built with VideoBlock or SeqBlock inputs.")
    return tfms[0]

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
    return torch.stack([per_frame_mse(p, t), per_frame_mae(p, t), per_frame_ssim(pc, t), per_frame_psnr(pc, t)], -1)

class _ReportCallback(Callback):
    "Sum the per-frame scores of the predictions (and of the blank and copy-last baselines) over the sequences of a `validate`"
    order = 90
    def __init__(self, baselines:bool): self.do_base,self.sums,self.n = baselines,{},0
    def after_batch(self):
        if self.training: return
        dl = self.learn.dl
        dl = plain_dl(dl)
        mean,std = get_norm_stats(dl)
        undo = lambda o: o if mean is None else o*norm_stat(std, o) + norm_stat(mean, o)
        p = as_seq(self.learn.pred, 'pred')
        t = as_seq(self.learn.y, 'targ').to(p.device)
        if p.shape!=t.shape: raise ValueError(f"forecast_report: predictions {tuple(p.shape)} and targets {tuple(t.shape)} differ in shape")
        if targ_normalised(dl): p,t = undo(p),undo(t)
        preds = {'model': p}
        if self.do_base:
            x = undo(as_seq(self.learn.xb[0], 'input').to(p.device))
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

def _path_item(dls, item):
    "`item` as fastai's `test_dl` takes it: a `str` becomes a `Path` when the data's items were paths (its type is matched against theirs)"
    if not isinstance(item, str): return item
    tls = getattr(getattr(dls, 'valid_ds', None), 'tls', None)
    types = getattr(tls[0], 'types', None) if tls else None
    if not types: return item
    # the first type is the training items' (`infer_idx` skips the transforms before the first type that matches: a
    # `str` matching a later one would skip `get_x`), so a `str` is turned into a `Path` only where the items were paths
    return Path(item) if not isinstance(item, types[0]) and isinstance(Path(item), types[0]) else item

def seq_predict(self:Learner, item, rm_type_tfms=None, with_input=False,
    n_out:int=None, # Forecasting: the number of frames to predict, rolling the model forward past the horizon it was trained for
    fastai_predict=None, # fastai's own `Learner.predict` (default: the one behind `Learner.predict`)
):
    "`learn.predict` of a sequence learner: fastai's, taking a video file or frame folder as a `str` or a `Path`; with `n_out` a forecasting model is rolled forward autoregressively to `n_out` frames"
    fastai_predict = fastai_predict or fastai_original(Learner.predict)
    item = _path_item(self.dls, item)
    if n_out is None: return fastai_predict(self, item, rm_type_tfms=rm_type_tfms, with_input=with_input)
    if getattr(self, 'task', 'forecast')!='forecast': raise ValueError("predict(n_out=...) is for forecasting learners.")
    model = self.model
    self.model = Rollout(model, n_out)
    try: return fastai_predict(self, item, rm_type_tfms=rm_type_tfms, with_input=with_input)
    finally: self.model = model

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
