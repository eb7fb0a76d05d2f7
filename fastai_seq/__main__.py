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

def _forecast_png(x, y, p, fn, title:str=''):
    "One sample as three rows of frames: input, target and prediction (frames large enough to read), written to `fn`"
    from fastai.vision.all import plt
    rows = [('input', x), ('target', y), ('prediction', p)]
    n = max(len(r) for _,r in rows)
    fig,axs = plt.subplots(3, n, figsize=(1.25*n, 4.1), squeeze=False)
    for i,(name,r) in enumerate(rows):
        for j in range(n):
            ax = axs[i, j]
            ax.set_xticks([]); ax.set_yticks([])
            for sp in ax.spines.values(): sp.set_visible(False)
            if j<len(r): ax.imshow(r[j].float().clamp(0, 1).squeeze(0).cpu().numpy(), cmap='gray', vmin=0, vmax=1)
            if j==0: ax.set_ylabel(name, fontsize=11)
            if i==0 and j<len(r): ax.set_title(f't-{len(r)-1-j}' if j<len(r)-1 else 't', fontsize=9)
            if i==1 and j<len(r): ax.set_title(f't+{j+1}', fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.04, hspace=0.25)
    fig.savefig(fn, dpi=100, bbox_inches='tight'); plt.close(fig)

def _epochs_for(learn, budget:float) -> int:
    "Epochs that fill `budget` seconds, from the time of two training passes (forward and backward; the weights are not changed)"
    import math
    xb,yb = learn.dls.train.one_batch()
    m = learn.model.train()
    for i in range(3):
        if i==1: t = time.perf_counter()
        learn.loss_func(m(xb), yb).backward()
    m.zero_grad(set_to_none=True)
    per_batch = (time.perf_counter()-t)/2*1.15   # the optimiser step and the data come on top
    return max(1, math.ceil(budget/(per_batch*len(learn.dls.train))))

def _table(df) -> str: return df.to_string(float_format=lambda v: f'{v:.4g}')

def run_forecast(arch:str='convgru', epochs:int=None, digits:str=None, out:str='out', bs:int=16, lr:float=None,
                 n_in:int=10, n_out:int=10, n_train:int=None, n_valid:int=None, seed:int=0, budget:float=None, test:str=None):
    "Train `arch` on Moving MNIST for `budget` seconds (or `epochs`), print its report beside the baselines, write model.pkl and pictures"
    import torch
    from .datasets import moving_mnist_dls, load_mnist_digits
    from .learner import seq_learner, TimeBudget
    from fastai.callback.schedule import fit_one_cycle  # noqa: F401 (patches Learner)
    from .core import save_gif
    fast = fast_mode()
    n_train = n_train or (64 if fast else 1024)
    n_valid = n_valid or (16 if fast else 256)
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    dig = load_mnist_digits(digits) if digits else None
    dls = moving_mnist_dls(n_in=n_in, n_out=n_out, n_train=n_train, n_valid=n_valid, bs=bs, digits=dig, seed=seed, test=test)
    learn = seq_learner(dls, arch, path=out, model_dir='.')
    if epochs is None and budget is None and fast: epochs = 1
    what = (f"{arch!r} on Moving MNIST ({'your digits' if digits else 'embedded digits'}): {n_train} fresh training sequences an "
            f"epoch, {n_valid} validation, {n_in} -> {n_out} frames")
    if epochs is None:
        budget = budget or 240.
        epochs = _epochs_for(learn, budget)
        print(f"Training {what}, for {budget:.0f} s (about {epochs} epochs; --epochs N to choose)")
        learn.fit_one_cycle(epochs, lr, cbs=TimeBudget(budget))
    else:
        print(f"Training {what}, {epochs} epochs")
        learn.fit_one_cycle(epochs, lr)
    res = _print_metrics(learn, 'Validation metrics')
    rep = learn.forecast_report(dls.valid, plot=out/'horizon.png')
    h,w = dls.valid.one_batch()[1].shape[-2:]
    print(f"\nForecast report, validation set ({rep.n} sequences): mse/mae = error summed over the {h}x{w} pixels of a frame on "
          f"the [0,1] scale (the literature's MSE/MAE per frame); baselines: blank frames, and the last input frame repeated")
    print(_table(rep.table()))
    print(f"\nper horizon step (model):\n{_table(rep.per_step.T)}")
    res['report'] = rep
    if test is not None:
        rt = learn.forecast_report(dls.test, plot=out/'horizon_test.png')
        print(f"\nForecast report, {test} ({rt.n} sequences, never used for training or model selection):\n{_table(rt.table())}")
        res['test_report'] = rt
    learn.export(out/'model.pkl')
    x,y = dls.valid.one_batch()
    x,y = x[:1],y[:1]
    pred = learn.forecast(x, n_out).to(y.device)
    mse = float(((pred-y)**2).flatten(2).sum(2).mean())
    _forecast_png(x[0], y[0], pred[0], out/'predictions.png',
                  f"{arch}, a validation sequence: {n_in} input frames, the {n_out} frames that follow, the forecast (mse per frame {mse:.1f})")
    save_gif(torch.cat([x[0], pred[0].clamp(0,1)]).cpu(), out/'prediction.gif', fps=4, scale=2)
    print(f"Wrote {out/'model.pkl'}, {out/'predictions.png'} (input / target / prediction rows), {out/'horizon.png'} "
          f"(error against horizon) and {out/'prediction.gif'} (input frames, then predicted frames)")
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

def _main(task, arch, epochs, digits, data, out, bs, lr, pretrained, body, size, n_frames, budget=None, test=None):
    if task!='classify' and (pretrained or body or size or n_frames):
        sys.exit("--pretrained, --body, --size and --n-frames are for `classify`.")
    if task=='forecast':
        if data: sys.exit("--data is for `classify`; `forecast` takes --digits.")
        run_forecast(arch or 'convgru', epochs, digits, out, bs or 16, lr, budget=budget, test=test)
    elif task=='classify':
        if digits: sys.exit("--digits is for `forecast`; `classify` takes --data.")
        if budget or test: sys.exit("--budget and --test are for `forecast`.")
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
    budget:float=None, # forecast: training seconds when --epochs is not given (default 240: a few CPU minutes)
    test:str=None, # forecast: also report on this Moving MNIST file (mnist_test_seq.npy, or one from MovingMNIST.to_npy)
):
    "Train a sequence model on an embedded offline default or on your data, print its metrics and save it"
    import matplotlib
    matplotlib.use('Agg')
    t0 = time.time()
    with console_logging(): _main(task, arch, epochs, digits, data, out, bs, lr, pretrained, body, size, n_frames, budget, test)
    print(f"Done in {time.time()-t0:.0f} s")
