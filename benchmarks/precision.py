"""Mixed precision on the CPU: training steps under `to_bf16()`/`to_fp16()` against float32, in one process.

Run: `python benchmarks/precision.py [--steps 6]`, and again as `ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/precision.py`
to see an AVX2-only CPU. The model is the UCF101 tutorial's kind (a CNN per frame, an LSTM over time: `frames_lstm`
with a resnet18 body, 8 frames of 64x64, batch 4). Rows: float32; `to_bf16()`/`to_fp16()` as fastai_seq decides by
default (autocast only where the CPU is native); and forced bf16 autocast (`FASTAI_SEQ_CPU_AMP=1`), what plain CPU
autocast would cost (forced float16 is left out: without AMX-FP16 its convolutions run 100x+ slower than float32). Steps are interleaved across the rows, medians of wall time; the ratio is against float32.
"""
import argparse, os, statistics, time, warnings
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.torch_core import TensorCategory
from fastai_seq.all import ImageSeq, seq_learner
from fastai_seq.precision import cpu_amp_native

def make_dls(n:int=8, bs:int=4, t:int=8, size:int=64) -> DataLoaders:
    g = torch.Generator().manual_seed(0)
    items = [(ImageSeq(torch.rand(t, 3, size, size, generator=g)), TensorCategory(i%4)) for i in range(n)]
    dls = DataLoaders(DataLoader(items, bs=bs, shuffle=True), DataLoader(items[:bs], bs=bs))
    dls.c = 4
    return dls

def make_learner(mode:str):
    torch.manual_seed(0)
    learn = seq_learner(make_dls(), 'frames_lstm', body='resnet18')
    if mode!='fp32': learn = learn.to_bf16() if 'bf16' in mode else learn.to_fp16()
    return learn

def step_time(learn, force:bool) -> float:
    "Wall time of one epoch of training (2 steps, and a validation batch) with `FASTAI_SEQ_CPU_AMP` set as asked"
    old = os.environ.pop('FASTAI_SEQ_CPU_AMP', None)
    if force: os.environ['FASTAI_SEQ_CPU_AMP'] = '1'
    try:
        with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            t = time.perf_counter()
            learn.fit(1, 1e-3)
            return time.perf_counter() - t
    finally:
        os.environ.pop('FASTAI_SEQ_CPU_AMP', None)
        if old is not None: os.environ['FASTAI_SEQ_CPU_AMP'] = old

def main(steps:int):
    rows = [('float32', 'fp32', False), ('to_bf16() default', 'bf16', False), ('to_fp16() default', 'fp16', False),
            ('to_bf16() forced autocast', 'bf16', True)]
    learners = {name: make_learner(mode) for name,mode,_ in rows}
    for name,_,force in rows: step_time(learners[name], force)  # warm-up: oneDNN primitive creation
    times = {name: [] for name,*_ in rows}
    for _ in range(steps):
        for name,_,force in rows: times[name].append(step_time(learners[name], force))
    isa = os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, ONEDNN_MAX_CPU_ISA={isa}, native bf16: "
          f"{cpu_amp_native('bf16')}, native fp16: {cpu_amp_native('fp16')}\n")
    print("| run | epoch s (median) | vs float32 |\n|---|---|---|")
    base = statistics.median(times['float32'])
    for name,*_ in rows:
        m = statistics.median(times[name])
        print(f"| {name} | {m:.2f} | {m/base:.2f}x |")

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--steps', type=int, default=3)
    main(p.parse_args().steps)
