"""Clips per second end to end: fastai_seq's `VideoBlock` DataBlock pipeline (`Resize`, random windows) against the plain
PyTorch `Dataset` + `DataLoader` over torchcodec that its documentation shows (a `VideoDecoder` per item with its
decoder-side `Resize` transform, `get_frames_at`), on the same clips (benchmarks/corpus.py and the shared clips), at the
same output size, with 0 and 2 workers. A pass reads every file `--copies` times (1: the 18 files once, where the fixed
costs of a pass, fresh workers and the index pre-pass, weigh as in no real epoch; 8: 144 items). `--profile`: cProfile of
`dls.train` at 0 workers, and with 2 workers of the main process and of each worker (started by the loader's `wif`).
`--memory`: resident size per worker after 200 and 1,000 items, ours and torchcodec's. And the probes (file indexings)
of two passes with 2 workers.
Run: python benchmarks/pipeline.py [--corpus DIR] [--reps 3] [--copies 1] [--workers 0,2] [--sizes 112,224]
     [--frames 8,16] [--method crop] [--profile] [--memory] [--mem-items 1000]"""
import cProfile, io, os, pstats, resource, sys, tempfile, time
# every pass of the comparison indexes as a first run would: no index saved beside the clips by an earlier run
os.environ.setdefault("FASTAI_SEQ_INDEX_DIR", "off")
from pathlib import Path
import numpy as np, torch
from fastcore.script import call_parse
from fastai.vision.all import DataBlock, CategoryBlock, RandomSplitter, Resize, ItemTransform
sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import corpus_files, DEFAULT_DIR  # noqa: E402
import fastai_seq.video as V  # noqa: E402
from fastai_seq.all import VideoBlock  # noqa: E402

def label(fn): return Path(fn).suffix  # any label: the container's extension

class TorchcodecClips(torch.utils.data.Dataset):
    "What a PyTorch user writes from torchcodec's docs: a decoder per item with a decoder-side `Resize`, a random window"
    def __init__(self, files, n_frames, size, hook=None): self.files, self.n_frames, self.size, self.hook = files, n_frames, size, hook
    def __len__(self): return len(self.files)
    def __getitem__(self, i):
        from torchcodec.decoders import VideoDecoder
        from torchcodec.transforms import Resize as TcResize
        dec = VideoDecoder(str(self.files[i]), seek_mode='exact', num_ffmpeg_threads=1,
                           transforms=[TcResize((self.size, self.size))])
        n = dec.metadata.num_frames
        s = int(torch.randint(0, max(n - self.n_frames, 0) + 1, ()))
        x = dec.get_frames_at(list(range(s, s + self.n_frames))).data  # (T,C,H,W) uint8
        if self.hook: self.hook()
        return x, 0

def torchcodec_dl(files, n_frames, size, bs, nw, hook=None):
    dl = torch.utils.data.DataLoader(TorchcodecClips(files, n_frames, size, hook), batch_size=bs, shuffle=True, num_workers=nw)
    def it():
        for x, y in dl: yield x.float().div_(255), y  # on the batch, as fastai's `IntToFloatSeq`
    return it

class Hook(ItemTransform):
    "Last item transform: calls `f` per item (the memory log), passing the item through"
    order = 1000
    def __init__(self, f): super().__init__(); self.f = f
    def encodes(self, o): self.f(); return o

def ours_dl(files, n_frames, size, bs, nw, hook=None, method='crop'):
    tfms = [Resize(size, method=method)] + ([Hook(hook)] if hook else [])
    dblock = DataBlock(blocks=(VideoBlock(n_frames=n_frames, sampler='random'), CategoryBlock), get_y=label,
                       splitter=RandomSplitter(0.), item_tfms=tfms)
    return dblock.dataloaders(list(files), bs=bs, num_workers=nw).train.new(shuffle=True, drop_last=False)

def rates(its:dict, reps:int, n_items:int) -> dict:
    "Median clips/s of each iterable factory in `its` over `reps` full passes, taking turns so that load drifts hit all alike"
    out = {k: [] for k in its}
    for _ in range(reps):
        for k, it in its.items():
            t, n = time.perf_counter(), 0
            for b in it(): n += len(b[0])
            out[k].append(n / (time.perf_counter() - t))
            if n != n_items: raise RuntimeError(f"{k}: {n} clips in a pass, expected {n_items}")
    return {k: float(np.median(v)) for k, v in out.items()}

def probes_per_pass(files, nw, passes=2) -> list:
    "Probes in each of `passes` passes of a fresh `VideoBlock` pipeline with `nw` workers (forked workers log them to a file)"
    log, orig = Path(tempfile.mkdtemp())/'probes', V._build_index
    def probe(fn, *args, **kwargs):
        with open(log, 'a') as f: f.write(f'{fn}\n')
        return orig(fn, *args, **kwargs)
    V._build_index, counts = probe, []
    try:
        V._CACHE.clear()
        dl = ours_dl(files, 8, 112, 4, nw)
        n0 = len(log.read_text().split()) if log.exists() else 0
        for _ in range(passes):
            for b in dl: pass
            n1 = len(log.read_text().split()) if log.exists() else 0
            counts.append(n1 - n0); n0 = n1
    finally: V._build_index = orig
    return counts

def profile_train(files, n_frames, size, bs, reps=3, top=25):
    "cProfile of `reps` passes of `dls.train` at 0 workers: the top functions by own time, and the share of decoding"
    dl = ours_dl(files, n_frames, size, bs, 0)
    for b in dl: pass  # indexes the files, warms the caches
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(reps):
        for b in dl: pass
    pr.disable()
    s = io.StringIO()
    st = pstats.Stats(pr, stream=s)
    n_items = reps * len(dl.dataset)
    rf = sum(v[3] for k, v in st.stats.items() if k[2] == 'read_frames')
    calls = sum(v[1] for v in st.stats.values())
    s.write(f"Per item: {st.total_tt/n_items*1000:.2f} ms in all, {rf/n_items*1000:.2f} ms in read_frames (decoding), "
            f"{(st.total_tt-rf)/n_items*1000:.2f} ms the rest (fastai and ours); {calls/n_items:.0f} Python function calls "
            f"({n_items} items)\n\n")
    st.sort_stats('tottime').print_stats(top)
    st.sort_stats('cumulative').print_stats(r'read_frames|LoadFrames|_load_path|do_item|create_item|after_item|'
                                            r'create_batch|do_batch|_pil|ImageTuple|StackFrames|Resize|encodes|collate')
    return s.getvalue()

def profile_workers(files, n_frames, size, bs, nw=2, reps=2, top=12):
    "cProfile of `reps` passes of `dls.train` with `nw` workers: the main process, and each worker's per-item work"
    from multiprocessing.util import Finalize
    d = Path(tempfile.mkdtemp())
    def wif(*args):  # in each worker: profile it until it exits
        pr = cProfile.Profile(); pr.enable()
        def dump(): pr.disable(); pr.dump_stats(str(d/f'w{os.getpid()}.pstats'))
        Finalize(None, dump, exitpriority=100)
    dl = ours_dl(files, n_frames, size, bs, nw)
    for b in dl: pass  # indexes the files
    dl.wif = wif
    pr, t = cProfile.Profile(), time.perf_counter()
    pr.enable()
    for _ in range(reps):
        for b in dl: pass
    pr.disable()
    POLL = "<method 'poll' of 'select.poll' objects>"
    wall, n_items, s = time.perf_counter() - t, reps * len(dl.dataset), io.StringIO()
    st = pstats.Stats(pr, stream=s)
    own = lambda st, name: sum(v[2] for k, v in st.stats.items() if k[2] == name)
    cum = lambda st, name: sum(v[3] for k, v in st.stats.items() if k[2] == name)
    s.write(f"Main process, {reps} passes of {len(dl.dataset)} items ({wall:.2f} s): waiting for workers (poll) "
            f"{own(st, POLL):.2f} s, before_iter {cum(st, 'before_iter'):.3f} s, "
            f"gc.collect {own(st, '<built-in method gc.collect>'):.3f} s\n")
    st.sort_stats('tottime').print_stats(top)
    ws = pstats.Stats(*map(str, d.glob('w*.pstats')), stream=s)
    rf = cum(ws, 'read_frames')
    s.write(f"\nWorkers, per item: {ws.total_tt/n_items*1000:.2f} ms in all, {rf/n_items*1000:.2f} ms in read_frames, "
            f"{(ws.total_tt-rf)/n_items*1000:.2f} ms the rest (waiting for indices included)\n")
    ws.sort_stats('tottime').print_stats(top)
    return s.getvalue()

def _mem():
    "(resident MiB, peak resident MiB, private dirty MiB) of this process, from /proc"
    st = dict(l.split(':', 1) for l in Path('/proc/self/status').read_text().splitlines() if ':' in l)
    kb = lambda k: int(st[k].split()[0]) / 1024
    priv = sum(int(l.split()[1]) for l in Path('/proc/self/smaps_rollup').read_text().splitlines()
               if l.startswith(('Private_Dirty', 'Private_Clean'))) / 1024
    return kb('VmRSS'), kb('VmHWM'), priv

class MemLog:
    "Per process: after the `at` items, append `pid item rss peak private` to a shared file"
    def __init__(self, fn, at=(200, 1000)): self.fn, self.at, self.n = str(fn), set(at), 0
    def __call__(self):
        self.n += 1
        if self.n in self.at:
            with open(self.fn, 'a') as f: f.write(f"{os.getpid()} {self.n} " + ' '.join(f'{v:.1f}' for v in _mem()) + '\n')

def mem_per_worker(files, n_items, nw, n_frames, size, bs):
    "Per worker (rss, peak, private) every 100 items up to `n_items`, ours and torchcodec's, each worker reading `n_items`"
    items = [files[i % len(files)] for i in range((n_items + bs) * nw)]
    out = {}
    for name, make in (('ours', ours_dl), ('torchcodec', torchcodec_dl)):
        log = Path(tempfile.mkdtemp())/'mem'
        V._CACHE.clear()
        dl = make(items, n_frames, size, bs, nw, hook=MemLog(log, range(100, n_items+1, 100)))
        for b in (dl() if name == 'torchcodec' else dl): pass
        rows = [l.split() for l in log.read_text().splitlines()]
        per = {}
        for pid, n, rss, peak, priv in rows: per.setdefault(pid, {})[int(n)] = (float(rss), float(peak), float(priv))
        out[name] = per
    return out

@call_parse
def main(corpus:str=str(DEFAULT_DIR), # Cache folder of the corpus files (never in the repository)
         reps:int=3, # Passes per measurement (median), the pipelines taking turns
         workers:str='0,2', # num_workers values to measure
         sizes:str='112,224', # Output sizes (`Resize`)
         frames:str='8,16', # Frames per clip
         bs:int=4, # Batch size
         copies:int=1, # Copies of the file list per pass (an epoch of copies*18 items)
         method:str='crop', # Our `Resize` method: 'crop' (fastai's default) or 'squish' (what torchcodec's `Resize` does)
         profile:bool=False, # cProfile of `dls.train` iteration at 0 workers (8 frames at 112)
         memory:bool=False, # Resident size per worker after 200 and `mem_items` items, ours and torchcodec's
         mem_items:int=1000, # Items per worker for `--memory`
         no_rates:bool=False, # Leave out the clips/s table (e.g. with `--profile` or `--memory` alone)
):
    torch.set_num_threads(1)
    files, missing = corpus_files(corpus)
    files = files * copies
    try: import torchcodec; tcv = torchcodec.__version__
    except Exception as e: sys.exit(f"torchcodec is needed for the comparison ({type(e).__name__}: {e}): pip install fastai_seq[bench]")
    print(f"{len(files)} clips (the corpus of benchmarks/corpus.py and the shared clips{', x%d' % copies if copies > 1 else ''}), "
          f"random windows, bs={bs}, one torch thread, torchcodec {tcv}; clips/s are medians of {reps} passes taken in turns")
    if missing: print('Not in the corpus: ' + ', '.join(missing))
    if profile:
        print("\nProfile of 3 passes of `dls.train` at 0 workers (8 frames, Resize(112)):\n")
        print(profile_train(files, 8, 112, bs))
        print("\nProfile of 2 passes of `dls.train` with 2 workers (8 frames, Resize(112)):\n")
        print(profile_workers(files, 8, 112, bs))
    if not no_rates:
        print("\n| frames | size | num_workers | fastai_seq VideoBlock clips/s | torchcodec Dataset clips/s | ours/torchcodec |")
        print("|---|---|---|---|---|---|")
        for nw in [int(w) for w in workers.split(',')]:
            for nf in [int(x) for x in frames.split(',')]:
                for sz in [int(x) for x in sizes.split(',')]:
                    V._CACHE.clear()
                    dl = ours_dl(files, nf, sz, bs, nw, method=method)
                    b = dl.one_batch()
                    tc = torchcodec_dl(files, nf, sz, bs, nw)
                    x = next(iter(tc()))[0]
                    if tuple(b[0].shape[1:]) != tuple(x.shape[1:]):
                        raise RuntimeError(f"output shapes differ: ours {tuple(b[0].shape)}, torchcodec {tuple(x.shape)}")
                    r = rates({'ours': lambda: dl, 'tc': tc}, reps, len(files))
                    print(f"| {nf} | {sz} | {nw} | {r['ours']:.1f} | {r['tc']:.1f} | {r['ours']/r['tc']:.2f}x |", flush=True)
        print(f"\nProbes (file indexings, counted in every process) with 2 workers, from an empty index: "
              f"{', '.join(f'pass {i+1}: {n}' for i, n in enumerate(probes_per_pass(files, 2)))} ({len(files)} files)")
    if memory:
        nw = 2
        m = mem_per_worker(files, mem_items, nw, 8, 112, bs)
        print(f"\nMemory per worker ({nw} workers, each reading {mem_items} items of the corpus, 8 frames at 112): "
              f"resident MiB after item 200 and {mem_items}, peak resident, private (not shared with the main process)\n")
        print(f"| pipeline | worker | RSS @200 | RSS @{mem_items} | growth 200->{mem_items} | RSS min-max @200..{mem_items} (every 100) | peak RSS | private @200 | private @{mem_items} |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, per in m.items():
            for j, (pid, d) in enumerate(sorted(per.items())):
                a, z = d.get(200), d.get(mem_items)
                if not a or not z: print(f"| {name} | {j} | (read {sorted(d)} items) |"); continue
                win = [v[0] for k, v in d.items() if 200 <= k <= mem_items]
                print(f"| {name} | {j} | {a[0]:.0f} | {z[0]:.0f} | {z[0]-a[0]:+.1f} | {min(win):.0f}-{max(win):.0f} | {z[1]:.0f} | {a[2]:.0f} | {z[2]:.0f} |")
