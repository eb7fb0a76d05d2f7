"Decoding video files with PyAV: exact frame access by index (`read_frames`), `video_info`, `verify_videos`, the frame index"
from fastai.data.all import *
import av, gc, hashlib, importlib, json, re, struct, threading
from collections import Counter, OrderedDict
from contextlib import contextmanager
from typing import NamedTuple
from multiprocessing.reduction import ForkingPickler
from av.video.reformatter import VideoReformatter
from .core import VIDEO_EXTS  # still importable from here: `from fastai_seq.video import VIDEO_EXTS`
from ._utils import too_many_pixels
from .mp4 import read_moov

__all__ = ['VideoError', 'VideoInfo', 'video_info', 'read_frames', 'verify_videos']

# Names that moved to `files.py` (the file system) and `annotations.py` (splits), still importable from here
_MOVED = {**dict.fromkeys(['get_video_files', 'extract_frames', 'videos_to_frames', 'unrar'], 'files'),
          **dict.fromkeys(['ucf101_splits', 'ucf101_group', 'ucf101_named', 'GroupSplitter'], 'annotations')}

def __getattr__(name):
    "A name that moved out of this module, imported from its new home when asked for (PEP 562: no import cycle)"
    if name in _MOVED: return getattr(importlib.import_module(f'.{_MOVED[name]}', __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# ---------------------------------------------------------------------------------------------------------------------
# PyAV versions

MIN_PYAV = (18, 0)  # `av.stream.Discard`, `VideoReformatter.reformat(threads=)`; 18 and 19 are tested
_PYAV_PIN = "av>=18,<20"  # what to install when this PyAV is not supported

def _pyav_version(version:str) -> tuple|None:
    "`(major, minor)` of a PyAV version string, or None if it does not start with them"
    m = re.match(r'(\d+)\.(\d+)', str(version))
    return (int(m[1]), int(m[2])) if m else None

def _check_pyav(version:str) -> tuple|None:
    "`(major, minor)` of PyAV `version`; `ImportError` saying what to install if it is older than `MIN_PYAV`"
    v = _pyav_version(version)
    if v is not None and v < MIN_PYAV:
        need = f"{MIN_PYAV[0]}" if MIN_PYAV[1] == 0 else '.'.join(map(str, MIN_PYAV))
        raise ImportError(f"fastai_seq needs PyAV >= {need} (found {version}): pip install -U av")
    return v

def _open_kw(v:tuple|None) -> dict:
    "`av.open` arguments for reading with PyAV `(major, minor)` `v`"
    # PyAV 19 removed `metadata_errors`: it decodes tags as UTF-8 with 'surrogateescape', which never fails, so nothing
    # replaces it; before 19 its default 'strict' refuses a file whose tags are not UTF-8
    return {'metadata_errors': 'ignore'} if v is not None and v < (19, 0) else {}

_PYAV = _check_pyav(av.__version__)
_OPEN_KW = _open_kw(_PYAV)

# Exceptions that are programming errors: raised by our call into PyAV (an API this PyAV changed), never by a bad file
_CODE_ERRORS = (TypeError, AttributeError, NameError, ImportError)

class _LibraryError(RuntimeError): "fastai_seq's own call into PyAV failed: a bug or an unsupported PyAV, not a bad file"

LIBRARY_ERRORS = _CODE_ERRORS + (_LibraryError,)  # what item loaders must raise as is: never skipped, never blamed on a file

def _library_error(fn, e) -> _LibraryError:
    "The error to raise when reading `fn` failed with the programming error `e` of our call into PyAV"
    return _LibraryError(f"{fn}: fastai_seq does not support PyAV {av.__version__} ({type(e).__name__}: {e}); the file is "
                         f"not at fault. Please report it (with this message), or `pip install '{_PYAV_PIN}'`")

def _ours(e) -> bool:
    "Whether exception `e` is a programming error of our call into PyAV rather than a problem of the file"
    return isinstance(e, _CODE_ERRORS) and not isinstance(e, av.error.FFmpegError)

# ---------------------------------------------------------------------------------------------------------------------
# Errors

class VideoError(ValueError):
    "A video that cannot be read; the message names the file, the problem and what to do"
    def __init__(self, msg, fn=None):
        super().__init__(msg)
        self.fn = None if fn is None else str(fn)
    # pickled by DataLoader workers / process pools: rebuild from the message and file name
    def __reduce__(self): return (self.__class__, (self.args[0] if self.args else '', self.fn))

def _verr(fn, problem, todo=''):
    "A `VideoError` for `fn` saying `problem` and `todo`"
    return VideoError(f"{fn}: {problem}" + (f". {todo}" if todo else ''), fn)

_REENCODE = "Re-download it, or re-encode it with ffmpeg (e.g. `ffmpeg -i in.avi out.mp4`), or remove it from the dataset"

class VideoInfo(NamedTuple):
    "What `video_info` returns"
    n_frames:int   # number of frames a full decode yields
    fps:float      # average frame rate
    width:int      # frame width in pixels
    height:int     # frame height in pixels
    duration:float # seconds
    rotation:int=0 # display rotation stored in the file (degrees counter-clockwise, FFmpeg's sign), applied by default

# ---------------------------------------------------------------------------------------------------------------------
# Opening and indexing

# Opening a file runs FFmpeg's `avformat_find_stream_info`, which decodes frames to learn what the header already says:
# seven frames of every H.264 file (1.2 ms at 320x240, 14 ms at 1080p: more than a 1080p window's own decoding saves),
# several of VP9. An indexed file needs none of it (the index knows the frames), so reads open it with the probing
# decoder skipping all but keyframes: the decoded frames are the same (the benchmark checks every window against a full
# decode), and a read that sees anything it did not expect opens it again the plain way (`_frames_in_order`)
_QUICK_OPEN = {'skip_frame': 'nonkey'}
# The demuxer a file's extension names: reads of an indexed file pass it to `av.open`, which then skips FFmpeg's format
# probe (60-100 us a call, 3-5% of a window of a small clip); a file that is not what its name says fails to open that
# way and is opened again with the probe. Not for indexing: the container then names its format by the name given
_DEMUXER = {'.mp4': 'mov', '.m4v': 'mov', '.mov': 'mov', '.3gp': 'mov', '.avi': 'avi', '.mkv': 'matroska', '.webm': 'matroska'}

def _open_container(fn, quick=False, named=False):
    "Open `fn` with PyAV (`quick`: probing only its keyframes; `named`: by the demuxer its extension names), raising `VideoError` with a useful message if that fails"
    path, kw = os.fspath(fn), ({**_OPEN_KW, 'options': _QUICK_OPEN} if quick else _OPEN_KW)
    if named and (fmt := _DEMUXER.get(os.path.splitext(path)[1].lower())):
        try: return av.open(path, format=fmt, **kw)
        except Exception as e:
            if _ours(e): raise _library_error(fn, e) from e
    try: return av.open(path, **kw)
    except Exception as e: err = e  # only now look at why (no system calls on the way of a good file)
    fn = Path(fn)
    if _ours(err): raise _library_error(fn, err) from err
    if not fn.exists(): raise _verr(fn, "no such file", "Check the path, and that the dataset was fully downloaded and extracted")
    if fn.is_dir(): raise _verr(fn, "is a folder, not a video file", "Pass a video file (folders of frames are read by `SeqBlock`)")
    if fn.stat().st_size == 0: raise _verr(fn, "the file is empty (0 bytes)", "Re-download or re-extract it, or remove it from the dataset")
    raise _verr(fn, f"FFmpeg cannot open it as a video ({type(err).__name__}: {err}); it is not a video file, or it is "
                    "truncated or corrupt", _REENCODE)

def _check_pixels(fn, w, h, max_pixels):
    "Raise `VideoError` when `fn`'s `w`x`h` frames are above `max_pixels`"
    if (problem := too_many_pixels(w, h, max_pixels)): raise VideoError(f"{fn}: its video stream {problem}", fn)

def _vstream(c, fn, stream:int|None=None):
    "Video stream `stream` of container `c` (None: the one FFmpeg picks, `av_find_best_stream`); the demuxer skips the others"
    vs = c.streams.video
    if not vs:
        kinds = ', '.join(f'{s.type} ({s.codec_context.name})' for s in c.streams) or 'none'
        c.close()
        raise _verr(fn, f"it has no video stream (streams: {kinds})", "Remove it from the dataset (audio-only or data file)")
    if stream is None: v = (c.streams.best('video') if len(vs) > 1 else None) or vs[0]
    elif isinstance(stream, int) and -len(vs) <= stream < len(vs): v = vs[stream]
    else:
        n = len(vs)
        c.close()
        raise _verr(fn, f"it has no video stream {stream!r}: it has {n} ({', '.join(f'{s.width}x{s.height}' for s in vs)})",
                    f"Pass `stream=` an int from 0 to {n-1}, or None for the one FFmpeg picks")
    for o in c.streams:
        if o.index != v.index: o.discard = av.stream.Discard.all
    return v

# Containers whose packets carry real presentation timestamps, so sorted packet pts = the decoded frames' pts
_REAL_PTS = {'mov,mp4,m4a,3gp,3g2,mj2', 'matroska,webm', 'flv'}
# Codecs that never reorder frames and decode one frame per packet: packet order = frame order in any container
_NO_REORDER = {'mpeg4', 'mjpeg', 'mjpegb', 'msmpeg4v1', 'msmpeg4v2', 'msmpeg4', 'wmv1', 'wmv2', 'h263', 'h263p', 'flv1', 'flv',
               'rawvideo', 'huffyuv', 'ffvhuff', 'ffv1', 'dvvideo', 'png', 'cinepak', 'utvideo', 'magicyuv', 'qtrle', 'prores'}
# Codecs whose packets can hold no shown frame (VP8 invisible alt-ref frames): count by decoding, unless (VP8 in a
# container with real pts) every packet's frame header says it is shown (`_vp8_check`)
_NO_TRUST = {'vp8'}
_HIDDEN = 'VP8 frame not shown (alt-ref)'

def _vp8_check(data, key:bool):
    "Why a VP8 packet may not decode to exactly one shown frame, the container's keyframe flag `key` being right (None if it will)"
    # RFC 6386 9.1, the frame tag: 3 bytes, little endian: bit 0 is 0 for a keyframe, bit 4 is `show_frame`
    if len(data) < 3: return 'VP8 packet without a frame header'
    if not data[0] & 0x10: return _HIDDEN
    if (not data[0] & 1) != key: return 'VP8 keyframe flags differ from the container\'s'
    return None
_VOP = b'\x00\x00\x01\xb6'

def _mpeg4_check(data):
    "Why an MPEG-4 Part 2 packet may not decode to exactly one frame in order (None if it will)"
    i = data.find(_VOP)
    if i < 0: return 'packet without a VOP'
    if data.find(_VOP, i+4) >= 0: return 'packed bitstream (several VOPs in a packet)'
    # A not-coded VOP (XviD/DivX N-VOP, 'dropped frame') is a bare header of a few bytes: FFmpeg outputs no frame for it
    if len(data)-i-4 <= 8: return 'possibly a not-coded VOP'
    if data[i+4]>>6 == 2: return 'B-VOP'
    return None

class _VideoIndex:
    "Per-file facts: frame count, size, rate, and (if trusted) the exact frame index -> pts map and keyframes"
    def __init__(self, fn, n_frames, fps, width, height, duration, pts=None, keys=None, why=None, dts=None, rotation=0,
                 stream=0):
        # why: the reason the packets are not trusted; then either `dts` (a decode-built index: frame i's pts in `pts`,
        # in decode output order, and the packet dts to seek to for each keyframe in `keys`), or decoding from the start;
        # stream: which of the file's video streams (its position in `container.streams.video`) all this is about
        store_attr()
        self.seekable = pts is not None
        self.key_at_dts = None if dts is None else {int(d): int(k) for k, d in zip(keys, dts)}  # keyframe index by packet dts

    def __setstate__(self, d): self.__dict__.update({'dts': None, 'key_at_dts': None, 'rotation': 0, 'stream': 0, **d})

    def info(self, rotate=True):
        w, h = (self.height, self.width) if rotate and _turns(self) % 2 else (self.width, self.height)
        return VideoInfo(self.n_frames, self.fps, w, h, self.duration, self.rotation)
    def find(self, p):
        "Frame index whose pts is `p`, or None"
        if p is None: return None
        i = int(np.searchsorted(self.pts, p))
        return i if i < len(self.pts) and self.pts[i] == p else None
    def key_before(self, i):
        "Index of the last keyframe at or before frame `i` (0 if none)"
        j = int(np.searchsorted(self.keys, i, side='right')) - 1
        return int(self.keys[j]) if j >= 0 else 0

def _rate(s, pts, n):
    "Average frame rate of stream `s`"
    r = s.average_rate or s.guessed_rate or s.base_rate
    if r: return float(r)
    if pts is not None and n > 1 and pts[-1] > pts[0]: return float((n-1) / ((pts[-1]-pts[0]) * s.time_base))
    return 0.

# Containers whose own index (`stream.index_entries`) lists every packet with its dts, keyframe flag, position and size
_ENTRY_FMTS = {'mov,mp4,m4a,3gp,3g2,mj2'}

def _entries_index(fn, c, s, codec, fmt):
    "`(pts, keyframe flags)` of stream `s` from the container's own index, where it gives the frames exactly (else None)"
    # Only without frame reordering (pts order = dts order, so a packet's pts is its dts), and not MPEG-4 Part 2 (its
    # packets' bytes tell whether each holds one frame): elsewhere the packet scan reads the pts
    if fmt not in _ENTRY_FMTS or codec in _NO_TRUST or codec == 'mpeg4': return None
    if codec not in _NO_REORDER and s.codec_context.has_b_frames: return None
    ie = s.index_entries
    n = len(ie)
    if not n or n != s.frames: return None
    ts, keys, end = np.empty(n, np.int64), np.empty(n, bool), 0
    for i, e in enumerate(ie):
        if e.size <= 0 or e.is_discard: return None
        ts[i], keys[i], end = e.timestamp, e.is_keyframe, max(end, e.pos + e.size)
    if n > 1 and (np.diff(ts) <= 0).any(): return None
    if end > os.path.getsize(fn): return None  # cut short: the scan says where
    return ts, keys

def _pts_index(fn, s, spts, keys, w, h, rot, sv) -> '_VideoIndex':
    "The seekable `_VideoIndex` of stream `s` (`sv`-th video stream) whose frames have the sorted pts `spts`, keyframes at positions `keys`"
    n = len(spts)
    fps = _rate(s, spts, n)
    dur = float((spts[-1]-spts[0]) * s.time_base) + (1/fps if fps else 0.)
    return _VideoIndex(fn, n, fps, w, h, dur, pts=spts, keys=keys, rotation=rot, stream=sv)

_MOOV_CHECK = 32  # packets demuxed to check a `moov`-built index against what FFmpeg reports

def _moov_index(fn, c, s, moov, sv):
    "The `_VideoIndex` of stream `s` from the MP4/MOV sample tables `moov` (`read_moov`), checked against FFmpeg (None: scan)"
    # Each sample's pts as FFmpeg's mov demuxer computes them (stts + ctts, shifted by the edit list); trusted where FFmpeg
    # agrees: its own index keeps every sample (none discarded or dropped by the edit list) with the same decode-time span,
    # sizes and sync samples, the first packets demuxed carry the same pts, keyframe flags and sizes, and the first sample
    # is the first shown and decodes, alone, to a frame of its pts (so no frame is dropped at the start: decoding it with
    # the decoder flushed, not the two or three packets a B-frame decoder waits for, saves 8 ms at 1080p)
    tr = moov.tracks.get(s.id)  # `stream.id` is the MP4 track_ID
    if tr is None: return None
    n = len(tr.pts)
    ie = s.index_entries
    if n != s.frames or len(ie) != n or tr.end > os.path.getsize(fn): return None  # cut short: the scan says where
    e0, e1 = ie[0], ie[n-1]
    if (e0.is_discard or e1.is_discard or e1.timestamp - e0.timestamp != tr.dts[-1] - tr.dts[0]
        or e0.size != tr.sizes[0] or e1.size != tr.sizes[-1] or e1.is_keyframe != tr.keys[-1]): return None
    kpos = np.flatnonzero(tr.keys)
    if any(not ie[int(k)].is_keyframe for k in kpos[:_MOOV_CHECK]): return None
    order = np.argsort(tr.pts, kind='stable')
    spts = tr.pts[order]
    if (n > 1 and (np.diff(spts) <= 0).any()) or tr.pts[0] != spts[0]: return None
    k, first, want = 0, None, min(n, _MOOV_CHECK)
    try:
        for p in c.demux(s):
            if p.size:
                if (k >= n or p.pts != tr.pts[k] or p.is_keyframe != tr.keys[k] or p.size != tr.sizes[k] or p.is_discard
                    or p.is_corrupt): return None
                if k == 0: first = next(iter(p.decode() or s.codec_context.decode(None)), None)
                k += 1
            if not p.size or k >= want: break
    except Exception as e:
        if _ours(e): raise _library_error(fn, e) from e
        return None  # a damaged file: the scan says what is readable
    if first is None or k < want or first.pts != spts[0]: return None
    return _pts_index(fn, s, spts, np.flatnonzero(tr.keys[order]), first.width, first.height, _rotation(first), sv)

def _build_index(fn, force_decode=False, max_pixels=None, stream=None, entries=True, shown=True):
    "Build the `_VideoIndex` of `fn`'s video `stream`: from the container's index or its packets (no decoding) when they give the exact frames, else count by decoding"
    # An MP4/MOV file's own sample tables give its frames without reading a packet; with no display rotation in them it
    # is opened without FFmpeg's probing decode (`_QUICK_OPEN`: the frames would lose a rotation the container gives)
    moov = read_moov(fn) if entries and not force_decode else None
    quick = moov is not None and moov.upright
    c = _open_container(fn, quick=quick)
    try:
        s = _vstream(c, fn, stream)
        sv = list(c.streams.video).index(s)
        _check_pixels(fn, s.codec_context.width, s.codec_context.height, max_pixels)  # from the header, before decoding
        codec, fmt, rate = s.codec_context.name, c.format.name, _rate(s, None, 0)
        # VP8 with real pts: trusted if each packet's header says it shows a frame (`shown`: this has not failed yet)
        vp8 = codec == 'vp8' and fmt in _REAL_PTS and shown
        why = None if codec not in _NO_TRUST or vp8 else f'codec {codec}'
        if why is None and fmt not in _REAL_PTS and codec not in _NO_REORDER: why = f'codec {codec} in {fmt} container'
        if force_decode: why = 'forced'
        _set_threads(s, 1)
        count = why is not None  # the packets can't tell: count frames by decoding them all, in this same pass
        # MPEG-4 Part 2 and VP8: only their packets' bytes tell whether each holds one shown frame
        tables = moov is not None and not count and fmt in _ENTRY_FMTS and codec not in _NO_TRUST and codec != 'mpeg4'
        if tables and (ix := _moov_index(fn, c, s, moov, sv)) is not None:
            _STATS['indexed'] += 1; _STATS['entries'] += 1
            return ix
        if quick or tables:  # the paths below, with a fresh demuxer and decoder (a plain open)
            c.close()
            c = _open_container(fn)
            s = _vstream(c, fn, stream)
            rate = _rate(s, None, 0)
            _set_threads(s, 1)
        if not count and entries and (got := _entries_index(fn, c, s, codec, fmt)) is not None:
            # the container's own index: no packet read but those up to the first frame (its pts must be the first)
            spts, kf = got
            first = None
            try:
                for p in c.demux(s):
                    if (fr := p.decode()): first = fr[0]; break
            except Exception as e:
                if _ours(e): raise _library_error(fn, e) from e
            if first is not None and first.pts == spts[0]:
                _STATS['indexed'] += 1; _STATS['entries'] += 1
                return _pts_index(fn, s, spts, np.flatnonzero(kf), first.width, first.height, _rotation(first), sv)
            c.close()  # not the frames it says: scan the packets instead, with a fresh demuxer and decoder
            c = _open_container(fn)
            s = _vstream(c, fn, stream)
            _set_threads(s, 1)
        pts, keys, n_pk, n_dec, first, err, bvop = [], [], 0, 0, None, None, False
        packets, decoded = [], []  # when counting: (dts, pts, keyframe) of each packet, (pts, keyframe) of each decoded frame
        _STATS['indexed'] += 1
        try:
            for p in c.demux(s):
                if p.size:
                    n_pk += 1
                    if count: packets.append((p.dts, p.pts, p.is_keyframe))
                    if why is None:
                        if p.pts is None: why = 'packet without timestamp'
                        elif p.is_discard or p.is_corrupt: why = 'discarded or corrupt packet'
                        elif codec == 'mpeg4':
                            w = _mpeg4_check(bytes(p))
                            # B-VOPs outside a container with real pts: the packets' pts are the parser's guess, checked
                            # below against one full decode
                            if w == 'B-VOP': bvop = bvop or fmt not in _REAL_PTS
                            elif w: why = w
                        elif vp8: why = _vp8_check(memoryview(p)[:3], p.is_keyframe)
                        pts.append(p.pts); keys.append(p.is_keyframe)
                elif p.pts is not None: n_pk += 1; why = why or 'empty packet (dropped frame)'
                # Else decode only up to the first output frame: its pts must be the smallest (no frame dropped at the start)
                if count or first is None:
                    try: fr = p.decode()
                    except Exception as e:
                        if _ours(e): raise _library_error(fn, e) from e
                        n_ok = n_dec if count else _readable(fn, sv)
                        raise _verr(fn, f"decoding failed at frame {n_ok} ({type(e).__name__}: {e}): "
                                        f"{_readable_msg(n_ok, s.frames)}", _REENCODE) from None
                    if fr and first is None: first = fr[0]
                    if count: decoded += [(f.pts, f.key_frame) for f in fr]
                    n_dec += len(fr)
        except (VideoError, _LibraryError): raise
        except Exception as e:
            if _ours(e): raise _library_error(fn, e) from e
            err = e
        if err is not None and n_pk == 0:
            raise _verr(fn, f"no video packet can be read ({type(err).__name__}: {err})", _REENCODE)
        # A header count is only a hint: an AVI's counts empty 'dropped frame' chunks (XviD B-frames, H.264 copied into
        # AVI), so there fewer packets mean damage only when the file is shorter than its RIFF chunks say
        short = s.frames and n_pk < s.frames and s.frames-n_pk > max(1, s.frames//100)
        cut = (_riff_cut(fn) if fmt == 'avi' else 'x') if short and err is None else None
        if err is not None or cut:
            raise _verr(fn, f"it looks truncated or corrupt: its header announces {s.frames} frames but only {n_pk} packets "
                            f"could be read" + (f" ({type(err).__name__}: {err})" if err is not None else '')
                            + (f" ({cut})" if cut and cut != 'x' else '') + f"; {_readable_msg(_readable(fn, sv), s.frames)}",
                        _REENCODE)
        if short and why is None: why = f'its header announces {s.frames} frames, its packets {n_pk}'
        if first is None: raise _verr(fn, "it has no decodable frame", _REENCODE)
        if why is None:
            order = np.argsort(np.asarray(pts, dtype=np.int64), kind='stable')
            spts = np.asarray(pts, dtype=np.int64)[order]
            if len(spts) > 1 and (np.diff(spts) == 0).any(): why = 'duplicate timestamps'
            elif first.pts != spts[0]: why = 'frames dropped at the start'
        w, h, rot = first.width, first.height, _rotation(first)
        kidx = None if why is not None else np.flatnonzero(np.asarray(keys)[order])
        if why is None and bvop:
            # MPEG-4 Part 2 with B-VOPs in AVI: seekable by pts where a full decode yields exactly the packets' pts, in
            # order, and each keyframe packet decodes to an I-VOP. A frame after an I-VOP (in decode order) refers only to
            # it and later VOPs, except the B-VOPs shown before it, which a seek's decode drops by their pts
            got = []
            n_dec, count = _count_frames(fn, sv, got), True
            if (len(got) != len(spts) or any(p != q for (p, _), q in zip(got, spts.tolist()))
                or not all(got[k][1] for k in kidx.tolist())): why = 'B-VOP (decoded timestamps differ from the packets)'
        if why is None: return _pts_index(fn, s, spts, kidx, w, h, rot, sv)
        # one decode counted the frames: where it showed one frame per packet, each known by its pts, the file is
        # seekable by packet dts (AVI's untrusted codecs, VP8 without invisible frames)
        seek_by_dts = (_decode_index(packets, decoded) if count and (fmt == 'avi' or codec in _NO_TRUST) and not force_decode
                       else None)
    finally: c.close()
    if why == _HIDDEN:  # a VP8 file with hidden frames: count them by decoding, as for VP8 in any other container
        _STATS['indexed'] -= 1
        return _build_index(fn, max_pixels=max_pixels, stream=stream, entries=entries, shown=False)
    # Untrusted packets: the frame count is what a full decode yields
    n = n_dec if count else _count_frames(fn, sv)
    return _VideoIndex(fn, n, rate, w, h, n/rate if rate else 0., why=why, rotation=rot, stream=sv, **(seek_by_dts or {}))

def _rotation(f) -> int:
    "Display rotation of decoded frame `f` from its display-matrix side data, in degrees (0 if none)"
    try: r = f.rotation
    except Exception: return 0
    return int(round(r or 0))

def _turns(ix) -> int:
    "Quarter turns (counter-clockwise, `np.rot90`'s `k`) that show `ix`'s frames upright"
    return int(round(getattr(ix, 'rotation', 0) / 90)) % 4

def _upright(a, k):
    "(H,W,C) frame `a` turned `k` quarter turns counter-clockwise: a view, copied once by whoever keeps it (`_copy_frame`)"
    # `read_frames` copies each frame into its output array anyway: a copy here was a second full-frame copy per frame
    # (~1.3 ms at 568x320), which made rotated phone clips the slowest
    return np.rot90(a, k) if k else a

_PIXEL = np.dtype((np.void, 3))  # one RGB/BGR pixel as a single item

def _copy_frame(dst, src):
    "`dst[...] = src` for (H,W,C) uint8 frames; a turned 3-channel frame (a strided view) is copied a pixel at a time"
    # numpy copies a transposed (H,W,3) view byte by byte; as (H,W) items of 3 bytes it moves half as many items, 2x faster
    if src.ndim == 3 and src.shape[2] == 3 and not src.flags.c_contiguous and src.strides[2] == 1 and dst.flags.c_contiguous:
        np.copyto(dst.view(_PIXEL)[..., 0], src.view(_PIXEL)[..., 0])
    else: dst[...] = src
    return dst

def _own(a):
    "Frame `a` (a view into a decoded frame, maybe turned or cropped) as a C-contiguous array of its own"
    return _copy_frame(np.empty(a.shape, a.dtype), a)

def _riff_cut(fn) -> str|None:
    "Why the AVI `fn` is cut short (its RIFF chunks declare more bytes than the file holds), else None"
    size, off = os.path.getsize(fn), 0
    with open(fn, 'rb') as f:
        while off + 8 <= size:  # top level: 'RIFF' 'AVI ' then (OpenDML, over 1 GB) 'RIFF' 'AVIX' chunks
            f.seek(off)
            h = f.read(8)
            if h[:4] != b'RIFF': break
            n = int.from_bytes(h[4:8], 'little')
            if off + 8 + n > size: return f"its RIFF chunks declare {off+8+n:,} bytes, the file holds {size:,}"
            off += 8 + n + (n & 1)
    return None

def _decode_index(packets, decoded) -> dict|None:
    "`_VideoIndex` arguments to seek in a file whose `packets` were all `decoded`: one frame a packet, known by its pts (else None)"
    ppts, fpts = [p for _, p, _ in packets], [p for p, _ in decoded]
    if not packets or len(decoded) != len(packets) or any(d is None or p is None for d, p, _ in packets) or None in fpts: return None
    if len(set(ppts)) != len(ppts) or set(fpts) != set(ppts): return None
    at = {p: i for i, p in enumerate(ppts)}
    src = np.array([at[p] for p in fpts])  # the packet each decoded frame came from, in output order
    before = np.concatenate([[-1], np.maximum.accumulate(src)[:-1]])
    # decoding can start at packet k when it decodes to a keyframe (the decoder's flag: AVI demuxers may not set the
    # packet's), frame k comes from it, and frames 0..k-1 from the packets before it
    keys = [k for k in range(len(packets)) if decoded[k][1] and src[k] == k and before[k] < k]
    if not keys or keys[0] != 0: return None
    return dict(pts=np.asarray(fpts, dtype=np.int64), keys=np.asarray(keys), dts=np.asarray([packets[k][0] for k in keys]))

def _readable(fn, stream:int=0) -> int:
    "How many frames of `fn`'s video `stream` decode, from the first, before an error (a damaged file)"
    n = 0
    try:
        with _open_container(fn) as c:
            s = _vstream(c, fn, stream)
            _set_threads(s, 1)
            for p in c.demux(s): n += len(p.decode())
    except (VideoError, _LibraryError): raise
    except Exception as e:
        if _ours(e): raise _library_error(fn, e) from e
    return n

def _readable_msg(n, declared) -> str:
    "Which frames of a damaged file are readable: `n` from the first, of the `declared` ones its header announces"
    of = f" of the {declared} its header declares" if declared else ''
    return f"frames 0-{n-1}{of} are readable" if n else f"none of the frames{of} is readable"

def _count_frames(fn, stream:int=0, frames:list|None=None):
    "Number of frames a plain full decode of `fn`'s video `stream` yields (appending `(pts, keyframe)` of each to `frames`)"
    n = 0
    with _open_container(fn) as c:
        s = _vstream(c, fn, stream)
        _set_threads(s, None)
        try:
            for p in c.demux(s):
                fr = p.decode()
                n += len(fr)
                if frames is not None: frames += [(f.pts, f.key_frame) for f in fr]
        except Exception as e:
            if _ours(e): raise _library_error(fn, e) from e
            raise _verr(fn, f"decoding failed after {n} frames ({type(e).__name__}: {e}): {_readable_msg(n, s.frames)}",
                    _REENCODE) from None
    return n

class _Lru(OrderedDict):
    "The cache of built `_VideoIndex`es (most recently used last); clearing it also forgets the compact tier (`_MORE`, `_STORES`)"
    def clear(self):
        super().clear()
        _MORE.clear(); _STORES.clear(); _PROBED.clear()

_CACHE, _CACHE_MAX, _LOCK = _Lru(), 1<<17, threading.Lock()  # a few KiB an entry; UCF101 has 13,320 files
_STATS = Counter()  # in this process: 'indexed' (files indexed), 'entries' (of them, from the container's own index or
                    # an MP4's sample tables, no packet scan),
                    # 'decoded' (frames decoded to read frames)

def _cache_key(fn, stream=None):
    "The cache key of `fn`'s video `stream`: a changed file (size, modification time) is another key"
    fn = Path(fn)
    try: st = fn.stat()
    except OSError: return None
    return (os.path.abspath(fn), st.st_size, st.st_mtime_ns, stream)

# ---------------------------------------------------------------------------------------------------------------------
# The compact index: every file indexed in this process (`_MORE`) and the saved indexes of datasets (`_STORES`)
# An entry is ~100 bytes plus its pts as runs of equal steps (one run for a constant frame rate) and its keyframes: the
# LRU above keeps the expanded `_VideoIndex` of the files being read, this tier keeps every file ever indexed, so nothing
# is indexed twice in a process whatever the dataset size, and a saved index is memory-mapped: shared by all workers

_REC = np.dtype([('path','<u8'), ('n','<i8'), ('fps','<f8'), ('w','<i4'), ('h','<i4'), ('dur','<f8'), ('rot','<i2'),
                 ('stream','<i2'), ('flags','<i4'), ('r0','<i8'), ('nr','<i4'), ('k0','<i8'), ('nk','<i4'), ('d0','<i8')])
_SEEK, _DTS = 1, 2  # `flags`: seekable (pts index), seekable by packet dts (decode-built)
_MORE, _STORES = {}, {}  # {hash: `_compact` bytes} built here; {file: _Store} memory-mapped saved indexes
_MAGIC, _HEAD = b'FSEQIDX1', 512  # a saved index: magic, header length, JSON `{array: [count, offset]}`, then the arrays
_INDEX_ENV = 'FASTAI_SEQ_INDEX_DIR'  # a folder for the saved indexes; '', 0, off, none, false: save none
_INDEX_NAME = '.fastai_seq_index'    # the saved index, beside the dataset (in its files' common folder)

def _h64(s:str) -> int: return int.from_bytes(hashlib.blake2b(s.encode('utf-8', 'surrogateescape'), digest_size=8).digest(), 'little')
def _khash(k) -> int: return _h64('\0'.join(map(str, k)))               # path, size, mtime, stream: a changed file is new
def _phash(k) -> int: return _h64(f'{k[0]}\0{k[3]}')                     # path and stream: the entry it replaces

def _runs(pts) -> np.ndarray:
    "`pts` as `[first, step, count, step, count...]`: runs of equal steps (one for a constant frame rate)"
    pts = np.asarray(pts, dtype=np.int64)
    if len(pts) < 2: return pts.copy()
    d = np.diff(pts)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(d)) + 1])
    return np.concatenate([pts[:1], np.stack([d[starts], np.diff(np.append(starts, len(d)))], 1).ravel()])

def _unruns(r) -> np.ndarray:
    "The pts of runs `r` (`_runs`)"
    r = np.asarray(r, dtype=np.int64)
    if len(r) < 2: return r.copy()
    return np.concatenate([r[:1], r[0] + np.cumsum(np.repeat(r[1::2], r[2::2]))])

_PACK = struct.Struct('<QqdiidhhiIII')  # path hash, row (n, fps, w, h, duration, rotation, stream, flags), pool lengths

def _compact(k, ix) -> bytes:
    "`_VideoIndex` `ix` of cache key `k` in ~60 bytes plus its pts runs and keyframes (`_unpack` reads it)"
    flags = (_SEEK if ix.seekable else 0) | (_DTS if ix.dts is not None else 0)
    runs = _runs(ix.pts) if ix.pts is not None else np.zeros(0, np.int64)
    keys = np.asarray([] if ix.keys is None else ix.keys, dtype='<i4')
    dts = np.asarray([] if ix.dts is None else ix.dts, dtype='<i8')
    head = _PACK.pack(_phash(k), ix.n_frames, ix.fps, ix.width, ix.height, ix.duration, ix.rotation, ix.stream, flags,
                      len(runs), len(keys), len(dts))
    return head + runs.astype('<i8').tobytes() + keys.tobytes() + dts.tobytes()

def _unpack(b) -> tuple:
    "`(path hash, row, runs, keys, dts)` of a compact entry (`_compact`'s bytes, or already this tuple)"
    if not isinstance(b, bytes): return b
    ph, *row, nr, nk, nd = _PACK.unpack_from(b)
    o = _PACK.size
    runs = np.frombuffer(b, '<i8', nr, o); o += 8*nr
    keys = np.frombuffer(b, '<i4', nk, o); o += 4*nk
    return ph, tuple(row), runs, keys, np.frombuffer(b, '<i8', nd, o)

def _expand(fn, e) -> '_VideoIndex':
    "The `_VideoIndex` of `fn` from its compact entry `e`"
    _, (n, fps, w, h, dur, rot, stream, flags), runs, keys, dts = _unpack(e)
    seek = bool(flags & _SEEK)  # a decode-built index (`_DTS`) is seekable too, by packet dts
    why = None if seek and not flags & _DTS else 'packets not trusted (saved index)'
    return _VideoIndex(fn, int(n), float(fps), int(w), int(h), float(dur), pts=_unruns(runs) if seek else None,
                       keys=np.asarray(keys, dtype=np.int64) if seek else None, why=why,
                       dts=np.asarray(dts, dtype=np.int64) if flags & _DTS else None, rotation=int(rot), stream=int(stream))

def _stamp(f) -> tuple:
    "What tells one version of a saved index file (a path or an open descriptor) from another: it is replaced, never changed"
    st = os.stat(f)
    return (st.st_ino, st.st_size, st.st_mtime_ns)

class _Store:
    "A saved index, memory-mapped: sorted key hashes, their rows, and the pools of runs, keyframes and dts the rows point into"
    def __init__(self, fn):
        import mmap
        self.fn = str(fn)
        with open(fn, 'rb') as f:
            self.stamp = _stamp(f.fileno())
            head = f.read(16)
            if head[:8] != _MAGIC: raise ValueError(f"{fn} is not a fastai_seq index")
            n = int.from_bytes(head[8:16], 'little')
            meta = json.loads(f.read(n))
            self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        dt = {'hash': np.dtype('<u8'), 'rec': _REC, 'runs': np.dtype('<i8'), 'keys': np.dtype('<i4'), 'dts': np.dtype('<i8')}
        self.a = {k: np.frombuffer(self.mm, dtype=dt[k], count=c, offset=o) for k, (c, o) in meta.items()}
    def __len__(self): return len(self.a['hash'])
    def find(self, hs) -> np.ndarray:
        "Row of each of the hashes `hs` (-1: not in this index)"
        h = self.a['hash']
        if not len(h): return np.full(len(hs), -1)
        i = np.minimum(np.searchsorted(h, hs), len(h)-1)
        return np.where(h[i] == hs, i, -1)
    def entry(self, i) -> tuple:
        r, a = self.a['rec'][i], self.a
        row = tuple(r[f].item() for f in ('n', 'fps', 'w', 'h', 'dur', 'rot', 'stream', 'flags'))
        dts = a['dts'][r['d0']:r['d0']+r['nk']] if r['flags'] & _DTS else a['dts'][:0]
        return (int(r['path']), row, a['runs'][r['r0']:r['r0']+r['nr']].copy(), a['keys'][r['k0']:r['k0']+r['nk']].copy(),
                dts.copy())

def _write_store(fn, hs, recs, pools):
    "Write a saved index to `fn` atomically (a temporary file renamed over it): readers keep the one they mapped"
    arrays = {'hash': hs, 'rec': recs, **pools}
    meta, off = {}, _HEAD  # each array 64-byte aligned, after a header of `_HEAD` bytes
    for k, a in arrays.items(): meta[k] = [len(a), off]; off += (a.nbytes + 63)//64*64
    head = json.dumps(meta).encode().ljust(_HEAD - 16)
    fn = Path(fn)
    fn.parent.mkdir(parents=True, exist_ok=True)
    tmp = fn.with_name(f'{fn.name}.{os.getpid()}.{threading.get_ident()}.tmp')
    try:
        with open(tmp, 'wb') as f:
            f.write(_MAGIC + len(head).to_bytes(8, 'little') + head)
            for k, a in arrays.items():
                f.write(np.ascontiguousarray(a).tobytes()); f.write(b'\0' * ((-a.nbytes) % 64))
        os.replace(tmp, fn)
    finally:
        if tmp.exists(): tmp.unlink()

def _merged(store, new:dict) -> tuple:
    "`(hashes, rows, pools)` of `store`'s entries (None: no store) with `new` `{hash: entry}` added (replacing a changed file's)"
    if store is not None:
        a, drop = store.a, np.isin(store.a['rec']['path'], np.fromiter((_unpack(e)[0] for e in new.values()), np.uint64, len(new)))
        keep = ~drop & ~np.isin(a['hash'], np.fromiter(new, np.uint64, len(new)))
        hs0, rec0, pools0 = a['hash'][keep], a['rec'][keep].copy(), {k: a[k] for k in ('runs', 'keys', 'dts')}
    else: hs0, rec0, pools0 = np.zeros(0, np.uint64), np.zeros(0, _REC), {k: np.zeros(0, t) for k, t in (('runs', '<i8'), ('keys', '<i4'), ('dts', '<i8'))}
    rec1 = np.zeros(len(new), _REC)
    lens = {k: len(v) for k, v in pools0.items()}
    pools1 = {k: [] for k in pools0}
    for j, (ph, row, runs, keys, dts) in enumerate(map(_unpack, new.values())):
        r = rec1[j]
        r['path'] = ph
        for f, v in zip(('n', 'fps', 'w', 'h', 'dur', 'rot', 'stream', 'flags'), row): r[f] = v
        r['r0'], r['nr'], r['k0'], r['nk'], r['d0'] = lens['runs'], len(runs), lens['keys'], len(keys), lens['dts']
        for k, v in (('runs', runs), ('keys', keys), ('dts', dts)): pools1[k].append(v); lens[k] += len(v)
    hs = np.concatenate([hs0, np.fromiter(new, np.uint64, len(new))])
    recs = np.concatenate([rec0, rec1])
    order = np.argsort(hs, kind='stable')
    pools = {k: np.concatenate([pools0[k], *pools1[k]]).astype(pools0[k].dtype) for k in pools0}
    return hs[order], recs[order], pools

def _index_dir():
    "The folder `FASTAI_SEQ_INDEX_DIR` names; False when it turns saving off; None when unset (beside the dataset)"
    v = os.environ.get(_INDEX_ENV)
    if v is None: return None
    return False if v.strip().lower() in ('', '0', 'off', 'none', 'false', 'no') else Path(v).expanduser()

_FALLBACK = []

def _fallback_dir() -> Path:
    "Where saved indexes of read-only datasets go: fastai's data folder (looked up once)"
    if not _FALLBACK:
        try:
            from fastai.data.external import fastai_path
            _FALLBACK.append(Path(fastai_path('data'))/_INDEX_NAME)
        except Exception: _FALLBACK.append(Path.home()/'.fastai'/'data'/_INDEX_NAME)
    return _FALLBACK[0]

def index_locations(root) -> list:
    "Where the saved index of the dataset in folder `root` is looked for, in order ([] when saving is off)"
    d, name = _index_dir(), f'{_h64(os.path.abspath(root)):016x}'
    if d is False: return []
    if d is not None: return [d/name]
    # files spread over unrelated folders have a shallow common folder ('/', '/tmp', the home folder): never write there
    r = os.path.abspath(root)
    if len(Path(r).parts) <= 2 or r==os.path.abspath(os.path.expanduser('~')): return [_fallback_dir()/name]
    return [Path(root)/_INDEX_NAME, _fallback_dir()/name]

def _root(keys) -> str|None:
    "The folder that holds the files of cache keys `keys`"
    dirs = {os.path.dirname(k[0]) for k in keys}
    if not dirs: return None
    try: return os.path.commonpath(dirs)
    except ValueError: return None  # files on different drives (Windows)

def _open_store(root, fresh=False) -> _Store|None:
    "The saved index of the dataset in `root`, memory-mapped once per process (None if it has none); `fresh`: as now on disk"
    for fn in ([] if root is None else index_locations(root)):
        s = _STORES.get(str(fn))
        if s is not None and fresh:  # another process may have saved a newer one since
            try: s = s if _stamp(fn) == s.stamp else None
            except OSError: s = None
        if s is not None: return s
        try: s = _Store(fn)
        except (OSError, ValueError, KeyError): continue
        with _LOCK: _STORES[str(fn)] = s
        return s
    return None

def _save_store(root, store, new:dict) -> _Store|None:
    "Save the dataset index of `root`: `store`'s entries and `new` ones; the new store, or None if nowhere is writable"
    if not new or root is None: return store
    hs, recs, pools = _merged(store, new)
    for fn in index_locations(root):
        try: _write_store(fn, hs, recs, pools)
        except OSError: continue  # a read-only dataset: the next place
        s = _Store(fn)
        with _LOCK:
            if store is not None: _STORES.pop(store.fn, None)
            _STORES[str(fn)] = s
        return s
    return store

@contextmanager
def _dataset_lock(root):
    "Held by one process at a time per dataset `root` (a lock file beside its saved index): the one indexing it"
    # The processes of a distributed job (and the nodes sharing its file system) start together: the first takes the
    # lock and indexes the dataset, the others wait and then read the index it saved, instead of all indexing it all.
    # Where no lock can be taken (no `fcntl`, nowhere writable, a file system without locks) each process indexes alone
    f = None
    try: import fcntl
    except ImportError: fcntl = None
    for fn in ([] if root is None or fcntl is None else index_locations(root)):
        try:
            fn.parent.mkdir(parents=True, exist_ok=True)
            f = open(fn.with_name(fn.name + '.lock'), 'a+b')
        except OSError: continue
        try: fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except OSError: f.close(); f = None
        break
    try: yield
    finally:
        if f is not None: f.close()  # closing releases the lock

_PROBED = set()  # folders whose saved index this process has looked for

def _open_stores_above(path):
    "Map the saved indexes of the folders above file `path` not looked at yet (a dataset read before `index_videos` ran)"
    d = os.path.dirname(path)
    while d and d not in _PROBED:
        with _LOCK: _PROBED.add(d)
        _open_store(d)
        up = os.path.dirname(d)
        if up == d: break
        d = up

def _lookup(k, above=False):
    "The compact entry of cache key `k` built in this process or saved (None if none); `above`: also look in the folders above it"
    h = _khash(k)
    e = _MORE.get(h)
    if e is not None: return e
    if above: _open_stores_above(k[0])
    for s in list(_STORES.values()):
        i = s.find(np.array([h], dtype=np.uint64))[0]
        if i >= 0: return s.entry(i)
    return None

def _remember(k, ix):
    "Keep `_VideoIndex` `ix` of cache key `k`: expanded in the LRU, compact for good"
    with _LOCK:
        _CACHE[k] = ix
        _CACHE.move_to_end(k)
        while len(_CACHE) > _CACHE_MAX: _CACHE.popitem(last=False)
        _MORE[_khash(k)] = _compact(k, ix)

def _cached_index(fn, force_decode=False, max_pixels=None, stream=None):
    "The (cached per path, size, mtime and stream) `_VideoIndex` of `fn`; `VideoError` if its frames are above `max_pixels`"
    k = _cache_key(fn, stream)
    if k is not None and not force_decode:
        with _LOCK:
            ix = _CACHE.get(k)
            if ix is not None: _CACHE.move_to_end(k)
        if ix is None and (e := _lookup(k, above=True)) is not None:  # indexed before (here, or saved): no need to index it again
            ix = _expand(fn, e)
            with _LOCK:
                _CACHE[k] = ix
                while len(_CACHE) > _CACHE_MAX: _CACHE.popitem(last=False)
        if ix is not None:
            _check_pixels(fn, ix.width, ix.height, max_pixels)
            return ix
    ix = _build_index(fn, force_decode=force_decode, max_pixels=max_pixels, stream=stream)
    if k is not None: _remember(k, ix)
    return ix

def _compact_index_or_none(fk, max_pixels=None, stream=None):
    "The compact entry (`_compact`) of file `fk[0]`'s index (cache key `fk[1]`), or None if it cannot be indexed (its reader says why)"
    try: return _compact(fk[1], _build_index(fk[0], max_pixels=max_pixels, stream=stream))
    except Exception: return None

def before_fork():
    "Free this process's unreachable PyAV decoders now: one that ran threads, freed in a forked child, waits for them forever"
    gc.collect()

def _index_files(files, n_workers=0, max_pixels=None, progress=None, stream=None, build=True) -> tuple:
    "`(store files, entries, n)` covering `files`: those neither indexed here nor saved are indexed (in parallel; `build`) and saved"
    fs = {}
    for f in files:
        if (k := _cache_key(f, stream)) is not None: fs.setdefault(k, f)
    root = _root(fs)
    hs = np.fromiter((_khash(k) for k in fs), np.uint64, len(fs))
    def unsaved(store):  # which files the saved index lacks, and which of them need indexing
        saved = store.find(hs) >= 0 if store is not None else np.zeros(len(hs), bool)
        return saved, [(k, f) for (k, f), h, s in zip(fs.items(), hs.tolist(), saved)
                       if not s and h not in _MORE and _lookup(k) is None] if build else []
    store = _open_store(root)
    saved, todo = unsaved(store)
    new = {h: e for h, s in zip(hs.tolist(), saved) if not s and (e := _MORE.get(h)) is not None}
    if todo or new:
        with _dataset_lock(root):
            store = _open_store(root, fresh=True)  # what the process that held the lock saved
            saved, todo = unsaved(store)
            if todo:
                nw = n_workers if len(todo) >= 16 else 0  # a pool costs more than it saves for a few files
                if nw: before_fork()
                # a pool process sends back the compact entry (a few hundred bytes), kept as is: expanded when read
                es = parallel(_compact_index_or_none, [(f, k) for k, f in todo], max_pixels=max_pixels, stream=stream,
                              n_workers=nw, progress=len(todo) >= 64 if progress is None else progress,
                              chunksize=max(1, min(32, len(todo) // (8 * max(nw, 1)))))
                with _LOCK: _MORE.update((_khash(k), e) for (k, _), e in zip(todo, es) if e is not None)
            # save what this process knows of these files and the saved index lacks (built now, or when read before)
            new = {h: e for h, s in zip(hs.tolist(), saved) if not s and (e := _MORE.get(h)) is not None}
            store = _save_store(root, store, new)
    saved = store.find(hs) >= 0 if store is not None else np.zeros(len(hs), bool)
    if store is not None and new:  # now in the mapped file: the Python copies (~1 KiB each) need not stay, nor reach forked workers
        with _LOCK:
            for h, s in zip(hs.tolist(), saved):
                if s: _MORE.pop(h, None)
    rest = {h: e for h, s in zip(hs.tolist(), saved) if not s and (e := _MORE.get(h)) is not None}
    return ([store.fn] if store is not None else []), rest, int(saved.sum()) + len(rest)

class _IndexShip:
    "What a loader keeps for its DataLoader workers: the saved indexes to map, and the entries no saved index holds"
    def __init__(self, stores=(), entries=None, n=0): self.stores, self.entries, self.n = list(stores), entries or {}, n
    def __reduce__(self): return (_IndexShip, ())
    def __len__(self): return self.n

def _seed_cache(stores, entries:dict) -> _IndexShip:
    "Unpickled in a worker: map the saved indexes and keep the shipped entries (still keyed by path, size and mtime)"
    for fn in stores:
        if fn not in _STORES:
            try: s = _Store(fn)
            except (OSError, ValueError, KeyError): continue
            with _LOCK: _STORES[fn] = s
    with _LOCK: _MORE.update(entries)
    return _IndexShip()

def _ship(o:_IndexShip): return (_seed_cache, (o.stores, o.entries))
# Only multiprocessing's `ForkingPickler`, which starts spawn/forkserver workers, carries the index (`_ship`: the
# worker's `_seed_cache` maps the saved index files and keeps the other entries); any other pickle (an exported learner, a
# saved `DataLoaders`) holds an empty `_IndexShip` (`__reduce__`), and forked workers inherit the mapped indexes themselves
ForkingPickler.register(_IndexShip, _ship)

def index_videos(files, # Video files
                 n_workers:int=0, # Processes indexing in parallel (a pool only for 16 files or more; 0: in this process)
                 max_pixels:int=None, # Leave out files whose header declares more pixels per frame (reported when read)
                 progress:bool=None, # Show a progress bar (None: for 64 files or more)
                 stream:int=None, # Which of the files' video streams (None: the one FFmpeg picks)
                 build:bool=True, # False: index none (each is indexed when first read), only map the saved index and save
                                  # those this process indexed since
                )->_IndexShip: # What to keep on the loader: spawn/forkserver workers map the saved index from it
    "Index those of `files` not indexed yet, here or in the dataset's saved index (then saved there), before workers start"
    # Saved beside the dataset (`<common folder of files>/.fastai_seq_index`), else in fastai's data folder when that is
    # read-only, or in the folder `FASTAI_SEQ_INDEX_DIR` names (set it to 'off' to save nothing); keyed by path, size,
    # modification time and stream: a changed file is indexed again
    stores, entries, n = _index_files(files, n_workers=n_workers, max_pixels=max_pixels, progress=progress, stream=stream,
                                      build=build)
    return _IndexShip(stores, entries, n)

def video_info(fn, # A video file
               max_pixels:int=None, # Raise `VideoError`, decoding nothing, if the header declares more pixels per frame
               rotate:bool=True, # Report the size of frames turned upright by the file's display rotation (`read_frames`)
               stream:int=None, # Which of the file's video streams (None: the one FFmpeg picks, as players do)
              )->VideoInfo:
    "Frame count (exactly what a full decode yields), fps, size and duration of `fn`, without decoding it where possible"
    return _cached_index(fn, max_pixels=max_pixels, stream=stream).info(rotate)

# ---------------------------------------------------------------------------------------------------------------------
# Decoding by index

class _Mismatch(Exception): "The packet index did not predict the decoded frames: decode from the start instead"
class _Overshoot(Exception): "A seek landed after the wanted frame"

def _default_threads():
    "Decoder threads: 1 in DataLoader workers (torch sets 1 thread there), else up to 2"
    return max(1, min(2, torch.get_num_threads()))

def _logging_on() -> bool:
    "Whether PyAV's Python log callback is installed (`av.logging.set_level(<int>)`, as torchvision <= 0.25 does at import)"
    # `get_level()` is None exactly while PyAV's silent callback is installed (its default, or `set_level(None)`); after
    # `restore_default_callback()` it still says the old level: then decoding is single-threaded with no need, never hangs
    return av.logging.get_level() is not None

def _n_threads(threads) -> int:
    "Decoder threads for `threads` (None: the default): always 1 while PyAV's Python log callback is installed"
    # An FFmpeg decoder thread that logs calls that callback, which waits for the GIL; freeing the decoder waits, holding
    # the GIL, for that thread: a deadlock (PyAV-Org/PyAV#751) that hung 2 in 4 runs of 300 `read_frames` at ERROR level
    if _logging_on(): return 1
    return _default_threads() if threads is None else max(1, int(threads))

def _set_threads(s, threads):
    "Set the decoder threads of stream `s` (before it decodes): every decode goes through here"
    n = _n_threads(threads)
    cc = s.codec_context
    if n > 1: cc.thread_type, cc.thread_count = 'AUTO', n
    else: cc.thread_count = 1

_TLS = threading.local()  # one `VideoReformatter` per thread: its swscale context is kept between calls and files

def _reformatter() -> VideoReformatter:
    r = getattr(_TLS, 'reformatter', None)
    if r is None: r = _TLS.reformatter = VideoReformatter()
    return r

_SWS_THREADS = 1  # PyAV >= 14 scales with a pool of threads by default: twice the CPU for small frames

class _SizeChange(Exception): "A frame to scale is not of the size the scaling was planned for"

class _Scaler:
    "RGB conversion by this thread's `VideoReformatter` (one swscale thread), scaling frames of size `src` to `size` `(w,h)`"
    def __init__(self, size=None, src=None): self.size, self.src = size, src
    def reformat(self, f, format):
        if self.size is not None and (f.width, f.height) != self.src: raise _SizeChange(f'{self.src} then {(f.width, f.height)}')
        kw = {} if self.size is None else dict(width=self.size[0], height=self.size[1], interpolation='BILINEAR')
        return _reformatter().reformat(f, format=format, **kw, threads=_SWS_THREADS)

def _to_array(f, format, r):
    "Frame `f` as a uint8 `(H,W,C)` array, converted by `_Scaler` `r` (reusing one swscale context: faster, same pixels)"
    a = r.reformat(f, format=format).to_ndarray()
    return a[...,None] if a.ndim == 2 else a

_SEEK_COST = 6  # frames: decoding fewer than this many frames to reach the next wanted one is cheaper than a seek

def _plan(ix, wanted, threads):
    "Group sorted frame indices into decode runs `(keyframe, idxs)`: a run starts with a seek to `keyframe`"
    runs, pos, cost = [], -1, _SEEK_COST + (threads or 1)
    for w in wanted:
        k = ix.key_before(w)
        if not runs or k-pos-1 > cost: runs.append([k, [w]])
        else: runs[-1][1].append(w)
        pos = w
    return runs

# Codecs whose non-reference frames (skipped by `skip_frame='NONREF'`) are never used to predict other frames
_SKIP_NONREF = {'h264', 'mpeg4', 'mpeg2video', 'mpeg1video'}

def _skips_nonref(cc) -> bool:
    "Whether codec context `cc`'s decoder may skip the non-reference frames we do not want (nothing refers to them)"
    if cc.name in _SKIP_NONREF: return True
    # HEVC's '_N' pictures are 'sub-layer non-reference': pictures of a higher temporal sub-layer may refer to them, so
    # only a stream of one temporal layer (its hvcC record says so: byte 21, bits 3-5) never uses them
    x = cc.extradata if cc.name == 'hevc' else None
    return x is not None and len(x) > 22 and x[0] == 1 and (x[21] >> 3) & 7 == 1

_REORDER_MAX = 16  # frames: how far past the last wanted frame a packet can come before it, in decode order

def _finder(ix, first, last):
    "`ix.find` as a dict lookup for the frames `first..last` (and the few packets after them that can come earlier)"
    hi = min(last + 1 + _REORDER_MAX, ix.n_frames)
    return dict(zip(ix.pts[first:hi].tolist(), range(first, hi))).get

def _decode_run(c, s, ix, key, idxs, format, seek, r):
    "Yield `(i, array)` for the frames `idxs` (sorted), decoding from keyframe `key` (seeking to it if `seek`)"
    if seek: c.seek(int(ix.pts[key]), stream=s, backward=True, any_frame=False)
    cc = s.codec_context
    skip = _skips_nonref(cc)
    want, last = set(idxs), idxs[-1]
    exp, lpts, skippable, cur = (0 if not seek else None), None, set(), None
    find = _finder(ix, 0, last) if not seek else None
    for p in c.demux(s):
        if exp is None:  # first packet after a seek: must be a keyframe we know, at or before the first wanted frame
            if not p.size: raise _Mismatch('nothing to read after seeking')
            L = ix.find(p.pts)
            if L is None or not p.is_keyframe: raise _Mismatch('seek landed on an unknown packet')
            if L > idxs[0]: raise _Overshoot()
            exp, lpts, find = L, p.pts, _finder(ix, L, last)
        if skip and p.size:  # frames we don't want and nothing refers to need not be decoded at all
            j = find(p.pts)
            mode = 'NONREF' if j is not None and j >= exp and j not in want else 'DEFAULT'
            if mode == 'NONREF': skippable.add(j)
            if mode != cur: cc.skip_frame = cur = mode
        for f in p.decode():
            if lpts is not None and f.pts is not None and f.pts < lpts: continue  # leading frames of an open GOP
            j = find(f.pts)
            # the decoded frame must be the next one expected, or come after frames we let the decoder skip
            if j is None or j < exp or any(k not in skippable for k in range(exp, j)):
                raise _Mismatch(f'frame {exp}: expected pts {ix.pts[exp]}, got {f.pts}')
            _STATS['decoded'] += 1
            if j in want: yield j, _to_array(f, format, r)
            if j == last: return
            exp = j+1
    raise _Mismatch('end of file before the last wanted frame')

def _dts_run(c, s, ix, key, idxs, format, seek, r):
    "`_decode_run` for a decode-built index (`ix.dts`): seek to keyframe `key`'s packet dts, then count decoded frames"
    if seek: c.seek(int(ix.dts[np.searchsorted(ix.keys, key)]), stream=s, backward=True, any_frame=False)
    want, last, i = set(idxs), idxs[-1], (0 if not seek else None)
    for p in c.demux(s):
        if i is None:  # first packet after a seek: a keyframe we know, at or before the first wanted frame
            if not p.size: continue
            i = ix.key_at_dts.get(p.dts)
            if i is None: raise _Mismatch('seek landed on a packet that is not a known keyframe')
            if i > idxs[0]: raise _Overshoot()
        for f in p.decode():
            if i >= ix.n_frames or f.pts != ix.pts[i]: raise _Mismatch(f'frame {i}: expected pts {ix.pts[min(i, ix.n_frames-1)]}, got {f.pts}')
            _STATS['decoded'] += 1
            if i in want: yield i, _to_array(f, format, r)
            if i == last: return
            i += 1
    raise _Mismatch('end of file before the last wanted frame')

def _seek_frames(fn, ix, wanted, threads, format, r, quick=True):
    "Yield `(i, array)` for sorted `wanted`, seeking to the keyframe before each group of frames (`quick`: see `_QUICK_OPEN`)"
    n_thr = _n_threads(threads)
    with _open_container(fn, quick, named=quick) as c:
        s = _vstream(c, fn, ix.stream)
        _set_threads(s, n_thr)
        fresh = True
        for key, idxs in _plan(ix, wanted, n_thr):
            while True:
                try:
                    run = _decode_run if ix.dts is None else _dts_run
                    yield from run(c, s, ix, key, idxs, format, seek=not (fresh and key == 0), r=r)
                    break
                except _Overshoot:  # the demuxer's index put us too late: try the keyframe before
                    if key == 0: raise _Mismatch('cannot seek to the start') from None
                    key, fresh = ix.key_before(key-1), False
            fresh = False

def _decode_from_start(fn, wanted, threads, format, r, stream:int=0):
    "Yield `(i, array)` for sorted `wanted` of video `stream` by decoding from the start, frame index = decode order"
    want, last, i = set(wanted), wanted[-1], 0
    with _open_container(fn) as c:
        s = _vstream(c, fn, stream)
        _set_threads(s, threads)
        try:
            for p in c.demux(s):
                for f in p.decode():
                    _STATS['decoded'] += 1
                    if i in want: yield i, _to_array(f, format, r)
                    if i == last: return
                    i += 1
        except av.error.FFmpegError as e:
            raise _verr(fn, f"decoding failed at frame {i} ({type(e).__name__}: {e}): {_readable_msg(i, s.frames)}",
                        _REENCODE) from None
    raise _verr(fn, f"frame index {last} is out of range: the video has {i} frames (0..{i-1})")

def _check_idxs(fn, ix, idxs):
    "`idxs` as an int array, raising `VideoError` for indices out of range"
    idxs = np.asarray(idxs)
    if idxs.size and not np.issubdtype(idxs.dtype, np.integer):
        if not np.all(np.mod(idxs, 1) == 0): raise _verr(fn, f"frame indices must be integers, got {idxs.dtype}")
        idxs = idxs.astype(np.int64)
    idxs = idxs.astype(np.int64).reshape(-1)
    bad = idxs[(idxs < 0) | (idxs >= ix.n_frames)]
    if len(bad): raise _verr(fn, f"frame index {bad[0]} is out of range: the video has {ix.n_frames} frames "
                                 f"(valid indices 0..{ix.n_frames-1})", "Sample indices below `video_info(fn).n_frames`")
    return idxs

def _frames_in_order(fn, wanted, threads=None, format='rgb24', rotate=True, resize=None, ix=None, stream=None):
    "Yield `(i, array)` for the sorted, unique frame indices `wanted` of `fn`'s video `stream`, pixel-identical to a full decode (views: copy to keep)"
    if not len(wanted): return
    ix, done = ix or _cached_index(fn, stream=stream), set()
    k = _turns(ix) if rotate else 0
    scale, fit = (None, None) if resize is None else _resize_plan(ix.info(rotate), *resize)
    if scale is not None and k % 2: scale = scale[::-1]  # the decoder scales the frame as stored, before it is turned
    def out(a): return _upright(a, k) if fit is None else fit(_upright(a, k))
    r = _Scaler(scale, (ix.width, ix.height))
    try:
        if ix.seekable:
            for quick in (True, False):
                try:
                    for i, a in _seek_frames(fn, ix, [w for w in wanted if w not in done], threads, format, r, quick):
                        done.add(i)
                        yield i, out(a)
                    return
                except (_Mismatch, av.error.FFmpegError): pass  # first: try again without the quick open
            # the packets mislead us about this file (or seeking broke it): from now on count and decode it from the start
            ix = _cached_index(fn, force_decode=True, stream=stream)
            _check_idxs(fn, ix, wanted)
        rest = [w for w in wanted if w not in done]
        if rest: yield from ((i, out(a)) for i, a in _decode_from_start(fn, rest, threads, format, r, ix.stream))
    except Exception as e:
        if _ours(e): raise _library_error(fn, e) from e
        raise

_PAD = {'zeros': 'constant', 'border': 'edge', 'reflection': 'reflect'}

def _resize_plan(inf, size, method='crop', pad_mode='reflection', pcts=(0.5, 0.5)):
    "`(scale, fit)`: the `(w,h)` the decoder scales `inf`'s frames to, and the crop/pad `fit` to `size`, as fastai's `Resize`"
    H, W = (size, size) if isinstance(size, int) else size
    w, h = inf.width, inf.height
    method, pad_mode = str(method), str(pad_mode)
    if method == 'squish': return (W, H), None
    if method not in ('crop', 'pad'): raise ValueError(f"method must be 'crop', 'pad' or 'squish', got {method!r}")
    if pad_mode not in _PAD: raise ValueError(f"pad_mode must be one of {list(_PAD)}, got {pad_mode!r}")
    # fastai's `Resize`: the box `cp` at `tl` of the frame (outside it for 'pad') is what is resized to `(W,H)`
    m = w/W if (w/W < h/H if method == 'crop' else w/W > h/H) else h/H
    cp = (int(m*W), int(m*H))
    tl = (int(pcts[0]*(w-cp[0])), int(pcts[1]*(h-cp[1])))
    sx, sy = W/cp[0], H/cp[1]
    sw, sh = max(1, round(w*sx)), max(1, round(h*sy))
    x0, y0 = round(tl[0]*sx), round(tl[1]*sy)
    def fit(a):
        if method == 'crop':
            x, y = min(max(x0, 0), a.shape[1]-W), min(max(y0, 0), a.shape[0]-H)
            return a[max(y, 0):max(y, 0)+H, max(x, 0):max(x, 0)+W]  # a view: `read_frames` copies it into its output
        px, py = max(-x0, 0), max(-y0, 0)
        pad = ((py, max(H-sh-py, 0)), (px, max(W-sw-px, 0)), (0, 0))
        return np.pad(a, pad, mode=_PAD[pad_mode])[:H, :W]
    return (sw, sh), fit

def read_frames(fn,              # A video file
                idxs=None,       # Frame indices (any order, repeats allowed); None for all frames
                threads=None,    # Decoder threads (None: 1 inside DataLoader workers, else up to 2)
                format='rgb24',  # Pixel format: 'rgb24', 'bgr24' or 'gray'
                max_pixels=None, # Raise `VideoError`, decoding nothing, if the header declares more pixels per frame
                rotate=True,     # Turn frames upright by the file's display rotation (phone videos); False: as stored
                size=None,       # Scale in the decoder to this size (int or `(h,w)`), as `Resize(size, method, pad_mode)`
                method='crop',   # With `size`: a fastai `ResizeMethod`, 'crop', 'pad' or 'squish'
                pad_mode='reflection', # With `size` and method 'pad': a fastai `PadMode`
                crop_pos=(0.5, 0.5),   # With `size`: where the crop/pad box sits, as fractions (fastai's `pcts`)
                stream=None,     # Which of the file's video streams (None: the one FFmpeg picks, as players do)
               )->np.ndarray:    # uint8 `(len(idxs),H,W,C)`: C=3 for 'rgb24'/'bgr24', 1 for 'gray'
    "Frames `idxs` of video `fn`, decoding only what is needed; pixel-identical to a full PyAV decode (turned upright)"
    ix = _cached_index(fn, max_pixels=max_pixels, stream=stream)
    idxs = np.arange(ix.n_frames) if idxs is None else _check_idxs(fn, ix, idxs)
    if len(idxs) < 2 or (np.diff(idxs) > 0).all(): wanted, pos = idxs.tolist(), None  # sorted, no repeats: the usual case
    else:
        wanted, pos = np.unique(idxs).tolist(), {}
        for j, i in enumerate(idxs.tolist()): pos.setdefault(i, []).append(j)
    out = None
    resize = None if size is None else (size, method, pad_mode, crop_pos)
    fixed = "Re-encode it to a fixed size, e.g. `ffmpeg -i in.mp4 -vf scale=320:240 out.mp4`"
    frames = _frames_in_order(fn, wanted, threads=threads, format=format, rotate=rotate, resize=resize, ix=ix, stream=stream)
    try:
        for n, (i, a) in enumerate(frames):
            if out is None: out = np.empty((len(idxs), *a.shape), dtype=a.dtype)
            elif a.shape != out.shape[1:]:
                raise _verr(fn, f"the frame size changes inside the video ({out.shape[1:]} then {a.shape} at frame {i})", fixed)
            if pos is None: _copy_frame(out[n], a)
            else:
                for j in pos[i]: _copy_frame(out[j], a)
    except _SizeChange as e: changed = str(e)  # found before scaling: scaled frames would all have the size asked for
    else: changed = None
    # raised outside the `except`: no traceback of the decoding generators (holding the decoder) stays attached
    if changed: raise _verr(fn, f"the frame size changes inside the video ({changed})", fixed)
    if out is None:
        c, inf = 1 if format in ('gray', 'gray8') else 3, ix.info(rotate)
        h, w = (inf.height, inf.width) if size is None else (size, size) if isinstance(size, int) else size
        out = np.empty((0, h, w, c), dtype=np.uint8)
    return out

def iter_frames(fn,           # A video file
                idxs=None,    # Frame indices (any order, repeats allowed); None for all frames
                threads=None, # Decoder threads (see `read_frames`)
               ):             # uint8 `(H,W,3)` RGB arrays, in the order of `idxs`
    "Generator of frames `idxs` of video `fn`: decoded one at a time when `idxs` are in order, else read by `read_frames`"
    ix = _cached_index(fn)
    idxs = list(range(ix.n_frames)) if idxs is None else _check_idxs(fn, ix, idxs).tolist()
    if all(a <= b for a, b in zip(idxs, idxs[1:])):  # in order: stream, one frame at a time
        it, prev = _frames_in_order(fn, sorted(set(idxs)), threads=threads), None
        for i in idxs:
            if i != prev: a = _own(next(it)[1]); prev = i
            yield a
    else: yield from read_frames(fn, idxs, threads=threads)

def _verify_one(fn, max_pixels=None) -> str|None:
    "Why `fn` does not decode end to end, without error, to the frames its index counts (None if it does)"
    n, size, declared = 0, None, 0
    try:
        ix = _cached_index(fn, max_pixels=max_pixels)
        with _open_container(fn) as c:
            s = _vstream(c, fn, ix.stream)
            _set_threads(s, 1)
            declared = s.frames or ix.n_frames
            for p in c.demux(s):
                for f in p.decode():
                    if f.is_corrupt:
                        return f"frame {n} decodes with errors (FFmpeg hides them): it is damaged inside; {_readable_msg(n, declared)}"
                    if size is None: size = (f.width, f.height)
                    elif (f.width, f.height) != size:
                        return f"the frame size changes inside the video ({size[0]}x{size[1]} then {f.width}x{f.height} at frame {n})"
                    n += 1
    except VideoError as e: return str(e).removeprefix(f"{fn}: ")
    except _LibraryError: raise  # our failure, not the file's: every file would be reported damaged
    except Exception as e:
        if _ours(e): raise _library_error(fn, e) from e
        return f"decoding failed at frame {n} ({type(e).__name__}: {e}): it is damaged inside; {_readable_msg(n, declared)}"
    if n != ix.n_frames:
        return (f"a full decode yields {n} frames where its packets count {ix.n_frames}: it is damaged inside; "
                f"{_readable_msg(n, declared)}")
    return None

def verify_videos(files, # Video files (e.g. from `get_video_files`)
                  n_workers:int=defaults.cpus, # Processes decoding in parallel (0: in this process)
                  max_pixels:int=None, # Also report videos whose header declares more pixels per frame
                  progress:bool=True, # Show a progress bar
                 )->L: # `(path, reason)` for each bad file, in the order of `files`; empty if all are good
    "Decode every frame of each of `files` in parallel, like `verify_images`: the files that fail, and why"
    files = L(files).map(Path)
    keys = [_cache_key(f) for f in files]
    root = _root([k for k in keys if k is not None])
    store = _open_store(root)  # the dataset's saved index: forked workers map it, and index no file it holds
    if n_workers: before_fork()
    res = parallel(_verify_indexed, files, max_pixels=max_pixels, n_workers=n_workers, progress=progress and len(files) > 0)
    # save the indexes the workers built (those of files the saved index lacked)
    new = {h: e for k, (_, got) in zip(keys, res) if k is not None and got is not None for h, e in [got]}
    with _LOCK: _MORE.update(new)
    if store is not None: new = {h: e for h, e in new.items() if store.find(np.array([h], np.uint64))[0] < 0}
    _save_store(root, store, new)
    return L((f, w) for f, (w, _) in zip(files, res) if w is not None)

def _verify_indexed(fn, max_pixels=None) -> tuple:
    "`(_verify_one(fn), (hash, compact index))`: the index too when this process had to build it (None if not, or if bad)"
    k = _cache_key(fn)
    had = k is None or _lookup(k) is not None
    why = _verify_one(fn, max_pixels=max_pixels)
    if had or why is not None: return why, None
    with _LOCK: ix = _CACHE.get(k)
    return why, (None if ix is None else (_khash(k), _compact(k, ix)))

