"PyAV 18 and 19: reading works on both, a failure of our own call into PyAV never blames the file, and no decode hangs with PyAV logging on"
import os, re, shutil, subprocess, sys, warnings
from pathlib import Path
import av, numpy as np, pytest, torch
from fastai.vision.all import DataBlock, CategoryBlock, parent_label, IndexSplitter
from fastai_seq.data import VideoBlock, LoadFrames, SkippedItemWarning
from fastai_seq.video import video_info, read_frames, verify_videos, VideoError, MIN_PYAV
from fastai_seq.files import extract_frames
import fastai_seq.video as fsv
from conftest import make_frames, frame_index, write_video

_BLAME = re.compile(r'corrupt|re-?encode|remove|truncated|damaged|re-download', re.I)

def check_library_error(e, fn):
    "`e` says our call into PyAV failed, names `fn` and what to install, and does not blame the file"
    msg = str(e)
    assert isinstance(e, RuntimeError) and not isinstance(e, ValueError), repr(e)
    assert str(fn) in msg and f'does not support PyAV {av.__version__}' in msg and "av>=18,<20" in msg, msg
    assert not _BLAME.search(msg), msg

@pytest.fixture
def small_video(tmp_path):
    "A fresh 12-frame H.264 file (a new path: never in the index cache), frame i's brightness encoding i"
    return write_video(tmp_path/'v.mp4', make_frames(12))

# ---- PyAV 19: `av.open` has no `metadata_errors` ----

def test_open_arguments_follow_the_version():
    assert MIN_PYAV == (18, 0)
    assert fsv._open_kw((18, 1)) == {'metadata_errors': 'ignore'}
    assert fsv._open_kw((19, 0)) == fsv._open_kw((20, 3)) == fsv._open_kw(None) == {}
    assert fsv._OPEN_KW == fsv._open_kw(fsv._pyav_version(av.__version__))

def _pyav19_open(monkeypatch):
    "Make `av.open` refuse `metadata_errors` as PyAV 19 does; returns the list of keyword sets it was called with"
    real, calls = av.open, []
    def open19(file, mode=None, **kw):
        calls.append(set(kw))
        if 'metadata_errors' in kw: raise TypeError("open() got an unexpected keyword argument 'metadata_errors'")
        return real(file, mode, **kw)
    monkeypatch.setattr(av, 'open', open19)
    return calls

def test_reads_with_an_open_that_has_no_metadata_errors(small_video, monkeypatch):
    "With PyAV 19's `av.open`, the arguments chosen for 19 give the right frames"
    calls = _pyav19_open(monkeypatch)
    monkeypatch.setattr(fsv, '_OPEN_KW', fsv._open_kw((19, 0)))
    assert video_info(small_video).n_frames == 12
    a = read_frames(small_video, [0, 5, 11, 5])
    assert [frame_index(f) for f in a] == [0, 5, 11, 5] and a.shape == (4, 32, 48, 3)
    assert [frame_index(f) for f in extract_frames(small_video, [2, 3])] == [2, 3]
    assert calls and all('metadata_errors' not in c for c in calls)

def test_tags_that_are_not_utf8_open_on_this_pyav(tmp_path):
    "Tags in another encoding (old taggers write Latin-1): PyAV < 19 refuses them unless told to ignore them, 19 reads them"
    fn = tmp_path/'latin1_tags.mkv'
    with av.open(str(fn), 'w', **({} if fsv._PYAV >= (19, 0) else {'metadata_errors': 'surrogateescape'})) as c:
        c.metadata['title'] = b'caf\xe9'.decode('utf-8', 'surrogateescape')  # the raw bytes 'caf\xe9'
        s = c.add_stream('libx264', rate=10)
        s.width, s.height, s.pix_fmt = 48, 32, 'yuv420p'
        for f in make_frames(6):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format='rgb24')): c.mux(p)
        for p in s.encode(): c.mux(p)
    if fsv._PYAV < (19, 0):  # what `metadata_errors='ignore'` is there for
        with pytest.raises(UnicodeDecodeError): av.open(str(fn)).close()
    assert video_info(fn).n_frames == 6
    assert [frame_index(f) for f in read_frames(fn, [5, 0])] == [5, 0]

def test_a_rejected_argument_is_a_library_error_not_a_bad_file(small_video, monkeypatch):
    "Passing PyAV 19 an argument it removed (what happened before this fix) is our failure: the file is not blamed"
    _pyav19_open(monkeypatch)
    monkeypatch.setattr(fsv, '_OPEN_KW', fsv._open_kw((18, 0)))
    with pytest.raises(RuntimeError) as e: video_info(small_video)
    check_library_error(e.value, small_video)
    assert 'metadata_errors' in str(e.value)

# ---- a programming error in the decode path ----

class _Packet:
    "A packet whose `decode` fails as a PyAV with another API would"
    def __init__(self, p): self._p = p
    def __getattr__(self, k): return getattr(self._p, k)
    def __bytes__(self): return bytes(self._p)
    def decode(self): raise TypeError("decode() got an unexpected keyword argument 'x'")

class _Container:
    "A real container whose demuxed packets are `_Packet`s"
    def __init__(self, c): self._c = c
    def __getattr__(self, k): return getattr(self._c, k)
    def __enter__(self): return self
    def __exit__(self, *a): self._c.close()
    def demux(self, *a, **kw): return (_Packet(p) for p in self._c.demux(*a, **kw))

@pytest.fixture
def broken_decode(monkeypatch):
    "Switch on (call it) a decode path that raises a TypeError from PyAV, as a changed PyAV API would"
    def on():
        real = av.open
        monkeypatch.setattr(av, 'open', lambda *a, **kw: _Container(real(*a, **kw)))
    return on

def test_type_error_in_probe_and_decode_is_not_blamed_on_the_file(small_video, broken_decode):
    assert read_frames(small_video, [3]).shape == (1, 32, 48, 3)  # indexed while PyAV works
    broken_decode()
    with pytest.raises(RuntimeError) as e: read_frames(small_video, [1, 4])  # the decode of frames
    check_library_error(e.value, small_video)
    with pytest.raises(RuntimeError) as e: list(extract_frames(small_video))
    check_library_error(e.value, small_video)
    fresh = shutil.copy(small_video, small_video.with_name('fresh.mp4'))
    with pytest.raises(RuntimeError) as e: video_info(fresh)  # the probe
    check_library_error(e.value, fresh)
    with pytest.raises(RuntimeError) as e: verify_videos([small_video], n_workers=0, progress=False)  # not 'damaged inside'
    check_library_error(e.value, small_video)

def test_attribute_error_in_open_is_not_blamed_on_the_file(small_video, monkeypatch):
    def gone(*a, **kw): raise AttributeError("module 'av' has no attribute 'open'")
    monkeypatch.setattr(av, 'open', gone)
    with pytest.raises(RuntimeError) as e: video_info(small_video)
    check_library_error(e.value, small_video)

def test_ffmpeg_errors_still_blame_the_file(tmp_path):
    "The other side of the line: a file FFmpeg cannot read is still the file's problem, with what to do"
    bad = tmp_path/'bad.mp4'; bad.write_bytes(b'\x00\x00\x00\x18ftypmp42' + bytes(range(256))*4)
    with pytest.raises(VideoError, match=r'bad\.mp4: FFmpeg cannot open it.*re-encode it'): video_info(bad)

@pytest.fixture
def two_class_videos(tmp_path):
    for i in range(4): write_video(tmp_path/f'c{i%2}'/f'{i}.mp4', make_frames(8, seed=i))
    return tmp_path

def _dls(path, on_error):
    return DataBlock(blocks=(VideoBlock(n_frames=3, sampler='first', on_error=on_error), CategoryBlock),
                     get_items=lambda p: sorted(p.glob('*/*.mp4')), get_y=parent_label,
                     splitter=IndexSplitter([0])).dataloaders(path, bs=2, num_workers=0)

@pytest.mark.parametrize('on_error', ['raise', 'skip'])
def test_library_error_in_a_pipeline_is_raised_never_skipped(two_class_videos, broken_decode, on_error):
    "Under `on_error='skip'` a library error would skip every item: it is raised, and nothing is logged as skipped"
    dls = _dls(two_class_videos, on_error)
    x, _ = dls.one_batch()
    assert [frame_index(f) for f in x[0]] == [0, 1, 2]
    broken_decode()
    lf = next(t for t in dls.train.dataset.tls[0].tfms if isinstance(t, LoadFrames))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        with pytest.raises(RuntimeError) as e: dls.one_batch()
        assert not [o for o in w if issubclass(o.category, SkippedItemWarning)], [str(o.message) for o in w]
    assert lf.n_skipped == 0
    files = {str(f) for f in two_class_videos.glob('*/*.mp4')}
    named = str(e.value).split(': ')[0]
    assert named in files and check_library_error(e.value, named) is None
    with pytest.raises(RuntimeError) as e: _dls(two_class_videos, on_error)  # building it: `setups` loads the first item
    named = str(e.value).split(': ')[0]
    assert named in files and check_library_error(e.value, named) is None

@pytest.mark.parametrize('err', [TypeError('bad call'), AttributeError('no attribute'), NameError('x')])
def test_load_frames_raises_programming_errors_as_they_are(err):
    "`LoadFrames` turns an item's failure into 'cannot load it... Remove or replace it' (or skips it), not a programming error"
    for on_error in ('raise', 'skip'):
        lf = LoadFrames(n_frames=2, on_error=on_error)
        def fail(o): raise err
        with pytest.raises(type(err)) as e: lf._guard(fail, Path('a.mp4'), 'a.mp4')
        assert e.value is err and lf.n_skipped == 0
    lf = LoadFrames(n_frames=2, on_error='raise')
    def bad_file(o): raise OSError('unreadable')
    with pytest.raises(ValueError, match=r'a\.mp4: cannot load it \(OSError: unreadable\)\. Remove or replace it'):
        lf._guard(bad_file, Path('a.mp4'), 'a.mp4')

# ---- the version gate ----

def test_version_gate():
    with pytest.raises(ImportError) as e: fsv._check_pyav('17.0.0')
    assert str(e.value) == "fastai_seq needs PyAV >= 18 (found 17.0.0): pip install -U av"
    with pytest.raises(ImportError, match=r'found 13\.1\.0\)'): fsv._check_pyav('13.1.0')
    assert fsv._check_pyav('18.0.0') == (18, 0) and fsv._check_pyav('19.0.2') == (19, 0) and fsv._check_pyav('20.1rc1') == (20, 1)
    assert fsv._check_pyav('unknown') is None  # a version we cannot read is not refused

def _env():
    "The environment of a subprocess that imports the same `fastai_seq` as this one"
    here = str(Path(fsv.__file__).resolve().parents[1])
    return {**os.environ, 'PYTHONPATH': os.pathsep.join(p for p in (here, os.environ.get('PYTHONPATH')) if p)}

def test_importing_with_an_old_pyav_fails_at_once():
    code = ("import av; av.__version__ = '17.2.1'\n"
            "try: import fastai_seq.video\n"
            "except ImportError as e: print('ImportError:', e)\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, env=_env())
    assert "ImportError: fastai_seq needs PyAV >= 18 (found 17.2.1): pip install -U av" in r.stdout, r.stderr[-2000:]

# ---- PyAV logging: decoders run one thread while its Python log callback is installed ----

@pytest.fixture
def pyav_logging():
    "A function that sets PyAV's log level; the level found is restored after the test"
    before = av.logging.get_level()
    yield av.logging.set_level
    av.logging.set_level(before)

def test_one_decoder_thread_while_logging(small_video, monkeypatch, pyav_logging):
    "Every decode sets its threads through the rule: 1 while PyAV logs to Python, else what was asked; the level is kept"
    streams, counts, real_vstream, real_set = [], [], fsv._vstream, fsv._set_threads
    def vstream(c, fn, stream=None):
        s = real_vstream(c, fn, stream); streams.append(s); return s
    def set_threads(s, threads):
        real_set(s, threads); counts.append(s.codec_context.thread_count)
    monkeypatch.setattr(fsv, '_vstream', vstream)
    monkeypatch.setattr(fsv, '_set_threads', set_threads)
    monkeypatch.setattr(fsv, '_default_threads', lambda: 2)
    def decode_everything(fn):
        video_info(fn)
        assert [frame_index(f) for f in read_frames(fn, [1, 7], threads=3)] == [1, 7]
        assert [frame_index(f) for f in extract_frames(fn, [4, 2])] == [4, 2]
        assert [(i, frame_index(a)) for i, a in fsv._decode_from_start(fn, [0, 3], None, 'rgb24', fsv._Scaler())] == [(0, 0), (3, 3)]
        assert fsv._count_frames(fn) == 12
        assert verify_videos([fn], n_workers=0, progress=False) == []
        assert len(counts) == len(streams) >= 6  # each opened video stream had its threads set before decoding
    pyav_logging(None)
    decode_everything(small_video)
    assert 3 in counts and 2 in counts  # asked for / the default: more than one thread
    counts.clear(); streams.clear()
    pyav_logging(av.logging.ERROR)
    decode_everything(shutil.copy(small_video, small_video.with_name('logged.mp4')))  # probed again, too
    assert set(counts) == {1}
    assert av.logging.get_level() == av.logging.ERROR  # the user's logging is left as it was

_LOGGING_SCRIPT = r'''
import sys, time, av, numpy as np, torch
from pathlib import Path
torch.set_num_threads(2)  # the default decoder threads are then 2
from fastai.vision.all import DataBlock, CategoryBlock, parent_label, IndexSplitter
from fastai_seq.data import VideoBlock
from fastai_seq.video import read_frames
path, clip = Path(sys.argv[1]), Path(sys.argv[2])
ref = read_frames(clip, range(40), threads=1)  # before logging is on
av.logging.set_level(av.logging.ERROR)  # as torchvision <= 0.25 does at import
rng = np.random.default_rng(0)
for k in range(300):
    idxs = np.sort(rng.choice(40, 4, replace=False))
    a = read_frames(clip, idxs, threads=2 + k%3)
    assert np.array_equal(a, ref[idxs]), f'call {k}: wrong frames'
print('reads done', flush=True)
for k in range(6):
    dls = DataBlock(blocks=(VideoBlock(n_frames=4, sampler='first'), CategoryBlock), get_items=lambda p: sorted(p.glob('*/*.mp4')),
                    get_y=parent_label, splitter=IndexSplitter([0])).dataloaders(path, bs=2, num_workers=0)
    x, y = dls.one_batch()
    got = (x*255).round().byte().permute(0, 1, 3, 4, 2).numpy()
    assert got.shape == (2, 4, *ref.shape[1:]) and (got == ref[:4][None]).all(), f'pipeline {k}: wrong frames'
assert av.logging.get_level() == av.logging.ERROR
print('done', flush=True)
'''

@pytest.mark.logging_deadlock
def test_no_deadlock_with_pyav_logging(tmp_path, video_dir):
    "PyAV-Org/PyAV#751: with PyAV logging on, freeing a frame-threaded H.264 decoder deadlocked (here in nearly every run)"
    clip = video_dir/'abseiling_k400.mp4'
    for c in ('c0', 'c1'): (tmp_path/c).mkdir()
    for i in range(4): shutil.copy(clip, tmp_path/f'c{i%2}'/f'{i}.mp4')
    (tmp_path/'run.py').write_text(_LOGGING_SCRIPT)
    try: r = subprocess.run([sys.executable, str(tmp_path/'run.py'), str(tmp_path), str(clip)], capture_output=True,
                            text=True, timeout=120, env=_env())
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"decoding hung with PyAV logging on (output so far: {e.stdout!r})")
    assert r.returncode == 0 and 'reads done' in r.stdout and 'done' in r.stdout.splitlines()[-1], r.stderr[-3000:]
