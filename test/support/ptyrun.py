"""Runs a command as a job of a "shell" on a new pseudo-terminal, for tests that need a terminal
(CI has none): ptyrun.py RELEASE CMD...

A session leader with the new pty as its controlling terminal (the shell) forks CMD in a process
group of its own, puts that group in the terminal's foreground, and waits for it; stdin and stderr
is the terminal, stdout and stderr are as given. The shell and the pty's master (whose output is read and
dropped) stay until the file RELEASE exists, so that a process left on the terminal (a restored
job) keeps it. Exits with CMD's status.
"""
import fcntl, os, signal, sys, termios, time

release, cmd = sys.argv[1], sys.argv[2:]


def wait_release():
    while not os.path.exists(release):
        time.sleep(0.02)


m, s = os.openpty()
pid = os.fork()
if pid == 0:
    os.close(m)
    os.setsid()
    fcntl.ioctl(s, termios.TIOCSCTTY, 0)
    os.dup2(s, 0)
    if s > 0:
        os.close(s)
    job = os.fork()
    if job == 0:
        # As a job-control shell does: the job takes the foreground itself before it runs CMD.
        os.setpgid(0, 0)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        os.tcsetpgrp(0, os.getpid())
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        os.execvp(cmd[0], cmd)
    try:
        os.setpgid(job, job)
    except OSError:
        pass
    os.tcsetpgrp(0, job)
    _, st = os.waitpid(job, 0)
    wait_release()
    os._exit(os.waitstatus_to_exitcode(st) & 0xff)
os.close(s)
os.set_blocking(m, False)
status = None
while True:
    try:
        while os.read(m, 4096):
            pass
    except OSError:
        pass
    if status is None:
        r, st = os.waitpid(pid, os.WNOHANG)
        if r == pid:
            status = os.waitstatus_to_exitcode(st)
    if status is not None:
        break
    time.sleep(0.02)
sys.exit(status & 0xff if status >= 0 else 128 - status)
