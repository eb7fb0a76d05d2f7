"The tutorial notebooks in nbs/: each runs top to bottom in fast mode (`FASTAI_SEQ_FAST=1`), and none is committed with outputs"
import json, os, re, sys, time
from pathlib import Path
import pytest
from conftest import REPO, shared_data

NBS = sorted((REPO/'nbs').glob('*.ipynb'))
TUTORIALS = ('01_moving_mnist.ipynb', '02_action_recognition.ipynb', '03_custom_data.ipynb')

def test_tutorials_present():
    names = [p.name for p in NBS]
    assert all(t in names for t in TUTORIALS), f"missing tutorials: {sorted(set(TUTORIALS)-set(names))}"

@pytest.mark.parametrize('fn', NBS, ids=lambda p: p.name)
def test_committed_without_outputs(fn):
    "Outputs are cleared before committing: a committed output could be stale"
    nb = json.loads(fn.read_text())
    code = [c for c in nb['cells'] if c['cell_type']=='code']
    assert code, f"{fn.name} has no code cells"
    dirty = [i for i,c in enumerate(nb['cells']) if c['cell_type']=='code' and (c.get('outputs') or c.get('execution_count'))]
    assert not dirty, (f"{fn.name}: code cells {dirty} hold outputs; clear them (e.g. `jupyter nbconvert --clear-output "
                       f"--inplace {fn.relative_to(REPO)}`) before committing")
    assert nb['metadata']['kernelspec']['name']=='python3'

def _kernel_env() -> dict:
    "The test's environment with fast mode on, the shared data located and the inline plot backend"
    env = {**os.environ, 'FASTAI_SEQ_FAST': '1'}
    env.pop('MPLBACKEND', None)   # conftest's Agg would hide the figures: let ipykernel draw them, so drawing errors surface
    data = shared_data()
    if data is not None: env['FASTAI_SEQ_TEST_DATA'] = str(data.resolve())
    else: env.pop('FASTAI_SEQ_TEST_DATA', None)
    return env

@pytest.mark.slow
@pytest.mark.parametrize('fn', NBS, ids=lambda p: p.name)
def test_notebook_runs(fn, tmp_path):
    "Execute every cell in a fresh kernel of this interpreter, in a temporary folder; any cell error fails with its source"
    nbformat = pytest.importorskip('nbformat', reason="the notebook tests need nbformat: pip install '.[dev]'")
    nbclient = pytest.importorskip('nbclient', reason="the notebook tests need nbclient and ipykernel: pip install '.[dev]'")
    nb = nbformat.read(fn, as_version=4)
    # A first cell checks that the kernel is this interpreter (the `python3` kernelspec names `python`, which
    # jupyter_client maps to `sys.executable`) and that the notebook sees fast mode.
    check = (f"import sys\nassert sys.prefix == {sys.prefix!r}, f'kernel runs {{sys.executable}}, not the test interpreter'\n"
             "from fastai_seq.__main__ import fast_mode\nassert fast_mode(), 'FASTAI_SEQ_FAST did not reach the kernel'")
    nb.cells.insert(0, nbformat.v4.new_code_cell(check))
    work = tmp_path/'run'; work.mkdir()
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(work)}})
    before = sorted((REPO/'nbs').rglob('*'))
    t0 = time.time()
    try: client.execute(env=_kernel_env())
    except nbclient.exceptions.CellExecutionError as e:
        msg = re.sub(r'\x1b\[[0-9;]*m', '', str(e))   # the traceback without terminal colours
        pytest.fail(f"{fn.name}: a cell raised an error in fast mode.\n{msg}", pytrace=False)
    print(f"\n{fn.name}: {time.time()-t0:.1f} s in fast mode")
    n_code = sum(c.cell_type=='code' for c in nb.cells)
    ran = [c for c in nb.cells if c.cell_type=='code' and c.execution_count is not None]
    assert len(ran)==n_code, f"{fn.name}: {n_code-len(ran)} code cells did not run"
    errs = [o for c in nb.cells if c.cell_type=='code' for o in c.outputs if o.output_type=='error']
    assert not errs, f"{fn.name}: error outputs {[(o.ename, o.evalue) for o in errs]}"
    n_figs = sum('image/png' in o.get('data', {}) for c in nb.cells if c.cell_type=='code' for o in c.outputs)
    assert n_figs>=2, f"{fn.name}: {n_figs} figures came out; its plots should show inline"
    assert sorted((REPO/'nbs').rglob('*'))==before, f"{fn.name} wrote into the repository's nbs/ folder"
    assert list(work.iterdir()), f"{fn.name} wrote nothing in its working folder: did it run in {work}?"
