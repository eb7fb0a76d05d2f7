"The command line: `python -m fastai_seq forecast|classify` trains on an embedded offline default or on your data"
from __future__ import annotations
import math, sys, time
from pathlib import Path
from .core import fast_mode

__all__ = ['main', 'fast_mode', 'run_forecast', 'run_classify']

from .callbacks import EpochLines, console_logging  # their home is callbacks.py; importable from here as before
from . import fastai_patches  # noqa: F401 (the `Learner` methods the commands call: `forecast_report`, `evaluate_clips`)

# What each number is and which way is better: the CLI's printout labels (the learner's metric names stay as they are)
_ABOUT = {'valid_loss': ('valid_loss', 'the training loss on the validation set', 'lower'),
          'mse': ('mse_px', 'squared error per pixel, [0,1] scale', 'lower'),
          'mae': ('mae_px', 'absolute error per pixel, [0,1] scale', 'lower'),
          'ssim': ('ssim', 'structural similarity, 1 = identical frames', 'higher'),
          'psnr': ('psnr', 'peak signal-to-noise ratio, dB', 'higher'),
          'mse_frame': ('mse/frame', 'squared error summed over the pixels of a frame', 'lower'),
          'mae_frame': ('mae/frame', 'absolute error summed over the pixels of a frame', 'lower'),
          'accuracy': ('accuracy', 'share of clips classified right', 'higher'),
          'dice': ('dice', 'overlap of predicted and target foreground pixels', 'higher')}

def _about(name:str) -> tuple:
    if name.startswith('top_') and name.endswith('_accuracy'):
        return name, f'share of clips whose class is among the top {name[4:-9]} guesses', 'higher'
    return _ABOUT.get(name, (name, '', None))

def _print_metrics(learn, title:str):
    "The validation metrics of the trained model (the epoch table's last row when the fit validated last), each saying which way is better"
    names = [m.name for m in learn.metrics]
    rec = getattr(learn, 'recorder', None)
    vals = list(rec.values[-1][1:]) if rec is not None and rec.values and len(rec.values[-1])==len(names)+2 else None
    if vals is None or any(v is None for v in vals): vals = list(learn.validate())
    print(f"\n{title}")
    for n,v in zip(['valid_loss', *names], vals):
        label,what,better = _about(n)
        note = '; '.join(o for o in (what, better and f'{better} is better') if o)
        print(f"{label:>14}: {v:<10.5g}{'  ('+note+')' if note else ''}")
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

def _epochs_for(learn, budget:float) -> float:
    "Epochs (a fraction when short) that fill `budget` seconds, from the time of two training passes (forward and backward; the weights are not changed)"
    xb,yb = learn.dls.train.one_batch()
    m = learn.model.train()
    for i in range(3):
        if i==1: t = time.perf_counter()
        learn.loss_func(m(xb), yb).backward()
    m.zero_grad(set_to_none=True)
    per_batch = (time.perf_counter()-t)/2*1.15   # the optimiser step and the data come on top
    return budget/(per_batch*len(learn.dls.train))

def _table(df) -> str: return df.to_string(float_format=lambda v: f'{v:.4g}')

_REPORT_LABELS = {'mse': 'mse/frame', 'mae': 'mae/frame'}

def _epoch_legend(learn) -> str:
    "A line saying which way each column of the epoch table is better"
    loss = str(learn.loss_func)
    loss = 'MSE per pixel' if 'MSELoss' in loss else 'cross-entropy' if 'CrossEntropy' in loss else loss
    about = [(m.name, *_about(m.name)) for m in learn.metrics]
    lower = ', '.join(n for n,_,_,b in about if b=='lower')
    higher = ', '.join(n for n,_,_,b in about if b=='higher')
    renamed = [(n,l) for n,l,_,_ in about if l!=n]
    return (f"Epoch table: train_loss and valid_loss (the loss, {loss}){', '+lower if lower else ''}: lower is better" +
            (f"; {higher}: higher is better" if higher else '') +
            (f". {', '.join(n for n,_ in renamed)} are per pixel ({', '.join(l for _,l in renamed)} below)" if renamed else ''))

def _ssim_note(t) -> str:
    "Why a blurred forecast's SSIM can be below the blank frames' while its MSE is far lower"
    note = ("SSIM rewards sharp frames (a blank frame matches the black background exactly), so a blurred forecast can "
            "score below blank frames on SSIM while its MSE is far lower")
    if 'blank' in t.index and t.loc['model', 'ssim'] < t.loc['blank', 'ssim'] and t.loc['model', 'mse'] < t.loc['blank', 'mse']:
        note += (f": here SSIM {t.loc['model', 'ssim']:.2f} against the blank frames' {t.loc['blank', 'ssim']:.2f}, with "
                 f"{t.loc['model', 'mse']/t.loc['blank', 'mse']:.2f}x their MSE")
    return note + '.'

def _print_report(rep, title:str):
    t = rep.table()
    print(f"\n{title}")
    print(_table(t.rename(columns=_REPORT_LABELS)))
    print("  lower is better: mse/frame, mae/frame, mse x blank (the model's mse/frame over the blank frames'; below 1 beats "
          "them); higher is better: ssim, psnr")
    return t

def run_forecast(arch:str='convgru', epochs:int=None, digits:str=None, out:str='out', bs:int=16, lr:float=None,
                 n_in:int=10, n_out:int=10, n_train:int=None, n_valid:int=None, seed:int=0, budget:float=None, test:str=None):
    "Train `arch` on Moving MNIST for `budget` seconds (or `epochs`), print its report beside the baselines, write model.pkl and pictures"
    import torch
    from .datasets import moving_mnist_dls, load_mnist_digits
    from .learner import seq_learner
    from .callbacks import TimeBudget
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
        est = _epochs_for(learn, budget)
        epochs = max(1, math.ceil(est))
        print(f"Training {what}, for {budget:.0f} s (about {est:.2g} epoch{'s'*(est>=1.05)} on this machine; --epochs N to "
              f"choose; the epoch the time runs out in stops there and is validated)")
        print(_epoch_legend(learn), flush=True)
        tb = TimeBudget(budget)
        learn.fit_one_cycle(epochs, lr, cbs=tb)
        if tb.cut: print(f"(the {budget:.0f} s ran out in epoch {tb.cut[0]}, after {tb.cut[1]} of its {tb.cut[2]} batches: "
                         "its row is that part of the epoch)")
    else:
        print(f"Training {what}, {epochs} epoch{'s'*(epochs>1)}")
        print(_epoch_legend(learn), flush=True)
        learn.fit_one_cycle(epochs, lr)
    res = _print_metrics(learn, 'Validation metrics, per pixel (the last row of the table)')
    rep = learn.forecast_report(dls.valid, plot=out/'horizon.png')
    h,w = dls.valid.one_batch()[1].shape[-2:]
    t = _print_report(rep, f"Forecast report, validation set ({rep.n} sequences), per frame: mse/frame and mae/frame = the error "
                           f"summed over the {h}x{w} pixels of a frame on the [0,1] scale (mse/frame = {h*w} x mse_px: the "
                           f"literature's MSE per frame); baselines: blank frames, and the last input frame repeated")
    print(_ssim_note(t))
    print(f"\nper horizon step (model):\n{_table(rep.per_step.T.rename(index=_REPORT_LABELS))}")
    res['report'] = rep
    if test is not None:
        rt = learn.forecast_report(dls.test, plot=out/'horizon_test.png')
        _print_report(rt, f"Forecast report, {test} ({rt.n} sequences, never used for training or model selection):")
        res['test_report'] = rt
    learn.export('model.pkl')   # into `learn.path`, which is `out`
    x,y = dls.valid.one_batch()
    x,y = x[:1],y[:1]
    pred = learn.forecast(x, n_out).to(y.device)
    mse = float(((pred-y)**2).flatten(2).sum(2).mean())
    _forecast_png(x[0], y[0], pred[0], out/'predictions.png',
                  f"{arch}, a validation sequence: {n_in} input frames, the {n_out} frames that follow, the forecast (mse/frame {mse:.1f})")
    save_gif(torch.cat([x[0], pred[0].clamp(0,1)]).cpu(), out/'prediction.gif', fps=4, scale=2)
    print(f"Wrote {out/'model.pkl'}, {out/'predictions.png'} (input / target / prediction rows), {out/'horizon.png'} "
          f"(error against horizon) and {out/'prediction.gif'} (input frames, then predicted frames)")
    return res

def run_classify(arch:str='frames_lstm', data:str=None, epochs:int=None, out:str='out', bs:int=8, lr:float=None,
                 n_frames:int=None, size:int=None, seed:int=0, pretrained:bool=False, body:str=None):
    "Train `arch` on a folder-per-class video set (generated motion videos unless `data`), print metrics, write model.pkl and a PNG"
    from fastai.vision.all import DataBlock, CategoryBlock, parent_label, Resize, plt
    from .data import VideoBlock
    from .files import get_video_files
    from .annotations import ucf101_splits, GroupSplitter, ucf101_named
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
    split = (f"the official UCF101 lists ({lists[0]/'trainlist01.txt'}, testlist01.txt)" if lists else
             "by UCF101 group (no group in both sets)" if all(ucf101_named(o) for o in items) else
             "by file (names are not UCF101-style)")
    dblock = DataBlock(blocks=(VideoBlock(n_frames=n_frames, sampler='auto'), CategoryBlock), get_items=get_video_files,
                       get_y=parent_label, splitter=splitter, item_tfms=Resize(size))
    dls = dblock.dataloaders(data, bs=bs)
    if not len(dls.train_ds): sys.exit(f"--data {data}: no training videos after the split ({split}); add videos.")
    if len(dls.train_ds) < bs:   # fastai drops the last incomplete training batch: no batch at all otherwise
        print(f"--bs {bs} lowered to {len(dls.train_ds)}, the number of training videos")
        bs = len(dls.train_ds)
        dls = dblock.dataloaders(data, bs=bs)
    epochs = epochs or (1 if fast else pre.get('epochs', 8))
    learn = seq_learner(dls, arch, path=out, model_dir='.', pretrained=pretrained, **({} if body is None else {'body': body}))
    what = f"{len(dls.train_ds)} training / {len(dls.valid_ds)} validation clips of {n_frames} frames at {size} px"
    print(f"split: {split}; {len(dls.train_ds)} training, {len(dls.valid_ds)} validation videos")
    if pretrained:
        freeze = pre.get('freeze_epochs', 1)
        recipe = {k:v for k,v in pre.items() if k not in ('frame_size', 'clip_frames', 'epochs', 'freeze_epochs')}
        if body: recipe['body'] = body
        print(f"Fine-tuning pretrained {arch!r} ({', '.join(f'{k}={v}' for k,v in recipe.items())}) on {what}, classes "
              f"{list(dls.vocab)}: {freeze} epoch(s) frozen, then {epochs} unfrozen")
        print(_epoch_legend(learn), flush=True)
        learn.fine_tune(epochs, lr or learn.lr, freeze_epochs=freeze)
    else:
        print(f"Training {arch!r} on {what}, classes {list(dls.vocab)}, {epochs} epoch{'s'*(epochs>1)}")
        print(_epoch_legend(learn), flush=True)
        learn.fit_one_cycle(epochs, lr)
    res = _print_metrics(learn, 'Validation metrics (the last row of the table)')
    ev = learn.evaluate_clips(n_clips=3)
    print(f"{'clip accuracy':>14}: {ev.clip_accuracy:<10.4f}  (3 evenly spread clips a video, each scored; higher is better)\n"
          f"{'video accuracy':>14}: {ev.video_accuracy:<10.4f}  (their probabilities averaged per video; higher is better)")
    learn.export('model.pkl')   # into `learn.path`, which is `out`
    learn.show_results(max_n=4)
    plt.savefig(out/'results.png', bbox_inches='tight'); plt.close('all')
    print(f"Wrote {out/'model.pkl'} and {out/'results.png'}")
    return res

_FORECAST_ONLY = {'--digits', '--budget', '--test'}
_CLASSIFY_ONLY = {'--data', '--pretrained', '--body', '--size', '--n-frames', '--n_frames'}

def _parser():
    import argparse
    prog = 'python -m fastai_seq' if sys.argv[:1]==[__file__] else 'fastai_seq'   # else the console script (or a call)
    p = argparse.ArgumentParser(prog=prog, description="Train a sequence model on an embedded offline default or on your "
                                "data, print its metrics and save it. Paths are relative to the current directory.",
                                epilog=f"`{prog} forecast --help` and `{prog} classify --help` list each task's options.")
    sub = p.add_subparsers(dest='task', metavar='{forecast,classify}', required=True)
    def common(sp, arch, bs):
        sp.add_argument('--arch', default=arch, metavar='NAME',
                        help=f"a registered arch, see fastai_seq.registry.list_archs() (default: {arch})")
        sp.add_argument('--epochs', type=int, metavar='N', help="training epochs")
        sp.add_argument('--out', default='out', metavar='DIR', help="folder for model.pkl and the pictures (default: out)")
        sp.add_argument('--bs', type=int, default=bs, metavar='N', help=f"batch size (default: {bs})")
        sp.add_argument('--lr', type=float, metavar='LR', help="maximum learning rate (default: the arch's)")
    f = sub.add_parser('forecast', prog=f'{prog} forecast', help="frame prediction on Moving MNIST",
                       description="Forecast frames: train on Moving MNIST sequences (10 frames in, the next 10 out; the "
                                   "embedded digits or yours), print the report beside the blank-frame and copy-last "
                                   "baselines, and write model.pkl, predictions.png, horizon.png and prediction.gif to --out.")
    common(f, 'convgru', 16)
    f.add_argument('--budget', type=float, metavar='SECONDS',
                   help="training seconds when --epochs is not given (default: 240, a few CPU minutes)")
    f.add_argument('--digits', metavar='PATH', help="MNIST digits (idx/.gz/.npz/png folder) instead of the embedded ones")
    f.add_argument('--test', metavar='FILE',
                   help="also report on this Moving MNIST file (mnist_test_seq.npy, or one from MovingMNIST.to_npy)")
    c = sub.add_parser('classify', prog=f'{prog} classify', help="action recognition on a folder of videos",
                       description="Classify videos: train on a folder with one sub-folder of videos per class (by default "
                                   "generated videos of a digit moving left/right/up/down), split by the official UCF101 lists "
                                   "when present, else by UCF101 group when the names follow v_<Class>_g<XX>_c<YY>, else by "
                                   "file; print the metrics and write model.pkl and results.png to --out.")
    common(c, 'frames_lstm', 8)
    c.add_argument('--data', metavar='PATH',
                   help="a folder with one sub-folder of videos per class, or UCF101 with its split lists (default: "
                        "generated motion videos, written to --out)")
    c.add_argument('--pretrained', action='store_true',
                   help="fine-tune pretrained weights (downloaded once into the torch/timm cache) with the arch's recipe")
    c.add_argument('--body', metavar='NAME',
                   help="frames_* archs: the per-frame body ('small'; 'resnet34' by default with --pretrained; timm names)")
    c.add_argument('--size', type=int, metavar='PX', help="frame size (default: 64; with --pretrained the weights' own, e.g. 224)")
    c.add_argument('--n-frames', dest='n_frames', type=int, metavar='N',
                   help="frames a clip (default: 8; with --pretrained the arch's clip length)")
    c.add_argument('--n_frames', dest='n_frames', type=int, help=argparse.SUPPRESS)   # the spelling of earlier versions
    return p, {'forecast': f, 'classify': c}

def _parse(argv):
    p,subs = _parser()
    args,extra = p.parse_known_args(argv)
    if extra:
        sp = subs[args.task]
        for o in extra:
            opt = o.split('=')[0]
            if args.task=='forecast' and opt in _CLASSIFY_ONLY:
                sp.error(f"{opt} is for `classify`" + ("; `forecast` takes --digits." if opt=='--data' else "."))
            if args.task=='classify' and opt in _FORECAST_ONLY:
                sp.error(f"{opt} is for `forecast`" + ("; `classify` takes --data." if opt=='--digits' else "."))
        sp.error(f"unrecognized arguments: {' '.join(extra)}")
    return args

def main(argv:list=None):
    "The `fastai_seq` command (and `python -m fastai_seq`): `forecast` or `classify`, each with its own `--help`"
    args = _parse(sys.argv[1:] if argv is None else list(argv))
    import matplotlib
    matplotlib.use('Agg')
    t0 = time.time()
    with console_logging():
        if args.task=='forecast':
            run_forecast(args.arch, args.epochs, args.digits, args.out, args.bs, args.lr, budget=args.budget, test=args.test)
        else:
            run_classify(args.arch, args.data, args.epochs, args.out, args.bs, args.lr, args.n_frames, args.size,
                         pretrained=args.pretrained, body=args.body)
    print(f"Done in {time.time()-t0:.0f} s")

if __name__=='__main__': main()
