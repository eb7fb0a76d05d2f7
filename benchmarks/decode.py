"""Decoding benchmark over a corpus of codecs and containers: `read_frames` 8-frame windows against torchcodec exact (a
decoder opened per call, as a DataLoader item does) and against a bare PyAV loop doing only the work (open, seek to the
keyframe before the window, decode to its last frame, convert the 8 frames), every window checked against a full decode.
Usage: python benchmarks/decode.py [--corpus DIR] [--install-ffmpeg] [--windows 8] [--repeats 3] [--clock cpu|wall]
       [--no-shared] [--only NAME,...] [--vs-full]
The corpus (benchmarks/corpus.py) is made once and cached in `--corpus` (default /work/scratch/bench/corpus), plus the
three shared clips ($FASTAI_SEQ_TEST_DATA/videos, else <repo>/../shared/data/videos).
Per file, `--windows` 8-frame windows start at evenly spread positions; each repeat runs every window through every
method back to back (so load drifts hit them alike); a method's time in a repeat is the sum over the windows, a ratio is
the median over repeats of the ratio in that repeat, a time the median over repeats divided by the windows; the methods
run in a new random order at every window (a call right after another method's is slower, whichever it is). The default
clock is this process's CPU time (all its threads), which other jobs on a busy machine disturb far less than wall time.
torchcodec: `pip install fastai_seq[bench]` (it needs FFmpeg's shared libraries: Debian `apt-get install ffmpeg`)."""
import argparse, math, os, sys, time
# cold timings must build the index in the call: no index saved beside the corpus by an earlier run (a user sets this too)
os.environ.setdefault("FASTAI_SEQ_INDEX_DIR", "off")
from pathlib import Path
import av, numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import corpus_files, DEFAULT_DIR  # noqa: E402
import fastai_seq.video as V  # noqa: E402
from fastai_seq.video import read_frames, video_info  # noqa: E402

CLOCK = time.process_time

def best_stream(c):
    "The video stream FFmpeg picks (`av_find_best_stream`), as players, torchcodec and `read_frames` do"
    vs = c.streams.video
    return (c.streams.best('video') if len(vs) > 1 else None) or vs[0]

def upright(a, rot):
    "Frame array `a` turned upright by a display rotation of `rot` degrees (as `read_frames(rotate=True)` does)"
    k = int(round(rot / 90)) % 4
    return np.rot90(a, k) if k else a

def full_decode(fn):
    "The reference: every frame of the best video stream, RGB, upright; with each frame's pts and keyframe flag"
    frames, pts, keys, rot = [], [], [], 0
    with av.open(str(fn)) as c:
        s = best_stream(c); s.thread_type = 'AUTO'
        for f in c.decode(s):
            if not frames: rot = getattr(f, 'rotation', 0) or 0
            frames.append(upright(f.to_ndarray(format='rgb24'), rot)); pts.append(f.pts); keys.append(bool(f.key_frame))
    return np.ascontiguousarray(np.stack(frames)), pts, keys, rot

class Bare:
    "The work itself, by hand with PyAV: open, seek to the keyframe before the window, decode to its last frame, convert only the wanted frames"
    # It is handed what a full decode learnt (each frame's pts, which are keyframes): an oracle index, costing nothing here
    def __init__(self, fn, pts, keys, rot):
        self.fn, self.pts, self.rot = str(fn), pts, rot
        self.keys = [i for i, k in enumerate(keys) if k]
        self.where = {p: i for i, p in enumerate(pts)}
        self.r = av.video.reformatter.VideoReformatter()
    def __call__(self, idxs):
        want, last, out = set(idxs), idxs[-1], []
        key = max([k for k in self.keys if k <= idxs[0]] or [0])
        with av.open(self.fn) as c:
            s = best_stream(c); s.codec_context.thread_count = 1
            for o in c.streams:
                if o.index != s.index: o.discard = av.stream.Discard.all
            seek = key > 0 and self.pts[key] is not None
            if seek: c.seek(self.pts[key], stream=s, backward=True, any_frame=False)
            i = None if seek else 0
            for f in c.decode(s):
                if i is None:  # after a seek: number the frames from the pts of the first one
                    i = self.where.get(f.pts)
                    if i is None or i > idxs[0]: return None  # the seek cannot be trusted here: the caller decodes from the start
                if i in want: out.append(upright(self.r.reformat(f, format='rgb24', threads=1).to_ndarray(), self.rot))
                if i == last: break
                i += 1
        return np.stack(out)
    def from_start(self, idxs):
        want, last, out = set(idxs), idxs[-1], []
        with av.open(self.fn) as c:
            s = best_stream(c); s.codec_context.thread_count = 1
            for i, f in enumerate(c.decode(s)):
                if i in want: out.append(upright(self.r.reformat(f, format='rgb24', threads=1).to_ndarray(), self.rot))
                if i == last: break
        return np.stack(out)

def forget_index():
    "Drop every frame index `read_frames` keeps (in memory, and on disk where a version of video.py persists them)"
    V._CACHE.clear()
    for name in ('clear_index', '_clear_index', 'clear_index_cache'):  # a persistent index's own reset, where there is one
        f = getattr(V, name, None)
        if callable(f):
            try: f()
            except TypeError: pass

def windows(n, k, size=8):
    "`k` windows of `size` frames starting at evenly spread positions of an `n`-frame clip"
    starts = np.linspace(0, max(n - size, 0), k).round().astype(int)
    return [list(range(s, min(s + size, n))) for s in dict.fromkeys(starts.tolist())]

def bench_file(fn, n_windows, repeats, tc_cls):
    "Per-method times (s) summed over the windows per repeat, wrong windows per method, and the errors raised"
    ref, pts, keys, rot = full_decode(fn)
    n = len(ref)
    wins = windows(n, n_windows)
    bare = Bare(fn, pts, keys, rot)
    def ours_warm(idxs): return read_frames(fn, idxs, threads=1)
    def ours_cold(idxs): forget_index(); return read_frames(fn, idxs, threads=1)
    def tc(idxs):
        d = tc_cls(str(fn), seek_mode='exact', num_ffmpeg_threads=1, dimension_order='NHWC')
        return d.get_frames_at(idxs).data.numpy()
    def bare_loop(idxs):
        a = bare(idxs)
        return bare.from_start(idxs) if a is None else a
    methods = {'warm': ours_warm, 'cold': ours_cold, 'bare': bare_loop}
    if tc_cls is not None: methods['tc'] = tc
    t = {k: np.zeros(repeats) for k in methods}
    wrong, errors, diff = {k: set() for k in methods}, {}, {}
    video_info(fn)
    names, rng = list(methods), np.random.default_rng(0)
    for r in range(repeats):
        for w, idxs in enumerate(wins):
            # the methods run in a new random order at every window: a call right after torchcodec's or a cold call ran
            # ~10-20% slower (freed buffers, cold caches), whichever method it was; a fixed order (or a rotation of it,
            # which keeps who follows whom) charged that to the same method every time
            for k in rng.permutation(names).tolist():
                get = methods[k]
                if k in errors: continue
                c0 = CLOCK()
                try: a = get(idxs)
                except Exception as e:
                    errors[k] = f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"; continue
                t[k][r] += CLOCK() - c0
                if not (a.shape == ref[idxs].shape and np.array_equal(a, ref[idxs])):
                    wrong[k].add(w)
                    d = int(np.abs(a.astype(np.int16) - ref[idxs]).max()) if a.shape == ref[idxs].shape else -1
                    diff[k] = max(diff.get(k, 0), d)
    return n, sum(keys), len(wins), t, wrong, errors, diff

def gmean(xs):
    xs = [x for x in xs if x and np.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float('nan')

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--corpus', default=str(DEFAULT_DIR), help="cache folder of the made files (never in the repository)")
    p.add_argument('--install-ffmpeg', action='store_true', help="apt-get install -y ffmpeg first (for the files it makes)")
    p.add_argument('--windows', type=int, default=8, help="8-frame windows per file, at evenly spread positions")
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--clock', choices=('cpu', 'wall'), default='cpu', help="cpu: process CPU time; wall: elapsed time")
    p.add_argument('--no-shared', action='store_true', help="leave out the three shared clips")
    p.add_argument('--only', default='', help="comma-separated file names to run (default: all)")
    a = p.parse_args()
    global CLOCK
    CLOCK = time.process_time if a.clock == 'cpu' else time.perf_counter
    # One torch thread, as in a DataLoader worker: torchcodec turns rotated frames with torch ops, whose OpenMP threads
    # then spin for a while after each call, and that CPU time was charged to whichever method ran next (ours, 2x on the
    # rotated clip: 14.5 ms of CPU for 7.3 ms of wall time)
    import torch; torch.set_num_threads(1)
    files, missing = corpus_files(a.corpus, a.install_ffmpeg, shared=not a.no_shared)
    if a.only: files = [f for f in files if f.name in a.only.split(',')]
    try:
        from torchcodec.decoders import VideoDecoder
        import torchcodec; tcv = torchcodec.__version__
    except Exception as e:
        VideoDecoder, tcv = None, None
        print(f"torchcodec not usable here ({type(e).__name__}: {str(e).splitlines()[0][:120]}): its columns are empty")
    print(f"PyAV {av.__version__}, torchcodec {tcv}; {a.clock} time; {a.windows} windows of 8 frames per file, "
          f"{a.repeats} interleaved repeats (medians); read_frames(threads=1), torchcodec one FFmpeg thread, a decoder per call. "
          "Ratios > 1: ours faster; ours/bare < 1.15 is the goal. Wrong = windows whose frames differ from a full PyAV decode (largest pixel difference).\n")
    print('| file | frames | keyframes | ours warm ms | ours cold ms | tc exact ms | bare PyAV ms | tc/ours warm | tc/ours cold '
          '| ours warm/bare | wrong: ours warm / cold / tc / bare |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    R = {'w': [], 'c': [], 'b': []}
    for fn in files:
        n, nk, nw, t, wrong, errors, diff = bench_file(fn, a.windows, a.repeats, VideoDecoder)
        ms = lambda k: errors.get(k, f'{np.median(t[k]) / nw * 1000:.2f}') if k in t else '-'
        ratio = lambda x, y: (np.median(t[x] / t[y]) if x in t and y in t and x not in errors and y not in errors else float('nan'))
        rw, rc, rb = ratio('tc', 'warm'), ratio('tc', 'cold'), ratio('warm', 'bare')
        R['w'].append(rw); R['c'].append(rc); R['b'].append(rb)
        f = lambda x: '-' if not np.isfinite(x) else f'{x:.2f}x'
        dd = lambda k: '' if k not in diff else ' (shape)' if diff[k] < 0 else f' (max diff {diff[k]})'
        wr = ' / '.join('err' if k in errors else f'{len(wrong[k])}/{nw}{dd(k)}' if k in wrong else '-' for k in ('warm', 'cold', 'tc', 'bare'))
        print(f"| {fn.name} | {n} | {nk} | {ms('warm')} | {ms('cold')} | {ms('tc')} | {ms('bare')} | {f(rw)} | {f(rc)} | {f(rb)} | {wr} |",
              flush=True)
    print(f"\nGeometric means over {len(files)} files: torchcodec exact / ours warm {gmean(R['w']):.2f}x, "
          f"/ ours cold {gmean(R['c']):.2f}x; ours warm / bare PyAV loop {gmean(R['b']):.2f}x")
    lo = [(fn.name, x) for fn, x in zip(files, R['w']) if np.isfinite(x) and x < 1.0]
    print(f"Files below 1.0x warm: {', '.join(f'{n} {x:.2f}x' for n, x in lo) or 'none'}; "
          f"above 1.15x of the bare loop: {', '.join(f'{fn.name} {x:.2f}x' for fn, x in zip(files, R['b']) if x > 1.15) or 'none'}")
    for k, v in missing.items(): print(f"Not in the corpus: {k} ({v})")

if __name__ == '__main__': main()
