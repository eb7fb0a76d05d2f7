"The command line: `python -m fastai_seq forecast|classify` trains on an embedded offline default or on your data"
from __future__ import annotations
import os, sys, time
from pathlib import Path
from fastcore.script import call_parse
from .core import fast_mode

__all__ = ['main', 'fast_mode', 'run_forecast', 'run_classify', 'EpochLines', 'console_logging']

from contextlib import contextmanager
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback

def _fmt(v) -> str:
    if isinstance(v, float): return f'{v:.6f}'
    return str(v)

class EpochLines(Callback):
    "Print a header and then one line an epoch (flushed), instead of the progress bar's redraws: for logs, SLURM, CI"
    order = ProgressCallback.order
    def before_fit(self):
        self.old = self.learn.logger
        from fastai.torch_core import rank_distrib
        if getattr(self.old, '__name__', '')=='noop' or rank_distrib(): return  # `learn.no_logging()`; rank 0 alone prints
        self.learn.logger = self._line
        self._line(self.recorder.metric_names)
    def _line(self, log): print('  '.join(f'{_fmt(v):>{max(len(str(n)), 9)}}' for v,n in zip(log, self.recorder.metric_names)),
                                flush=True)
    def after_fit(self): self.learn.logger = self.old

@contextmanager
def console_logging(
    lines:bool=None, # One line an epoch (`EpochLines`) instead of progress bars; default: when stdout is not a terminal
):
    "Within it, new Learners log one line an epoch instead of redrawing progress bars when the output is a log file or pipe"
    from fastai.learner import defaults
    if lines is None: lines = not sys.stdout.isatty()
    old = list(defaults.callbacks)
    if lines: defaults.callbacks = [EpochLines if c is ProgressCallback else c for c in old]
    try: yield
    finally: defaults.callbacks = old

def _print_metrics(learn, title:str):
    names = [m.name for m in learn.metrics]
    vals = learn.validate()
    print(f"\n{title}")
    print(f"{'valid_loss':>14}: {vals[0]:.5f}")
    for n,v in zip(names, vals[1:]): print(f"{n:>14}: {v:.5f}")
    return dict(zip(['valid_loss', *names], vals))

def run_forecast(arch:str='convgru', epochs:int=None, digits:str=None, out:str='out', bs:int=16, lr:float=None,
                 n_in:int=10, n_out:int=10, n_train:int=None, n_valid:int=None, seed:int=0):
    "Train `arch` on Moving MNIST (embedded digits unless `digits`), print metrics, write model.pkl and a PNG + GIF"
    from fastai.vision.all import plt
    from .datasets import moving_mnist_dls, load_mnist_digits
    from .learner import seq_learner
    fast = fast_mode()
    epochs = epochs or (1 if fast else 4)
    n_train = n_train or (64 if fast else 1536)  # ~4 CPU minutes of convgru at 64x64, 10 -> 10
    n_valid = n_valid or (16 if fast else 256)
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    dig = load_mnist_digits(digits) if digits else None
    dls = moving_mnist_dls(n_in=n_in, n_out=n_out, n_train=n_train, n_valid=n_valid, bs=bs, digits=dig, seed=seed)
    learn = seq_learner(dls, arch, path=out, model_dir='.')
    print(f"Training {arch!r} on Moving MNIST ({'your digits' if digits else 'embedded digits'}): "
          f"{n_train} training sequences a epoch, {n_valid} validation, {n_in} -> {n_out} frames, {epochs} epochs")
    learn.fit_one_cycle(epochs, lr)
    res = _print_metrics(learn, 'Validation metrics')
    learn.export(out/'model.pkl')
    learn.show_results(max_n=3)
    plt.savefig(out/'predictions.png', bbox_inches='tight'); plt.close('all')
    import torch
    from .core import save_gif
    inp = dls.valid.one_batch()[0][:1]
    with torch.no_grad(): pred = learn.model.eval()(inp)
    save_gif(torch.cat([inp[0], pred[0].clamp(0,1)]).cpu(), out/'prediction.gif', fps=4, scale=2)
    print(f"Wrote {out/'model.pkl'}, {out/'predictions.png'} and {out/'prediction.gif'} (input frames then predicted frames)")
    return res

def run_classify(arch:str='frames_lstm', data:str=None, epochs:int=None, out:str='out', bs:int=8, lr:float=None,
                 n_frames:int=None, size:int=None, seed:int=0, pretrained:bool=False, body:str=None):
    "Train `arch` on a folder-per-class video set (generated motion videos unless `data`), print metrics, write model.pkl and a PNG"
    from fastai.vision.all import DataBlock, CategoryBlock, parent_label, RandomSplitter, Resize, plt
    from .data import VideoBlock
    from .video import get_video_files, ucf101_splits, GroupSplitter
    from .datasets import make_moving_videos
    from .learner import seq_learner, pretrained_defaults
    fast = fast_mode()
    # CPU-sized defaults for generated data; with `pretrained`, the arch's recipe (`pretrained_defaults`: frame size, clip
    # length, lr, fine_tune epochs), sized for real video on a GPU
    pre = pretrained_defaults(arch) if pretrained else {}
    size = size or pre.get('frame_size', 64)
    n_frames = n_frames or pre.get('clip_frames', 8)
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = make_moving_videos(out/'motion_videos', n_per_class=8 if fast else 48, n_frames=16,
                                  size=size if 64<=size<=128 else 64, names='ucf', seed=seed)
        print(f"Generated motion videos (class = direction of motion) in {data}")
    data = Path(data)
    if not data.exists(): sys.exit(f"--data {data}: no such folder. Give a folder with one sub-folder of videos per class.")
    items = get_video_files(data)
    if not items: sys.exit(f"--data {data}: no video files found in it.")
    lists = [p for p in (data, data/'ucfTrainTestlist') if (p/'trainlist01.txt').exists()]
    splitter = ucf101_splits(data) if lists else GroupSplitter(valid_pct=0.25, seed=seed)
    dblock = DataBlock(blocks=(VideoBlock(n_frames=n_frames, sampler='auto'), CategoryBlock), get_items=get_video_files,
                       get_y=parent_label, splitter=splitter, item_tfms=Resize(size))
    dls = dblock.dataloaders(data, bs=bs)
    epochs = epochs or (1 if fast else pre.get('epochs', 8))
    learn = seq_learner(dls, arch, path=out, model_dir='.', pretrained=pretrained, **({} if body is None else {'body': body}))
    what = f"{len(dls.train_ds)} training / {len(dls.valid_ds)} validation clips of {n_frames} frames at {size} px"
    if pretrained:
        freeze = pre.get('freeze_epochs', 1)
        recipe = {k:v for k,v in pre.items() if k not in ('frame_size', 'clip_frames', 'epochs', 'freeze_epochs')}
        if body: recipe['body'] = body
        print(f"Fine-tuning pretrained {arch!r} ({', '.join(f'{k}={v}' for k,v in recipe.items())}) on {what}, classes "
              f"{list(dls.vocab)}: {freeze} epoch(s) frozen, then {epochs} unfrozen")
        learn.fine_tune(epochs, lr or learn.lr, freeze_epochs=freeze)
    else:
        print(f"Training {arch!r} on {what}, classes {list(dls.vocab)}, {epochs} epochs")
        learn.fit_one_cycle(epochs, lr)
    res = _print_metrics(learn, 'Validation metrics')
    ev = learn.evaluate_clips(n_clips=3)
    print(f"{'clip accuracy':>14}: {ev.clip_accuracy:.4f}\n{'video accuracy':>14}: {ev.video_accuracy:.4f}  (3 clips a video)")
    learn.export(out/'model.pkl')
    learn.show_results(max_n=4)
    plt.savefig(out/'results.png', bbox_inches='tight'); plt.close('all')
    print(f"Wrote {out/'model.pkl'} and {out/'results.png'}")
    return res

def _main(task, arch, epochs, digits, data, out, bs, lr, pretrained, body, size, n_frames):
    if task!='classify' and (pretrained or body or size or n_frames):
        sys.exit("--pretrained, --body, --size and --n-frames are for `classify`.")
    if task=='forecast':
        if data: sys.exit("--data is for `classify`; `forecast` takes --digits.")
        run_forecast(arch or 'convgru', epochs, digits, out, bs or 16, lr)
    elif task=='classify':
        if digits: sys.exit("--digits is for `forecast`; `classify` takes --data.")
        run_classify(arch or 'frames_lstm', data, epochs, out, bs or 8, lr, n_frames, size, pretrained=pretrained, body=body)
    else: sys.exit(f"Unknown task {task!r}: use 'forecast' or 'classify'.")

@call_parse
def main(
    task:str, # 'forecast' (Moving MNIST frame prediction) or 'classify' (action recognition)
    arch:str=None, # Registered arch (default: convgru to forecast, frames_lstm to classify); see list_archs()
    epochs:int=None, # Training epochs
    digits:str=None, # forecast: MNIST digits (idx/.gz/.npz/png folder) instead of the embedded ones
    data:str=None, # classify: a folder with one sub-folder of videos per class (or UCF101 with its split lists)
    out:str='out', # Folder for model.pkl and pictures
    bs:int=None, # Batch size
    lr:float=None, # Maximum learning rate (default: the arch's)
    pretrained:bool=False, # classify: fine-tune pretrained weights (downloaded once into the torch/timm cache) with the arch's recipe
    body:str=None, # classify, frames_* archs: the per-frame body ('small'; 'resnet34' by default with --pretrained; timm names)
    size:int=None, # classify: frame size (default 64; with --pretrained the weights' own, e.g. 224)
    n_frames:int=None, # classify: frames a clip (default 8; with --pretrained the arch's clip length)
):
    "Train a sequence model on an embedded offline default or on your data, print its metrics and save it"
    import matplotlib
    matplotlib.use('Agg')
    t0 = time.time()
    with console_logging(): _main(task, arch, epochs, digits, data, out, bs, lr, pretrained, body, size, n_frames)
    print(f"Done in {time.time()-t0:.0f} s")
