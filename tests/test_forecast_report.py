"The standard Moving MNIST file (`load_moving_mnist`, `to_npy`, the test loader), `forecast_report` against scikit-image, rollout"
import numpy as np, pytest, torch
from torch import nn
from fastai.learner import Learner
from fastai.losses import MSELossFlat
from fastai_seq.core import ImageSeq
from fastai_seq.datasets import MovingMNIST, load_moving_mnist, moving_mnist_test_dl, moving_mnist_dls, DigitsError
from fastai_seq.learner import seq_learner
from fastai_seq.evaluate import ForecastReport, Rollout
from fastai_seq.registry import list_archs, arch_info
import fastai_seq.fastai_patches  # noqa: F401 (what `fastai_seq.all` applies: `learn.predict` with paths and `n_out`, `evaluate_clips`, ...)

N_IN,N_OUT,SIZE = 4,3,32

pytestmark = pytest.mark.usefixtures('one_thread')   # conftest: one torch thread for this module

@pytest.fixture(scope='module')
def mm(): return MovingMNIST(n_in=N_IN, n_out=N_OUT, size=SIZE, seed=3, chunk=16)

@pytest.fixture(scope='module')
def npy(mm, tmp_path_factory):
    return mm.to_npy(tmp_path_factory.mktemp('mm')/'mnist_test_seq.npy', 40)

# ------------------------------------------------------------------------------------------------------- the test file
def test_to_npy_reads_back_in_both_layouts(mm, npy, tmp_path):
    raw = np.load(npy)
    assert raw.shape==(N_IN+N_OUT, 40, SIZE, SIZE) and raw.dtype==np.uint8   # time-major, like mnist_test_seq.npy
    a = load_moving_mnist(npy)
    assert a.shape==(40, N_IN+N_OUT, SIZE, SIZE) and (a==raw.transpose(1, 0, 2, 3)).all()
    assert (a[:, 0].reshape(40, -1).max(1)>0).all()   # digits in every first frame
    nt = mm.to_npy(tmp_path/'nt.npy', 40, layout='NT')
    assert np.load(nt).shape==(40, N_IN+N_OUT, SIZE, SIZE) and (load_moving_mnist(nt)==a).all()
    # the same sequences for the same seed, and none of them from the validation set
    assert (load_moving_mnist(mm.to_npy(tmp_path/'again.npy', 40))==a).all()
    v = mm.valid_set(40)
    assert not any((v==s).all((1, 2, 3)).any() for s in a)
    # a square (T==N) file is told apart by its motion
    sq = MovingMNIST(n_in=4, n_out=3, size=SIZE, seed=1)
    f1,f2 = sq.to_npy(tmp_path/'sq_tn.npy', 7), sq.to_npy(tmp_path/'sq_nt.npy', 7, layout='NT')
    assert (load_moving_mnist(f1)==load_moving_mnist(f2)).all()
    assert (load_moving_mnist(f1, layout='TN')==np.load(f1).transpose(1, 0, 2, 3)).all()

def test_bad_files_get_clear_errors(tmp_path):
    fn = tmp_path/'f.npy'
    np.save(fn, np.zeros((20, 3, 64, 64), np.float32))
    with pytest.raises(DigitsError, match=r'f\.npy: dtype float32, expected uint8.*255'): load_moving_mnist(fn)
    np.save(fn, np.zeros((20, 64, 64), np.uint8))
    with pytest.raises(DigitsError, match=r'f\.npy: an array of shape \(20, 64, 64\), not \(T,N,H,W\)'): load_moving_mnist(fn)
    np.save(fn, np.zeros((20, 3, 1, 64, 64), np.uint8))
    with pytest.raises(DigitsError, match='channel axis.*squeeze'): load_moving_mnist(fn)
    fn.write_bytes(b'not numpy')
    with pytest.raises(DigitsError, match='cannot load'): load_moving_mnist(fn)
    with pytest.raises(FileNotFoundError, match='to_npy'): load_moving_mnist(tmp_path/'missing.npy')
    with pytest.raises(ValueError, match='layout'): MovingMNIST(size=32).to_npy(tmp_path/'x.npy', 2, layout='TNX')
    np.save(fn, np.zeros((7, 2, 32, 32), np.uint8))
    with pytest.raises(ValueError, match='10 -> 10 of 20'): moving_mnist_test_dl(fn, 5, 5)

def test_test_loader_is_the_file_in_order(npy):
    a = load_moving_mnist(npy)
    dl = moving_mnist_test_dl(npy, N_IN, N_OUT, bs=16)
    xs,ys = zip(*[(x, y) for x,y in dl])
    x,y = torch.cat(xs),torch.cat(ys)
    assert isinstance(x, ImageSeq) and x.shape==(40, N_IN, 1, SIZE, SIZE) and y.shape==(40, N_OUT, 1, SIZE, SIZE)
    assert torch.equal(x[:, :, 0], torch.from_numpy(a[:, :N_IN].copy()).float()/255)
    assert torch.equal(y[:, :, 0], torch.from_numpy(a[:, N_IN:].copy()).float()/255)
    dls = moving_mnist_dls(N_IN, N_OUT, n_train=16, n_valid=16, size=SIZE, test=npy)
    assert dls.test is dls[2] and len(dls[2].dataset)==40

# ------------------------------------------------------------------------------------------------------------ the report
def _noisy_convgru(dls):
    torch.manual_seed(0)
    learn = seq_learner(dls, 'convgru', szs=(8, 16), stem=(8,))
    with torch.no_grad():
        for p in learn.model.parameters(): p.add_(torch.randn_like(p)*0.05)   # away from the blank-frame init
        learn.model.head.module[-1][0].bias.fill_(0.2)
    return learn

def _reference(pred:np.ndarray, targ:np.ndarray) -> np.ndarray:
    "Per-step (mse, mae, ssim, psnr) with scikit-image, frame by frame: `pred`, `targ` `(N,T,H,W)` in [0,1]"
    skm = pytest.importorskip('skimage.metrics', reason='scikit-image (the dev extra) cross-checks the report')
    res = np.zeros((pred.shape[1], 4))
    for p,t in zip(pred.astype(np.float64), targ.astype(np.float64)):
        for j,(pf,tf) in enumerate(zip(p, t)):
            pc = pf.clip(0, 1)
            res[j] += [((pf-tf)**2).sum(), np.abs(pf-tf).sum(),
                       skm.structural_similarity(tf, pc, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False),
                       100. if (pc==tf).all() else skm.peak_signal_noise_ratio(tf, pc, data_range=1)]   # perfect: 100 dB
    return res/len(pred)

def test_report_matches_scikit_image_on_the_test_file(npy, tmp_path):
    dls = moving_mnist_dls(N_IN, N_OUT, n_train=16, n_valid=16, size=SIZE, bs=8, test=npy)
    learn = _noisy_convgru(dls)
    rep = learn.forecast_report(dls.test, plot=tmp_path/'horizon.png')
    assert isinstance(rep, ForecastReport) and rep.n==40 and list(rep.per_step.index)==[1, 2, 3]
    # the independent computation: the raw file, the model called directly, scikit-image's metrics
    a = np.load(npy).transpose(1, 0, 2, 3).astype(np.float32)/255
    learn.model.eval()
    with torch.no_grad(): pred = learn.model(torch.from_numpy(a[:, :N_IN, None]))[:, :, 0].numpy()
    assert ((pred<0)|(pred>1)).mean()>0.005   # some clipping happens: ssim/psnr clip, mse/mae do not
    ref = _reference(pred, a[:, N_IN:])
    np.testing.assert_allclose(rep.per_step.values, ref, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(list(rep.overall.values()), ref.mean(0), rtol=2e-4, atol=1e-6)
    assert list(rep.overall)==['mse', 'mae', 'ssim', 'psnr']
    # the baselines, from their definitions
    t = a[:, N_IN:]
    np.testing.assert_allclose(rep.baselines['blank']['mse'].values, (t**2).sum((2, 3)).mean(0), rtol=1e-5)
    np.testing.assert_allclose(rep.baselines['copy last'].values, _reference(np.repeat(a[:, N_IN-1:N_IN], N_OUT, 1), t), rtol=2e-4, atol=1e-6)
    tab = rep.table()
    assert list(tab.index)==['model', 'copy last', 'blank'] and tab.loc['blank', 'mse x blank']==1
    assert (tmp_path/'horizon.png').stat().st_size>5000
    assert 'per step' in repr(rep) and 'copy last' in repr(rep)
    # the default is the validation set; the learner's metrics are left as they were
    assert learn.forecast_report(baselines=False).n==16 and not learn.forecast_report(baselines=False).baselines
    assert [m.name for m in learn.metrics]==['mse', 'mae', 'ssim', 'psnr']

# ---------------------------------------------------------------------------------------------------------------- rollout
@pytest.mark.parametrize('arch', list_archs(task='forecast'))
def test_rollout_every_arch(arch):
    torch.manual_seed(0)
    m = arch_info(arch).builder(n_in=N_IN, n_out=N_OUT, channels=1, size=(16, 16)).eval()
    with torch.no_grad():
        for p in m.parameters(): p.add_(torch.randn_like(p)*1e-2)
        x = torch.rand(2, N_IN, 1, 16, 16)
        y = m(x)
        r = Rollout(m, 2*N_OUT)(x)
        assert r.shape==(2, 2*N_OUT, 1, 16, 16) and torch.isfinite(r).all()
        assert torch.equal(r[:, :N_OUT], y)
        # the next frames are the model's forecast from the last n_in frames, its own predictions included
        assert torch.allclose(r[:, N_OUT:], m(torch.cat([x, y], 1)[:, -N_IN:]), atol=1e-6)
        assert Rollout(m, N_OUT-1)(x).shape[1]==N_OUT-1

def test_predict_n_out_and_forecast(mm):
    dls = moving_mnist_dls(N_IN, N_OUT, n_train=16, n_valid=16, size=SIZE, bs=8)
    learn = _noisy_convgru(dls)
    item = torch.from_numpy(mm.valid_set(1)[0, :N_IN])
    dec,pred,raw = learn.predict(item)
    dec2,pred2,raw2 = learn.predict(item, n_out=2*N_OUT)
    assert pred2.shape==(2*N_OUT, 1, SIZE, SIZE) and torch.equal(pred2[:N_OUT], pred)
    assert isinstance(dec2, ImageSeq) and dec2.shape==pred2.shape
    assert learn.model.__class__.__name__=='ConvGRUNet'   # the rollout wrapper is gone again
    f = learn.forecast(item.float()[:, None]/255, 2*N_OUT)
    assert f.shape==(2*N_OUT, 1, SIZE, SIZE) and torch.allclose(f, pred2, atol=1e-6)
    assert learn.forecast(torch.stack([item.float()[:, None]/255]*2), 5).shape==(2, 5, 1, SIZE, SIZE)

# ------------------------------------------------------------------------------------------------ cross-entropy recipe
def test_pixel_levels_loss_and_dice():
    from fastai_seq.losses import PixelLevelsLoss
    from fastai_seq.metrics import SeqDice
    y = torch.tensor([0., .5, .71, 1.]).view(1, 1, 1, 2, 2)
    assert PixelLevelsLoss().encode(y).flatten().tolist()==[0, 0, 1, 1]
    assert PixelLevelsLoss(5).encode(y).flatten().tolist()==[0, 2, 3, 4]
    logits = torch.zeros(1, 1, 5, 2, 2); logits[0, 0, [0, 2, 3, 4], [0, 0, 1, 1], [0, 1, 0, 1]] = 5.
    assert torch.equal(PixelLevelsLoss(5).decodes(logits).flatten(), torch.tensor([0., .5, .75, 1.]))
    l2 = torch.zeros(1, 1, 2, 2, 2); l2[0, 0, 1, 1, :] = 1.; l2[0, 0, 1, 0, 0] = 1.   # predicted on: 3 pixels, 2 of them right
    assert torch.allclose(SeqDice(eps=0).per_sample(l2, y), torch.tensor([2*2/(3+2)]))
    with pytest.raises(ValueError, match='out_ch=2'): PixelLevelsLoss()(torch.zeros(1, 1, 1, 2, 2), y)

def test_cross_entropy_recipe_learns_and_shows(tmp_path):
    from fastai.callback.schedule import fit_one_cycle  # noqa: F401
    from fastai.callback.progress import ProgressCallback  # noqa: F401 (no_bar)
    from fastai_seq.losses import PixelLevelsLoss
    dls = moving_mnist_dls(3, 2, n_train=64, n_valid=16, size=SIZE, bs=8)
    torch.manual_seed(0)
    learn = seq_learner(dls, 'convgru', loss_func=PixelLevelsLoss(2, th=0.7), szs=(8, 16), stem=(8,))
    assert learn.model.head.module[-1][0].out_channels==2*4 and [m.name for m in learn.metrics]==['dice']
    before = learn.validate()[0]
    assert abs(before-np.log(2))<1e-4   # zero-initialised head: both classes equally likely
    with learn.no_bar(): learn.fit_one_cycle(3, 3e-3)
    after = learn.validate()[0]
    assert after<0.6*before
    learn.show_results(max_n=2)
    import matplotlib.pyplot as plt
    axs = [ax for ax in plt.gcf().axes if ax.get_images()]
    assert len(axs)==6   # input, target, prediction strips of 2 samples
    for ax in axs[2::3]:   # the predictions are decoded frames: every pixel on or off
        a = np.asarray(ax.get_images()[0].get_array(), dtype=float)
        assert set(np.unique(a).tolist())<={0., a.max()} and a.max() in (0., 1., 255.)
    assert len(np.unique(np.asarray(axs[0].get_images()[0].get_array())))>2   # the input frames are gray
    _,pred,raw = learn.predict(torch.from_numpy(MovingMNIST(n_in=3, n_out=2, size=SIZE).valid_set(1)[0, :3]))
    assert pred.shape==(2, 1, SIZE, SIZE) and raw.shape==(2, 2, SIZE, SIZE)

def test_srivastava_construction_bit_for_bit():
    "`MovingMNIST.srivastava` against a line-by-line port of Srivastava et al.'s `GetRandomTrajectory` and `GetBatch`"
    mm = MovingMNIST(n_digits=2, seed=0)
    n,K,T,S,D = 3,2,mm.n_frames,64,28
    rng = np.random.default_rng(5)
    # --- their code, loops and all (digits from our generator's stream, drawn after the trajectories)
    b = n*K
    y,x = rng.random(b),rng.random(b)
    theta = rng.random(b)*2*np.pi
    v_y,v_x = np.sin(theta),np.cos(theta)
    start_y,start_x = np.zeros((T, b)),np.zeros((T, b))
    for i in range(T):
        y += v_y*0.1; x += v_x*0.1
        for j in range(b):
            if x[j]<=0: x[j] = 0; v_x[j] = -v_x[j]
            if x[j]>=1.0: x[j] = 1.0; v_x[j] = -v_x[j]
            if y[j]<=0: y[j] = 0; v_y[j] = -v_y[j]
            if y[j]>=1.0: y[j] = 1.0; v_y[j] = -v_y[j]
        start_y[i],start_x[i] = y,x
    start_y,start_x = ((S-D)*start_y).astype(np.int32),((S-D)*start_x).astype(np.int32)
    idx = mm.sample(n, rng)['idx']
    ref = np.zeros((n, T, S, S), np.uint8)
    for j in range(n):
        for k in range(K):
            for i in range(T):
                top,left = start_y[i, j*K+k],start_x[i, j*K+k]
                ref[j, i, top:top+D, left:left+D] = np.maximum(ref[j, i, top:top+D, left:left+D], mm.digits[idx[j, k]])
    assert np.array_equal(mm.srivastava(n, 5), ref)
    assert (ref[:, 0].reshape(n, -1).max(1)>0).all() and (start_x==0).any()   # digits drawn; some hit a wall

def test_time_budget_schedule():
    "The schedule follows the clock, or the epochs when they end first; fitting stops once the budget is spent"
    from fastai.callback.schedule import fit_one_cycle  # noqa: F401
    from fastai.callback.progress import ProgressCallback  # noqa: F401
    from fastai.callback.core import Callback
    from fastai_seq.callbacks import TimeBudget
    class Rec(Callback):
        order = 70
        def before_fit(self): self.pcts = []
        def before_batch(self):
            if self.training: self.pcts.append(self.learn.pct_train)
    dls = moving_mnist_dls(2, 1, n_train=32, n_valid=8, size=SIZE, bs=8)
    for budget,n_ep in ((1e6, 2), (45, 50)):
        clock = iter(range(0, 10_000, 10))   # a fake clock: 10 "seconds" a reading, one before and one after each batch
        learn = seq_learner(dls, 'convgru', szs=(8,), stem=(), metrics=[])
        tb,rec = TimeBudget(budget),Rec()
        learn.add_cbs([tb, rec])
        tb.before_fit = lambda: (setattr(tb, 't0', 0), setattr(tb, 'n', 0), setattr(tb, '_clock', lambda: next(clock)))
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(n_ep, 1e-3)
        if budget==1e6: assert np.allclose(rec.pcts, np.arange(8)/8)   # 2 epochs of 4 batches: the epochs lead
        else: assert np.allclose(rec.pcts, [0, 20/45, 40/45]) and tb.n==3*8   # the clock leads; the 3rd batch ends at 50 > 45 s
