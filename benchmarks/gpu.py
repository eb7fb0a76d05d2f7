"""One command for a GPU day (issue 20 §4), under 8 minutes on one H100: clips/s of the action-recognition models alone
(VideoMAE-base from its config, torchvision's r2plus1d_18, frames_lstm with resnet18; fp16/bf16 autocast), of the
`VideoBlock` pipeline alone with 0..N workers on generated H.264 and MPEG-4 clips (320x240, 16 frames), end to end (does
the pipeline keep the GPU fed; fastai's mixed precision on CUDA: GradScaler on, loss falling), and SimVP with OpenSTL's
Moving MNIST configuration (hid_S 64, hid_T 512, N_T 8, gSTA) for a time budget, MSE per frame on a `to_npy` test file.
Each section imports what it needs (fastai_seq, fastai, PyAV, transformers) itself and is reported skipped, with the
reason, when that is missing.
Run: python benchmarks/gpu.py [--json FILE] [--simvp_budget 150] [--workers 0,2,4,8]
     python benchmarks/gpu.py --smoke   # the same code paths on the CPU with tiny sizes, about a minute"""
import argparse, json, os, platform, shutil, sys, tempfile, time, traceback
from fractions import Fraction
from functools import partial
from pathlib import Path
import numpy as np, torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path: sys.path.insert(0, str(REPO))

class Skip(Exception): "A section that cannot run here, and why"

def _need(*mods):
    "Import `mods`, or skip the section naming the missing one"
    import importlib
    for m in mods:
        try: importlib.import_module(m)
        except ImportError as e: raise Skip(f"{m} is not importable ({e})") from None

def _sync(dev):
    if dev.type=='cuda': torch.cuda.synchronize()

def _amp(dev, dtype):
    return torch.autocast(dev.type, dtype=dtype) if dtype is not None else torch.autocast(dev.type, enabled=False)

# ------------------------------------------------------------------------------------------------------- model alone
def _model_rate(model, x, dev, dtype, train:bool, iters:int, warm:int) -> float:
    "Clips/s of `model` on batch `x`: a training step (forward, backward, SGD) or an inference forward"
    model.to(dev).train(train)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4) if train else None
    scaler = torch.amp.GradScaler(dev.type, enabled=train and dtype==torch.float16)
    def step():
        if train:
            with _amp(dev, dtype): loss = model(x).float().logsumexp(-1).mean()
            scaler.scale(loss).backward(); scaler.step(opt); scaler.update(); opt.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), _amp(dev, dtype): model(x)
    for _ in range(warm): step()
    _sync(dev); t = time.perf_counter()
    for _ in range(iters): step()
    _sync(dev)
    return len(x)*iters/(time.perf_counter()-t)

def _models(smoke:bool) -> dict:
    "name -> (builder, clip shape (T,C,H,W), layout) of the models timed alone"
    T, S = (4, 32) if smoke else (16, 224)
    def videomae():
        _need('transformers')
        import transformers as tr
        cfg = (tr.VideoMAEConfig(image_size=S, num_frames=T, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, num_labels=400) if smoke else tr.VideoMAEConfig(num_labels=400))  # base: 16x224
        m = tr.VideoMAEForVideoClassification(cfg)
        class Logits(nn.Module):
            def __init__(self, m): super().__init__(); self.m = m
            def forward(self, x): return self.m(pixel_values=x).logits
        return Logits(m)
    def r2plus1d():
        from torchvision.models.video import r2plus1d_18
        class BTCHW(nn.Module):
            def __init__(self, m): super().__init__(); self.m = m
            def forward(self, x): return self.m(x.transpose(1, 2))
        return BTCHW(r2plus1d_18(num_classes=400))
    def frames_lstm():
        _need('fastai', 'fastai_seq.registry')
        from fastai_seq.registry import arch_info
        import fastai_seq.models  # noqa: F401 (the bundled archs register themselves on import)
        r = (S, S) if smoke else (224, 224)
        return arch_info('frames_lstm').builder(n_frames=T, n_classes=400, size=r, body='resnet18')
    return {'videomae_base': (videomae, (T, 3, S, S)), 'r2plus1d_18': (r2plus1d, (T, 3, S if smoke else 112, S if smoke else 112)),
            'frames_lstm_resnet18': (frames_lstm, (T, 3, S, S))}

def bench_models(dev, smoke:bool) -> dict:
    dtypes = {'fp32': None} if dev.type=='cpu' else {'fp16': torch.float16, 'bf16': torch.bfloat16}
    bss = [2] if smoke else [32, 16, 8, 4]
    iters, warm = (1, 1) if smoke else (10, 3)
    res = {}
    for name,(build,shape) in _models(smoke).items():
        try: model = build()
        except Skip as e:
            res[name] = {'skipped': str(e)}; print(f"  {name}: skipped: {e}"); continue
        row = {'clip': list(shape)}
        for mode in ('train', 'infer'):
            for dn,dt in dtypes.items():
                for bs in bss:   # the largest batch that fits
                    try:
                        x = torch.rand(bs, *shape, device=dev)
                        r = _model_rate(model, x, dev, dt, mode=='train', iters, warm)
                        row[f'{mode}_{dn}'] = {'bs': bs, 'clips_s': round(r, 2)}; break
                    except torch.OutOfMemoryError:
                        model.zero_grad(set_to_none=True); torch.cuda.empty_cache()
        res[name] = row
        print(f"  {name} {tuple(shape)}: " + ', '.join(f"{k} {v['clips_s']:.1f} clips/s (bs {v['bs']})" for k,v in row.items() if k!='clip'),
              flush=True)
        del model
        if dev.type=='cuda': torch.cuda.empty_cache()
    return res

# ---------------------------------------------------------------------------------------------------- pipeline alone
def _write_clips(dest:Path, n_per_class:int, codec:str, ext:str, T:int=16, W:int=320, H:int=240, seed:int=0):
    "Two classes of `W`x`H` clips (a texture moving left or right, plus noise), written with PyAV"
    import av
    rng = np.random.default_rng(seed)
    for c,d in enumerate((-1, 1)):
        (dest/f'class{c}').mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            tex = np.kron(rng.integers(0, 256, (H//8+1, (W+8*T)//8+2, 3)), np.ones((8, 8, 1))).astype(np.uint8)
            with av.open(str(dest/f'class{c}'/f'{codec}_{i}{ext}'), 'w') as f:
                st = f.add_stream(codec, rate=Fraction(25))
                st.width, st.height, st.pix_fmt = W, H, 'yuv420p'
                if codec=='libx264': st.options = {'crf': '20', 'preset': 'veryfast'}
                else: st.bit_rate = 2_000_000
                for t in range(T):
                    o = 4*T + d*4*t
                    fr = np.clip(tex[:H, o:o+W].astype(int) + rng.normal(0, 8, (H, W, 3)), 0, 255).astype(np.uint8)
                    for p in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format='rgb24')): f.mux(p)
                for p in st.encode(): f.mux(p)

def _video_dls(path, nw:int, bs:int, size:int, device, n_frames:int=16):
    from fastai.vision.all import DataBlock, CategoryBlock, parent_label, RandomSplitter, Resize
    from fastai_seq.all import VideoBlock, get_video_files
    return DataBlock(blocks=(VideoBlock(n_frames=n_frames), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                     splitter=RandomSplitter(0.2, seed=0), item_tfms=Resize(size)).dataloaders(path, bs=bs, num_workers=nw,
                                                                                                device=device)

def bench_pipeline(tmp:Path, smoke:bool, workers:list) -> dict:
    _need('av', 'fastai', 'fastai_seq.all')
    n = 3 if smoke else 48
    size, bs, reps = (64 if smoke else 224), (4 if smoke else 8), (1 if smoke else 2)
    res = {}
    for codec,ext in (('libx264', '.mp4'), ('mpeg4', '.avi')):
        d = tmp/f'clips_{codec}'
        t = time.perf_counter(); _write_clips(d, n, codec, ext)
        print(f"  wrote {2*n} {codec} clips (320x240, 16 frames) in {time.perf_counter()-t:.1f}s", flush=True)
        row = {}
        for nw in workers:
            dls = _video_dls(d, nw, bs, size, torch.device('cpu'))
            dl = dls.train.new(shuffle=False, drop_last=False)
            rates = []
            for _ in range(reps):
                t = time.perf_counter(); k = sum(len(b[0]) for b in dl)
                rates.append(k/(time.perf_counter()-t))
            row[nw] = round(float(max(rates)), 2)
            print(f"  {codec}: num_workers={nw}: {row[nw]:.1f} clips/s (16 frames, Resize({size}), bs {bs})", flush=True)
        res[codec] = row
    res['clips_dir'] = str(tmp/'clips_libx264')
    return res

# ------------------------------------------------------------------------------------------------------- end to end
def bench_e2e(dev, smoke:bool, workers:list, clips_dir:str, alone:dict) -> dict:
    _need('av', 'fastai', 'fastai_seq.all')
    from fastai.callback.core import Callback
    from fastai_seq.all import seq_learner
    if clips_dir is None or not Path(clips_dir).exists(): raise Skip("no clips: the pipeline section did not run")
    size, bs = (32, 4) if smoke else (224, 8)
    class Watch(Callback):
        "Losses and the state of fastai's GradScaler batch by batch"
        order = 99
        def before_fit(self): self.losses,self.scaler_on = [],[]
        def after_batch(self):
            if not self.training: return
            self.losses.append(float(self.loss))
            sc = getattr(self.learn, 'scaler', None)
            self.scaler_on.append(bool(sc is not None and sc.is_enabled()))
    archs = {'frames_lstm_resnet18': dict(arch='frames_lstm', body='resnet18')}
    try:
        _need('transformers')
        from fastai_seq.models.hf import hf_video_model
        import transformers as tr
        cfg_dir = Path(clips_dir).parent/'videomae_cfg'
        (tr.VideoMAEConfig(image_size=size, num_frames=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64) if smoke else tr.VideoMAEConfig()).save_pretrained(cfg_dir)   # config only
        archs['videomae_base'] = dict(arch=partial(hf_video_model, f'hf-hub:{cfg_dir}'))
    except (Skip, ImportError) as e: print(f"  videomae_base: skipped ({e})")
    res = {}
    for name,kw in archs.items():
        res[name] = {}
        for nw in workers:
            dls = _video_dls(clips_dir, nw, bs, size, dev)
            learn = seq_learner(dls, metrics=[], cbs=Watch(), **kw)
            if dev.type=='cuda': learn.to_fp16()
            w = learn.cbs.filter(lambda c: isinstance(c, Watch))[0]
            epochs = 1 if smoke else 2
            with learn.no_bar(), learn.no_logging():
                if not smoke: learn.fit(1, 1e-4)   # warm up: cudnn autotuning, worker start
                t = time.perf_counter(); learn.fit(epochs, 3e-4); el = time.perf_counter()-t
            n = epochs*len(dls.train)*bs
            r = n/el
            ref = alone.get(name, {}).get('train_fp16' if dev.type=='cuda' else 'train_fp32', {}).get('clips_s')
            row = {'clips_s': round(r, 2), 'model_alone_clips_s': ref, 'fed': round(r/ref, 3) if ref else None,
                   'grad_scaler_on': all(w.scaler_on) if w.scaler_on else None,
                   'loss_first': round(float(np.mean(w.losses[:3])), 4), 'loss_last': round(float(np.mean(w.losses[-3:])), 4)}
            res[name][nw] = row
            print(f"  {name}: num_workers={nw}: {r:.1f} clips/s end to end"
                  + (f" = {row['fed']:.2f}x the model alone ({ref:.1f})" if ref else '')
                  + f"; GradScaler on: {row['grad_scaler_on']}; train loss {row['loss_first']:.3f} -> {row['loss_last']:.3f}", flush=True)
            del learn, dls
            if dev.type=='cuda': torch.cuda.empty_cache()
    return res

# ------------------------------------------------------------------------------------------------- SimVP forecasting
OPENSTL_SIMVP_MMNIST = {'epochs': 200, 'mse': 26.69, 'config': 'configs/mmnist/simvp/SimVP_gSTA.py'}

def bench_simvp(tmp:Path, dev, smoke:bool, budget:float) -> dict:
    _need('fastai', 'fastai_seq.all')
    from fastai_seq.all import MovingMNIST, moving_mnist_dls, seq_learner, TimeBudget
    cfg = dict(hid_S=8, hid_T=32, N_T=2, model_type='gsta') if smoke else dict(hid_S=64, hid_T=512, N_T=8, model_type='gsta')
    n_train, n_test, bs = (32, 16, 16) if smoke else (10_000, 2_000, 16)   # OpenSTL: 10,000 training sequences, batch 16
    test = MovingMNIST(n_in=10, n_out=10, seed=0).to_npy(tmp/'mm_test.npy', n_test)
    dls = moving_mnist_dls(n_in=10, n_out=10, n_digits=2, n_train=n_train, n_valid=16 if smoke else 256, bs=bs, seed=0,
                           device=dev, test=test)
    tb = TimeBudget(budget)
    learn = seq_learner(dls, 'simvp', metrics=[], cbs=tb, **cfg)
    n_params = sum(p.numel() for p in learn.model.parameters())
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(10_000)   # stopped by the budget
    el = time.perf_counter()-t
    rate, epochs = tb.n/el, tb.n/n_train
    tab = learn.forecast_report(dls.test).table()
    res = {'config': cfg, 'params_M': round(n_params/1e6, 2), 'budget_s': budget, 'train_samples_s': round(rate, 1),
           'epochs': round(epochs, 2), 'test_sequences': n_test,
           'mse_frame': round(float(tab.loc['model', 'mse']), 2), 'mae_frame': round(float(tab.loc['model', 'mae']), 2),
           'ssim': round(float(tab.loc['model', 'ssim']), 4), 'mse_copy_last': round(float(tab.loc['copy last', 'mse']), 2),
           'openstl': OPENSTL_SIMVP_MMNIST}
    print(f"  SimVP {cfg} ({res['params_M']}M params): {rate:.1f} train samples/s, {epochs:.2f} epochs of {n_train} in "
          f"{el:.0f}s; test MSE/frame {res['mse_frame']:.2f} (copy-last {res['mse_copy_last']:.2f}), SSIM {res['ssim']:.3f}; "
          f"OpenSTL: MSE {OPENSTL_SIMVP_MMNIST['mse']} after {OPENSTL_SIMVP_MMNIST['epochs']} epochs "
          f"({epochs/OPENSTL_SIMVP_MMNIST['epochs']:.1%} of its training here)", flush=True)
    return res

# ---------------------------------------------------------------------------------------------------------------- main
def _section(results:dict, name:str, fn):
    print(f"\n## {name}", flush=True)
    t = time.perf_counter()
    try: results[name] = fn()
    except Skip as e: results[name] = {'skipped': str(e)}; print(f"  skipped: {e}")
    except Exception as e:
        traceback.print_exc()
        results[name] = {'error': f'{type(e).__name__}: {e}'}; print(f"  FAILED: {type(e).__name__}: {e}")
    print(f"  ({time.perf_counter()-t:.0f}s)", flush=True)

def _summary(r:dict, dev):
    print("\n## Summary: does the pipeline keep the model fed?")
    m, p, e = r.get('model alone', {}), r.get('pipeline alone', {}), r.get('end to end', {})
    key = 'train_fp16' if dev.type=='cuda' else 'train_fp32'
    for name,row in m.items():
        if not isinstance(row, dict) or key not in row: continue
        need = row[key]['clips_s']
        for codec in ('libx264', 'mpeg4'):
            pr = p.get(codec) or {}
            if not pr: continue
            enough = [nw for nw,v in pr.items() if v>=need]
            print(f"  {name} trains at {need:.1f} clips/s; {codec} pipeline: "
                  + ', '.join(f"{nw}w {v:.0f} ({v/need:.2f}x)" for nw,v in pr.items())
                  + (f" -> {min(enough)} workers keep it fed" if enough else " -> not fed at any worker count measured"))
    for name,rows in e.items():
        if isinstance(rows, dict) and all(isinstance(v, dict) for v in rows.values()):
            print(f"  {name} end to end: " + ', '.join(f"{nw}w {v['clips_s']:.1f} clips/s"
                                                        + (f" ({v['fed']:.2f}x alone)" if v.get('fed') else '') for nw,v in rows.items()))

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--smoke', action='store_true', help="tiny sizes on the CPU: the same code paths in about a minute")
    ap.add_argument('--json', default=None, help="also write the results to this JSON file")
    ap.add_argument('--workers', default=None, help="num_workers to measure, e.g. 0,2,4,8 (default: 0,2,4,8,12 on a GPU, 0,1 smoke)")
    ap.add_argument('--simvp_budget', type=float, default=None, help="SimVP training seconds (default 150; smoke 8)")
    ap.add_argument('--sections', default='models,pipeline,e2e,simvp', help="which sections to run")
    a = ap.parse_args(argv)
    dev = torch.device('cpu' if a.smoke or not torch.cuda.is_available() else 'cuda')
    if dev.type=='cuda': torch.backends.cudnn.benchmark = True
    ncpu = os.cpu_count() or 1
    workers = [int(w) for w in a.workers.split(',')] if a.workers else ([0, 1] if a.smoke else
              sorted({0, 2, 4, 8, min(12, ncpu)} & set(range(ncpu+1))))
    budget = a.simvp_budget or (5. if a.smoke else 150.)
    secs = a.sections.split(',')
    info = {'device': torch.cuda.get_device_name() if dev.type=='cuda' else platform.processor() or 'cpu', 'cpus': ncpu,
            'torch': torch.__version__, 'python': platform.python_version(), 'smoke': a.smoke}
    for m in ('transformers', 'fastai', 'av', 'torchvision'):
        try: info[m] = __import__(m).__version__
        except Exception: info[m] = None
    print(f"# benchmarks/gpu.py{' --smoke' if a.smoke else ''}: {info}", flush=True)
    t0 = time.perf_counter()
    r = {'info': info}
    tmp = Path(tempfile.mkdtemp(prefix='fseq_gpu_'))
    try:
        if 'models' in secs: _section(r, 'model alone', lambda: bench_models(dev, a.smoke))
        if 'pipeline' in secs: _section(r, 'pipeline alone', lambda: bench_pipeline(tmp, a.smoke, workers))
        clips = (r.get('pipeline alone') or {}).get('clips_dir')
        if 'e2e' in secs:
            e2e_w = [0] if a.smoke else sorted({0, max(workers)})
            _section(r, 'end to end', lambda: bench_e2e(dev, a.smoke, e2e_w, clips, r.get('model alone') or {}))
        if 'simvp' in secs: _section(r, 'SimVP Moving MNIST', lambda: bench_simvp(tmp, dev, a.smoke, budget))
        _summary(r, dev)
    finally: shutil.rmtree(tmp, ignore_errors=True)
    r['info']['total_s'] = round(time.perf_counter()-t0, 1)
    print(f"\nTotal: {r['info']['total_s']:.0f}s")
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1, default=str))
        print(f"wrote {a.json}")
    return r

if __name__=='__main__': main()
