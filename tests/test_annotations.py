"The field's annotation files: each format from a small tree written here, through `get_items`/`get_y`/`splitter`"
import json, pickle, shutil, warnings, pytest, torch
from pathlib import Path
from fastai.vision.all import DataBlock, CategoryBlock
from fastai_seq.data import VideoBlock
from fastai_seq.datasets import make_moving_videos
from fastai_seq.annotations import *

def _touch(root, *rels):
    for r in rels:
        p = Path(root)/r; p.parent.mkdir(parents=True, exist_ok=True); p.touch()

def _names(items, root): return sorted(str(Path(o).relative_to(root)) for o in items)

# ---- HMDB51 ----
@pytest.fixture
def hmdb(tmp_path):
    sp, root = tmp_path/'splits', tmp_path/'hmdb51'
    sp.mkdir()
    (sp/'brush_hair_test_split1.txt').write_text('a_brush_1.avi 1 \nb_brush_2.avi 2 \nc_brush_3.avi 0 \n')
    (sp/'wave_test_split1.txt').write_text('d_wave_1.avi 1 \ne_wave_2.avi 2 \n')
    (sp/'wave_test_split2.txt').write_text('d_wave_1.avi 2 \ne_wave_2.avi 1 \n')
    _touch(root, 'brush_hair/a_brush_1.avi', 'brush_hair/b_brush_2.avi', 'brush_hair/c_brush_3.avi',
           'wave/d_wave_1.avi', 'wave/e_wave_2.avi')
    return sp, root

def test_hmdb51_split_files(hmdb):
    sp, root = hmdb
    ann = VideoAnnotations.from_hmdb51(sp, split=1)
    items = ann.get_items(root)
    # tag 0 (c_brush_3) is left out; tags 1/2 are train/valid
    assert _names(items, root) == ['brush_hair/a_brush_1.avi', 'brush_hair/b_brush_2.avi', 'wave/d_wave_1.avi', 'wave/e_wave_2.avi']
    assert [ann.get_y(o) for o in items] == ['brush_hair', 'brush_hair', 'wave', 'wave']
    tr, va = ann.splitter(items)
    assert [items[i].name for i in tr] == ['a_brush_1.avi', 'd_wave_1.avi'] and [items[i].name for i in va] == ['b_brush_2.avi', 'e_wave_2.avi']
    # split 2 reads only the *_test_split2 files
    ann2 = VideoAnnotations.from_hmdb51(sp, split=2, root=root)
    items2 = ann2.get_items()
    assert [o.name for o in items2] == ['d_wave_1.avi', 'e_wave_2.avi'] and ann2.splitter(items2) == ([1], [0])

def test_hmdb51_frame_folders_found_by_name(hmdb, tmp_path):
    sp, _ = hmdb
    frames = tmp_path/'frames'
    for n in ('a_brush_1', 'b_brush_2', 'd_wave_1', 'e_wave_2'): _touch(frames, f'x/{n}/img_00001.jpg')
    items = VideoAnnotations.from_hmdb51(sp, on_error='raise').get_items(frames)
    assert sorted(o.name for o in items) == ['a_brush_1', 'b_brush_2', 'd_wave_1', 'e_wave_2'] and all(o.is_dir() for o in items)

def test_missing_files_error_or_count(hmdb):
    sp, root = hmdb
    (root/'wave'/'e_wave_2.avi').unlink(); (root/'brush_hair'/'a_brush_1.avi').unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)2 of 4 listed files are not in .*a_brush_1\.avi.*e_wave_2\.avi.*on_error='skip'"):
        VideoAnnotations.from_hmdb51(sp).get_items(root)
    ann = VideoAnnotations.from_hmdb51(sp, on_error='skip')
    with pytest.warns(MissingFilesWarning, match='2 of 4'): items = ann.get_items(root)
    assert [o.name for o in items] == ['b_brush_2.avi', 'd_wave_1.avi'] and ann.n_missing == 2
    assert sorted(m.rel for m in ann.missing) == ['brush_hair/a_brush_1.avi', 'wave/e_wave_2.avi']
    shutil.rmtree(root); root.mkdir()
    with pytest.raises(FileNotFoundError, match='None was found'): ann.get_items(root)  # skip, but nothing left: an error

def test_bad_files_named(tmp_path):
    (tmp_path/'x_test_split1.txt').write_text('a.avi 7\n')
    with pytest.raises(ValueError, match=r"x_test_split1\.txt:1: expected"): VideoAnnotations.from_hmdb51(tmp_path)
    with pytest.raises(FileNotFoundError, match='no `<class>_test_split2.txt`'): VideoAnnotations.from_hmdb51(tmp_path, split=2)
    with pytest.raises(FileNotFoundError, match='nope.txt not found'): VideoAnnotations.from_list(tmp_path/'nope.txt')

# ---- 'path label' lists, through a real DataBlock ----
@pytest.fixture(scope='module')
def videos(tmp_path_factory):
    return make_moving_videos(tmp_path_factory.mktemp('vids'), n_per_class=2, n_frames=6, size=32, classes=('left', 'up'), speed=(0.5, 0.8), seed=0)

def test_path_label_list_to_a_batch(videos, tmp_path):
    (tmp_path/'classInd.txt').write_text('1 left\n2 up\n')  # UCF101 style: 1-based
    (tmp_path/'train.txt').write_text('left/left_0.mp4 1\nup/up_0.mp4 2\nleft/left_1.mp4 1\n')
    (tmp_path/'val.txt').write_text('up/up_1.mp4 2\n')
    ann = VideoAnnotations.from_list(tmp_path/'train.txt', tmp_path/'val.txt', classes=tmp_path/'classInd.txt')
    dblock = DataBlock(blocks=(VideoBlock(n_frames=4), CategoryBlock), get_items=ann.get_items, get_y=ann.get_y,
                       splitter=ann.splitter)
    dls = dblock.dataloaders(videos, bs=3, num_workers=0)
    assert (len(dls.train_ds), len(dls.valid_ds)) == (3, 1) and list(dls.vocab) == ['left', 'up']
    assert [Path(o).name for o in dls.valid_ds.items] == ['up_1.mp4']
    x, y = dls.valid.one_batch()
    assert x.shape == (1, 4, 3, 32, 32) and y.tolist() == [1]
    xs, ys = dls.train.new(shuffle=False).one_batch()
    assert xs.shape == (3, 4, 3, 32, 32) and sorted(ys.tolist()) == [0, 0, 1]
    pickle.loads(pickle.dumps(ann.get_y))  # exported learners carry it

def test_path_label_list_forms(tmp_path):
    root = tmp_path/'data'
    _touch(root, 'a/v1.mp4', 'b/v2.mp4', 'b/v3/img_1.jpg')
    (tmp_path/'names.txt').write_text('a/v1.mp4 cat\nb/v2.mp4 dog\n')
    (tmp_path/'ints.txt').write_text('# mmaction2 rawframes: dir n_frames label\nb/v3 12 1\na/v1.mp4 0\n')
    (tmp_path/'nolabel.txt').write_text('b/v2.mp4\n')  # UCF101's testlist form: the class folder is the label
    assert [r.label for r in read_path_label_list(tmp_path/'names.txt')] == ['cat', 'dog']
    assert [r.label for r in read_path_label_list(tmp_path/'ints.txt')] == [1, 0]
    assert [r.label for r in read_path_label_list(tmp_path/'ints.txt', classes=['a', 'b'])] == ['b', 'a']
    ann = VideoAnnotations.from_list(tmp_path/'ints.txt', tmp_path/'nolabel.txt', root=root, classes=['a', 'b'])
    items = ann.get_items()
    assert [str(o.relative_to(root)) for o in items] == ['b/v3', 'a/v1.mp4', 'b/v2.mp4']  # in the lists' order
    assert [ann.get_y(o) for o in items] == ['b', 'a', 'b'] and ann.splitter(items) == ([0, 1], [2])
    with pytest.raises(ValueError, match=r"ints\.txt:2: label 1 is not in the class list"):
        read_path_label_list(tmp_path/'ints.txt', classes=['a'])
    (tmp_path/'val.txt').write_text('b/v3 dog\na/v1.mp4 cat\n')  # v1 is in the training list too
    with pytest.raises(ValueError, match=r"(?s)v1\.mp4 is listed twice: .*names\.txt:1 \(train\) and .*val\.txt:2 \(valid\)"):
        VideoAnnotations.from_list(tmp_path/'names.txt', tmp_path/'val.txt').get_items(root)

# ---- Kinetics CSV ----
def test_kinetics_csv(tmp_path):
    root = tmp_path/'k400'
    (tmp_path/'train.csv').write_text('label,youtube_id,time_start,time_end,split\n'
                                      'abseiling,--33Lscn6sk,4,14,train\n"playing guitar",-0tQwDmTo2Y,27,37,train\n'
                                      'abseiling,zzz_xx,0,10,validate\n')
    (tmp_path/'test.csv').write_text('youtube_id,time_start,time_end,split\nq1w2e3,5,15,test\n')
    assert kinetics_name('--33Lscn6sk', 4, 14) == '--33Lscn6sk_000004_000014.mp4'
    # class folders (one spelled with an underscore, as some downloaders do) and a flat file: all found by name
    _touch(root, 'train/abseiling/--33Lscn6sk_000004_000014.mp4', 'train/playing_guitar/-0tQwDmTo2Y_000027_000037.mp4',
           'val/zzz_xx_000000_000010.mp4', 'test/q1w2e3_000005_000015.mp4')
    ann = VideoAnnotations.from_kinetics(tmp_path/'train.csv', tmp_path/'test.csv', root=root)
    items = ann.get_items()
    assert [o.name for o in items] == ['--33Lscn6sk_000004_000014.mp4', '-0tQwDmTo2Y_000027_000037.mp4', 'zzz_xx_000000_000010.mp4']
    assert [ann.get_y(o) for o in items] == ['abseiling', 'playing guitar', 'abseiling'] and ann.splitter(items) == ([0, 1], [2])
    assert ann.vocab == ['abseiling', 'playing guitar']
    t = VideoAnnotations.from_kinetics(tmp_path/'test.csv', root=root, splits=('test',))
    [o] = t.get_items()
    assert o.name == 'q1w2e3_000005_000015.mp4' and t.get_split(o) == 'test'
    with pytest.raises(ValueError, match='gives no label'): t.get_y(o)
    (root/'val'/'zzz_xx_000000_000010.mp4').unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 listed files .*\n  abseiling/zzz_xx_000000_000010\.mp4  \(.*train\.csv:4\)"):
        ann.get_items()
    (tmp_path/'bad.csv').write_text('label,id,start\nx,y,1\n')
    with pytest.raises(ValueError, match=r"bad\.csv: a Kinetics CSV needs the columns"): read_kinetics_csv(tmp_path/'bad.csv')

# ---- Something-Something v2 ----
def test_ssv2_json(tmp_path):
    root = tmp_path/'20bn'
    tr = [{'id': '78687', 'label': 'holding potato next to vicks vaporub bottle', 'template': 'Holding [something] next to [something]',
           'placeholders': ['potato', 'vicks vaporub bottle']},
          {'id': '42326', 'label': 'spreading margarine onto bread', 'template': 'Spreading [something] onto [something]',
           'placeholders': ['margarine', 'bread']}]
    va = [{'id': '74225', 'label': 'spinning cube that quickly stops spinning',
           'template': 'Spinning [something] that quickly stops spinning', 'placeholders': ['cube']}]
    labels = {'Holding something next to something': '0', 'Spreading something onto something': '1',
              'Spinning something that quickly stops spinning': '2'}
    for n,o in (('train', tr), ('validation', va), ('labels', labels), ('test', [{'id': '1420'}])):
        (tmp_path/f'something-something-v2-{n}.json').write_text(json.dumps(o))
    _touch(root, '78687.webm', '42326.webm', '74225.webm')
    f = lambda n: tmp_path/f'something-something-v2-{n}.json'
    ann = VideoAnnotations.from_ssv2(f('train'), f('validation'), root=root, labels=f('labels'), test=f('test'))
    items = ann.get_items()  # the test entry (no file here, split 'test') is not asked for
    assert [o.name for o in items] == ['78687.webm', '42326.webm', '74225.webm']
    assert [ann.get_y(o) for o in items] == list(labels) and ann.splitter(items) == ([0, 1], [2])
    assert ssv2_class('Pushing [something] from left to right') == 'Pushing something from left to right'
    va[0]['template'] = 'Juggling [something]'
    f('validation').write_text(json.dumps(va))
    with pytest.raises(ValueError, match=r"validation\.json\[0\]: class 'Juggling something' is not in"):
        VideoAnnotations.from_ssv2(f('train'), f('validation'), root=root, labels=f('labels'))

def test_split_numbers_checked(tmp_path):
    "A split/fold that does not exist is a ValueError saying which exist (not an assert, stripped by `python -O`)"
    with pytest.raises(ValueError, match='HMDB51 has splits 1, 2 and 3, not 4'): read_hmdb51_splits(tmp_path, 4)
    with pytest.raises(ValueError, match='UCF101 has folds 1, 2 and 3, not 0'): ucf101_splits(tmp_path, fold=0)

def test_ucf101_lists_read_as_path_label_lists(tmp_path):
    "UCF101's lists are read by `read_path_label_list`: 'Class/name.avi label' and 'Class/name.avi' lines, comments skipped"
    (tmp_path/'trainlist01.txt').write_text('# a comment\r\nYoYo/v_YoYo_g08_c01.avi 101\r\n\r\n')
    (tmp_path/'testlist01.txt').write_text('YoYo/v_YoYo_g01_c01.avi\r\n')
    items = [Path('x/YoYo/v_YoYo_g01_c01.avi'), Path('frames/YoYo/v_YoYo_g08_c01')]
    assert ucf101_splits(tmp_path)(items) == ([1], [0])
    assert ucf101_group(items[1]) == 'YoYo_g08' and GroupSplitter(0.5, seed=0)(items) in (([0], [1]), ([1], [0]))

