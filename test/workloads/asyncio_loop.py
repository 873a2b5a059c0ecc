"""asyncio_loop.py <trigger>: a python3 asyncio program: the event loop (epoll, its self-pipe
socketpair), a ticker task, a producer and a consumer on an asyncio.Queue, and two streams over a
socketpair echoing numbered lines. Checks after the trigger: the ticker still ticks, every item
came through the queue once and in order, every line came back echoed in order. CPT_TAMPER=1
drops an item from the consumer's record: it FAILs."""
import asyncio
import os
import socket
import sys


def close_inherited() -> None:
    for fd in sorted(int(f) for f in os.listdir("/proc/self/fd")):
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass  # the directory listing's own fd, already closed


async def main(trigger: str) -> int:
    ticks = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    got: list[int] = []
    echoed: list[str] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    async def producer() -> None:
        i = 0
        while True:
            await queue.put(i)
            i += 1
            await asyncio.sleep(0.01)

    async def consumer() -> None:
        while True:
            got.append(await queue.get())

    a, b = socket.socketpair()
    ra, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)

    async def echo() -> None:
        while True:
            line = await rb.readline()
            wb.write(line)
            await wb.drain()

    async def talker() -> None:
        n = 0
        while True:
            wa.write(f"line {n}\n".encode())
            await wa.drain()
            echoed.append((await ra.readline()).decode())
            n += 1
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(t()) for t in (ticker, producer, consumer, echo, talker)]
    print(f"READY {os.getpid()}", flush=True)
    while not os.path.exists(trigger):
        await asyncio.sleep(0.02)
    if os.environ.get("CPT_TAMPER") == "1" and got:
        got.pop(0)
    before = (ticks, len(got), len(echoed))
    await asyncio.sleep(0.3)
    failures = []
    if ticks <= before[0]:
        failures.append(f"the ticker stopped at {ticks}")
    if len(got) <= before[1] or got != list(range(len(got))):
        failures.append(f"queue items out of order or missing ({len(got)} items)")
    if len(echoed) <= before[2] or echoed != [f"line {i}\n" for i in range(len(echoed))]:
        failures.append(f"echoed lines out of order or missing ({len(echoed)} lines)")
    for t in tasks:
        t.cancel()
    if failures:
        print(f"FAIL asyncio_loop.py: {'; '.join(failures)}", flush=True)
        return 1
    print("PASS asyncio_loop.py", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: asyncio_loop.py <trigger>", file=sys.stderr)
        sys.exit(2)
    close_inherited()
    sys.exit(asyncio.run(main(sys.argv[1])))
