"""loop.py <trigger>: a python3 process (interpreter, its heap, its own threads-free
runtime) looping with dicts, lists, sets, a live generator and time.sleep(0.02).
Checks after the trigger: the invariants of the counters, every dict and list
entry, the generator resumes where it stopped, monotonic time never went
backwards, and os.getpid() is the READY pid. No child process, no thread."""
import os
import sys
import time


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: loop.py <trigger>", file=sys.stderr)
        return 2
    trigger = sys.argv[1]
    # start from fds 0, 1 and 2 only (close whatever the starter leaked)
    for fd in sorted(int(f) for f in os.listdir("/proc/self/fd")):
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass  # the directory listing's own fd, already closed
    tamper = os.environ.get("CPT_TAMPER") == "1"

    def fib():
        a, b = 0, 1
        while True:
            yield a
            a, b = b, a + b

    gen = fib()
    taken = [next(gen) for _ in range(10)]
    squares = {i: i * i for i in range(2000)}
    names = [f"item-{i:05d}" for i in range(2000)]
    seen = set(range(0, 2000, 3))
    big = 3 ** 500
    text = "checkpoint/restart of a python loop"
    ready_pid = os.getpid()
    n = total = 0
    last = first = time.monotonic()
    backwards = 0

    sys.stdout.write(f"READY {ready_pid}\n")
    sys.stdout.flush()

    while True:
        for _ in range(1000):
            n += 1
            total += n
            squares[n % 2000] = (n % 2000) ** 2
        taken.append(next(gen))
        now = time.monotonic()
        if now < last:
            backwards += 1
        last = now
        if os.path.exists(trigger):
            break
        time.sleep(0.02)

    if tamper:
        squares[7] = 50

    fails = []
    if n <= 0:
        fails.append("counter did not advance")
    if total != n * (n + 1) // 2:
        fails.append(f"total {total} != n(n+1)/2 for n={n}")
    bad = [k for k, v in squares.items() if v != k * k]
    if len(squares) != 2000 or bad:
        fails.append(f"squares wrong at {bad[:3]} (len {len(squares)})")
    if names != [f"item-{i:05d}" for i in range(2000)]:
        fails.append("names list differs")
    if seen != set(range(0, 2000, 3)):
        fails.append("set differs")
    if big != 3 ** 500 or big % 3 != 0:
        fails.append("big integer differs")
    if text != "checkpoint/restart of a python loop":
        fails.append("string differs")
    a, b = 0, 1
    for i, v in enumerate(taken):
        if v != a:
            fails.append(f"generator value {i} is {v}, want {a}")
            break
        a, b = b, a + b
    nxt = next(gen)
    if nxt != a:
        fails.append(f"generator resumed with {nxt}, want {a}")
    if backwards:
        fails.append(f"time.monotonic went backwards {backwards} times")
    if time.monotonic() < last:
        fails.append("time.monotonic went backwards after the loop")
    if os.getpid() != ready_pid:
        fails.append(f"getpid {os.getpid()} != READY pid {ready_pid}")

    if fails:
        sys.stdout.write("FAIL loop.py: " + "; ".join(fails) + "\n")
        sys.stdout.flush()
        return 1
    sys.stdout.write("PASS loop.py\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
