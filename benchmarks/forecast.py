"""Forecasting archs at a fixed CPU time budget on the same Moving MNIST data (10 in, 10 out, 2 digits, 64x64), scored
with `learn.forecast_report` (MSE/MAE per frame, SSIM, PSNR, as the literature reports them) beside the two trivial
baselines (blank frames; the last input frame repeated), plus training samples/s.
Run: python benchmarks/forecast.py [--budget 600] [--archs convgru,seq2seq,simvp_cpu,simvp,convlstm,phydnet,unet] [--threads 2] [--test FILE] [--n_test 2000]
`--test FILE` scores a Moving MNIST file (the standard `mnist_test_seq.npy`, or one written here by `MovingMNIST.to_npy`
when FILE does not exist: `--n_test` sequences from a stream apart from training and validation). The test file is
only scored, never used to choose anything; the validation set is the generator's own."""
import time
from pathlib import Path
import torch
from fastcore.script import call_parse
from fastai.vision.all import set_seed
from fastai_seq.all import *

def _row(name, tab, rate='-', epochs='-'):
    r = tab.loc[name]
    return f"| {name} | {r['mse']:.1f} | {r['mse x blank']:.2f} | {r['mae']:.1f} | {r['ssim']:.3f} | {r['psnr']:.2f} | {rate} | {epochs} |"

@call_parse
def main(budget:float=600, # Training seconds per arch
         archs:str='convgru,seq2seq,simvp_cpu,simvp,convlstm,phydnet,unet', # Archs to compare
         n_valid:int=256, # Validation sequences (fixed for the seed)
         bs:int=16, # Batch size
         threads:int=2, # torch threads
         test:str=None, # A Moving MNIST file to score on (written with `to_npy` when it does not exist)
         n_test:int=2000, # Sequences of the test file written when `test` does not exist
         digits:str=None, # MNIST digits for training/validation (default: the embedded ones)
):
    torch.set_num_threads(threads)
    if test is not None and not Path(test).exists():
        MovingMNIST(n_in=10, n_out=10, seed=0).to_npy(test, n_test)
        print(f"Wrote {n_test} test sequences to {test} (MovingMNIST.to_npy, seed 0)")
    dls = moving_mnist_dls(n_in=10, n_out=10, n_digits=2, n_train=1024, n_valid=n_valid, bs=bs, seed=0,
                           digits=load_mnist_digits(digits) if digits else None, test=test)
    print(f"Moving MNIST 10 -> 10, 2 digits, 64x64, {'digits from '+digits if digits else 'embedded digits'}; validation: "
          f"{n_valid} fixed sequences (seed 0){'; test: '+test if test else ''}; budget {budget:.0f} s of training per arch, "
          f"{threads} CPU threads. mse/mae: sums over the pixels of a frame on [0,1]\n")
    head = "| model | mse | x blank | mae | ssim | psnr | train samples/s | epochs |\n|---|---|---|---|---|---|---|---|"
    rows = {'valid': [], 'test': []}
    for i,arch in enumerate(archs.split(',')):
        set_seed(0)
        tb = TimeBudget(budget)
        learn = seq_learner(dls, arch, metrics=[], cbs=tb)
        t = time.perf_counter()
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(10_000)  # stopped by the budget
        el = time.perf_counter()-t
        rate, epochs = tb.n/el, tb.n/len(dls.train.dataset)   # read before the reports' validate resets them
        for split,dl in (('valid', dls.valid), ('test', getattr(dls, 'test', None))):
            if dl is None: continue
            tab = learn.forecast_report(dl).table()
            if i==0: rows[split] += [_row(n, tab) for n in ('blank', 'copy last')]
            rows[split].append(_row('model', tab, f'{rate:.1f}', f'{epochs:.1f}').replace('| model |', f'| {arch} |'))
        print(rows['valid'][-1], flush=True)
    for split in ('valid', 'test'):
        if rows[split]: print(f"\n{split}:\n{head}\n" + '\n'.join(rows[split]), flush=True)
