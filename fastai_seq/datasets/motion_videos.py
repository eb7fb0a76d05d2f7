"Generated motion videos: real video files whose class is the direction of motion (`make_moving_videos`)"
from __future__ import annotations
from fractions import Fraction
from pathlib import Path
import numpy as np
from .mnist import embedded_digits, load_mnist_digits, as_digits
from .moving_mnist import paste_digits

__all__ = ['MOTIONS', 'make_moving_videos']

# ------------------------------------------------------------------------------------------------------- motion videos
MOTIONS = {'left':(0,-1), 'right':(0,1), 'up':(-1,0), 'down':(1,0),
           'up_left':(-1,-1), 'up_right':(-1,1), 'down_left':(1,-1), 'down_right':(1,1)}

_ENCODERS = {'h264':('libx264', 'h264'), 'hevc':('libx265', 'hevc'), 'h265':('libx265', 'hevc'),
             'vp8':('libvpx',), 'vp9':('libvpx-vp9',), 'av1':('libaom-av1', 'libsvtav1', 'librav1e')}
_COMMON_ENCODERS = ('libx264', 'libx265', 'mpeg4', 'libvpx', 'libvpx-vp9', 'mjpeg', 'ffv1', 'libaom-av1', 'png', 'rawvideo')

def _encoder(codec:str) -> str:
    "The name of an FFmpeg encoder for `codec` in PyAV's build, or a clear error listing the ones there are"
    import av
    names = _ENCODERS.get(codec.lower(), (codec,))
    for nm in names:
        try:
            if av.codec.Codec(nm, 'w').type=='video': return nm
        except Exception: pass
    have = []
    for nm in _COMMON_ENCODERS:
        try: av.Codec(nm, 'w'); have.append(nm)
        except Exception: pass
    raise ValueError(f"codec {codec!r}: this PyAV/FFmpeg build has no video encoder for it (tried {list(names)}). "
                     f"Encoders it has include {have}: e.g. codec='mpeg4', ext='.avi'.")

def _motion_positions(rng, n:int, T:int, dirs:np.ndarray, travel:np.ndarray, speed:tuple) -> np.ndarray:
    "Float positions `(n,T,2)` moving by `dirs*s` a frame and never leaving `[0,travel]` `(n,2)`, with class-free single frames"
    # Along a moving axis, p_t = p0 + d*s*t with p0 uniform where the whole path fits. A still axis takes the position of
    # a random frame of such a path (another speed, a random frame t'), so that pooled over frames every axis, moving or
    # not, has the same distribution for every class: only the change from frame to frame tells the direction.
    t = np.arange(T, dtype=float)[None, :, None]
    s = rng.uniform(*speed, (n, 1, 2))
    ext = s*(T-1)
    p0 = rng.random((n, 1, 2))*(travel[:, None]-ext)
    d = dirs[:, None, :].astype(float)
    moving = p0 + np.where(d<0, ext - s*t, s*t)
    still = p0 + s*rng.integers(0, T, (n, 1, 2))
    return np.where(d!=0, moving, still)

def _write_video(fn:Path, frames:np.ndarray, encoder:str, fps:int, crf:int):
    "Write uint8 gray frames `(T,H,W)` to `fn` with PyAV as yuv420p, byte-identical for identical frames"
    import av
    try:
        with av.open(str(fn), 'w') as c:
            rate = Fraction(fps).limit_denominator(1001)
            st = c.add_stream(encoder, rate=rate)
            st.width,st.height,st.pix_fmt = frames.shape[2], frames.shape[1], 'yuv420p'
            st.codec_context.thread_count = 1   # reproducible bytes; frames this small gain nothing from threads
            # x264's macroblock tree reads unset memory on frames this small: without `mbtree=0` the files differ run to run
            if encoder=='libx264': st.options = {'crf': str(crf), 'preset': 'veryfast', 'x264-params': 'mbtree=0'}
            elif encoder=='libx265': st.options = {'crf': str(crf), 'preset': 'veryfast'}
            else: st.bit_rate = int(frames.shape[1]*frames.shape[2]*fps*4)   # ~4 bits a pixel: near-lossless at these sizes
            ys = np.round(16+frames.astype(np.float32)*(219/255)).astype(np.uint8)   # gray to limited-range luma
            uv = np.full((frames.shape[1]//2, frames.shape[2]), 128, np.uint8)      # neutral chroma: U then V planes
            for i,y in enumerate(ys):
                vf = av.VideoFrame.from_ndarray(np.concatenate([y, uv]), format='yuv420p')
                vf.pts,vf.time_base = i,1/rate
                for p in st.encode(vf): c.mux(p)
            for p in st.encode(): c.mux(p)
    except Exception as e:
        raise ValueError(f"{fn}: could not write it with encoder {encoder!r} ({type(e).__name__}: {e}). The container "
                         f"{fn.suffix!r} may not take this codec: try codec='h264', ext='.mp4' or codec='mpeg4', ext='.avi'.") from e

def _motion_clips(n_per_class:int, n_frames:int, size:int, classes:list, digits, speed:tuple, noise:float, names:str,
                  clips_per_group:int, seed:int) -> dict:
    "The frames `(n,T,size,size)` uint8 of the clips `make_moving_videos` writes, their class indices, names, digits and positions"
    bad = [c for c in classes if c not in MOTIONS]
    if bad: raise ValueError(f"Unknown motion classes {bad}: use keys of MOTIONS {list(MOTIONS)}.")
    if names not in ('class', 'ucf'): raise ValueError(f"names must be 'class' or 'ucf', got {names!r}")
    if n_frames<2: raise ValueError(f"n_frames must be >= 2 to show any motion, got {n_frames}")
    digs = embedded_digits() if digits is None else (load_mnist_digits(digits) if isinstance(digits, (str, Path)) else as_digits(digits))
    h,w = digs.shape[1:]
    if speed[0]<=0 or speed[1]<speed[0]: raise ValueError(f"speed must be a range (lo, hi) with 0 < lo <= hi, got {speed}")
    if speed[1]*(n_frames-1)>size-max(h, w):
        raise ValueError(f"A digit at {speed[1]} px/frame for {n_frames} frames travels {speed[1]*(n_frames-1):g} px, more than the "
                         f"{size-max(h, w)} px a {h}x{w} digit has in {size}x{size} frames: lower speed or n_frames, or raise size.")
    rng = np.random.default_rng(seed)
    n = n_per_class*len(classes)
    cls_i = np.repeat(np.arange(len(classes)), n_per_class)
    clip_i = np.tile(np.arange(n_per_class), len(classes))
    group = clip_i//clips_per_group
    dirs = np.array([MOTIONS[c] for c in classes])[cls_i]
    if names=='ucf':   # a group shares its digit, like UCF101 clips cut from one video
        idx = rng.integers(0, len(digs), (len(classes), group.max()+1))[cls_i, group]
    else: idx = rng.integers(0, len(digs), n)
    # The digit's ink, not its empty margin, must stay in the frame: each clip moves within the room its ink box leaves
    ink_r,ink_c = digs[idx].max(2)>0, digs[idx].max(1)>0
    first = np.stack([ink_r.argmax(1), ink_c.argmax(1)], -1)                              # (n,2) top, left of the ink
    last = np.stack([h-1-ink_r[:, ::-1].argmax(1), w-1-ink_c[:, ::-1].argmax(1)], -1)     # bottom, right
    travel = (size-(last-first+1)).astype(float)
    ink = _motion_positions(rng, n, n_frames, dirs, travel, speed)                         # top-left of the ink box
    pos = np.floor(ink+0.5).astype(np.intp).clip(0, travel.astype(np.intp)[:, None])-first[:, None]   # of the digit image
    m = int(max(first.max(), (np.array([h-1, w-1])-last).max()))   # render with a margin for the image's empty part, then crop
    big = paste_digits(np.zeros((n, n_frames, size+2*m, size+2*m), np.uint8), digs, idx[:, None], (pos+m)[:, :, None])
    frames = big[:, :, m:m+size, m:m+size]
    level = rng.uniform(0.7, 1.0, (n, 1, 1, 1)).astype(np.float32)   # digit brightness, per clip
    bg = rng.uniform(0, 30, (n, 1, 1, 1)).astype(np.float32)          # background level, per clip
    f = frames*level
    np.maximum(f, bg, out=f)
    f += rng.standard_normal(f.shape, dtype=np.float32)*np.float32(noise)
    frames = np.clip(np.rint(f, out=f), 0, 255, out=f).astype(np.uint8)
    fnames = [f"v_{''.join(p.title() for p in classes[c].split('_'))}_g{g+1:02d}_c{i%clips_per_group+1:02d}" if names=='ucf'
              else f"{classes[c]}_{i}" for c,g,i in zip(cls_i, group, clip_i)]
    return dict(frames=frames, cls=cls_i, names=fnames, idx=idx, pos=pos)

def make_moving_videos(
    dest:str|Path, # Folder to write `dest/<class>/<name><ext>` into
    n_per_class:int=24, # Clips per class
    n_frames:int=16, # Frames per clip
    size:int=64, # Height and width of the frames (even, for yuv420p)
    classes=('left','right','up','down'), # Directions of motion: keys of `MOTIONS`
    digits=None, # Digit images or a path as for `MovingMNIST`; None: the embedded offline digits
    fps:float=25, # Frame rate written in the files
    codec:str='h264', # A codec ('h264', 'hevc', 'vp9', ...) or an FFmpeg encoder name ('libx264', 'mpeg4', ...)
    ext:str='.mp4', # Container, by extension ('.mp4', '.avi', '.mkv', ...)
    speed:tuple=(0.5, 1.0), # Range of the pixels per frame along each moving axis, drawn per clip
    noise:float=10., # Standard deviation of the gaussian noise on every frame, in gray levels
    names:str='class', # 'class': `<class>_<i>`; 'ucf': UCF101-like `v_<Class>_gXX_cYY` (the clips of a group share their digit)
    clips_per_group:int=4, # Clips per group with `names='ucf'`
    crf:int=18, # Quality of libx264/libx265 (lower is better; 18 looks like the source)
    seed:int=0, # Seeds everything drawn: the same files for the same seed
) -> Path:
    "Write a folder-per-class set of real video files of a digit moving in each class's direction; a single frame cannot tell the class"
    dest,classes = Path(dest),list(classes)
    if size%2: raise ValueError(f"size must be even for yuv420p video, got {size}.")
    if not ext.startswith('.'): ext = '.'+ext
    encoder = _encoder(codec)
    clips = _motion_clips(n_per_class, n_frames, size, classes, digits, speed, noise, names, clips_per_group, seed)
    for fr,c,name in zip(clips['frames'], clips['cls'], clips['names']):
        fn = dest/classes[c]/f'{name}{ext}'
        fn.parent.mkdir(parents=True, exist_ok=True)
        _write_video(fn, fr, encoder, fps, crf)
    return dest
