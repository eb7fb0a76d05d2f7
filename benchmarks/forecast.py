"""Forecasting archs at a fixed CPU time budget on the same Moving MNIST data (10 in, 10 out, 2 digits, 64x64):
validation `mse_frame`, `ssim` and training samples/s, beside the two trivial baselines (copy the last input frame;
predict blank frames). Run: python benchmarks/forecast.py [--budget 600] [--archs unet,convgru,convlstm,simvp,phydnet]"""
import time
import numpy as np, torch
from fastcore.script import call_parse
from fastai.vision.all import Callback, CancelFitException, set_seed
from fastai_seq.all import *

class TimeBudget(Callback):
    "Stop training once `budget` seconds of training have passed"
    order = 100
    def __init__(self, budget:float): self.budget = budget
    def before_fit(self): self.t0, self.n, self.cut = time.perf_counter(), 0, False
    def after_batch(self):
        if not self.learn.training: return
        self.n += self.learn.xb[0].shape[0]
        if time.perf_counter()-self.t0 > self.budget: self.cut = True; raise CancelFitException()

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
        learn = seq_learner(dls, arch, metrics=[MSEFrame(), SSIM()])
        tb = TimeBudget(budget)
        # estimate the epochs that fit the budget so that the one-cycle schedule completes
        xb,yb = dls.train.one_batch()
        learn.model.train(); opt = torch.optim.Adam(learn.model.parameters(), 1e-4)
        def step(): loss = learn.loss_func(learn.model(xb), yb); loss.backward(); opt.step(); opt.zero_grad()
        step()  # warm-up: the first step pays for allocations and kernel selection
        t = time.perf_counter()
        for _ in range(3): step()
        per_batch = (time.perf_counter()-t)/3
        # an epoch: its training batches, plus validation (forward only, about a third of a training step)
        epochs = max(1, int(budget/(per_batch*(len(dls.train)+len(dls.valid)/3))))
        learn = seq_learner(dls, arch, metrics=[MSEFrame(), SSIM()], cbs=tb)
        t = time.perf_counter()
        with learn.no_bar(): learn.fit_one_cycle(epochs)
        el = time.perf_counter()-t
        # read the counters before `validate`, which runs `before_fit` again (resetting them)
        rate, cut = tb.n/el, (f" (cut at {el:.0f} s)" if tb.cut else f" ({el:.0f} s)")
        with learn.no_bar(): _, mf, ss = learn.validate(cbs=[])
        print(f"| {arch} | {mf:.1f} | {mf/blank:.2f} | {ss:.3f} | {rate:.1f} | {epochs}{cut} |", flush=True)
