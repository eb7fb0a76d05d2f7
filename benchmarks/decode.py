"Decoding benchmark: `read_frames` (8 uniformly spaced frames, a random 8-frame window) against a full PyAV decode"
# Usage: python benchmarks/decode.py [--repeats 15] [--threads 1] [--clock cpu|wall]
# Clips: $FASTAI_SEQ_TEST_DATA/videos, else <repo>/../shared/data/videos.
# Each repeat times every variant back to back (so machine load hits them alike); a speed-up is the median over repeats of
# (full decode time / our time) in that repeat, a time the median over repeats. The default clock is this process's CPU
# time (all its threads), which other jobs on a busy machine disturb far less than wall time.
import argparse, os, time
from pathlib import Path
import av, numpy as np
from fastai_seq.video import read_frames, video_info, get_video_files, _index, _CACHE

def data_dir():
    env = os.environ.get('FASTAI_SEQ_TEST_DATA')
    return Path(env) if env else Path(__file__).resolve().parents[1].parent/'shared'/'data'

def full_decode(fn, rgb=True):
    "Plain PyAV: decode every frame, converting each to RGB as a naive loader does (`rgb=False`: decode only)"
    with av.open(str(fn)) as c:
        return [f.to_ndarray(format='rgb24') if rgb else f for f in c.decode(video=0)]

CLOCK = time.process_time

def clock(f):
    t = CLOCK(); f(); return CLOCK()-t

def bench(fn, repeats, threads, rng):
    "Times (s) per repeat of the baselines and of `read_frames` variants on `fn`"
    n = video_info(fn).n_frames
    uni = np.linspace(0, n-1, 8).round().astype(int)
    t = {k: [] for k in ('full', 'decode', 'info', 'uni', 'win', 'uni_cold', 'win_cold')}
    for _ in range(repeats):
        w1, w2 = [np.arange(s, s+8) for s in rng.integers(0, n-8+1, 2)]
        t['full'].append(clock(lambda: full_decode(fn)))
        t['decode'].append(clock(lambda: full_decode(fn, rgb=False)))
        _CACHE.clear(); t['info'].append(clock(lambda: video_info(fn)))
        t['uni'].append(clock(lambda: read_frames(fn, uni, threads=threads)))
        t['win'].append(clock(lambda: read_frames(fn, w1, threads=threads)))
        _CACHE.clear(); t['uni_cold'].append(clock(lambda: read_frames(fn, uni, threads=threads)))
        _CACHE.clear(); t['win_cold'].append(clock(lambda: read_frames(fn, w2, threads=threads)))
    return n, {k: np.array(v) for k, v in t.items()}

def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--repeats', type=int, default=15)
    p.add_argument('--threads', type=int, default=1, help="decoder threads for read_frames (1 = as in DataLoader workers)")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--clock', choices=('cpu', 'wall'), default='cpu', help="cpu: process CPU time; wall: elapsed time")
    a = p.parse_args()
    global CLOCK
    CLOCK = time.process_time if a.clock == 'cpu' else time.perf_counter
    vids = get_video_files(data_dir()/'videos')
    if not vids: raise SystemExit(f"No clips in {data_dir()/'videos'}: set FASTAI_SEQ_TEST_DATA")
    rng = np.random.default_rng(a.seed)
    ms = lambda x: f'{np.median(x)*1000:.1f}'
    print(f"read_frames(threads={a.threads}); {a.clock} time; medians of {a.repeats} interleaved repeats; speed-up = full decode+RGB / ours "
          f"(in brackets: full decode without RGB conversion / ours); warm = index cached, cold = index built in the call\n")
    print('| clip | frames | keyframes | full decode+RGB ms | decode only ms | video_info ms | uniform-8 ms | speed-up '
          '| window-8 ms | speed-up | uniform-8 cold ms | speed-up | window-8 cold ms | speed-up |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for fn in vids:
        n, t = bench(fn, a.repeats, a.threads, rng)
        ix = _index(fn)
        sp = lambda k: f"{np.median(t['full']/t[k]):.1f}x ({np.median(t['decode']/t[k]):.1f}x)"
        cols = [fn.name, n, len(ix.keys) if ix.seekable else '-', ms(t['full']), ms(t['decode']), ms(t['info'])]
        for k in ('uni', 'win', 'uni_cold', 'win_cold'): cols += [ms(t[k]), sp(k)]
        print('| ' + ' | '.join(map(str, cols)) + ' |')

if __name__ == '__main__': main()
