"Real-world video files decode right: AVI header counts are hints, H.264 in AVI seeks, verify_videos, rotation metadata"
import fractions, os, random
from pathlib import Path
import av, numpy as np, pytest
from av.bitstream import BitStreamFilterContext
from fastai_seq.video import *
from fastai_seq.video import _index, _STATS, _CACHE
from fastai_seq.data import LoadFrames
from test_video import write_video, full_decode, clip

def to_avi(src, dst, gap_at=None, time_base=None):
    "Copy the video packets of `src` into an AVI (as `ffmpeg -i src -c copy dst.avi`); `gap_at`: a 2-frame timestamp gap"
    with av.open(str(src)) as i, av.open(str(dst), 'w') as o:
        s = i.streams.video[0]
        t = o.add_stream_from_template(s)
        if time_base is not None: t.time_base = time_base
        bsf = BitStreamFilterContext('h264_mp4toannexb', s) if s.codec_context.name == 'h264' else None
        for j, p in enumerate(i.demux(s)):
            if p.dts is None: continue
            key, d = p.is_keyframe, (p.duration or 1)
            for q in (bsf.filter(p) if bsf else [p]):
                q.is_keyframe = key
                if gap_at is not None and j >= gap_at: q.pts, q.dts = q.pts + 2*d, q.dts + 2*d
                q.stream = t
                o.mux(q)  # the AVI muxer fills a timestamp gap with empty 'dropped frame' chunks the header counts
    return Path(dst)

def header_frames(fn):
    with av.open(str(fn)) as c: return c.streams.video[0].frames

@pytest.fixture(scope='module')
def avis(tmp_path_factory):
    d = tmp_path_factory.mktemp('avi')
    mp4 = write_video(d/'xvid_like.mkv', codec='mpeg4', n=75, bf=2, gop=12)
    res = {'mpeg4_bframes_gap': to_avi(mp4, d/'mpeg4_bframes_gap.avi', gap_at=20)}
    for n in (60, 600):
        h = write_video(d/f'h264_{n}.mp4', n=n, opts={'bf': '2', 'g': '12'})
        res[f'h264_{n}'] = to_avi(h, d/f'h264_{n}.avi', time_base=fractions.Fraction(1, 50))  # 2 chunks a frame
    return res

@pytest.mark.parametrize('name', ['mpeg4_bframes_gap', 'h264_60'])
def test_avi_header_count_is_a_hint(avis, name):
    "AVIs whose header announces more frames than they decode to are read, with every sampler, as a full decode"
    fn = avis[name]
    ref = full_decode(fn)
    assert header_frames(fn) >= len(ref) + 2  # the case: the header announces frames that are not there
    assert video_info(fn).n_frames == len(ref)
    for sampler in ('uniform', 'random', 'first', 'all'):
        lf = LoadFrames(None if sampler == 'all' else 8, sampler)
        for seed in range(3 if sampler == 'random' else 1):
            random.seed(seed); idxs = lf.idxs(len(ref), fn)
            random.seed(seed); got = np.stack([np.asarray(im) for im in lf(fn)])
            assert np.array_equal(got, ref[idxs]), (name, sampler, idxs)

def test_truncated_avi_still_refused(avis, tmp_path):
    b = avis['h264_60'].read_bytes()
    (tmp_path/'cut.avi').write_bytes(b[:len(b)//2])
    with pytest.raises(VideoError, match=r'cut\.avi.*truncated.*RIFF'): video_info(tmp_path/'cut.avi')

def test_h264_in_avi_seeks(avis):
    "An item of an H.264-in-AVI file decodes from the keyframe before it: the same number of frames, short file or long"
    counts = {}
    for n in (60, 600):
        fn = avis[f'h264_{n}']
        ix = _index(fn)
        assert ix.seekable and ix.n_frames == n and ix.keys[0] == 0
        ref, idxs = full_decode(fn), list(range(n-12, n-4))
        _STATS.clear()
        assert np.array_equal(read_frames(fn, idxs), ref[idxs])
        counts[n] = _STATS['decoded']
        assert _STATS['probe'] == 0 and _index(fn).seekable  # the index held: no fallback to decoding from the start
    assert counts[600] <= 8 + 12 and counts[60] <= 8 + 12, counts  # the window and at most a GOP (g=12) before it
    fn = avis['h264_600']
    rng = np.random.default_rng(0)
    for s in rng.integers(0, 600-8, 6):
        assert np.array_equal(read_frames(fn, list(range(s, s+8))), full_decode(fn)[s:s+8])
