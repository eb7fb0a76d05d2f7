"""A pretrained-style fine-tune recipe against training from scratch, at equal CPU time, on generated motion videos
(`make_moving_videos`: the class is the direction of motion). The recipe is `seq_learner(..., pretrained=True)`'s
(`pretrained_defaults`: a ResNet per frame, ImageNet Normalize, avg+max pooling, `fine_tune` with one frozen epoch) with
whatever ImageNet weights are in the local torch hub cache — it never downloads: with none there, the same recipe runs
from a random init, and the table says so. The baseline is the CPU default (`frames_lstm`, small body, `fit_one_cycle`).
Run: python benchmarks/finetune.py [--budget 120] [--body resnet18] [--threads 2]"""
import time
from pathlib import Path
import torch
from fastcore.script import call_parse
from fastai.vision.all import (DataBlock, CategoryBlock, parent_label, Resize, Normalize, imagenet_stats, set_seed,
                               Callback, CancelFitException)
from fastai_seq.all import *
from fastai_seq.models.pretrained import local_weights, frame_body
from fastai_seq.callbacks import console_logging

class Deadline(Callback):
    "Stop training at a wall-clock deadline shared by every fit of the learner"
    def __init__(self, deadline:float): self.deadline = deadline
    def after_batch(self):
        if self.training and time.time()>self.deadline: raise CancelFitException()

def _epochs(learn, budget:float) -> int:
    "Epochs that fit in `budget` seconds, from the time of a few training batches (weights restored afterwards)"
    sd = {k:v.clone() for k,v in learn.model.state_dict().items()}
    learn.model.train(); it = iter(learn.dls.train); xb,yb = next(it)
    opt = torch.optim.SGD(learn.model.parameters(), lr=0.)
    t = time.time()
    for _ in range(3):
        loss = learn.loss_func(learn.model(xb), yb); loss.backward(); opt.zero_grad()
    per_batch = (time.time()-t)/3
    learn.model.load_state_dict(sd)
    return max(2, int(budget/(per_batch*len(learn.dls.train)*1.15)))

@call_parse
def main(budget:float=120, # Training seconds per recipe
         body:str='resnet18', # The pretrained-style recipe's frame body
         n_per_class:int=32, # Generated videos per class (4 classes)
         size:int=64, # Frame size
         n_frames:int=8, # Frames a clip
         bs:int=8, # Batch size
         threads:int=2, # torch threads
         out:str='/tmp/fastai_seq_finetune', # Where the generated videos go
):
    torch.set_num_threads(threads)
    data = make_moving_videos(Path(out)/'videos', n_per_class=n_per_class, n_frames=16, size=64, names='ucf', seed=0)
    def dls(norm):
        db = DataBlock(blocks=(VideoBlock(n_frames=n_frames, sampler='auto'), CategoryBlock), get_items=get_video_files,
                       get_y=parent_label, splitter=GroupSplitter(valid_pct=0.25, seed=0), item_tfms=Resize(size),
                       batch_tfms=[Normalize.from_stats(*imagenet_stats)] if norm else None)
        return db.dataloaders(data, bs=bs)
    try:
        from torchvision.models import get_model_weights, get_model_builder
        local_weights(get_model_weights(get_model_builder(body)).DEFAULT, download=False)
        cached = True
    except FileNotFoundError: cached = False
    rows = []
    for name in ('scratch', 'recipe'):
        set_seed(0)
        with console_logging(lines=True):
            if name=='scratch':
                learn = seq_learner(dls(False), 'frames_lstm')
            else:
                pre = pretrained_defaults('frames_lstm')
                # the recipe with the cached weights, or (none cached) the same recipe from a random init
                learn = seq_learner(dls(True), 'frames_lstm', pretrained=cached, body=body, pool=pre['pool'])
        n_ep = _epochs(learn, budget)
        t0 = time.time()
        learn.add_cb(Deadline(t0+budget))
        with learn.no_bar(), learn.no_logging():
            if name=='scratch': learn.fit_one_cycle(n_ep, learn.lr)
            else: learn.fine_tune(max(1, n_ep-1), pretrained_defaults('frames_lstm')['lr'], freeze_epochs=1)
        secs = time.time()-t0
        with learn.no_bar(): loss, acc = learn.validate()[:2]
        ev = learn.evaluate_clips(n_clips=3)
        rows.append((name, acc, ev.video_accuracy, n_ep, secs))
        print(f"{name}: accuracy {acc:.3f}, video accuracy (3 clips) {ev.video_accuracy:.3f}, {n_ep} epochs planned, {secs:.0f} s")
    base = rows[0][1]
    print(f"\nGenerated motion videos: {4*n_per_class} clips (4 directions), {n_frames} frames at {size} px, validation by group; "
          f"{budget:.0f} s of training each, {threads} threads. Recipe body {body!r}: "
          f"{'ImageNet weights from the local torch hub cache' if cached else 'NO weights in the local cache: random init (the recipe alone)'}\n")
    print("| recipe | accuracy | video accuracy (3 clips) | epochs | train s | accuracy / scratch |\n|---|---|---|---|---|---|")
    for name,acc,vacc,n_ep,secs in rows:
        ratio = f'{acc/base:.2f}' if base>0 else '-'
        what = ("frames_lstm, small body, fit_one_cycle (CPU default)" if name=='scratch' else
                f"frames_lstm, {body} body, ImageNet Normalize, concat pool, fine_tune (freeze 1){'' if cached else ', random init'}")
        print(f"| {what} | {acc:.3f} | {vacc:.3f} | {n_ep} | {secs:.0f} | {ratio} |")
