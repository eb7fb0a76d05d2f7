"The frame index: container index = packet scan, VP8 seeks, damaged files say what is readable, the saved index"
import os, shutil, subprocess, sys
from pathlib import Path
import av, numpy as np, pytest
from test_video import write_video, full_decode
from test_video_streams import write_two_streams
from conftest import shared_data
import fastai_seq.video as V
from fastai_seq.mp4 import read_moov
from fastai_seq.video import read_frames, video_info, verify_videos, index_videos, VideoError

def write_rotated(fn, rot=90, n=20):
    "An H.264 MP4 of `n` frames with a display rotation (as phones write them)"
    with av.open(str(fn), 'w') as c:
        s = c.add_stream('libx264', rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, 'yuv420p'
        s.set_display_rotation(rot)
        for i in range(n):
            a = np.full((48, 64, 3), i*9 % 256, np.uint8); a[i % 40:, :8] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(a, format='rgb24')): c.mux(p)
        for p in s.encode(): c.mux(p)
    return Path(fn)

# name: write_video arguments (64x48; at most 60 frames)
CORPUS = {
    'h264_g12.mp4': dict(n=40, gop=12, bf=2), 'h264_g250.mp4': dict(n=60, gop=250, bf=2),
    'h264_g12.mkv': dict(n=40, gop=12, bf=2), 'h264_g250.mkv': dict(n=60, gop=250, bf=2),
    'h264_nob.mp4': dict(n=40, gop=12, bf=0),  # no reordering: the container's own index gives the frames
    'hevc.mp4': dict(codec='libx265', n=30, opts={'x265-params': 'keyint=10:log-level=none'}),
    'av1.mkv': dict(codec='libsvtav1', n=20, w=64, h=64, gop=10),
    'vp8.webm': dict(codec='libvpx', n=40, gop=12), 'vp9.webm': dict(codec='libvpx-vp9', n=40, gop=12),
    'mpeg4_b.avi': dict(codec='mpeg4', n=40, gop=12, bf=2), 'mpeg4.avi': dict(codec='mpeg4', n=40, gop=12, bf=0),
    'mpeg4.mp4': dict(codec='mpeg4', n=40, gop=12, bf=0),
    'mjpeg.avi': dict(codec='mjpeg', n=20, pix='yuvj420p'), 'mjpeg.mp4': dict(codec='mjpeg', n=20, pix='yuvj420p'),
    'vfr.mp4': dict(n=40, gop=8, bf=2, vfr_start=1000), 'vfr_nob.mp4': dict(n=40, gop=8, bf=0, vfr_start=0),
    'h264_10bit.mp4': dict(n=30, gop=12, pix='yuv420p10le'),
    # MP4/MOV variants for the sample-table index: MOV, signed composition offsets, no edit list, fragmented (not read)
    'h264_g12.mov': dict(n=40, gop=12, bf=2), 'h264_negcts.mp4': dict(n=40, gop=12, bf=2, fmt_opts={'movflags': 'negative_cts_offsets'}),
    'h264_noedit.mp4': dict(n=40, gop=12, bf=2, fmt_opts={'use_editlist': '0'}),
    'h264_frag.mp4': dict(n=40, gop=12, bf=2, fmt_opts={'movflags': 'frag_keyframe+empty_moov'}),
}

def write_delayed(src, fn, delay=0.5):
    "`src` copied into an MP4 whose video starts `delay` seconds late: a leading empty edit in its edit list"
    with av.open(str(src)) as i, av.open(str(fn), 'w') as o:
        s = i.streams.video[0]
        t = o.add_stream_from_template(s) if hasattr(o, 'add_stream_from_template') else o.add_stream(template=s)
        shift = int(delay / s.time_base)
        for p in i.demux(s):
            if p.dts is None: continue
            p.pts, p.dts, p.stream = p.pts + shift, p.dts + shift, t
            o.mux(p)
    return Path(fn)

def write_trimmed(src, fn, start=0.5):
    "`src` stream-copied from `start` seconds by the ffmpeg CLI: an edit starting after samples kept only to decode from (None without ffmpeg)"
    if shutil.which('ffmpeg') is None: return None
    r = subprocess.run(['ffmpeg', '-loglevel', 'error', '-y', '-ss', str(start), '-i', str(src), '-c', 'copy', str(fn)])
    return Path(fn) if r.returncode == 0 else None

@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    "The corpus files that this PyAV can write (an encoder missing or refusing the size leaves its file out)"
    root, out = tmp_path_factory.mktemp('corpus'), []
    for name, kw in CORPUS.items():
        codec = kw.get('codec', 'libx264')
        if codec not in av.codecs_available: continue
        try: out.append(write_video(root/name, **kw))
        except Exception: continue
    out += [write_rotated(root/'rotated.mp4'), write_two_streams(root/'two_streams.mp4')]
    if (src := root/'h264_g12.mp4').exists():
        out.append(write_delayed(src, root/'h264_delayed.mp4'))
        if (t := write_trimmed(src, root/'h264_trimmed.mp4')) is not None: out.append(t)
    if (d := shared_data()) is not None: out += sorted((d/'videos').glob('*'))
    return out

def _same(a, b):
    "Two `_VideoIndex`es describe the same frames"
    for f in ('n_frames', 'fps', 'width', 'height', 'duration', 'rotation', 'stream', 'seekable'): assert getattr(a, f) == getattr(b, f), f
    for f in ('pts', 'keys', 'dts'):
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None) and (x is None or np.array_equal(x, y)), f

def test_corpus_entries_and_scan_agree(corpus):
    "On every file, the index from the container's own index (where trusted) equals the scanned one, and reads are exact"
    assert len(corpus) >= 14
    V._STATS.clear()
    for fn in corpus:
        _same(V._build_index(fn), V._build_index(fn, entries=False))
    assert V._STATS['entries'] >= 3  # the MP4s without reordering (H.264, MJPEG, variable rate) took the container's index
    # the MP4/MOV files with B-frames too (their sample tables): no packet scan
    for name in ('h264_g12.mp4', 'h264_g250.mp4', 'h264_g12.mov', 'vfr.mp4', 'hevc.mp4', 'h264_10bit.mp4', 'rotated.mp4',
                 'two_streams.mp4', 'h264_negcts.mp4', 'h264_noedit.mp4', 'h264_delayed.mp4'):
        fn = next((f for f in corpus if f.name == name), None)
        if fn is None: continue  # an encoder this PyAV lacks
        V._STATS.clear()
        V._build_index(fn)
        assert V._STATS['entries'] == V._STATS['indexed'] == 1, name
    rng = np.random.default_rng(0)
    for fn in corpus:
        ref = full_decode(fn) if 'two_streams' not in fn.name else None
        V._CACHE.clear()
        n = video_info(fn).n_frames
        if ref is None: continue  # the two-stream file is read right by tests/test_video_streams.py
        if 'rotated' in fn.name: ref = np.rot90(ref, 1, axes=(1, 2))
        assert n == len(ref), fn.name
        sets = [[0], [n-1], list(range(max(0, n-8), n)), sorted(rng.choice(n, min(n, 6), replace=False).tolist())]
        for idxs in sets: assert np.array_equal(read_frames(fn, idxs), ref[idxs]), (fn.name, idxs)

def test_container_index_checked(corpus, monkeypatch):
    "A container index whose first pts is not the first decoded frame's is not used: the packets are scanned"
    fn = next(f for f in corpus if f.name == 'h264_nob.mp4')
    real = V._entries_index
    def shifted(*args):
        got = real(*args)
        return None if got is None else (got[0] + 1, got[1])
    monkeypatch.setattr(V, '_entries_index', shifted)
    monkeypatch.setattr(V, 'read_moov', lambda f: None)  # the sample tables would come first (tested below)
    V._STATS.clear()
    _same(V._build_index(fn), V._build_index(fn, entries=False))
    assert V._STATS['entries'] == 0 and V._STATS['indexed'] == 2

def test_mp4_sample_tables_are_what_ffmpeg_demuxes(corpus):
    "Each MP4/MOV video track's pts, keyframe flags and sizes from its `moov` equal the packets PyAV demuxes; fragmented, trimmed and non-MP4 files are not read"
    read = 0
    for fn in corpus:
        m = read_moov(fn)
        if fn.suffix not in ('.mp4', '.mov') or fn.name in ('h264_frag.mp4', 'h264_trimmed.mp4'):
            assert m is None or fn.name == 'h264_trimmed.mp4' and all(t is None for t in m.tracks.values()), fn.name
            continue
        assert m is not None and m.upright == ('rotated' not in fn.name), fn.name
        with av.open(str(fn)) as c:
            for s in c.streams.video:
                tr = m.tracks[s.id]
                pk = [(p.pts, p.is_keyframe, p.size) for p in c.demux(s) if p.size]
                c.seek(0)
                assert [tuple(x) for x in zip(tr.pts.tolist(), tr.keys.tolist(), tr.sizes.tolist())] == pk, fn.name
                read += 1
    assert read >= 12
    delayed = read_moov(next(f for f in corpus if f.name == 'h264_delayed.mp4'))
    assert delayed.tracks[1].pts.min() > 0  # the empty edit delays the first frame

def test_mp4_tables_checked(corpus, monkeypatch):
    "Sample tables FFmpeg does not agree with (a pts or a keyframe flag off) are not used: the packets are scanned"
    fn = next(f for f in corpus if f.name == 'h264_g12.mp4')
    ref = V._build_index(fn, entries=False)
    real = V.read_moov
    for change in ('pts', 'keys'):
        def off(f):
            m = real(f)
            tr = m.tracks[1]
            if change == 'pts': tr = tr._replace(pts=tr.pts + (np.arange(len(tr.pts)) == 20))
            else: tr = tr._replace(keys=tr.keys ^ (np.arange(len(tr.keys)) == 5))
            return m._replace(tracks={1: tr})
        monkeypatch.setattr(V, 'read_moov', off)
        V._STATS.clear()
        _same(V._build_index(fn), ref)
        assert V._STATS['entries'] == 0 and V._STATS['indexed'] == 1, change

def test_mp4_quick_open_only_without_rotation(corpus, monkeypatch):
    "An MP4 whose display matrices are the identity is indexed without FFmpeg's probing decode; a rotated one is opened the plain way (FFmpeg gives the rotation)"
    real, opened = V._open_container, []
    def spy(f, quick=False):
        opened.append(quick)
        return real(f, quick)
    monkeypatch.setattr(V, '_open_container', spy)
    for name, quick, rot in (('h264_g12.mp4', True, 0), ('rotated.mp4', False, 90), ('h264_frag.mp4', False, 0)):
        opened.clear()
        ix = V._build_index(next(f for f in corpus if f.name == name))
        assert opened == [quick] and ix.rotation == rot and ix.seekable, name

def test_vp8_window_seeks(tmp_path):
    "A VP8 WebM whose packets all say they show a frame is indexed by its packets (no decode) and seekable: a window at its end decodes few frames"
    fn = write_video(tmp_path/'vp8.webm', codec='libvpx', n=120, gop=12)
    V._STATS.clear()
    ix = V._cached_index(fn)
    assert ix.seekable and ix.dts is None and ix.why is None and len(ix.keys) >= 5 and ix.n_frames == 120
    assert V._STATS['decoded'] == 0  # the index read the packets' frame headers: no full decode
    ref = full_decode(fn)
    got = read_frames(fn, list(range(110, 118)))
    assert np.array_equal(got, ref[110:118]) and V._STATS['decoded'] <= 8 + 24 and V._STATS['indexed'] == 1

def test_vp8_hidden_frames_counted_by_decoding(tmp_path, monkeypatch):
    "A VP8 packet whose header says its frame is not shown (alt-ref): the frames are counted by one decode, windows stay exact and seek"
    fn = write_video(tmp_path/'vp8.webm', codec='libvpx', n=120, gop=12)
    real, seen = V._vp8_check, []
    def hidden_at_50(data, key):
        seen.append(1)
        return V._HIDDEN if len(seen) == 50 else real(data, key)
    monkeypatch.setattr(V, '_vp8_check', hidden_at_50)
    V._STATS.clear()
    ix = V._cached_index(fn)
    assert ix.seekable and ix.dts is not None and ix.why == 'codec vp8' and V._STATS['indexed'] == 1
    ref = full_decode(fn)
    V._STATS.clear()
    for s in (0, 57, 112): assert np.array_equal(read_frames(fn, list(range(s, s+8))), ref[s:s+8]), s
    assert V._STATS['indexed'] == 0 and V._STATS['decoded'] <= 3*(8 + 24)

def test_file_not_what_its_name_says(tmp_path):
    "Reads name the demuxer from the extension (no format probe); a file that is not what its name says is still read exactly"
    import shutil
    avi = write_video(tmp_path/'clip.avi', codec='mpeg4', n=40, gop=12)
    mkv = write_video(tmp_path/'clip.mkv', n=40, gop=12, bf=2)
    for src, name in ((avi, 'avi_named.mp4'), (mkv, 'mkv_named.avi'), (mkv, 'mkv_named.mov'), (avi, 'avi_named.webm')):
        fn = shutil.copy(src, tmp_path/name)
        ref = full_decode(fn)
        assert video_info(fn).n_frames == len(ref) == 40, name
        for s in (0, 17, 32): assert np.array_equal(read_frames(fn, list(range(s, s+8))), ref[s:s+8]), (name, s)

def test_hevc_skips_unreferenced_frames(tmp_path):
    "An HEVC window deep in a long GOP leaves out the frames nothing refers to (one temporal layer) and equals a full decode"
    fn = write_video(tmp_path/'hevc.mp4', codec='libx265', n=60, opts={'x265-params': 'keyint=60:scenecut=0:log-level=none'})
    ref, ix = full_decode(fn), V._cached_index(fn)
    assert list(ix.keys) == [0]
    V._STATS.clear()
    assert np.array_equal(read_frames(fn, list(range(48, 56)), threads=1), ref[48:56])
    assert V._STATS['decoded'] < 56 - 8  # frames 0..55 in the decode: at least 8 of the 48 before the window were skipped

def test_hevc_with_temporal_layers_skips_nothing():
    "HEVC pictures marked non-reference may be referred to by a higher temporal layer: skipped only with one layer"
    from types import SimpleNamespace as NS
    hvcc = lambda layers: bytes([1] + [0]*20 + [layers << 3 | 3] + [0]*10)
    assert V._skips_nonref(NS(name='hevc', extradata=hvcc(1)))
    assert not V._skips_nonref(NS(name='hevc', extradata=hvcc(2))) and not V._skips_nonref(NS(name='hevc', extradata=hvcc(0)))
    assert not V._skips_nonref(NS(name='hevc', extradata=b'\0\0\0\1' + bytes(30)))  # Annex B parameter sets: not known
    assert not V._skips_nonref(NS(name='hevc', extradata=None)) and not V._skips_nonref(NS(name='vp9', extradata=None))
    assert V._skips_nonref(NS(name='h264', extradata=None))

def test_reads_open_quickly_and_fall_back_to_a_plain_open(tmp_path, monkeypatch):
    "Reads open an indexed file without FFmpeg's probing decode; when that misleads a read, it opens the file the plain way and the file stays seekable"
    fn = write_video(tmp_path/'h264.mp4', n=60, gop=12, bf=2)
    ref, ix = full_decode(fn), V._cached_index(fn)
    real_open, real_run, opened, quick = V._open_container, V._decode_run, [], []  # (kept alive: no id reused)
    def spy_open(f, quick_open=False, **kw):
        c = real_open(f, quick_open, **kw)
        opened.append(quick_open)
        if quick_open: quick.append(c)
        return c
    monkeypatch.setattr(V, '_open_container', spy_open)
    assert np.array_equal(read_frames(fn, list(range(30, 38))), ref[30:38]) and opened == [True]
    def misled(c, *args, **kw):
        if any(c is q for q in quick): raise V._Mismatch('as if the quick open misled the decoder')
        yield from real_run(c, *args, **kw)
    monkeypatch.setattr(V, '_decode_run', misled)
    opened.clear(); V._STATS.clear()
    assert np.array_equal(read_frames(fn, list(range(40, 48))), ref[40:48]) and opened == [True, False]
    assert V._cached_index(fn) is ix and ix.seekable and V._STATS['indexed'] == 0

def test_mpeg4_bframes_avi_seeks(tmp_path):
    "An MPEG-4 Part 2 AVI with B-VOPs is seekable by decoded pts: a window near its end decodes far fewer frames, and windows equal a full decode"
    fn = write_video(tmp_path/'mpeg4_b.avi', codec='mpeg4', n=96, gop=12, bf=2)
    V._STATS.clear()
    ix = V._cached_index(fn)
    ref = full_decode(fn)
    assert ix.seekable and ix.why is None and ix.dts is None and ix.n_frames == len(ref) == 96 and len(ix.keys) >= 5
    V._STATS.clear()
    got = read_frames(fn, list(range(86, 94)))
    assert np.array_equal(got, ref[86:94]) and V._STATS['decoded'] <= 8 + 24 and V._STATS['indexed'] == 0
    for s in np.linspace(0, len(ref)-8, 10).astype(int).tolist():
        assert np.array_equal(read_frames(fn, list(range(s, s+8))), ref[s:s+8]), s
    assert V._STATS['indexed'] == 0  # no window fell back to counting from the start

# ---------------------------------------------------------------------------------------------------------------------
# Damaged files

@pytest.fixture(scope='module')
def damaged(tmp_path_factory):
    "An H.264 MP4 of 50 frames (its index at the front), cut short in the middle, and one with bytes corrupted in the middle"
    root = tmp_path_factory.mktemp('damaged')
    good = write_video(root/'good.mp4', n=50, gop=12, bf=2, fmt_opts={'movflags': 'faststart'})
    d = good.read_bytes()
    cut, bad = root/'cut.mp4', root/'corrupt.mp4'
    cut.write_bytes(d[:len(d)*55//100])
    m = len(d)//2
    bad.write_bytes(d[:m] + bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)) + d[m+3000:])
    return cut, bad

def _readable(fn) -> int:
    "How many frames a plain PyAV decode yields before it fails"
    n = 0
    try:
        with av.open(str(fn)) as c:
            for _ in c.decode(video=0): n += 1
    except av.error.FFmpegError: pass
    return n

@pytest.mark.parametrize('which', [0, 1])
def test_damaged_file_says_which_frames_are_readable(damaged, which):
    fn = damaged[which]
    n = _readable(fn)
    assert 0 < n < 50
    want = f"frames 0-{n-1} of the 50 its header declares are readable"
    with pytest.raises(VideoError, match=want): read_frames(fn)
    bad = verify_videos([fn], n_workers=0, progress=False)
    assert len(bad) == 1 and want in bad[0][1]

# ---------------------------------------------------------------------------------------------------------------------
# The saved index

@pytest.fixture
def dataset(tmp_path, monkeypatch):
    "8 small videos in 2 folders; the cache emptied, the saved index beside them (no FASTAI_SEQ_INDEX_DIR)"
    monkeypatch.delenv('FASTAI_SEQ_INDEX_DIR', raising=False)
    root = tmp_path/'ds'
    for c in ('c0', 'c1'): (root/c).mkdir(parents=True)
    files = [write_video(root/f'c{i%2}'/f'{i}.mp4', n=12+i, gop=6) for i in range(6)]
    files += [write_video(root/'c0'/'v.webm', codec='libvpx', n=20, gop=6), write_video(root/'c1'/'m.avi', codec='mpeg4', n=15)]
    V._CACHE.clear(); V._STATS.clear()
    yield root, files
    V._CACHE.clear()

def test_saved_beside_the_dataset_and_compact(dataset):
    root, files = dataset
    ship = index_videos(files)
    saved = root/'.fastai_seq_index'
    assert V._STATS['indexed'] == 8 and len(ship) == 8 and ship.stores == [str(saved)] and ship.entries == {}
    assert saved.stat().st_size - 512 <= 1024 * len(files)  # ~1 KiB a file or less (these: ~150 bytes)
    refs = {f: V._cached_index(f) for f in files}
    V._CACHE.clear(); V._STATS.clear()
    assert len(index_videos(files)) == 8 and V._STATS['indexed'] == 0  # mapped, not indexed
    for f in files:
        _same(V._cached_index(f), refs[f])
        assert np.array_equal(read_frames(f, [0, 5]), full_decode(f)[[0, 5]])
    assert V._STATS['indexed'] == 0

def test_changed_file_is_indexed_again(dataset):
    root, files = dataset
    index_videos(files)
    write_video(files[0], n=30, gop=6)  # same path, other size and time
    V._CACHE.clear(); V._STATS.clear()
    index_videos(files)
    assert V._STATS['indexed'] == 1 and video_info(files[0]).n_frames == 30
    V._CACHE.clear(); V._STATS.clear()
    index_videos(files)
    assert V._STATS['indexed'] == 0 and video_info(files[0]).n_frames == 30
    assert len(V._Store(root/'.fastai_seq_index')) == 8  # the old entry of the changed file was replaced

def test_never_indexed_twice_in_a_run(dataset, monkeypatch):
    "With the in-memory cache far smaller than the dataset, reading every file again indexes none again"
    root, files = dataset
    monkeypatch.setenv('FASTAI_SEQ_INDEX_DIR', 'off')
    monkeypatch.setattr(V, '_CACHE_MAX', 2)
    for _ in range(3):
        for f in files: read_frames(f, [1, 2])
    assert V._STATS['indexed'] == 8 and len(V._CACHE) == 2 and not (root/'.fastai_seq_index').exists()

def test_read_only_dataset_saves_in_fastai_data(dataset, tmp_path, monkeypatch):
    "Where the dataset's folder cannot be written, the index is saved in fastai's data folder, and found there"
    root, files = dataset
    monkeypatch.setattr(V, '_fallback_dir', lambda: tmp_path/'fastai_data'/'.fastai_seq_index')
    write = V._write_store
    def no_write_in_dataset(fn, *args):
        if Path(fn).parent == root: raise PermissionError(13, 'Permission denied', str(fn))
        return write(fn, *args)
    monkeypatch.setattr(V, '_write_store', no_write_in_dataset)
    ship = index_videos(files)
    assert len(ship.stores) == 1 and Path(ship.stores[0]).parent == tmp_path/'fastai_data'/'.fastai_seq_index'
    V._CACHE.clear(); V._STATS.clear()
    video_info(files[3])  # read without `index_videos` first: the saved index is looked for above the file
    assert V._STATS['indexed'] == 0

def test_index_dir_setting(dataset, tmp_path, monkeypatch):
    root, files = dataset
    monkeypatch.setenv('FASTAI_SEQ_INDEX_DIR', str(tmp_path/'mine'))
    ship = index_videos(files)
    assert Path(ship.stores[0]).parent == tmp_path/'mine' and not (root/'.fastai_seq_index').exists()
    monkeypatch.setenv('FASTAI_SEQ_INDEX_DIR', 'off')
    V._CACHE.clear()
    ship = index_videos(files)
    assert ship.stores == [] and len(ship.entries) == 8 and V._STATS['indexed'] == 16

def test_verify_videos_uses_and_saves_the_index(dataset):
    root, files = dataset
    assert verify_videos(files, n_workers=2, progress=False) == []
    assert (root/'.fastai_seq_index').exists()
    V._CACHE.clear(); V._STATS.clear()
    index_videos(files)
    assert V._STATS['indexed'] == 0  # what the verifying workers indexed was saved
    assert verify_videos(files, n_workers=0, progress=False) == [] and V._STATS['indexed'] == 0

def _run_env() -> dict:
    "The environment of another run of this package: its source first on the path, the saved index where it lands by default"
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(Path(V.__file__).parents[1]), os.environ.get('PYTHONPATH', '')])}
    env.pop('FASTAI_SEQ_INDEX_DIR', None)
    return env

def test_second_process_indexes_no_file(dataset):
    "A later run (another process) maps the saved index: it indexes no file"
    root, files = dataset
    index_videos(files)
    code = ("import sys, fastai_seq.video as V; fs = sys.argv[1:]; V.index_videos(fs); [V.read_frames(f, [0]) for f in fs]; "
            "print('INDEXED', V._STATS['indexed'])")
    env = _run_env()
    r = subprocess.run([sys.executable, '-c', code, *map(str, files)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'INDEXED 0' in r.stdout

def test_processes_starting_together_index_once(dataset, tmp_path):
    "The processes of a distributed job starting together: one indexes the dataset, the others read what it saved"
    root, files = dataset
    code = ("import sys, time, os, fastai_seq.video as V; go, me, fs = sys.argv[1], sys.argv[2], sys.argv[3:]\n"
            "real = V._build_index\n"
            "def slow(*a, **k): time.sleep(0.05); return real(*a, **k)  # indexing slower than starting: they overlap\n"
            "V._build_index = slow\n"
            "open(go + me, 'w').close()\n"
            "while not (os.path.exists(go + '0') and os.path.exists(go + '1')): time.sleep(0.001)\n"
            "V.index_videos(fs); [V.read_frames(f, [0]) for f in fs]; print('INDEXED', V._STATS['indexed'])")
    env = _run_env()
    ps = [subprocess.Popen([sys.executable, '-c', code, str(tmp_path/'go'), str(i), *map(str, files)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in ps]
    assert all(p.returncode == 0 for p in ps), [e[-2000:] for _, e in outs]
    counts = sorted(int(o.split('INDEXED')[1]) for o, _ in outs)
    assert counts == [0, len(files)]  # without the lock both indexed every file
    assert (root/'.fastai_seq_index').exists() and len(V._Store(root/'.fastai_seq_index')) == len(files)

def test_never_saves_at_a_shallow_common_folder(tmp_path, monkeypatch):
    "Files of unrelated trees share only '/' (or '/tmp'): their index goes to fastai's data folder, never there"
    from fastai_seq.video import index_locations
    monkeypatch.delenv('FASTAI_SEQ_INDEX_DIR', raising=False)
    for root in ('/', '/tmp', os.path.expanduser('~')):
        locs = index_locations(root)
        assert len(locs) == 1 and not str(locs[0]).startswith(os.path.join(root, '.fastai_seq_index')), (root, locs)
    deep = tmp_path/'data'/'videos'
    assert index_locations(deep)[0] == deep/'.fastai_seq_index'
