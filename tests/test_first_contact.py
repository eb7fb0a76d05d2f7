"What a newcomer meets first: splits of ordinary video folders, `predict` on a path given as `str`, readable figures, an epoch row under a time budget"
from pathlib import Path
import numpy as np, pytest, torch
from fastai.vision.all import DataBlock, CategoryBlock, parent_label, GrandparentSplitter, Resize, plt
from fastai_seq.data import VideoBlock, SeqBlock, SeqSplit
from fastai_seq.datasets import make_moving_videos, moving_mnist_dls
from fastai_seq.learner import seq_learner, TimeBudget
from fastai_seq.video import GroupSplitter, ucf101_group, get_video_files
import fastai_seq.fastai_patches  # noqa: F401 (what `fastai_seq.all` applies: `learn.predict` with paths and `n_out`, `evaluate_clips`, ...)

@pytest.fixture(scope='module')
def ucf_videos(tmp_path_factory):
    "16 small real videos named like UCF101 (4 groups of 2 clips a class)"
    return make_moving_videos(tmp_path_factory.mktemp('ucf'), n_per_class=4, n_frames=8, size=48, classes=('left', 'down'),
                              names='ucf', clips_per_group=2, seed=0)

@pytest.fixture(scope='module')
def video_dls(ucf_videos):
    return DataBlock(blocks=(VideoBlock(4, sampler='auto'), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                     splitter=GroupSplitter(valid_pct=0.25, seed=0)).dataloaders(ucf_videos, bs=4, num_workers=0)

# ---- GroupSplitter: UCF101 groups when every name has one, each file its own group when none has ----
def test_group_splitter_ucf_names_split_by_group(ucf_videos):
    items = get_video_files(ucf_videos)
    tr, va = GroupSplitter(valid_pct=0.25, seed=0)(items)
    assert sorted(tr + va) == list(range(8)) and len(va) == 2    # 1 of the 4 groups
    gtr, gva = {ucf101_group(items[i]) for i in tr}, {ucf101_group(items[i]) for i in va}
    assert len(gva) == 1 and not gtr & gva

def test_group_splitter_plain_names_split_by_file(tmp_path):
    "`names='class'` (left_0.mp4 ...) and a hand-made folder (plain/down/clip1.avi): each file is its own group"
    gen = get_video_files(make_moving_videos(tmp_path/'cls', n_per_class=4, n_frames=8, size=48, classes=('left', 'down'), seed=0))
    hand = [tmp_path/'plain'/c/f'clip{i}.avi' for c in ('down', 'up') for i in range(1, 11)]
    for items, n_valid in ((gen, 2), (hand, 5)):
        tr, va = GroupSplitter(valid_pct=0.25, seed=0)(items)
        assert sorted(tr + va) == list(range(len(items))) and len(va) == n_valid
        assert GroupSplitter(valid_pct=0.25, seed=0)(items) == (tr, va) and GroupSplitter(valid_pct=0.25, seed=1)(items) != (tr, va)
    # a mix is an error naming one of each kind; a group function of one's own is used as given
    mix = hand[:3] + [Path('x/down/v_Down_g01_c01.avi')]
    with pytest.raises(ValueError, match=r'1 of 4 items have UCF101-style names .*v_Down_g01_c01\.avi.*clip1\.avi.*group_func'):
        GroupSplitter()(mix)
    tr, va = GroupSplitter(0.5, seed=0, group_func=lambda o: Path(o).parent.name)(hand)
    assert {hand[i].parent.name for i in va} in ({'down'}, {'up'}) and len(va) == 10
    with pytest.raises(ValueError, match='valid_pct must be between 0 and 1'): GroupSplitter(valid_pct=1.)

# ---- predict: a file or folder given as `str` or `Path` ----
def test_predict_video_str_and_path(video_dls, ucf_videos):
    learn = seq_learner(video_dls, 'frames_mean')
    fn = get_video_files(ucf_videos)[0]
    with learn.no_bar():
        p1, p2 = learn.predict(str(fn)), learn.predict(fn)
    assert p1[0] in ('left', 'down') and p1[0] == p2[0] and torch.equal(p1[2], p2[2]) and p1[2].shape == (2,)

def test_predict_frame_folder_str_and_path(frame_folder):
    "A frame folder as `str` or `Path`: a classifier, and a forecaster whose `get_x` (`SeqSplit`) must not be skipped for a `str`"
    folders = lambda p: sorted(d for d in p.glob('*/*/*') if d.is_dir())
    cls = DataBlock(blocks=(SeqBlock(n_frames=4), CategoryBlock), get_items=folders, get_y=parent_label,
                    splitter=GrandparentSplitter(), item_tfms=Resize(16)).dataloaders(frame_folder, bs=2, num_workers=0)
    split = SeqSplit(4, 3)
    fc = DataBlock(blocks=(SeqBlock, SeqBlock), get_items=folders, get_x=split.get_x, get_y=split.get_y,
                   splitter=GrandparentSplitter(), item_tfms=Resize(16)).dataloaders(frame_folder, bs=2, num_workers=0)
    d = folders(frame_folder)[0]
    for dls, arch, kw in ((cls, 'frames_mean', {}), (fc, 'convgru', dict(szs=(8,), stem=()))):
        learn = seq_learner(dls, arch, **kw)
        with learn.no_bar():
            p1, p2 = learn.predict(str(d)), learn.predict(d)
        assert torch.equal(torch.as_tensor(p1[-1]), torch.as_tensor(p2[-1]))
        if arch == 'convgru': assert p1[0].shape == (3, 3, 16, 16)   # the 3 frames after the first 4, not the folder's 10

# ---- figures: no title over another, no empty band above the first row ----
def _boxes(fig):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    axs = [a for a in fig.axes if a.images]
    top = max(axs, key=lambda a: a.get_window_extent(r).y1)
    sup = fig._suptitle.get_window_extent(r) if fig._suptitle is not None and fig._suptitle.get_text() else None
    title = top.title.get_window_extent(r) if top.title.get_text() else None
    return fig.bbox, sup, title, top.get_window_extent(r), fig.dpi

def _check_top(fig):
    "The figure title (if any), then the first row's title (if any), then its frames, from the top, each close to the one above"
    fb, sup, title, ax, dpi = _boxes(fig)
    stack = [b for b in (sup, title, ax) if b is not None]
    assert fb.y1 - stack[0].y1 < 0.25*dpi, (fb, stack[0])            # no empty band at the top
    for upper, lower in zip(stack, stack[1:]):
        assert upper.y0 >= lower.y1 - 1, (upper, lower)             # no overlap (a pixel of rounding)
        assert upper.y0 - lower.y1 < 0.25*dpi, (upper, lower)       # and no band between them
    return sup, title

def test_show_results_one_row_titles_apart(video_dls):
    learn = seq_learner(video_dls, 'frames_mean')
    with learn.no_bar(): learn.show_results(max_n=1)
    sup, title = _check_top(plt.gcf())
    assert sup is not None and title is not None   # 'Actual / Predicted' above 'left / down'

def test_show_batch_rows_close_to_the_top(video_dls):
    video_dls.show_batch(max_n=4)
    fig = plt.gcf()
    assert len([a for a in fig.axes if a.images]) == 4
    _check_top(fig)

def test_forecast_figures_close_to_the_top():
    dls = moving_mnist_dls(n_in=3, n_out=2, n_train=4, n_valid=4, bs=2, size=32)
    dls.show_batch(max_n=2)
    assert _check_top(plt.gcf())[0] is not None
    plt.close('all')
    learn = seq_learner(dls, 'convgru', szs=(8,), stem=())
    with learn.no_bar(): learn.show_results(max_n=1)
    fig = plt.gcf()
    assert len([a for a in fig.axes if a.images]) == 3 and _check_top(fig)[0] is not None

# ---- a time budget that ends the only epoch early still gives a row with its training loss ----
def test_time_budget_cut_epoch_is_logged(capsys):
    from fastai.callback.schedule import fit_one_cycle  # noqa: F401
    from fastai_seq.__main__ import console_logging
    dls = moving_mnist_dls(2, 1, n_train=32, n_valid=8, size=32, bs=8)   # 4 batches an epoch
    clock = iter(range(0, 10_000, 10))   # a fake clock: 10 "seconds" a reading, one before and one after each batch
    with console_logging(lines=True):
        learn = seq_learner(dls, 'convgru', szs=(8,), stem=())
        tb = TimeBudget(25)
        learn.add_cbs(tb)
        tb.before_fit = lambda: (setattr(tb, 't0', 0), setattr(tb, 'n', 0), setattr(tb, 'spent', False),
                                 setattr(tb, '_clock', lambda: next(clock)))
        learn.fit_one_cycle(3, 1e-3)
    assert tb.n == 2*8 and tb.spent   # the 2nd batch ends at 30 > 25 s: the rest of the epoch and epochs 1, 2 are skipped
    assert tb.cut == (0, 2, 4)
    assert len(learn.recorder.values) == 1 and len(learn.recorder.values[0]) == 2 + len(learn.metrics)
    lines = capsys.readouterr().out.strip().split('\n')
    assert lines[0].split()[:3] == ['epoch', 'train_loss', 'valid_loss'] and len(lines) == 2
    row = lines[1].split()
    assert len(row) == len(lines[0].split()) and row[0] == '0' and float(row[1]) > 0 and float(row[2]) > 0
    assert np.isclose(float(row[2]), learn.validate()[0], rtol=1e-4)   # the validation of the weights the fit ended with
