#!/usr/bin/env python3
"""tree.py <trigger>: python3 forking a tree of three levels.

  root (session and group leader)
  +- W1  a new process group
  |  +- W1a  in W1's group, running
  |  +- W1b  exited with code 3, not reaped (a zombie)
  +- W2  a new session
  |  +- W2a  in W2's session and group
  +- Z   killed by SIGKILL, not reaped (a zombie)

Every member keeps a dict and a live generator of its own; after the trigger it checks them, its
pid, parent, group and session, and exits 0 or a failure number. Parents reap their children and
check the statuses (the zombies' exact ones); the root prints the verdict.
"""
import os
import signal
import sys
import time

trigger = sys.argv[1]
tamper = os.environ.get('CPT_TAMPER') == '1'
os.closerange(3, 65536)
sys.stdout.reconfigure(line_buffering=True)


def counter(start):
    n = start
    while True:
        yield n
        n += 1


def mark_ready(name):
    open(f'{trigger}.ready.{name}', 'w').close()


def is_ready(name):
    return os.path.exists(f'{trigger}.ready.{name}')


def wait_trigger():
    while not os.path.exists(trigger):
        time.sleep(0.02)


def own_state(seed):
    return {f'k{i}': i * seed for i in range(2000)}, counter(seed)


def check_self(want, seed, state, gen):
    got = (os.getpid(), os.getppid() if want[1] is not None else None, os.getpgrp(), os.getsid(0))
    if got != want:
        return 1
    d, _ = state, None
    if any(d[f'k{i}'] != i * seed for i in range(2000)):
        return 2
    if next(gen) != seed + 1:
        return 3
    return 0


def leaf(name, want, seed):
    state, gen = own_state(seed)
    next(gen)
    mark_ready(name)
    wait_trigger()
    os._exit(check_self(want, seed, state, gen))


def reap(pid, status):
    r, st = os.waitpid(pid, 0)
    return r == pid and st == status


root = os.getpid()
rsid, rpgid = os.getsid(0), os.getpgrp()

w1 = os.fork()
if w1 == 0:
    os.setpgid(0, 0)
    me = os.getpid()
    w1a = os.fork()
    if w1a == 0:
        leaf('W1a', (os.getpid(), me, me, rsid), 5)
    w1b = os.fork()
    if w1b == 0:
        os._exit(3)
    os.waitid(os.P_PID, w1b, os.WEXITED | os.WNOWAIT)
    state, gen = own_state(4)
    next(gen)
    mark_ready('W1')
    wait_trigger()
    f = check_self((me, root, me, rsid), 4, state, gen)
    if not f and not reap(w1a, 0):
        f = 10
    if not f and not reap(w1b, 3 << 8):
        f = 11
    os._exit(f)
try:
    os.setpgid(w1, w1)
except OSError:
    pass

w2 = os.fork()
if w2 == 0:
    os.setsid()
    me = os.getpid()
    w2a = os.fork()
    if w2a == 0:
        leaf('W2a', (os.getpid(), me, me, me), 7)
    state, gen = own_state(6)
    next(gen)
    mark_ready('W2')
    wait_trigger()
    f = check_self((me, root, me, me), 6, state, gen)
    if not f and not reap(w2a, 0):
        f = 20
    os._exit(f)

z = os.fork()
if z == 0:
    while True:
        signal.pause()
os.kill(z, signal.SIGKILL)
os.waitid(os.P_PID, z, os.WEXITED | os.WNOWAIT)

while not all(is_ready(n) for n in ('W1', 'W1a', 'W2', 'W2a')):
    time.sleep(0.01)
state, gen = own_state(3)
next(gen)
print(f'READY {root}')
wait_trigger()

fails = []
if tamper:
    state['k7'] = -1
# the root's parent is not in the tree: a restored root is init's child
f = check_self((root, None, rpgid, rsid), 3, state, gen)
if f:
    fails.append(f'root check {f}')
with open(f'/proc/{z}/stat') as fh:
    zstate = fh.read().rsplit(')', 1)[1].split()[0]
if zstate != 'Z':
    fails.append(f'Z is {zstate}, not a zombie')
for name, pid, want in (('W1', w1, 0), ('W2', w2, 0), ('Z', z, signal.SIGKILL)):
    r, st = os.waitpid(pid, 0)
    if r != pid or st != want:
        fails.append(f'{name} ended with status {st:#x}, not {want:#x}')
try:
    os.waitpid(-1, os.WNOHANG)
    fails.append('a child is left')
except ChildProcessError:
    pass
if fails:
    print('FAIL tree.py: ' + '; '.join(fails))
    sys.exit(1)
print('PASS tree.py')
