"Decoding benchmark: `read_frames` (8 uniformly spaced frames, a random 8-frame window) against a full PyAV decode"
# Usage: python benchmarks/decode.py [--repeats 15] [--threads 1] [--clock cpu|wall]
# Clips: $FASTAI_SEQ_TEST_DATA/videos, else <repo>/../shared/data/videos.
# Each repeat times every variant back to back (so machine load hits them alike); a speed-up is the median over repeats of
# (full decode time / our time) in that repeat, a time the median over repeats. The default clock is this process's CPU
# time (all its threads), which other jobs on a busy machine disturb far less than wall time.
# With torchcodec installed (`pip install fastai_seq[bench]`; it needs FFmpeg's shared libraries, on Debian
# `apt-get install libavcodec59 libavformat59 libavdevice59 libavfilter8 libswscale6`), a second table sets the same
# calls against torchcodec's exact and approximate seek modes (one FFmpeg thread), on the real clips and on a long
# generated H.264 file: ours must return exactly the frames of a full PyAV decode (asserted), torchcodec's are counted.
import argparse, os, shutil, tempfile, time
from pathlib import Path
import av, numpy as np
from fastai_seq.video import read_frames, video_info, _cached_index, _CACHE
from fastai_seq.files import get_video_files

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

def long_video(fn, n=3000, w=160, h=120, fps=25, gop=250):
    "A long generated H.264 MP4 (a moving square over noise), keyframes every `gop` frames as x264's default"
    with av.open(str(fn), 'w') as c:
        s = c.add_stream('libx264', rate=fps)
        s.width, s.height, s.pix_fmt, s.options = w, h, 'yuv420p', {'g': str(gop), 'bf': '2', 'preset': 'veryfast'}
        rng = np.random.default_rng(0)
        noise = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
        for i in range(n):
            a = noise.copy(); y, x = (i*2) % (h-16), (i*3) % (w-16); a[y:y+16, x:x+16] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(a, format='rgb24')): c.mux(p)
        for p in s.encode(): c.mux(p)
    return Path(fn)

def bench_torchcodec(fn, repeats, rng):
    "Times (s) per repeat of ours and torchcodec's (exact, approximate; warm, cold), and frame equality with a full decode"
    from torchcodec.decoders import VideoDecoder
    ref = np.stack(full_decode(fn))
    n = len(ref)
    uni = np.linspace(0, n-1, 8).round().astype(int).tolist()
    def tc(mode, dec=None):
        "torchcodec's frames: `dec` kept open (warm), or a decoder opened per call as a DataLoader item does (cold)"
        def get(idxs):
            d = dec or VideoDecoder(str(fn), seek_mode=mode, num_ffmpeg_threads=1, dimension_order='NHWC')
            return d.get_frames_at(idxs).data.numpy()
        return get
    def ours(cold):
        def get(idxs):
            if cold: _CACHE.clear()
            return read_frames(fn, idxs, threads=1)
        return get
    kinds = {'ours': ours(False), 'ours_cold': ours(True)}
    for m in ('exact', 'approximate'): kinds[f'tc_{m}_cold'] = tc(m)
    kinds['tc_exact'] = tc('exact', VideoDecoder(str(fn), seek_mode='exact', num_ffmpeg_threads=1, dimension_order='NHWC'))
    t = {(k, w): [] for k in kinds for w in ('win', 'uni')}
    same = {k: 0 for k in kinds}
    video_info(fn)
    for _ in range(repeats):
        s0 = int(rng.integers(0, n-8+1))
        for w, idxs in (('win', list(range(s0, s0+8))), ('uni', uni)):
            for k, get in kinds.items():
                c0 = CLOCK(); a = get(idxs); t[k, w].append(CLOCK()-c0)
                ok = a.shape == ref[idxs].shape and np.array_equal(a, ref[idxs])
                if k.startswith('ours'): assert ok, f"{fn.name}: read_frames differs from a full decode at {idxs}"
                same[k] += ok
    return n, {k: np.array(v) for k, v in t.items()}, same

def torchcodec_table(vids, repeats, rng):
    try: import torchcodec.decoders  # noqa: F401
    except Exception as e:
        print(f"\ntorchcodec not usable here ({type(e).__name__}: {str(e).splitlines()[0][:120]}): "
              "`pip install fastai_seq[bench]` and FFmpeg's shared libraries")
        return
    tmp = Path(tempfile.mkdtemp())
    try:
        vids = list(vids) + [long_video(tmp/'long_h264_3000.mp4')]
        print(f"\nAgainst torchcodec (one FFmpeg thread; {CLOCK_NAME} time; medians of {repeats} interleaved repeats). "
              "A DataLoader item opens its file: torchcodec 'per call' opens a `VideoDecoder` in the call (exact mode "
              "scans the file then); 'kept open' reuses one decoder, which an item cannot. Ours: warm = index built "
              "before (as `SeqDL` does before each pass), cold = index built in the call. Ratio = torchcodec exact per "
              "call / ours; 'same' = calls whose frames equal a full PyAV decode\n")
        print('| clip | frames | call | ours warm ms | ours cold ms | tc exact per call ms | tc approx per call ms | '
              'tc exact kept open ms | exact/ours warm | exact/ours cold | same: ours / exact / approx |')
        print('|---|---|---|---|---|---|---|---|---|---|---|')
        for fn in vids:
            n, t, same = bench_torchcodec(fn, repeats, rng)
            med = lambda k, w: np.median(t[k, w])*1000
            for w, name in (('win', 'window-8'), ('uni', 'uniform-8')):
                cols = [fn.name, n, name] + [f'{med(k, w):.1f}' for k in ('ours', 'ours_cold', 'tc_exact_cold',
                                                                          'tc_approximate_cold', 'tc_exact')]
                cols += [f"{np.median(t['tc_exact_cold', w]/t['ours', w]):.2f}x",
                         f"{np.median(t['tc_exact_cold', w]/t['ours_cold', w]):.2f}x"]
                cols += [f"{same['ours']}/{2*repeats} / {same['tc_exact_cold']}/{2*repeats} / {same['tc_approximate_cold']}/{2*repeats}"]
                print('| ' + ' | '.join(map(str, cols)) + ' |')
    finally: shutil.rmtree(tmp, ignore_errors=True)

CLOCK_NAME = 'cpu'

def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--repeats', type=int, default=15)
    p.add_argument('--threads', type=int, default=1, help="decoder threads for read_frames (1 = as in DataLoader workers)")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--clock', choices=('cpu', 'wall'), default='cpu', help="cpu: process CPU time; wall: elapsed time")
    p.add_argument('--no-torchcodec', action='store_true', help="skip the torchcodec table")
    a = p.parse_args()
    global CLOCK, CLOCK_NAME
    CLOCK = time.process_time if a.clock == 'cpu' else time.perf_counter
    CLOCK_NAME = a.clock
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
        ix = _cached_index(fn)
        sp = lambda k: f"{np.median(t['full']/t[k]):.1f}x ({np.median(t['decode']/t[k]):.1f}x)"
        cols = [fn.name, n, len(ix.keys) if ix.seekable else '-', ms(t['full']), ms(t['decode']), ms(t['info'])]
        for k in ('uni', 'win', 'uni_cold', 'win_cold'): cols += [ms(t[k]), sp(k)]
        print('| ' + ' | '.join(map(str, cols)) + ' |')
    if not a.no_torchcodec: torchcodec_table(vids, a.repeats, rng)

if __name__ == '__main__': main()
