"Sequence types: `ImageTuple` (frames as PIL images), `ImageSeq` (a `(T,C,H,W)` tensor), `Path.ls_sorted`, strips and GIFs"
from __future__ import annotations
import os, re
from pathlib import Path
import numpy as np, torch
from PIL import Image
from torch import Tensor
from fastcore.basics import fastuple, patch, listify
from fastcore.foundation import L
from fastai.torch_core import TensorImage, TensorImageBW, TensorBase, show_image
from fastai.data.transforms import image_extensions
from fastai.vision.core import PILImage, PILImageBW, image2tensor

__all__ = ['fast_mode', 'natural_key', 'ls_sorted', 'ImageTuple', 'ImageSeq', 'ImageSeqBW', 'frames_strip', 'show_frames', 'save_gif',
           'SeqError', 'VIDEO_EXTS']

ON_ERROR = ('raise', 'skip')  # what a loader does with an item it cannot read: `on_error=` of the blocks and annotations

def fast_mode() -> bool:
    "True when `FASTAI_SEQ_FAST` is set (to anything but 0/false): tiny data and short training, for tests, CI and tutorials"
    return os.environ.get('FASTAI_SEQ_FAST', '').lower() not in ('', '0', 'false', 'no')

class SeqError(ValueError):
    "A sequence source that cannot be read: the message names the file and says what to do"

def natural_key(name:str) -> list:
    "Sort key putting '2.jpg' before '10.jpg'; names without numbers sort by name"
    # `re.split` with a capture group alternates text (even positions) and digits (odd): a comparison never mixes types
    return [int(t) if i%2 else t.lower() for i,t in enumerate(re.split(r'(\d+)', str(name)))]

def ls_sorted(
    path, # A folder
    extensions:set|list=None, # Only files with these suffixes (any case), e.g. `image_extensions`; None for all
    hidden:bool=False, # Include names starting with '.'
) -> L:
    "The files of folder `path` in natural order (`2.jpg` before `10.jpg`), optionally only those with `extensions`"
    # The library calls this function, never `Path.ls_sorted`: a user's own `@patch def ls_sorted(self)` (the UCF101
    # tutorial has one) replaces the method, not this
    path = Path(path)
    if not path.is_dir(): raise SeqError(f"{path}: not a folder; ls_sorted lists the files of a folder.")
    exts = None if extensions is None else {e.lower() for e in listify(extensions)}
    fs = [p for p in path.iterdir() if p.is_file() and (hidden or not p.name.startswith('.'))
          and (exts is None or p.suffix.lower() in exts)]
    return L(sorted(fs, key=lambda p: (natural_key(p.name), p.name)))

# `Path.ls_sorted` is added in `fastai_patches.py`

def to_uint8_hwc(
    img, # One frame: a PIL image, a `(C,H,W)` tensor, or an `(H,W[,C])` or `(C,H,W)` array; float in [0,1] or ints in [0,255]
    keep_channel:bool=True, # One-channel frames as `(H,W,1)` (True) or `(H,W)`, as `PIL.Image.fromarray` takes them (False)
) -> np.ndarray:
    "One frame as a uint8 `(H,W,C)` array (values outside [0,1] or [0,255] clipped)"
    if isinstance(img, Image.Image): a = np.asarray(img)
    elif isinstance(img, Tensor):  # fastai's layout: a 3-dim tensor is channel-first
        t = img.detach().cpu()
        if t.ndim==3: t = t.permute(1,2,0)
        a = (t.float().clamp(0,1)*255).round().byte().numpy() if t.is_floating_point() else t.clamp(0,255).byte().numpy()
    else:
        a = np.asarray(img)
        if a.ndim==3 and a.shape[0] in (1,3) and a.shape[-1] not in (1,3): a = a.transpose(1,2,0)  # a channel-first array
        if a.dtype.kind=='f': a = (np.clip(a, 0, 1)*255).round().astype(np.uint8)
        elif a.dtype!=np.uint8: a = np.clip(a, 0, 255).astype(np.uint8)
    if keep_channel: return a[...,None] if a.ndim==2 else a
    return a[...,0] if a.ndim==3 and a.shape[-1]==1 else a


def frames_strip(frames, max_frames:int=8, gap:int=2) -> np.ndarray:
    "Frames side by side in one uint8 `(H,W,C)` image, `max_frames` evenly spaced ones at most, `gap` white pixels apart"
    n = len(frames)
    idxs = np.linspace(0, n-1, min(n, max_frames)).round().astype(int) if max_frames and n>max_frames else range(n)
    imgs = [to_uint8_hwc(frames[i]) for i in idxs]
    c = max(i.shape[2] for i in imgs)
    imgs = [np.repeat(i, c, 2) if i.shape[2]!=c else i for i in imgs]
    h = max(i.shape[0] for i in imgs)
    sep = np.full((h, gap, c), 255, np.uint8)
    parts = []
    for i,im in enumerate(imgs):
        if i: parts.append(sep)
        parts.append(np.pad(im, ((0,h-im.shape[0]),(0,0),(0,0)), constant_values=255))
    return np.concatenate(parts, axis=1)

def show_frames(frames, ctx=None, max_frames:int=8, title:str=None, figsize=None, cmap=None, **kwargs):
    "Draw `frames` as one strip on `ctx` (a new axis when None) and return it"
    strip = frames_strip(frames, max_frames)
    if strip.shape[2]==1: strip, cmap = strip[...,0], cmap or 'gray'
    if figsize is None and ctx is None: figsize = (min(2*min(len(frames), max_frames), 16), 2.5)
    kwargs.pop('vmin', None); kwargs.pop('vmax', None)
    return show_image(strip, ctx=ctx, title=title, figsize=figsize, cmap=cmap, vmin=0, vmax=255, **kwargs)

def save_gif(seq, fn, fps:float=5, loop:int=0, scale:int=1, min_size:int=None):
    "Write the frames of `seq` (`(T,C,H,W)` tensor, array or list of images) to `fn` (a path or a binary file) as an animated GIF"
    frames = [to_uint8_hwc(f) for f in seq]
    imgs = [Image.fromarray(f[...,0] if f.shape[2]==1 else f[...,:3]) for f in frames]
    if min_size: scale = max(scale, min_size // max(imgs[0].size))   # small frames: a whole factor up to about `min_size`
    if scale!=1: imgs = [i.resize((i.width*scale, i.height*scale), Image.NEAREST) for i in imgs]
    if isinstance(fn, (str, Path)):
        fn = Path(fn)
        fn.parent.mkdir(parents=True, exist_ok=True)
    imgs[0].save(fn, format='GIF', save_all=True, append_images=imgs[1:], duration=int(round(1000/fps)), loop=loop)
    return fn

class ImageTuple(fastuple):
    "The item-level form of a sequence: a tuple of frames (`PILImage`s; tensors after `ToTensor`); item transforms use one set of random parameters for all"
    @classmethod
    def create(cls, frames, img_cls=PILImage):
        "From PIL images, arrays or image paths"
        return cls(f if isinstance(f, Image.Image) else img_cls.create(f) for f in frames)

    @property
    def size(self):
        "`(w,h)` of the frames, like `PIL.Image.size`: what fastai's item transforms read"
        f = self[0]
        return f.size if isinstance(f, Image.Image) else (f.shape[-1], f.shape[-2])

    def show(self, ctx=None, max_frames:int=8, **kwargs):
        "Draw the frames side by side (evenly spaced ones if there are more than `max_frames`)"
        return show_frames(list(self), ctx=ctx, max_frames=max_frames, **kwargs)

# The extensions read as video files, everywhere in the package (`get_video_files`, `VideoBlock`, `ImageSeq.create`, ...)
VIDEO_EXTS = {'.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v', '.mpg', '.mpeg', '.wmv', '.flv', '.3gp', '.ogv', '.m2ts', '.asf'}

def _frames_from_array(a:Tensor) -> Tensor:
    "`(T,H,W)`, `(T,C,H,W)` or `(T,H,W,C)` to `(T,C,H,W)`"
    if a.ndim==3: return a[:,None]
    if a.ndim!=4: raise SeqError(f"A sequence array needs 3 or 4 dims ((T,H,W), (T,C,H,W) or (T,H,W,C)), got {tuple(a.shape)}")
    if a.shape[1] in (1,3,4): return a
    if a.shape[-1] in (1,3,4): return a.permute(0,3,1,2)
    raise SeqError(f"Cannot tell the channel axis of an array of shape {tuple(a.shape)}: give (T,C,H,W) with C in 1, 3, 4.")

def _load_frame(f, pil_cls):
    "One image file or image object as a `(C,H,W)` uint8 tensor"
    try: return image2tensor(f if isinstance(f, Image.Image) else pil_cls.create(f))
    except Exception as e: raise SeqError(f"{f}: cannot read this frame image ({type(e).__name__}: {e}). "
                                          "Remove or replace the file.") from e

class ImageSeq(TensorImage):
    "A sequence of frames as a `(T,C,H,W)` tensor; a batch of them `(B,T,C,H,W)` keeps the type"
    _show_args = {}
    _pil_cls = PILImage

    @classmethod
    def create(cls, x, cl_type=None, **kwargs):
        "From a `(T,H,W)`/`(T,C,H,W)`/`(T,H,W,C)` tensor or array, a list of images/tensors/paths, a frame folder or a video file"
        # `cl_type` (positional too, as the fastai tutorial's `ImageSeq.create(x, TensorImageBW)`): the frame type;
        # single-channel frame types give an `ImageSeqBW`, which shows with a grey colour map
        if cl_type is not None:
            if not isinstance(cl_type, type):
                raise TypeError(f"ImageSeq.create: cl_type is the frame type (e.g. TensorImageBW, TensorImage), got {cl_type!r}")
            if issubclass(cl_type, (TensorImageBW, PILImageBW)) and not issubclass(cls, ImageSeqBW): cls = ImageSeqBW
        if isinstance(x, (Tensor, np.ndarray)): return cls(_frames_from_array(torch.as_tensor(x)))
        if isinstance(x, (str, Path)):
            p = Path(x)
            if p.is_dir():
                fs = ls_sorted(p, extensions=image_extensions)
                if not fs: raise SeqError(f"{p}: this frame folder holds no images ({', '.join(sorted(image_extensions)[:6])}, ...).")
                return cls.create(list(fs), **kwargs)
            if p.suffix.lower() in VIDEO_EXTS or p.is_file():
                from .video import read_frames  # core sits above video.py: imported here, when a video is asked for
                a = torch.from_numpy(read_frames(p, **kwargs))
                return cls(_frames_from_array(a))
            raise SeqError(f"{p}: no such file or folder.")
        frames = list(x)
        if not frames: raise SeqError("Cannot make an ImageSeq from an empty list of frames.")
        ts = [_load_frame(f, cls._pil_cls) if isinstance(f, (str, Path, Image.Image)) else torch.as_tensor(f) for f in frames]
        ts = [t[None] if t.ndim==2 else t for t in ts]
        shapes = {tuple(t.shape) for t in ts}
        if len(shapes)>1: raise SeqError(f"Frames of different shapes {sorted(shapes)[:3]}: Resize them to one size first.")
        return cls(torch.stack(ts))

    def show(self, ctx=None, max_frames:int=8, **kwargs):
        "Draw the sequence as a strip of frames (for a batch, its first sequence)"
        x = self if self.ndim==4 else self[0]
        return show_frames(TensorBase(x), ctx=ctx, max_frames=max_frames, **{**self._show_args, **kwargs})

    def to_gif(self, fn, fps:float=5, **kwargs):
        "Write this sequence to `fn` as an animated GIF"
        return save_gif(TensorBase(self if self.ndim==4 else self[0]), fn, fps=fps, **kwargs)

class ImageSeqBW(ImageSeq):
    "An `ImageSeq` of single-channel frames, shown with a grey colour map"
    _pil_cls = PILImageBW
    _show_args = {'cmap': 'gray'}
