"""Train any registered fastai_seq arch on several processes with fastai's own `learn.distrib_ctx()`

Several GPUs (NCCL):      accelerate launch --num_processes 4 examples/train_distributed.py --arch convgru
Two CPU processes (gloo): torchrun --nproc_per_node 2 examples/train_distributed.py --arch frames_lstm --task classify
                          accelerate launch --cpu --num_processes 2 examples/train_distributed.py --arch convgru
One process:              python examples/train_distributed.py --arch convgru   (`distrib_ctx` then does nothing)

Every process builds the same `DataLoaders` (seeded); `distrib_ctx` wraps the model in `DistributedDataParallel` and
each loader in fastai's `DistributedDL`, so each process trains and validates on its own shard and the validation
metrics are gathered over all of them. `--bs` is the batch size of one process: the effective batch is `bs*world_size`.
Rank 0 alone prints the metrics, exports the learner and draws the predictions. See docs/distributed.md.
"""
from __future__ import annotations
from pathlib import Path
from fastcore.script import call_parse

def forecast_dls(data:str=None, bs:int=16, size:int=64, n_in:int=10, n_out:int=10, n_train:int=2048, n_valid:int=256,
                 seed:int=0):
    "Moving MNIST `DataLoaders` (from the digits at `data`, else the embedded ones), the same in every process"
    from fastai_seq.datasets import moving_mnist_dls
    return moving_mnist_dls(n_in=n_in, n_out=n_out, n_train=n_train, n_valid=n_valid, bs=bs, size=size, digits=data, seed=seed)

def classify_dls(data:str|Path, bs:int=8, size:int=64, n_frames:int=8, seed:int=0, valid_pct:float=0.25):
    "Video classification `DataLoaders` over a folder-per-class video set (UCF101 split lists when present), seeded"
    from fastai.vision.all import DataBlock, CategoryBlock, parent_label, Resize
    from fastai_seq.data import VideoBlock
    from fastai_seq.files import get_video_files
    from fastai_seq.annotations import ucf101_splits, GroupSplitter
    data = Path(data)
    if not data.is_dir(): raise FileNotFoundError(f"--data {data}: no such folder; give a folder with one sub-folder of videos per class.")
    lists = [p for p in (data, data/'ucfTrainTestlist') if (p/'trainlist01.txt').exists()]
    splitter = ucf101_splits(data) if lists else GroupSplitter(valid_pct=valid_pct, seed=seed)
    dblock = DataBlock(blocks=(VideoBlock(n_frames=n_frames, sampler='auto'), CategoryBlock), get_items=get_video_files,
                       get_y=parent_label, splitter=splitter, item_tfms=Resize(size))
    return dblock.dataloaders(data, bs=bs)

@call_parse
def main(
    arch:str='convgru', # A registered arch; see `list_archs()`
    task:str=None, # 'forecast' or 'classify' (default: the task of `arch`)
    epochs:int=4, # Training epochs
    bs:int=16, # Batch size of each process
    data:str=None, # forecast: MNIST digits (idx/.gz/.npz/png folder; default: the embedded ones); classify: a folder-per-class video set (default: generated motion videos)
    lr:float=None, # Maximum learning rate (default: the arch's)
    out:str='distrib_out', # Folder for model.pkl, results.png and generated data
    size:int=64, # Frame height and width
    precision:str='fp32', # 'fp32', 'fp16' or 'bf16' (mixed precision with autocast)
    fast:bool=False, # A tiny run (tens of samples, 32x32 frames, at most 2 epochs) to check the setup
    seed:int=0, # Seeds the data, the split and the weights: the same in every process
):
    "Train `arch` with `learn.distrib_ctx()`; rank 0 prints the gathered validation metrics and writes the model"
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from fastai.vision.all import set_seed, rank_distrib, num_distrib
    from fastai.distributed import teardown_distrib
    from fastai_seq.all import seq_learner, arch_info, make_moving_videos
    from fastai_seq.distributed import on_rank0
    info = arch_info(arch)
    task = task or info.task
    if task not in ('forecast', 'classify'): raise ValueError(f"--task must be 'forecast' or 'classify', got {task!r}")
    if precision not in ('fp32', 'fp16', 'bf16'): raise ValueError(f"--precision must be fp32, fp16 or bf16, got {precision!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if fast: size = min(size, 32)
    if task=='forecast':
        n = dict(n_in=4, n_out=4, n_train=64, n_valid=24) if fast else {}
        dls = forecast_dls(data, bs, size, seed=seed, **n)
    else:
        if data is None:   # rank 0 writes the videos while the others wait, then all read them
            data = out/'motion_videos'
            if not data.exists(): on_rank0(make_moving_videos, data, n_per_class=8 if fast else 48, n_frames=12 if fast else 16,
                                                  size=max(size, 48), names='ucf', seed=seed)
        dls = classify_dls(data, bs, size, seed=seed)
    set_seed(seed)   # the same initial weights in every process (DDP also broadcasts rank 0's)
    from fastai_seq.callbacks import console_logging
    with console_logging(): learn = seq_learner(dls, arch, path=out, model_dir='.')  # one line an epoch in a log
    if precision=='fp16': learn.to_fp16()
    elif precision=='bf16': learn.to_bf16()
    rank, world = rank_distrib(), max(num_distrib(), 1)
    if rank==0: print(f"Training {arch!r} ({task}) on {world} process(es), batch {bs} each, {epochs} epochs, {precision}")
    with learn.distrib_ctx(): learn.fit_one_cycle(epochs if not fast else min(epochs, 2), lr)
    # the last validation of `fit` ran on every rank's shard and was gathered: every rank holds the same numbers
    names = ['valid_loss', *[m.name for m in learn.metrics]]
    res = dict(zip(names, learn.recorder.values[-1][1:]))
    if rank==0:
        print('Validation metrics (gathered over all processes):')
        for k,v in res.items(): print(f'{k:>14}: {v:.5f}')
    def _save():
        learn.export('model.pkl')
        learn.show_results(max_n=4)
        plt.savefig(out/'results.png', bbox_inches='tight'); plt.close('all')
        print(f"Wrote {out/'model.pkl'} and {out/'results.png'}")
    on_rank0(_save)
    teardown_distrib()   # leave the process group cleanly (gloo may abort at exit otherwise)
    return res
