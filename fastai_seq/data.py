"Blocks for sequences: `SeqBlock`, `VideoBlock`, frame samplers, sequence-aware batch transforms, `SeqSplit`, `show_batch`"
from __future__ import annotations
import gc, json, os, random, tempfile, uuid, warnings, weakref
from functools import partial
from pathlib import Path
import numpy as np, torch
import torch.nn.functional as F
from torch import Tensor
from PIL import Image
from fastcore.basics import store_attr, patch, listify
from fasttransform import Transform, ItemTransform
from fastcore.foundation import L
from fastai.imports import dispatch
from fastai.torch_core import TensorImage, TensorBase, TensorCategory
from fastai.vision.core import TensorBBox, TensorPoint
from fastai.data.block import TransformBlock
from fastai.data.transforms import IntToFloatTensor, ToTensor, image_extensions
from fastai.data.core import get_show_batch_func, TfmdDL
from fastai.data.load import SkipItemException, DataLoader
from fastai.vision.core import PILImage, PILImageBW
from fastai.vision.augment import RandTransform, PadMode, Resize, affine_grid
from fastai.vision.data import get_grid
from .core import ImageTuple, ImageSeq, ImageSeqBW, SeqError, ls_sorted, to_uint8_hwc, VIDEO_EXTS, ON_ERROR
from .video import read_frames, video_info, VideoError, index_videos, LIBRARY_ERRORS
from ._utils import too_many_pixels

__all__ = ['SAMPLERS', 'SHORT_POLICIES', 'ON_ERROR', 'MAX_PIXELS', 'sample_indices', 'clip_indices', 'SkippedItem',
           'SkippedItemWarning', 'SkipLog', 'LoadFrames', 'StackFrames', 'IntToFloatSeq', 'SeqDL', 'SeqBlock', 'VideoBlock',
           'SeqSplit', 'seq_frames_count', 'leading_resize', 'find_load_frames', 'show_strip_rows', 'show_batch']

SAMPLERS = ('uniform', 'random', 'first', 'all', 'auto')
SHORT_POLICIES = ('loop', 'pad', 'error')
MAX_PIXELS = 8192*8192  # default per-frame limit (width*height) read from a video's stream header or an image's header

def sample_indices(
    n_total:int, # Frames in the clip
    n_frames:int|None, # Frames wanted; None for all
    sampler:str='uniform', # 'uniform', 'random', 'first' or 'all' ('auto' is resolved by the caller)
    stride:int=1, # Step between consecutive frames of a 'random' or 'first' window
    short:str='loop', # What a clip with fewer than `n_frames` frames gets: 'loop', 'pad' or 'error'
    fn=None, # The source, named in errors
    rng:random.Random=None, # Random generator for the 'random' sampler (default: the `random` module)
) -> list:
    "Frame indices of a clip of `n_total` frames: sorted (but for looping), in range, `n_frames` of them"
    if sampler not in SAMPLERS or sampler=='auto':
        raise ValueError(f"sampler must be one of {SAMPLERS[:-1]} here ('auto' picks by split), got {sampler!r}")
    if short not in SHORT_POLICIES: raise ValueError(f"short must be one of {SHORT_POLICIES}, got {short!r}")
    if n_total<1: raise SeqError(f"{fn or 'sequence'}: has no frames.")
    if sampler=='all' or n_frames is None: return list(range(n_total))
    if n_total<n_frames:
        if short=='error': raise SeqError(f"{fn or 'sequence'}: has {n_total} frames, fewer than the n_frames={n_frames} asked. "
                                          "Use short='loop' or 'pad', lower n_frames, or remove the clip.")
        if short=='loop': return [i%n_total for i in range(n_frames)]
        return list(range(n_total)) + [n_total-1]*(n_frames-n_total)
    if sampler=='uniform':  # spans the clip from first to last frame; a single frame is the middle one
        return [(n_total-1)//2] if n_frames==1 else np.linspace(0, n_total-1, n_frames).round().astype(int).tolist()
    stride = max(1, min(stride, (n_total-1)//max(n_frames-1, 1)))  # shrink the stride until the window fits
    span = (n_frames-1)*stride+1
    start = 0 if sampler=='first' else (rng or random).randint(0, n_total-span)
    return list(range(start, start+span, stride))

def clip_indices(
    n_total:int, # Frames in the clip
    n_frames:int, # Frames per clip
    k:int, # Which clip
    n_clips:int, # How many clips are spread over the video
    sampler:str='uniform', # 'uniform'/'all': evenly spaced frames shifted by k/n_clips of a step; else consecutive windows
    stride:int=1, # Step between the frames of a window
    short:str='loop', # Policy for clips shorter than `n_frames`
    fn=None, # The source, named in errors
) -> list:
    "Frame indices of the `k`-th of `n_clips` clips spread evenly over a video, for multi-clip evaluation"
    if not 0<=k<n_clips: raise ValueError(f"clip index {k} out of range for n_clips={n_clips}")
    if n_frames is None or n_total<n_frames: return sample_indices(n_total, n_frames, 'first', stride, short, fn)
    if sampler in ('uniform', 'all'):
        return np.minimum(((np.arange(n_frames)+(k+0.5)/n_clips)*n_total/n_frames).astype(int), n_total-1).tolist()
    stride = max(1, min(stride, (n_total-1)//max(n_frames-1, 1)))
    span = (n_frames-1)*stride+1
    start = int(round(k*(n_total-span)/max(n_clips-1, 1)))
    return list(range(start, start+span, stride))

def _is_video(p) -> bool: return isinstance(p, (str, Path)) and Path(p).suffix.lower() in VIDEO_EXTS

def _frame_files(p:Path) -> L:
    "The image files of frame folder `p`, in natural order, with an error when there are none"
    if not p.is_dir(): raise SeqError(f"{p}: no such frame folder.")
    fs = ls_sorted(p, extensions=image_extensions)
    if not fs: raise SeqError(f"{p}: this frame folder holds no images. Remove it or fill it with frame images.")
    return fs

def seq_frames_count(o) -> int:
    "Number of frames of a sequence source (video file, frame folder, list of frames or array)"
    if _is_video(o): return video_info(o).n_frames
    if isinstance(o, (str, Path)): return len(_frame_files(Path(o)))
    return len(o)

# ---- Bad input: `on_error='skip'` ----
# A broken item under `on_error='skip'` raises `SkippedItem` (a fastai `SkipItemException`): `SeqDL`, the loader of
# `SeqBlock`/`VideoBlock`, replaces it by the next loadable item of the dataset, so batches stay full and labels stay
# with their inputs; any other fastai `DataLoader` drops it. Every skip is appended to a `SkipLog`, a file shared by
# the copies of the transform that DataLoader workers hold, so the main process can count them and `SeqDL` warns once
# per pass over the data with the number of items skipped and their files.

class SkippedItem(SkipItemException):
    "An item that could not be loaded under `on_error='skip'`; the message names the file and the problem"

class SkippedItemWarning(UserWarning):
    "Warns about items skipped under `on_error='skip'`"

def _rm_file(fn:str, pid:int):
    if os.getpid()==pid:  # only the process that made the log removes it, never a DataLoader worker's copy
        try: os.unlink(fn)
        except OSError: pass

class SkipLog:
    "Messages of skipped items, shared across processes (DataLoader workers) through an append-only file"
    def __init__(self):
        self.fn = os.path.join(tempfile.gettempdir(), f'fastai_seq_skipped_{os.getpid()}_{uuid.uuid4().hex[:12]}.jsonl')
        self._fin = weakref.finalize(self, _rm_file, self.fn, os.getpid())

    def __getstate__(self): return {'fn': self.fn}  # pickled copies (spawned workers, exported learners) share the file
    def __setstate__(self, d): self.fn = d['fn']

    def add(self, msg:str):
        "Record one skipped item (one `write` of a line: appends from several processes don't interleave)"
        line = (json.dumps(str(msg)[:4000]) + '\n').encode()
        fd = os.open(self.fn, os.O_WRONLY|os.O_APPEND|os.O_CREAT, 0o600)
        try: os.write(fd, line)
        finally: os.close(fd)

    def read(self) -> list:
        "All messages recorded so far, by any process"
        try:
            with open(self.fn, 'rb') as f: return [json.loads(l) for l in f.read().decode().splitlines() if l.strip()]
        except FileNotFoundError: return []

    def clear(self):
        "Forget the recorded messages"
        _rm_file(self.fn, os.getpid())

    def __len__(self): return len(self.read())
    def __repr__(self): return f'SkipLog({len(self)} skipped)'

class LoadFrames(RandTransform):
    "Load the sampled frames of a video file, a frame folder, a list of frames or an array, as an `ImageTuple` or `ImageSeq`"
    split_idx,order = None,0
    on_error,max_pixels,_probe,_skip_log,rotate,size,decoder_resize,stream = 'raise',MAX_PIXELS,None,None,True,None,True,None  # defaults for transforms pickled before these existed
    item_resize = None  # `leading_resize` of the item transforms, recorded by `SeqDL` when it sets them up (see `_resize_kw`)
    def __init__(self,
        n_frames:int=None, # Frames per sample; None for all
        sampler:str='uniform', # 'uniform', 'random', 'first', 'all' or 'auto' (random for training, uniform otherwise)
        short:str='loop', # What a clip shorter than `n_frames` gets: 'loop', 'pad' or 'error'
        stride:int=1, # Step between the frames of a 'random'/'first' window
        channels:int=3, # 1 for grayscale frames, 3 for RGB
        on_error:str='raise', # A source that cannot be loaded: 'raise' an error naming it, or 'skip' it (see `SeqDL`)
        max_pixels:int=MAX_PIXELS, # Refuse frames whose header declares more than width*height pixels; None for no limit
        rotate:bool=True, # Turn video frames upright by the file's display rotation (phone videos); False: as stored
        size:int|tuple=None, # Scale video frames in the decoder to `size` (`(h,w)` or int), as `Resize(size, ...)` would
        resize_method:str='crop', # With `size`: a `ResizeMethod` ('crop': random crop in training, centre otherwise)
        pad_mode:str='reflection', # With `size` and `resize_method='pad'`: a `PadMode`
        decoder_resize:bool=True, # Without `size`: let the decoder do a leading `Resize` of the item transforms (`leading_resize`)
        stream:int=None, # Which video stream of each file (None: the one FFmpeg picks, as players do)
    ):
        if sampler not in SAMPLERS: raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if short not in SHORT_POLICIES: raise ValueError(f"short must be one of {SHORT_POLICIES}, got {short!r}")
        if channels not in (1,3): raise ValueError(f"channels must be 1 or 3, got {channels}")
        if on_error not in ON_ERROR: raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        super().__init__()
        store_attr('n_frames,sampler,short,stride,channels,on_error,max_pixels,rotate,size,resize_method,pad_mode,decoder_resize,stream')
        self.pil_cls = PILImageBW if channels==1 else PILImage
        self._split,self.clip = None,None  # `clip=(k,n)`: read the k-th of n evenly spread clips (multi-clip evaluation)
        self._skip_log = SkipLog()

    def __getstate__(self): return {**self.__dict__, '_probe': None}  # what `setups` kept for its probe stays in this process

    @property
    def skip_log(self) -> SkipLog:
        "Where the items skipped under `on_error='skip'` are recorded, by this process and DataLoader workers"
        if self._skip_log is None: self._skip_log = SkipLog()
        return self._skip_log

    @property
    def skipped(self) -> L:
        "Messages (file and problem) of the items skipped so far under `on_error='skip'`, in any process"
        return L(self.skip_log.read())

    @property
    def n_skipped(self) -> int:
        "How many items were skipped so far (an item skipped in two epochs or by two workers counts twice)"
        return len(self.skip_log)

    def setups(self, items):
        # `TfmdLists.setup` calls its transforms on its first training item right after their `setups`, only to learn their
        # output types. Under on_error='skip' a broken first item is replaced there by the next loadable one, as `SeqDL`
        # replaces it in a batch: this keeps the raw training items and the transforms that come before this one (a
        # `Pipeline` sets its transforms up in order: `items.tfms` holds those set up so far) until that call.
        raw, fs = getattr(items, 'items', None), list(getattr(getattr(items, 'tfms', None), 'fs', None) or [])
        ok = self.on_error=='skip' and raw is not None and len(raw)>0
        self._probe = (raw, fs[:fs.index(self)] if self in fs else fs) if ok else None

    def before_call(self, b, split_idx:int):
        self._split = split_idx

    def _sampler(self) -> str:
        if self.sampler!='auto': return self.sampler
        return 'random' if self._split==0 else 'uniform'

    def idxs(self, n_total:int, fn=None) -> list:
        "The frame indices this transform reads from a source of `n_total` frames"
        if self.clip is not None: return clip_indices(n_total, self.n_frames, *self.clip, self.sampler, self.stride, self.short, fn)
        return sample_indices(n_total, self.n_frames, self._sampler(), self.stride, self.short, fn)

    def _resize_kw(self) -> dict:
        "`read_frames` arguments of the decoder-side resize: one crop position per item, drawn as fastai's `Resize` does"
        size, method, pad_mode = self.size, self.resize_method, self.pad_mode
        if size is None and self.decoder_resize: size, method, pad_mode = self.item_resize or (None, None, None)
        if size is None: return {}
        pcts = (0.5,0.5) if self._split else (random.random(),random.random())
        return dict(size=size, method=str(method), pad_mode=str(pad_mode), crop_pos=pcts)

    def _pil(self, a) -> Image.Image:
        img = Image.fromarray(a)
        mode = 'L' if self.channels==1 else 'RGB'
        return self.pil_cls(img if img.mode==mode else img.convert(mode))  # `convert` to its own mode is a full copy

    def _guard(self, f, o, src):
        "`f(o)`, turning a failure into an error naming `src` ('raise') or a logged `SkippedItem` ('skip')"
        probe, self._probe = (self._probe if self._split is None else None), None
        # the source of the item being loaded in this process: `SeqDL` names it if its frames differ in size
        self._src = src if src is not None else _frames_src(o)
        try: return f(o)
        except SkipItemException: raise
        except LIBRARY_ERRORS: raise  # a bug or an unsupported PyAV, not this item: never skipped, never blamed on it
        except Exception as e:
            err = e if isinstance(e, (SeqError, VideoError)) else SeqError(
                f"{src if src is not None else 'sequence'}: cannot load it ({type(e).__name__}: {e}). Remove or replace it.")
            x = self._fail(err)
            if self.on_error=='skip' and isinstance(probe, tuple): return self._probe_next(*probe, x)
            if x is e: raise
            raise x from e

    def _probe_next(self, raw, before, err:SkippedItem):
        "What `TfmdLists.setup` gets when its first training item was skipped (`err`): the output of the next loadable one"
        for o in raw[1:]:
            for f in before: o = f(o)  # the transforms before this one, as `TfmdLists.setup` runs them
            try: return self(o)
            except SkippedItem: continue
        raise SeqError(f"None of the {len(raw)} training items of this dataset could be loaded (on_error='skip' replaces a "
                       f"broken item by another one), e.g. {err}") from None

    def _fail(self, err:Exception) -> Exception:
        "What to raise for the item error `err` (naming its source): `err` itself ('raise'), or a logged `SkippedItem` ('skip')"
        if self.on_error=='raise': return err
        msg = str(err)
        self.skip_log.add(msg)
        warnings.warn(f"on_error='skip': skipping {msg}", SkippedItemWarning)
        return SkippedItem(msg)

    def encodes(self, o:str|Path): return self._guard(self._load_path, Path(o), o)
    def encodes(self, o:list|tuple|L): return self._guard(self._load_list, o, None)
    def encodes(self, o:Tensor|np.ndarray): return self._guard(self._load_array, o, None)

    def _load_path(self, p:Path) -> ImageTuple:
        if _is_video(p):
            n = video_info(p, max_pixels=self.max_pixels, stream=self.stream).n_frames  # checks the header before anything is decoded
            idxs = self.idxs(n, p)
            kw = self._resize_kw()  # after the window: the random draws in the order they always had
            frames = read_frames(p, idxs, rotate=self.rotate, stream=self.stream, **kw)
            res = ImageTuple(self._pil(a) for a in frames)
            # scaled by the decoder, the pixels of these very frames: `SeqDL` stacks them when its `ToTensor` and `StackFrames` come next
            if kw and self.channels==3: res.decoded = (frames, tuple(res))
        else: res = self.load_files(_frame_files(p), p)
        res.src = str(p)  # named by `StackFrames` if the frames differ in size
        return res

    def _load_list(self, o) -> ImageTuple:
        if not len(o): raise SeqError("An empty list of frames cannot make a sequence.")
        if isinstance(o[0], (str, Path)): return self.load_files(list(o))
        idxs = self.idxs(len(o))
        return ImageTuple(f if isinstance(f, Image.Image) else self._pil(to_uint8_hwc(f, keep_channel=False)) for f in (o[i] for i in idxs))

    def _load_array(self, o) -> ImageSeq:
        x = ImageSeq.create(o)
        return ImageSeq(x[self.idxs(len(x))])

    def _open_frame(self, f) -> Image.Image:
        "Open frame image `f`, checking its declared size against `max_pixels` before decoding it"
        try: img = Image.open(f)
        except Image.DecompressionBombError as e:
            raise SeqError(f"{f}: this frame image declares too many pixels to load safely ({e}). If it is genuine, raise "
                           "`PIL.Image.MAX_IMAGE_PIXELS` and the block's `max_pixels`; otherwise remove the file.") from None
        except Exception as e:
            raise SeqError(f"{f}: cannot read this frame image ({type(e).__name__}: {e}). Remove or replace the file.") from e
        if (problem := too_many_pixels(img.width, img.height, self.max_pixels)):
            img.close()
            raise SeqError(f"{f}: this frame image {problem}.")
        try: img.load()
        except Exception as e:
            raise SeqError(f"{f}: cannot read this frame image ({type(e).__name__}: {e}). Remove or replace the file.") from e
        return img

    def load_files(self, fs, src=None) -> ImageTuple:
        "Sample and open frame image files"
        return ImageTuple(self.pil_cls(_to_mode(self._open_frame(f), self.channels, f)) for f in [fs[i] for i in self.idxs(len(fs), src)])

def _frames_src(o) -> str|None:
    "How to name a list of frame files (`SeqSplit`'s inputs and targets) in an error: their folder and first/last names"
    if not isinstance(o, (list, tuple, L)) or not len(o) or not isinstance(o[0], (str, Path)): return None
    a, b = Path(o[0]), Path(o[-1])
    return f"{a.parent} (frames {a.name} to {b.name})" if a.parent==b.parent else f"frames {a} to {b}"

def _to_mode(img:Image.Image, channels:int, fn=None) -> Image.Image:
    "Convert any PIL mode (16-bit, 32-bit, float, CMYK, palette, LA, ...) to 'L' or 'RGB'"
    if img.mode.startswith('I;16') or img.mode in ('I', 'F'):
        # deep grey: map the full 16-bit range to 8 bits (the same scale for every frame: no per-frame flicker);
        # 32-bit ints holding only 8-bit values and floats in [0,1] are recognised
        a = np.asarray(img, dtype=np.float32)
        mx = float(a.max()) if a.size else 0.
        scale = (255 if mx<=1 else 1) if img.mode=='F' else 1/257 if img.mode.startswith('I;16') or mx>255 else 1
        img = Image.fromarray(np.clip(a*scale, 0, 255).round().astype(np.uint8))
    return img.convert('L' if channels==1 else 'RGB')

class _FramesDiffer(SeqError):
    "The frames of one sequence differ in size; `pos` is the sequence's place in the item (`SeqDL` names its source)"
    def __init__(self, msg, pos=None, shapes=()):
        super().__init__(msg)
        self.pos, self.shapes = pos, shapes
    def __reduce__(self): return (self.__class__, (self.args[0] if self.args else '', self.pos, self.shapes))

_RESIZE = "add `Resize(...)` to the DataBlock's `item_tfms` (e.g. `item_tfms=Resize(128)`), or make the frames one size"

def _differ_msg(src, shapes) -> str:
    "The error for a sequence `src` (None if unknown) whose frames have the (C,H,W) `shapes`"
    sizes = ', '.join(f'{w}x{h}' for _,h,w in sorted(shapes)[:3]) + (', ...' if len(shapes)>3 else '')
    return f"{src if src is not None else 'sequence'}: the frames of this sequence differ in size ({sizes}): {_RESIZE}."

class StackFrames(ItemTransform):
    "Stack the (tensor) frames of every `ImageTuple` in an item into one `ImageSeq` `(T,C,H,W)`"
    order = 6  # after `ToTensor`
    def __init__(self, cls=ImageSeq): self.cls = cls
    def _stack(self, o, pos=None):
        if isinstance(o, ImageSeq): return o
        if isinstance(o, ImageTuple):
            shapes = {tuple(t.shape) for t in o}
            if len(shapes)>1: raise _FramesDiffer(_differ_msg(getattr(o, 'src', None), shapes), pos, sorted(shapes))
            return self.cls(torch.stack([TensorBase(t) for t in o]))
        return o
    def encodes(self, b):
        if isinstance(b, (tuple, list)): return type(b)(self._stack(o, i) for i,o in enumerate(b))
        return self._stack(b)

class IntToFloatSeq(IntToFloatTensor):
    "`IntToFloatTensor` that leaves float sequences (already in [0,1]) alone"
    def encodes(self, o:ImageSeq): return o if o.is_floating_point() else o.float().div_(self.div)

def _stacked(o, cls):
    "Item `o` with each of its `ImageTuple`s still holding the frames `LoadFrames` decoded (`.decoded`) as a `cls` `(T,C,H,W)` tensor"
    def one(e):
        a, fr = getattr(e, 'decoded', (None, None)) if isinstance(e, ImageTuple) else (None, None)
        if a is None or a.ndim!=4 or a.shape[-1]!=3 or len(a)!=len(e) or any(f is not g for f,g in zip(e, fr)): return e
        return cls(torch.from_numpy(a).permute(0,3,1,2).contiguous())
    return tuple(one(e) for e in o) if type(o) is tuple else one(o)

def find_load_frames(
    o, # A `DataLoader`, or the `Datasets`/`TfmdLists` it loads
    pos:int=None, # Only those of the `pos`-th `TfmdLists` of a `Datasets` (the one making element `pos` of its items)
) -> list:
    "The `LoadFrames` transforms of `o`, in the order of its `TfmdLists`"
    ds = o.dataset if isinstance(o, DataLoader) else o
    tls = getattr(ds, 'tls', None)
    tls = [ds] if tls is None else tls if pos is None else tls[pos:pos+1]  # a `TfmdLists` has one list: `pos` is its own
    return [f for tl in tls for f in getattr(getattr(tl, 'tfms', None), 'fs', None) or [] if isinstance(f, LoadFrames)]

def leading_resize(dl) -> tuple|None:
    "`(size, method, pad_mode)` of a plain `Resize` that comes first in `dl`'s item transforms (None if there is none)"
    # done by the decoder (swscale during the RGB conversion, `read_frames(size=...)`), the frames reach that `Resize`
    # at its size, where it changes nothing: same shapes, pixels within the test's tolerance, less than half the time
    for t in getattr(getattr(dl, 'after_item', None), 'fs', []):
        if type(t) is not Resize: return None
        if t.split_idx is not None or tuple(t.resamples)[:1] != (Image.BILINEAR,): return None
        w, h = t.size
        return (h, w), str(t.method), str(t.pad_mode)
    return None

class SeqDL(TfmdDL):
    "A `TfmdDL` that replaces items skipped under `on_error='skip'` by the next loadable item and warns once per pass"
    def __init__(self, dataset, *args, do_setup:bool=True, **kwargs):
        super().__init__(dataset, *args, do_setup=do_setup, **kwargs)
        # Once its item transforms are set up, the loader tells the `LoadFrames` of its dataset which leading `Resize` their
        # video decoder can do: a plain attribute, shared by the loaders `new` makes (validation, `test_dl`, `predict`) and
        # pickled with an exported learner, so every path decodes the same frames
        if do_setup:
            for lf in find_load_frames(dataset): lf.item_resize = leading_resize(self)

    def create_item(self, s):
        "Item `s`, or, if it was skipped, the first loadable item after it (with its own label)"
        return self._replaced(s, super().create_item)

    def do_item(self, s):
        "Item `s` through `after_item`; one skipped when loaded or when its frames are stacked is replaced by the next loadable one"
        try: return self._replaced(s, self._item)
        except SkipItemException: return None  # not indexed: dropped, as fastai does

    def _item(self, s):
        "`after_item(create_item(s))` for item `s` alone; frames of different sizes are that item's error, named and under its `on_error`"
        o = super().create_item(s)
        try: return self._after_item(o)
        except _FramesDiffer as e:
            lfs = find_load_frames(self.dataset, e.pos if isinstance(o, tuple) else None)
            if not lfs: raise
            lf = lfs[0]
            src = getattr(lf, '_src', None)  # set when this process loaded item `s`, just above
            src = src if src is not None else f'item {s or 0} of the dataset'
            x = lf._fail(SeqError(_differ_msg(src, e.shapes)))
            raise x from None

    def _after_item(self, o):
        "`after_item(o)`; a leading `Resize` the decoder already did (every frame at its size) only draws its crop position"
        # At its own size fastai's `Resize` crops/pads/resizes by nothing, yet copies every frame twice (~0.7 ms a frame at
        # 112px): `before_call` still runs, so the random stream, and every later draw, is the same as without the shortcut
        ai = self.after_item
        fs = getattr(ai, 'fs', None)
        t = fs[0] if fs else None
        if type(t) is not Resize or not self._at_size(o, tuple(t.size)): return ai(o)
        sp = ai.split_idx
        t.before_call(o, split_idx=sp)
        # then, as fastai's `ToTensor` (per frame) and `StackFrames` would, the decoded frames become one `(T,C,H,W)` tensor,
        # straight from the decoder's array: one copy where these made three (PIL to tensor, stack); both still run after
        if len(fs)>2 and type(fs[1]) is ToTensor and type(fs[2]) is StackFrames: o = _stacked(o, fs[2].cls)
        for f in fs[1:]: o = f(o, split_idx=sp)
        return o

    @staticmethod
    def _at_size(o, size) -> bool:
        "Whether item `o` holds frames (`ImageTuple`s of PIL images) all of `size` `(w,h)`, and nothing else a `Resize` changes"
        found = False
        for e in (o if type(o) is tuple else (o,)):
            if isinstance(e, ImageTuple):
                if not all(isinstance(f, Image.Image) and f.size==size for f in e): return False
                found = True
            elif isinstance(e, (Image.Image, TensorBBox, TensorPoint, tuple, list)): return False
        return found

    def _replaced(self, s, f):
        "`f(s)`, or, if item `s` was skipped, `f` of the first loadable item after it"
        try: return f(s)
        except SkippedItem as e:
            if not self.indexed: raise
            bad = self.__dict__.setdefault('_bad', set())  # per process: a DataLoader worker tries a broken item once
            n, i = len(self.dataset), s or 0
            bad.add(i)
            for k in range(1, n):
                j = (i+k)%n
                if j in bad: continue
                try: return f(j)
                except SkippedItem: bad.add(j)
            raise SeqError(f"None of the {n} items of this dataset could be loaded (on_error='skip' replaces a broken item "
                           f"by another one), e.g. {e}") from None

    def before_iter(self):
        super().before_iter()
        self._skip_start = [len(f.skip_log) for f in find_load_frames(self.dataset)]
        _index_videos(self)
        # the real count: `self.num_workers` is 1 in the main process (a worker's own view); the workers fork next
        if self.fake_l.num_workers: _FREEZE_IN_CHILD.append(True)

    def __iter__(self):
        try:
            for b in super().__iter__():
                _FREEZE_IN_CHILD.clear()  # every worker forked before the first batch: later forks are none of ours
                yield b
        finally: _FREEZE_IN_CHILD.clear()

    def after_iter(self):
        "Warn once about the items skipped during this pass, in the main process (workers log them to a shared file)"
        super().after_iter()
        tfms, start = find_load_frames(self.dataset), getattr(self, '_skip_start', None)
        if start is None or len(start)!=len(tfms): return
        msgs = list(dict.fromkeys(m for f,n0 in zip(tfms, start) for m in f.skip_log.read()[n0:]))  # unique, in order
        self.skipped = L(msgs)
        if msgs:
            warnings.warn(f"{len(msgs)} of {len(self.dataset)} items could not be loaded and were replaced by other items in "
                          "this pass (on_error='skip'):\n" + '\n'.join(f'  {m}' for m in msgs[:20]) +
                          (f'\n  ... and {len(msgs)-20} more (see `dl.skipped`)' if len(msgs)>20 else ''), SkippedItemWarning)

# A DataLoader worker forked by `SeqDL` never collects the objects it inherits: `gc.freeze()` right after the fork. A
# threaded PyAV decoder left in a reference cycle in the main process (by an exception's traceback, or by user code) would
# wait forever, freed in a worker, for decoder threads that were not forked; frozen, it is never freed there. This replaces
# a full `gc.collect()` in the main process before every pass (0.3 s with fastai and torch loaded: 570k objects), and the
# worker's collections no longer touch (copy) the pages of the main process's objects. Python's advice for forked
# children (`gc.freeze`); only the workers `SeqDL` starts are frozen, other forks of the process are left alone.
_FREEZE_IN_CHILD = []  # non-empty from `SeqDL.before_iter` until its workers have forked

def _freeze_after_fork():
    "In a forked child: freeze the inherited objects if `SeqDL` is starting its workers"
    if _FREEZE_IN_CHILD:
        _FREEZE_IN_CHILD.clear()  # a process the worker forks in turn is not ours
        gc.freeze()

if hasattr(os, 'register_at_fork'): os.register_at_fork(after_in_child=_freeze_after_fork)

def _index_videos(dl):
    "Index the videos of `dl`'s items in this (main) process, by a pool of as many processes as `dl` has workers"
    # Each file is indexed once, whatever the start method of the workers (fresh ones every pass): forked workers inherit
    # this process's cache; spawn/forkserver ones (Windows, Python 3.14's Linux default) unpickle `dl` (`_FakeLoader.d`), whose
    # `_vindex` maps the dataset's saved index in theirs. Without workers, no pool: each file is indexed when first read, in
    # this process, and saved at the next pass. The saved index makes later passes, runs and processes index no file.
    lfs, items = find_load_frames(dl.dataset), getattr(dl.dataset, 'items', None)
    if not lfs or items is None: return
    vids = [o for o in items if isinstance(o, (str, Path)) and _is_video(o)]
    if not vids: return
    nw = dl.fake_l.num_workers
    dl._vindex = index_videos(vids, n_workers=nw, max_pixels=lfs[0].max_pixels, stream=lfs[0].stream, build=bool(nw))

def SeqBlock(
    cls=ImageSeq, # `ImageSeq` (RGB) or `ImageSeqBW` (grayscale)
    n_frames:int=None, # Frames per sample; None keeps them all
    sampler:str='uniform', # 'uniform', 'random', 'first', 'all' or 'auto' (random for training, uniform for validation)
    short:str='loop', # What a sequence shorter than `n_frames` gets: 'loop', 'pad' or 'error'
    stride:int=1, # Step between the frames of a 'random'/'first' window
    channels:int=None, # 1 or 3; by default from `cls`
    on_error:str='raise', # A sequence that cannot be loaded: 'raise' an error naming it, or 'skip' it with a warning
    max_pixels:int=MAX_PIXELS, # Refuse frame images whose header declares more pixels than this; None for no limit
):
    "A `TransformBlock` for sequences given as a folder of frames, a list of frame paths or a tensor"
    channels = channels or (1 if issubclass(cls, ImageSeqBW) else 3)
    return TransformBlock(type_tfms=LoadFrames(n_frames, sampler, short, stride, channels, on_error, max_pixels),
                          item_tfms=StackFrames(cls), batch_tfms=IntToFloatSeq, dl_type=SeqDL)

def VideoBlock(
    n_frames:int=8, # Frames per clip
    sampler:str='uniform', # 'uniform', 'random', 'first', 'all' or 'auto' (random for training, uniform for validation)
    short:str='loop', # What a clip shorter than `n_frames` gets: 'loop', 'pad' or 'error'
    stride:int=1, # Step between the frames of a 'random'/'first' window
    channels:int=3, # 1 for grayscale, 3 for RGB
    cls=ImageSeq, # The batch type
    on_error:str='raise', # A video that cannot be decoded: 'raise' an error naming it, or 'skip' it with a warning
    max_pixels:int=MAX_PIXELS, # Refuse videos whose stream header declares more pixels per frame; None for no limit
    rotate:bool=True, # Turn frames upright by the file's display rotation (phone videos); False keeps them as stored
    size:int|tuple=None, # Scale frames while decoding (faster than `item_tfms=Resize(size)`, which it replaces)
    resize_method:str='crop', # With `size`: a `ResizeMethod`, as `Resize`'s `method`
    pad_mode:str='reflection', # With `size` and `resize_method='pad'`: a `PadMode`
    decoder_resize:bool=True, # Without `size`: the decoder does a leading `item_tfms=Resize(...)` (False: fastai does it)
    stream:int=None, # Which video stream of each file (None: the one FFmpeg picks, as players do)
):
    "A `TransformBlock` for video files, decoded with PyAV: only the sampled frames are decoded"
    return TransformBlock(type_tfms=LoadFrames(n_frames, sampler, short, stride, channels, on_error, max_pixels, rotate,
                                               size, resize_method, pad_mode, decoder_resize, stream),
                          item_tfms=StackFrames(cls), batch_tfms=IntToFloatSeq, dl_type=SeqDL)

class SeqSplit:
    "Split one sequence into `n_in` input frames and the next `n_out` target frames: use `.get_x`/`.get_y` in a `DataBlock`"
    def __init__(self,
        n_in:int, # Input frames
        n_out:int, # Target frames, the ones right after the inputs
        get_seq=None, # Optional function from an item to its sequence source (frame folder, frame list, video, array)
        offset:int=0, # Frames skipped at the start
    ):
        if n_in<1 or n_out<1: raise ValueError(f"n_in and n_out must be >= 1, got {n_in}, {n_out}")
        store_attr()
        # `partial`s rather than bound methods: fastai's `Transform` refuses functions whose first argument is `self`
        self.get_x = partial(self._part, start=offset, stop=offset+n_in)
        self.get_y = partial(self._part, start=offset+n_in, stop=offset+n_in+n_out)
        # named: fastai wraps a callable without `__name__` in a local function, which spawn/forkserver workers can't unpickle
        self.get_x.__name__, self.get_y.__name__ = 'get_x', 'get_y'

    def _part(self, o, start:int, stop:int):
        "Frames `start:stop` of `o`: a list of frame paths, an `ImageSeq`, or decoded video frames"
        o = self.get_seq(o) if self.get_seq else o
        if isinstance(o, (str, Path)) and not _is_video(o): o = list(_frame_files(Path(o)))
        n = seq_frames_count(o)
        if n<self.offset+self.n_in+self.n_out:
            raise SeqError(f"{o if isinstance(o,(str,Path)) else 'sequence'}: has {n} frames, fewer than "
                           f"offset+n_in+n_out={self.offset+self.n_in+self.n_out}. Drop it or use shorter windows.")
        return ImageSeq.create(read_frames(o, list(range(start, stop)))) if _is_video(o) else o[start:stop]

# Batch augmentation on `(B,T,C,H,W)` sequences: fastai's batch transforms draw their random parameters per sample
# (`x.size(0)`); applying them to each time step with those same parameters gives one parameter set per sequence.
def apply_per_step(x:ImageSeq, f) -> ImageSeq:
    "`f` (a batch function of `TensorImage`s) applied to each time step of `x`: one parameter set per sequence"
    if x.ndim==4: return apply_per_step(ImageSeq(x[None]), f)[0]
    return ImageSeq(torch.stack([TensorBase(f(TensorImage(x[:,t]))) for t in range(x.shape[1])], dim=1))

def _smooth_grid_sample(x:Tensor, coords:Tensor, mode:str='bilinear', padding_mode:str='reflection', align_corners=None) -> Tensor:
    "`F.grid_sample` as fastai's augmentations call it: a bilinear resampling that shrinks `x` by more than 2x area-averages it first"
    if mode=='bilinear':
        z = 2/(coords.max()-coords.min()).item()  # the affine zoom (>1: zooming in)
        d = min(x.shape[-2]/coords.shape[-2], x.shape[-1]/coords.shape[-1])/2  # the resize, with 100% margin
        if d>1 and d>z: x = F.interpolate(x, scale_factor=1/d, mode='area', recompute_scale_factor=True)
    return F.grid_sample(x, coords, mode=mode, padding_mode=padding_mode, align_corners=align_corners)

@patch
def affine_coord(x:ImageSeq, mat=None, coord_tfm=None, sz=None, mode='bilinear', pad_mode=PadMode.Reflection, align_corners=True):
    "`TensorImage.affine_coord` with one transform per sequence: its sampling grid, built once, resamples all its frames"
    if x.ndim==4: return ImageSeq(ImageSeq(x[None]).affine_coord(mat, coord_tfm, sz, mode, pad_mode, align_corners)[0])
    if mat is None and coord_tfm is None and sz is None: return x
    b,t,c = x.shape[:3]
    size = tuple(x.shape[-2:]) if sz is None else (sz,sz) if isinstance(sz,int) else tuple(sz)
    if mat is None: mat = torch.eye(3, device=x.device).float()[None,:2].expand(b, 2, 3)  # the identity
    coords = affine_grid(mat, (b,c)+size, align_corners=align_corners)
    if coord_tfm is not None: coords = coord_tfm(coords)
    # every frame of a sequence shares its grid: one `grid_sample` over the `B*T` frames (same pixels as frame by frame)
    coords = TensorBase(coords)[:,None].expand(b, t, *coords.shape[1:]).reshape(b*t, *coords.shape[1:])
    out = _smooth_grid_sample(TensorBase(x).reshape(b*t, *x.shape[2:]), coords, mode=mode, padding_mode=pad_mode,
                             align_corners=align_corners)
    return ImageSeq(out.reshape(b, t, *out.shape[1:]))

def _strip_hw(o, max_frames:int=None) -> tuple|None:
    "`(height, width)` in pixels of the strip `o` (an `ImageSeq`, a tuple of frames) is drawn as; None if it is not a sequence"
    try:
        if isinstance(o, Tensor):
            fr = o if o.ndim==4 else o[0]
            k,h,w = len(fr),fr.shape[-2],fr.shape[-1]
        else:
            f = o[0]
            k,(w,h) = len(o),(f.size if isinstance(f, Image.Image) else (f.shape[-1], f.shape[-2]))
    except (TypeError, IndexError, AttributeError): return None
    k = min(k, max_frames) if max_frames else k
    return int(h), int(k*w + 2*(k-1))   # `frames_strip`: 2 white pixels between frames

def seq_grid(
    n:int, # Rows
    ncols:int, # Strips per row (input, target, prediction, ...)
    max_frames:int, # Frames drawn per strip at most
    figsize=None, # The figure's size; None: from the strips' aspect
    title=None, # The figure's title
    strips=(), # The sequences to draw, whose frame sizes set the figure's size
):
    "Axes for `n` rows of `ncols` frame strips, the figure sized to `strips` (sequences to draw) and laid out so no title overlaps another"
    if figsize is None:
        hws = [hw for hw in (_strip_hw(o, max_frames) for o in strips) if hw]
        aspect = max((w/h for h,w in hws), default=max_frames+0.1)   # the widest strip; square frames by default
        fh = min(1.35, (24-0.25*(ncols-1))/(ncols*aspect))           # strip height (inches): a frame 1.35 in high, 24 in wide at most
        figsize = (ncols*fh*aspect + 0.25*(ncols-1) + 0.1, n*(fh+0.32) + (0.4 if title else 0.05))
    # constrained layout makes room for the figure title above the first row's titles at draw time, with no band between
    _,axs = get_grid(n*ncols, nrows=n, ncols=ncols, figsize=figsize, title=title, return_fig=True, layout='constrained')
    return axs


@dispatch
def show_batch(x:ImageSeq, y, samples, ctxs=None, max_n:int=6, nrows=None, ncols=None, figsize=None, max_frames:int=8, **kwargs):
    "Each sample as a strip of frames, titled with its label"
    n = min(len(samples), max_n)
    if ctxs is None: ctxs = seq_grid(n, 1, max_frames, figsize, strips=samples.itemgot(0)[:n])
    return get_show_batch_func(object)(x, y, samples, ctxs=ctxs, max_n=n, max_frames=max_frames, **kwargs)

def _show_label(o, ctx, **kwargs):
    "Put a decoded label (a `Category`, a string, a number) on `ctx` as its title"
    if hasattr(o, 'show') and not isinstance(o, (Tensor, tuple)): o.show(ctx=ctx, **kwargs)
    else: ctx.set_title(str(o.item() if isinstance(o, Tensor) and o.numel()==1 else o))

@dispatch
def show_batch(x:ImageTuple, y, samples, ctxs=None, max_n:int=6, nrows=None, ncols=None, figsize=None, max_frames:int=8, **kwargs):
    "A batch of `ImageTuple`s (tuples of `(B,C,H,W)` frames, as the UCF101 tutorial's pipeline yields): one strip per sample, its label as title"
    n = min(len(samples), max_n)
    if ctxs is None: ctxs = seq_grid(n, 1, max_frames, figsize, strips=[s[0] for s in samples[:n]])
    for s,c in zip(samples[:n], ctxs):
        ImageTuple(s[0]).show(ctx=c, max_frames=max_frames, **kwargs)
        for o in s[1:]: _show_label(o, c)
    return ctxs

def show_strip_rows(cols, n:int, ctxs=None, figsize=None, max_frames:int=10, title=None, wrap=None, **kwargs):
    "Row `i` of the figure: the `i`-th sequence of each of `cols` (input, target, ...) as strips; `wrap` makes them showable"
    cols = [list(c)[:n] for c in cols]
    k = len(cols)
    if ctxs is None: ctxs = seq_grid(n, k, max_frames, figsize, title=title, strips=[o for c in cols for o in c])
    for i,col in enumerate(cols):
        ctxs[i::k] = [(o if wrap is None else wrap(o)).show(ctx=c, max_frames=max_frames, **kwargs) for o,c in zip(col, ctxs[i::k])]
    return ctxs

@dispatch
def show_batch(x:ImageTuple, y:ImageTuple, samples, ctxs=None, max_n:int=6, nrows=None, ncols=None, figsize=None, max_frames:int=10, **kwargs):
    "Forecasting batches of `ImageTuple`s (the moving_mnist package's): each sample as a row, the input strip then the target strip"
    n = min(len(samples), max_n)
    return show_strip_rows((samples.itemgot(0), samples.itemgot(1)), n, ctxs, figsize, max_frames, 'Input / Target', ImageTuple, **kwargs)

@dispatch
def show_batch(x:ImageSeq, y:ImageSeq, samples, ctxs=None, max_n:int=6, nrows=None, ncols=None, figsize=None, max_frames:int=10, **kwargs):
    "Each sample as a row: the input strip, then the target strip"
    n = min(len(samples), max_n)
    return show_strip_rows((samples.itemgot(0), samples.itemgot(1)), n, ctxs, figsize, max_frames, 'Input / Target', **kwargs)
