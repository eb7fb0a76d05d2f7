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

def _kernelspec(root:Path) -> str:
    "A kernelspec under `root` that runs this interpreter (a user-level `python3` kernelspec could name another python)"
    d = root/'kernels'/'fastai_seq_test'
    d.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}']
    (d/'kernel.json').write_text(json.dumps(dict(argv=argv, display_name='fastai_seq tests', language='python')))
    return d.name

def _execute(nb, name:str, tmp_path:Path, monkeypatch):
    "Run `nb` in fast mode in a fresh kernel of this interpreter, in `tmp_path/run`; a cell error fails with its source"
    nbformat = pytest.importorskip('nbformat', reason="the notebook tests need nbformat: pip install '.[dev]'")
    nbclient = pytest.importorskip('nbclient', reason="the notebook tests need nbclient and ipykernel: pip install '.[dev]'")
    monkeypatch.setenv('JUPYTER_PATH', str(tmp_path/'jupyter'))   # searched before the user's and the venv's kernelspecs
    kernel = _kernelspec(tmp_path/'jupyter')
    # A first cell checks that the kernel is this interpreter and that the notebook sees fast mode
    check = (f"import sys\nassert sys.prefix == {sys.prefix!r}, f'kernel runs {{sys.executable}}, not the test interpreter'\n"
             "from fastai_seq.__main__ import fast_mode\nassert fast_mode(), 'FASTAI_SEQ_FAST did not reach the kernel'")
    nb.cells.insert(0, nbformat.v4.new_code_cell(check))
    work = tmp_path/'run'
    work.mkdir(exist_ok=True)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name=kernel, resources={'metadata': {'path': str(work)}})
    try: client.execute(env=_kernel_env())
    except nbclient.exceptions.CellExecutionError as e:
        msg = re.sub(r'\x1b\[[0-9;]*m', '', str(e))   # the traceback without terminal colours
        pytest.fail(f"{name}: a cell raised an error in fast mode.\n{msg}", pytrace=False)
    return work

def test_cell_error_fails_with_source(tmp_path, monkeypatch):
    "The runner itself: a failing cell fails the test, and the message shows that cell's source and its error"
    nbformat = pytest.importorskip('nbformat', reason="the notebook tests need nbformat: pip install '.[dev]'")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 41"),
                                         nbformat.v4.new_code_cell("y = x + 1\nraise ValueError(f'broken at {y}')"),
                                         nbformat.v4.new_code_cell("z = 'never reached'")])
    with pytest.raises(pytest.fail.Exception) as e: _execute(nb, 'broken.ipynb', tmp_path, monkeypatch)
    msg = str(e.value)
    assert 'broken.ipynb' in msg and "raise ValueError(f'broken at {y}')" in msg and 'ValueError: broken at 42' in msg
    assert '\x1b[' not in msg
    assert nb.cells[3].execution_count is None   # execution stopped at the failing cell

@pytest.mark.slow
@pytest.mark.parametrize('fn', NBS, ids=lambda p: p.name)
def test_notebook_runs(fn, tmp_path, monkeypatch):
    "Execute every cell of each notebook in fast mode; also check that figures came out and that nbs/ stays untouched"
    import nbformat
    nb = nbformat.read(fn, as_version=4)
    before = sorted((REPO/'nbs').rglob('*'))
    t0 = time.time()
    work = _execute(nb, fn.name, tmp_path, monkeypatch)
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
