"""Code sent by value to workers that cannot import it, without a cluster: one program
pickles its script's code with the cluster backends' pickler, another program in
another directory (where none of it is importable) unpickles and runs it, as a Dask or
Ray worker does, and sends results back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import clusters

SENDER = '''
import pickle, sys
import mod_a
from corepool.backends import _byvalue

STATE = "caller"

def set_state(value):
    global STATE
    STATE = value

def read_state(_):
    return STATE, mod_a.ping(2)

class Box:
    def __init__(self, v):
        self.v = v

def boxed(x):
    return Box(x)

blobs = [_byvalue.dumps(obj) for obj in ((set_state, ("worker",)), read_state, boxed)]
with open(sys.argv[1], "wb") as out:
    pickle.dump(blobs, out)
answer = subprocess_answer = None
import subprocess
done = subprocess.run([sys.executable, "-c", sys.argv[2], sys.argv[1]], capture_output=True)
assert done.returncode == 0, done.stderr.decode()
state, box = pickle.loads(done.stdout)
assert state == ("worker", 8), state
assert type(box) is Box and box.v == 5, box  # the caller's own class comes back
print("sender ok")
'''

RECEIVER = '''
import pickle, sys
from corepool.serialize import dumps_data
blobs = pickle.load(open(sys.argv[1], "rb"))
init, args = pickle.loads(blobs[0])
init(*args)  # as a Dask worker plugin runs the initializer, before any task arrives
read, boxed = pickle.loads(blobs[1]), pickle.loads(blobs[2])
assert "mod_a" not in sys.modules and "mod_b" not in sys.modules
sys.stdout.buffer.write(dumps_data((read(0), boxed(5))))
'''


def test_script_code_runs_where_it_cannot_be_imported(tmp_path: Path) -> None:
    """Mutually importing modules next to the script go by value (the cycle is cut);
    an initializer's global is what the task then sees (the worker's value is kept,
    not replaced by the caller's); a script class comes back as the caller's class."""
    home = tmp_path / "program"
    home.mkdir()
    (home / "sender.py").write_text(SENDER)
    (home / "mod_a.py").write_text("import mod_b\n\ndef ping(x):\n    return mod_b.pong(x)\n")
    (home / "mod_b.py").write_text(
        "import mod_a\n\nTIMES = 4\n\ndef pong(x):\n    return x * TIMES if mod_a else 0\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [sys.executable, str(home / "sender.py"), str(tmp_path / "blobs"), RECEIVER],
        cwd=elsewhere,
        env=clusters.script_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sender ok" in done.stdout
