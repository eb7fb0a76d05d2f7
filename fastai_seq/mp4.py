"A strict reader of an MP4/MOV file's `moov` box: each video track's samples as FFmpeg's mov demuxer reports them (no packet read)"
import os, struct
from typing import NamedTuple
import numpy as np

__all__ = ['Track', 'Moov', 'read_moov']

# Top-level boxes an ISO/QuickTime file may start with: anything else is not one (a Matroska, AVI... file), read no further
_FIRST = {b'ftyp', b'moov', b'mdat', b'free', b'skip', b'wide', b'pnot', b'uuid', b'junk'}
_MAX_MOOV = 1 << 28  # 256 MiB: a larger `moov` is not one we read
_IDENTITY = (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)  # a display matrix that changes nothing (16.16 and 2.30 fixed point)

class Track(NamedTuple):
    "A video track's samples in decode order, with the timestamps FFmpeg's mov demuxer gives their packets"
    track_id:int      # the MP4 track_ID (PyAV's `stream.id` for mov/mp4)
    timescale:int     # `mdhd` units a second (the stream's time base is its inverse)
    pts:np.ndarray    # each sample's presentation timestamp, as FFmpeg reports it (edit list applied)
    dts:np.ndarray    # each sample's decode timestamp from `stts`, before FFmpeg's shifts (only differences are meaningful)
    keys:np.ndarray   # bool: the sample is a sync sample (`stss`; every sample when it is absent)
    sizes:np.ndarray  # bytes of each sample (`stsz`)
    end:int           # the file offset just past the track's last byte of sample data (chunk offsets + sizes)

class Moov(NamedTuple):
    "What `read_moov` returns"
    upright:bool  # the movie's and every video track's display matrix are the identity: no display rotation
    tracks:dict   # track_ID -> `Track` of each video track, or None where its tables are not understood exactly

class _Bad(Exception): "A box this reader does not understand exactly: the caller falls back"

def _boxes(b, start, end):
    "Yield `(type, payload start, payload end)` of the boxes in `b[start:end]`; `_Bad` if they do not tile it exactly"
    i = start
    while i < end:
        if i + 8 > end: raise _Bad('box header past its parent')
        size, typ = struct.unpack_from('>I4s', b, i)
        h = 8
        if size == 1:
            if i + 16 > end: raise _Bad('64-bit box header past its parent')
            size, h = struct.unpack_from('>Q', b, i+8)[0], 16
        if size < h or i + size > end: raise _Bad(f'box {typ!r} of {size} bytes does not fit')
        yield typ, i+h, i+size
        i += size

def _children(b, start, end) -> dict:
    "`{type: [(start, end), ...]}` of the boxes in `b[start:end]`"
    out = {}
    for typ, s, e in _boxes(b, start, end): out.setdefault(typ, []).append((s, e))
    return out

def _one(kids, typ, b=None):
    "The payload `(start, end)` of the only `typ` box among `kids` (`_Bad` if absent or repeated)"
    got = kids.get(typ, [])
    if len(got) != 1: raise _Bad(f'{len(got)} {typ!r} boxes')
    return got[0]

def _full(b, s, e, versions=(0,)):
    "Version of the full box at `b[s:e]` (`_Bad` if not one of `versions`)"
    if e - s < 4 or b[s] not in versions: raise _Bad('unknown box version')
    return b[s]

def _table(b, s, e, fmt, width):
    "The entries of a full box whose payload is a u32 count and `count` rows of `width` big-endian `fmt` items"
    if e - s < 8: raise _Bad('short table')
    n = struct.unpack_from('>I', b, s+4)[0]
    if 8 + n*width*np.dtype(fmt).itemsize != e - s: raise _Bad('table size differs from its count')
    return np.frombuffer(b, np.dtype(fmt).newbyteorder('>'), n*width, s+8).reshape(n, width).astype(np.int64)

def _matrix(b, off):
    "The 3x3 display matrix at `b[off:]` as 9 ints"
    return struct.unpack_from('>9i', b, off)

def find_moov(f, size:int):
    "The bytes of the top-level `moov` box of open file `f` of `size` bytes (None where it is not a plain ISO/QuickTime file)"
    i, first = 0, True
    while i + 8 <= size:
        f.seek(i)
        h = f.read(16)
        size32, typ = struct.unpack_from('>I4s', h)
        if first and typ not in _FIRST: return None
        first = False
        if typ == b'moof': return None  # a fragmented file: samples outside `moov`
        hl, n = 8, size32
        if size32 == 1:
            if len(h) < 16: return None
            n, hl = struct.unpack_from('>Q', h, 8)[0], 16
        elif size32 == 0: n = size - i  # to the end of the file
        if n < hl or i + n > size: return None
        if typ == b'moov':
            if n > _MAX_MOOV: return None
            f.seek(i + hl)
            b = f.read(n - hl)
            return b if len(b) == n - hl else None
        i += n
    return None

def _rescale(a, b, c):
    "`a*b/c` rounded to nearest, halves away from zero (FFmpeg's `av_rescale`), for `a >= 0`"
    return (a*b + c//2) // c

def _track(b, s, e, movie_scale):
    "`(track_ID, identity display matrix, Track or None)` of the `trak` box at `b[s:e]`, or None if it is not a video track"
    kids = _children(b, s, e)
    mdia = _children(b, *_one(kids, b'mdia'))
    hs, he = _one(mdia, b'hdlr')
    _full(b, hs, he)
    if he - hs < 12 or b[hs+8:hs+12] != b'vide': return None
    ts, te = _one(kids, b'tkhd')
    v = _full(b, ts, te, (0, 1))
    tid, mat_at = (struct.unpack_from('>I', b, ts+12)[0], ts+40) if v == 0 else (struct.unpack_from('>I', b, ts+20)[0], ts+52)
    if te - mat_at < 36: raise _Bad('short tkhd')
    upright = _matrix(b, mat_at) == _IDENTITY
    try: return tid, upright, _samples(b, tid, kids, mdia, movie_scale)
    except _Bad: return tid, upright, None

def _samples(b, tid, kids, mdia, movie_scale) -> Track:
    "The `Track` of a video `trak` (its children `kids`, its `mdia`'s children `mdia`): `_Bad` for anything not understood"
    ms, me = _one(mdia, b'mdhd')
    v = _full(b, ms, me, (0, 1))
    scale = struct.unpack_from('>I', b, ms + (12 if v == 0 else 20))[0]
    if not scale: raise _Bad('mdhd timescale 0')
    stbl = _children(b, *_one(_children(b, *_one(mdia, b'minf')), b'stbl'))
    if b'stz2' in stbl or b'stps' in stbl: raise _Bad('stz2 or stps')  # compact sizes, partial sync samples: not read here
    for gs, ge in stbl.get(b'sbgp', []):  # sample groups FFmpeg reads to mark more keyframes
        if ge - gs >= 8 and b[gs+4:gs+8] in (b'rap ', b'sync'): raise _Bad('rap/sync sample groups')
    ss, se = _one(stbl, b'stsd')
    _full(b, ss, se)
    if se - ss < 8 or struct.unpack_from('>I', b, ss+4)[0] != 1: raise _Bad('not one sample description')
    # stsz: sizes
    zs, ze = _one(stbl, b'stsz')
    _full(b, zs, ze)
    if ze - zs < 12: raise _Bad('short stsz')
    fixed, n = struct.unpack_from('>II', b, zs+4)
    if fixed:
        if ze - zs != 12: raise _Bad('stsz size')
        sizes = np.full(n, fixed, np.int64)
    else:
        if ze - zs != 12 + 4*n: raise _Bad('stsz size')
        sizes = np.frombuffer(b, '>u4', n, zs+12).astype(np.int64)
    if n == 0 or (sizes <= 0).any(): raise _Bad('no samples, or empty ones')
    # stts: decode times
    ts_, te_ = _one(stbl, b'stts')
    _full(b, ts_, te_)
    stts = _table(b, ts_, te_, 'u4', 2)
    if (stts[:, 0] <= 0).any() or stts[:, 0].sum() != n: raise _Bad('stts counts')
    deltas = np.repeat(stts[:, 1], stts[:, 0])
    if (deltas <= 0).any() or (deltas >= 1 << 31).any(): raise _Bad('stts deltas')
    dts = np.concatenate([[0], np.cumsum(deltas[:-1])])
    # ctts: composition offsets (FFmpeg reads them signed in both versions)
    cts = dts
    if b'ctts' in stbl:
        cs, ce = _one(stbl, b'ctts')
        cv = _full(b, cs, ce, (0, 1))
        ctts = _table(b, cs, ce, 'u4', 2)
        if (ctts[:, 0] <= 0).any() or ctts[:, 0].sum() != n: raise _Bad('ctts counts')
        off = ctts[:, 1]
        if cv == 0 and (off >= 1 << 31).any(): raise _Bad('ctts offset FFmpeg reads negative')
        off = np.where(off >= 1 << 31, off - (1 << 32), off)
        cts = dts + np.repeat(off, ctts[:, 0])
    # stss: sync samples (1-based)
    keys = np.ones(n, bool)
    if b'stss' in stbl:
        ks, ke = _one(stbl, b'stss')
        _full(b, ks, ke)
        sync = _table(b, ks, ke, 'u4', 1)[:, 0]
        if not len(sync) or sync[0] != 1 or sync[-1] > n or (len(sync) > 1 and (np.diff(sync) <= 0).any()):
            raise _Bad('stss entries')
        keys[:] = False
        keys[sync - 1] = True
    # the edit list, applied as FFmpeg's `mov_fix_index` does when it keeps every sample
    pts = _edit(b, kids, cts, scale, movie_scale)
    return Track(tid, scale, pts, dts, keys, sizes, _data_end(b, stbl, sizes))

def _edit(b, kids, cts, scale, movie_scale):
    "Presentation timestamps from composition times `cts` and the track's edit list; `_Bad` unless it keeps every sample"
    if b'edts' not in kids: return cts
    es, ee = _one(_children(b, *_one(kids, b'edts')), b'elst')
    v = _full(b, es, ee, (0, 1))
    row = '>IiI' if v == 0 else '>QqI'  # segment duration (movie units), media time (-1: empty), rate (16.16)
    w = struct.calcsize(row)
    if ee - es < 8: raise _Bad('short elst')
    k = struct.unpack_from('>I', b, es+4)[0]
    if ee - es != 8 + k*w: raise _Bad('elst size differs from its count')
    edits = [struct.unpack_from(row, b, es+8+i*w) for i in range(k)]
    dur, mt, rate = [d for d, _, _ in edits], [m for _, m, _ in edits], [r for _, _, r in edits]
    if not len(dur): return cts
    empty = 0
    if len(dur) == 2 and mt[0] == -1: empty, dur, mt, rate = _rescale(dur[0], scale, movie_scale), dur[1:], mt[1:], rate[1:]
    if len(dur) != 1 or mt[0] < 0 or rate[0] != 0x10000 or dur[0] <= 0: raise _Bad('not one plain edit')
    mt, d = mt[0], _rescale(dur[0], scale, movie_scale)
    # FFmpeg discards the samples shown before the edit or after its end: this reader reads only files where it keeps all
    if cts.min() < mt or cts.max() >= mt + d: raise _Bad('the edit does not cover every sample')
    # mov_fix_index places the samples after the empty edit, then moves them back so the first is shown at its end
    return cts - cts.min() + empty

def _data_end(b, stbl, sizes) -> int:
    "The file offset past the track's last sample byte, from `stsc` and `stco`/`co64` (`_Bad` if they disagree with `sizes`)"
    if (b'stco' in stbl) == (b'co64' in stbl): raise _Bad('not one of stco, co64')
    os_, oe = _one(stbl, b'stco' if b'stco' in stbl else b'co64')
    _full(b, os_, oe)
    offsets = _table(b, os_, oe, 'u4' if b'stco' in stbl else 'u8', 1)[:, 0]
    cs, ce = _one(stbl, b'stsc')
    _full(b, cs, ce)
    stsc = _table(b, cs, ce, 'u4', 3)
    nc = len(offsets)
    if not len(stsc) or not nc or stsc[0, 0] != 1 or (np.diff(stsc[:, 0]) <= 0).any() or stsc[-1, 0] > nc: raise _Bad('stsc')
    if (stsc[:, 1] <= 0).any() or (stsc[:, 2] != 1).any(): raise _Bad('stsc entries')
    per = np.repeat(stsc[:, 1], np.diff(np.append(stsc[:, 0], nc + 1)))
    if per.sum() != len(sizes): raise _Bad('stsc counts differ from stsz')
    starts = np.concatenate([[0], np.cumsum(per[:-1])])
    return int((offsets + np.add.reduceat(sizes, starts)).max())

def read_moov(fn) -> Moov|None:
    "The video tracks of MP4/MOV file `fn` from its `moov` box, or None where it is not one this reader understands exactly"
    try:
        with open(fn, 'rb') as f:
            b = find_moov(f, os.fstat(f.fileno()).st_size)
        if b is None: return None
        kids = _children(b, 0, len(b))
        if b'mvex' in kids or b'cmov' in kids: return None  # fragmented, or a compressed movie header
        ms, me = _one(kids, b'mvhd')
        v = _full(b, ms, me, (0, 1))
        movie_scale, mat_at = (struct.unpack_from('>I', b, ms+12)[0], ms+36) if v == 0 else (struct.unpack_from('>I', b, ms+20)[0], ms+48)
        if not movie_scale or me - mat_at < 36: return None
        upright, tracks = _matrix(b, mat_at) == _IDENTITY, {}
        for s, e in kids.get(b'trak', []):
            got = _track(b, s, e, movie_scale)
            if got is None: continue
            tid, up, tr = got
            if tid in tracks: return None
            upright, tracks[tid] = upright and up, tr
        return Moov(upright, tracks) if tracks else None
    except (_Bad, OSError, struct.error, ValueError): return None
