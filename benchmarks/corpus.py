"""The benchmark corpus: video files of the codecs, containers and quirks users have, made once with PyAV's encoders and
Debian's `ffmpeg` (for what PyAV does not write: display-matrix rotation, a two-video-stream file), cached in a folder
outside the repository, plus the three shared clips. `python benchmarks/corpus.py [--corpus DIR] [--install-ffmpeg]`
makes it and prints what each file is; `decode.py` and `pipeline.py` call `corpus_files`.
Setup: `apt-get install -y ffmpeg` (or pass `--install-ffmpeg`); without it the files that need it are listed as missing."""
import argparse, os, shutil, subprocess, sys
from fractions import Fraction
from pathlib import Path
import av, numpy as np
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only

DEFAULT_DIR = Path('/work/scratch/bench/corpus')
VERSION = 1  # bump when a recipe changes: the cache folder holds files of one version

def shared_videos() -> list:
    "The three shared clips ($FASTAI_SEQ_TEST_DATA/videos, else <repo>/../shared/data/videos)"
    env = os.environ.get('FASTAI_SEQ_TEST_DATA')
    d = (Path(env) if env else Path(__file__).resolve().parents[1].parent/'shared'/'data')/'videos'
    return sorted(p for p in d.glob('*') if p.suffix.lower() in ('.mp4', '.avi', '.mkv', '.webm', '.mov'))

def _frame(i, w, h, rng_noise):
    "Frame `i` of a synthetic clip: a drifting gradient, a moving square and a moving disc over light fixed noise"
    y, x = np.ogrid[:h, :w]
    a = np.empty((h, w, 3), np.uint8)
    a[..., 0] = ((x + 2*i) * 255 // max(w, 1)) % 256
    a[..., 1] = ((y + i) * 255 // max(h, 1)) % 256
    a[..., 2] = ((x + y + 3*i) // 2) % 256
    a = a // 2 + rng_noise
    s = max(8, h // 8)
    py, px = (i * 3) % (h - s), (i * 5) % (w - s)
    a[py:py+s, px:px+s] = (255, 255, 255)
    cy, cx = h//2 + int(h/4*np.sin(i/9)), w//2 + int(w/4*np.cos(i/11))
    a[(y-cy)**2 + (x-cx)**2 < (s//2)**2] = (200, 30, 30)
    return a

def _encode(fn, codec, n, w=320, h=240, fps=25, pix_fmt='yuv420p', options=None, pts=None, time_base=None, bit_rate=None,
            fmt=None):
    "Encode `n` synthetic frames with PyAV's `codec` into `fn` (`pts`: explicit timestamps in `time_base`, for variable rate)"
    tmp = fn.with_name(fn.stem + '.part' + fn.suffix)
    noise = np.random.default_rng(0).integers(0, 24, (h, w, 3), dtype=np.uint8)
    with av.open(str(tmp), 'w', format=fmt) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if options: s.options = options
        if bit_rate: s.bit_rate = bit_rate
        if time_base is not None: s.codec_context.time_base = time_base; s.time_base = time_base
        for i in range(n):
            f = av.VideoFrame.from_ndarray(_frame(i, w, h, noise), format='rgb24')
            if pts is not None: f.pts, f.time_base = int(pts[i]), time_base
            for p in s.encode(f): c.mux(p)
        for p in s.encode(): c.mux(p)
    tmp.rename(fn)

def _ffmpeg(*args):
    subprocess.run(['ffmpeg', '-y', '-v', 'error', *map(str, args)], check=True)

def _vfr_pts(n):
    "Timestamps (ms) of a variable-frame-rate clip: stretches at 30, 15 and 60 fps and irregular gaps, as phones record"
    rng, t, out = np.random.default_rng(1), 0, []
    for i in range(n):
        out.append(t)
        t += (33 if i < n//3 else 67 if i < n//2 else 17) + int(rng.integers(0, 6))
    return out

# name: (what it is, needs ffmpeg, recipe(path, dir))
RECIPES = {
    'h264_gop12.mp4': ("H.264, GOP 12 with B-frames, 320x240, 300 frames", False,
                       lambda p, d: _encode(p, 'libx264', 300, options={'g': '12', 'bf': '2', 'preset': 'veryfast'})),
    'h264_gop250.mp4': ("H.264, GOP 250 (x264's default) with B-frames, 320x240, 600 frames", False,
                        lambda p, d: _encode(p, 'libx264', 600, options={'g': '250', 'bf': '3', 'preset': 'veryfast'})),
    'hevc.mp4': ("HEVC (x265, its default GOP), 320x240, 300 frames", False,
                 lambda p, d: _encode(p, 'libx265', 300, options={'preset': 'ultrafast', 'x265-params': 'log-level=error'})),
    'av1.mp4': ("AV1 (SVT-AV1, keyframe every 64), 320x240, 240 frames", False,
                lambda p, d: _encode(p, 'libsvtav1', 240, options={'preset': '12', 'g': '64'})),
    'vp8.webm': ("VP8 in WebM (libvpx, keyframe every 60, alt-ref frames), 320x240, 480 frames", False,
                 lambda p, d: _encode(p, 'libvpx', 480, bit_rate=600_000,
                                      options={'g': '60', 'auto-alt-ref': '1', 'lag-in-frames': '16', 'deadline': 'realtime', 'cpu-used': '8'})),
    'vp9.webm': ("VP9 in WebM (libvpx-vp9, keyframe every 60), 320x240, 300 frames", False,
                 lambda p, d: _encode(p, 'libvpx-vp9', 300, bit_rate=600_000,
                                      options={'g': '60', 'deadline': 'realtime', 'cpu-used': '8', 'row-mt': '1'})),
    'mpeg4_bframes.avi': ("MPEG-4 Part 2 in AVI with B-frames (packed), GOP 12, 320x240, 300 frames", False,
                          lambda p, d: _encode(p, 'mpeg4', 300, bit_rate=800_000, options={'g': '12', 'bf': '2'})),
    'mpeg4_nob.avi': ("MPEG-4 Part 2 in AVI without B-frames, GOP 12, 320x240, 300 frames", False,
                      lambda p, d: _encode(p, 'mpeg4', 300, bit_rate=800_000, options={'g': '12'})),
    'mjpeg.avi': ("MJPEG in AVI (every frame a keyframe), 320x240, 200 frames", False,
                  lambda p, d: _encode(p, 'mjpeg', 200, pix_fmt='yuvj420p', options={'q:v': '4'})),
    'vfr.mp4': ("H.264, variable frame rate (15/30/60 fps stretches, jittered), GOP 30, 320x240, 300 frames", False,
                lambda p, d: _encode(p, 'libx264', 300, options={'g': '30', 'bf': '2', 'preset': 'veryfast'},
                                     pts=_vfr_pts(300), time_base=Fraction(1, 1000))),
    'h264_10bit.mp4': ("H.264 High 10 (yuv420p10le), GOP 25, 320x240, 250 frames", False,
                       lambda p, d: _encode(p, 'libx264', 250, pix_fmt='yuv420p10le', options={'g': '25', 'bf': '2', 'preset': 'veryfast'})),
    'hevc_10bit.mp4': ("HEVC Main 10 (yuv420p10le), 320x240, 250 frames", False,
                       lambda p, d: _encode(p, 'libx265', 250, pix_fmt='yuv420p10le',
                                            options={'preset': 'ultrafast', 'x265-params': 'log-level=error:keyint=50'})),
    'h264_1080p.mp4': ("H.264, 1920x1080, GOP 50, 150 frames", False,
                       lambda p, d: _encode(p, 'libx264', 150, w=1920, h=1080, options={'g': '50', 'bf': '2', 'preset': 'ultrafast'})),
    'rotated90.mp4': ("H.264, 320x240 stored, display matrix 90 degrees (a phone clip), 250 frames", True,
                      lambda p, d: _rotated(p, d, 90)),
    'two_streams.mp4': ("MP4 with two video streams: 320x180 first, 480x270 second (FFmpeg picks the second), 250 frames", True,
                        lambda p, d: _two_streams(p, d)),
}

def _rotated(p, d, deg):
    src = d/'_rot_src.mp4'
    _encode(src, 'libx264', 250, options={'g': '50', 'bf': '2', 'preset': 'veryfast'})
    # FFmpeg 5.1's MP4 muxer writes a `rotate` tag as the track's display matrix
    _ffmpeg('-i', src, '-c', 'copy', '-metadata:s:v:0', f'rotate={deg}', p)
    src.unlink()

def _two_streams(p, d):
    a, b = d/'_two_a.mp4', d/'_two_b.mp4'
    _encode(a, 'libx264', 250, w=320, h=180, options={'g': '50', 'preset': 'veryfast'})
    _encode(b, 'libx264', 250, w=480, h=270, options={'g': '50', 'preset': 'veryfast'})
    _ffmpeg('-i', a, '-i', b, '-map', '0:v', '-map', '1:v', '-c', 'copy', p)
    a.unlink(); b.unlink()

def install_ffmpeg() -> bool:
    "Try `apt-get install -y ffmpeg` (the benchmark's setup, never the package's); True if `ffmpeg` is then on the PATH"
    if shutil.which('ffmpeg'): return True
    try: subprocess.run(['apt-get', 'install', '-y', 'ffmpeg'], check=True, capture_output=True, timeout=600)
    except Exception as e: print(f"apt-get install -y ffmpeg failed ({type(e).__name__}); files needing it are skipped", file=sys.stderr)
    return shutil.which('ffmpeg') is not None

def make_corpus(d=DEFAULT_DIR, install=False, verbose=True) -> tuple:
    "Make the missing corpus files in `d`: `(files made or cached, {name: why it is missing})`"
    d = Path(d)/f'v{VERSION}'
    d.mkdir(parents=True, exist_ok=True)
    have_ffmpeg = install_ffmpeg() if install else shutil.which('ffmpeg') is not None
    files, missing = [], {}
    for name, (what, needs_ffmpeg, recipe) in RECIPES.items():
        p = d/name
        if not p.exists():
            if needs_ffmpeg and not have_ffmpeg:
                missing[name] = "needs Debian's `ffmpeg` (apt-get install -y ffmpeg, or --install-ffmpeg)"; continue
            if verbose: print(f"making {p} ...", file=sys.stderr)
            try: recipe(p, d)
            except Exception as e:
                missing[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"; continue
        files.append(p)
    return files, missing

def describe(fn) -> str:
    "What `fn` holds, read back with PyAV: codec, size, pixel format, frames (a full decode), keyframes, rotation, streams"
    with av.open(str(fn)) as c:
        vs = c.streams.video
        s = c.streams.best('video') if len(vs) > 1 else vs[0]
        n = keys = 0; rot = 0
        for f in c.decode(s):
            n += 1; keys += f.key_frame
            if n == 1: rot = int(round(getattr(f, 'rotation', 0) or 0))
        return (f"{s.codec_context.name} {s.width}x{s.height} {s.codec_context.pix_fmt}, {n} frames, {keys} keyframes"
                + (f", rotation {rot}" if rot else '') + (f", {len(vs)} video streams (best: #{s.index})" if len(vs) > 1 else ''))

def corpus_files(d=DEFAULT_DIR, install=False, shared=True, verbose=True) -> tuple:
    "The benchmark's files: the made corpus (made now if missing) and the shared clips; and `{name: why missing}`"
    files, missing = make_corpus(d, install, verbose)
    return (shared_videos() if shared else []) + files, missing

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--corpus', default=str(DEFAULT_DIR), help="cache folder of the made files (not in the repository)")
    ap.add_argument('--install-ffmpeg', action='store_true', help="apt-get install -y ffmpeg first")
    a = ap.parse_args()
    files, missing = corpus_files(a.corpus, a.install_ffmpeg)
    for f in files: print(f"{f.name}: {describe(f)}")
    for k, v in missing.items(): print(f"MISSING {k}: {v}")
