import torch, torch.nn as nn, pytest
from test_mixed_precision import _train_mixed, force_amp
pytestmark = pytest.mark.usefixtures('one_thread')
def test_dbg(force_amp):
    learn, before, spy = _train_mixed('r2plus1d', 'bf16')
    print('\nDTYPES', spy.dtypes, torch.get_num_threads())
    x = next(iter(learn.dls.train))[0]
    outs = {}
    hs = [m.register_forward_hook(lambda m,i,o,n=n: outs.__setitem__(n, (o.dtype, i[0].dtype))) for n,m in learn.model.named_modules() if isinstance(m,(nn.Linear,nn.Conv3d))]
    with torch.autocast('cpu', dtype=torch.bfloat16): learn.model(x)
    print('OUTS', list(outs.items())[-3:])
