"""Forecasting archs at a fixed CPU time budget on the same Moving MNIST data (10 in, 10 out, 2 digits, 64x64):
validation `mse_frame`, `ssim` and training samples/s, beside the two trivial baselines (copy the last input frame;
predict blank frames). Run: python benchmarks/forecast.py [--budget 600] [--archs unet,convgru,convlstm,simvp,phydnet]"""
import time
import numpy as np, torch
from fastcore.script import call_parse
from fastai.vision.all import Callback, CancelFitException, set_seed
from fastai_seq.all import *

class TimeBudget(Callback):
    "Train for `budget` seconds (validation included): the schedule's progress is the time spent, so one cycle ends on time"
    order = 55  # before `ParamScheduler` (60) reads `pct_train`
    def __init__(self, budget:float): self.budget = budget
    def before_fit(self): self.t0, self.n = time.perf_counter(), 0
    def before_batch(self):
        if self.learn.training: self.learn.pct_train = min((time.perf_counter()-self.t0)/self.budget, 1.)
    def after_batch(self):
        if not self.learn.training: return
        self.n += self.learn.xb[0].shape[0]
        if time.perf_counter()-self.t0 > self.budget: raise CancelFitException()

def _baselines(dls):
    "mse_frame and ssim of copy-last-frame and blank predictions over the validation set"
    res = {}
    for name,f in (('copy last frame', lambda x,n: x[:,-1:].expand(-1,n,-1,-1,-1)), ('blank frames', lambda x,n: torch.zeros_like(x[:,:n]))):
        mf, ss, cnt = 0., 0., 0
        for x,y in dls.valid:
            p = f(x, y.shape[1])
            mf += mse_frame(p, y).item()*len(x); ss += ssim(p, y).item()*len(x); cnt += len(x)
        res[name] = (mf/cnt, ss/cnt)
    return res

@call_parse
def main(budget:float=600, # Training seconds per arch
         archs:str='unet,convgru,convlstm,simvp,phydnet', # Archs to compare
         n_valid:int=256, # Validation sequences (fixed for the seed)
         bs:int=16, # Batch size
         threads:int=2, # torch threads
):
    torch.set_num_threads(threads)
    dls = moving_mnist_dls(n_in=10, n_out=10, n_digits=2, n_train=1024, n_valid=n_valid, bs=bs, seed=0)
    base = _baselines(dls)
    print(f"Moving MNIST 10 -> 10, 2 digits, 64x64, embedded digits; validation: {n_valid} fixed sequences (seed 0); "
          f"budget {budget:.0f} s of training per arch, {threads} CPU threads\n")
    print("| model | mse_frame | x blank | ssim | train samples/s | epochs |")
    print("|---|---|---|---|---|---|")
    blank = base['blank frames'][0]
    for n,(m,s) in base.items(): print(f"| {n} (baseline) | {m:.1f} | {m/blank:.2f} | {s:.3f} | - | - |")
    for arch in archs.split(','):
        set_seed(0)
        tb = TimeBudget(budget)
        learn = seq_learner(dls, arch, metrics=[MSEFrame(), SSIM()], cbs=tb)
        t = time.perf_counter()
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(10_000)  # stopped by the budget
        el = time.perf_counter()-t
        # read the counters before `validate`, which runs `before_fit` again (resetting them)
        rate, epochs = tb.n/el, tb.n/len(dls.train.dataset)
        with learn.no_bar(): _, mf, ss = learn.validate(cbs=[])
        print(f"| {arch} | {mf:.1f} | {mf/blank:.2f} | {ss:.3f} | {rate:.1f} | {epochs:.1f} |", flush=True)
