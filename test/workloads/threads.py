"""threads.py <trigger> [N]: a python3 process with N threads (default 100), each named, each with
its own thread-local value, each looping on a shared condition variable and counting its
wake-ups, for the checkpoint and restart of many threads. Checks after the trigger: every thread is alive and still wakes up, its name and
thread-local value are its own, the kernel's name of each thread (/proc/self/task/TID/comm) is
the one it set, and no thread is traced."""
import ctypes
import os
import sys
import threading
import time

PR_SET_NAME = 15


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: threads.py <trigger> [N]", file=sys.stderr)
        return 2
    trigger = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    for fd in sorted(int(f) for f in os.listdir("/proc/self/fd")):
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass  # the directory listing's own fd, already closed
    tamper = os.environ.get("CPT_TAMPER") == "1"
    libc = ctypes.CDLL(None, use_errno=True)

    cond = threading.Condition()
    state = {"round": 0, "stop": False}
    woken = [0] * count
    tids = [0] * count
    bad = []
    local = threading.local()
    started = threading.Barrier(count + 1)

    def run(i: int) -> None:
        local.value = i * 7 + 1
        name = f"py-{i}".encode()
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
        tids[i] = threading.get_native_id()
        started.wait()
        seen = 0
        with cond:
            while not state["stop"]:
                while state["round"] == seen and not state["stop"]:
                    cond.wait(1.0)
                seen = state["round"]
                woken[i] += 1
                if local.value != i * 7 + 1:
                    bad.append(f"thread {i}: thread-local {local.value}")
                if threading.current_thread().name != f"worker-{i}":
                    bad.append(f"thread {i}: name {threading.current_thread().name}")

    threads = [threading.Thread(target=run, args=(i,), name=f"worker-{i}", daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    started.wait()
    print(f"READY {os.getpid()}", flush=True)
    while not os.path.exists(trigger):
        with cond:
            state["round"] += 1
            cond.notify_all()
        time.sleep(0.02)

    failures = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("TracerPid:") and line.split()[1] != "0":
                        failures.append(f"thread {tid} traced by {line.split()[1]}")
        except FileNotFoundError:
            pass
    before = list(woken)
    for _ in range(5):
        with cond:
            state["round"] += 1
            cond.notify_all()
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(woken[i] <= before[i] for i in range(count)):
        time.sleep(0.05)
    for i in range(count):
        if not threads[i].is_alive():
            failures.append(f"thread {i} is gone")
        elif woken[i] <= before[i]:
            failures.append(f"thread {i} no longer wakes up")
        want = f"py-{i}" if not (tamper and i == 0) else "py-x"
        try:
            with open(f"/proc/self/task/{tids[i]}/comm") as f:
                comm = f.read().strip()
        except FileNotFoundError:
            comm = "(gone)"
        if comm != want:
            failures.append(f"thread {i} comm {comm!r}, not {want!r}")
    failures += bad
    with cond:
        state["stop"] = True
        cond.notify_all()
    if failures:
        print(f"FAIL threads.py: {'; '.join(failures[:10])}", flush=True)
        return 1
    print("PASS threads.py", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
